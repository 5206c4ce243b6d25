// zh-CN texts for what the broker and the SDK report, and helpers that turn a result into what a
// bidder can read (姓名, 单位, 统一社会信用代码, Beijing time, 本平台证书 / 全国互认证书).
//
// The broker's `error.message` is English for developers and logs; a Chinese page shows the text of
// these tables instead, keyed by the stable `code` (docs/protocol.md "Errors") or `reason`
// ("Terminal reasons"). Integrators reuse the tables, or override entries per call (`overrides`) or
// per widget (`options.texts.errors` / `options.texts.reasons`).

/**
 * Every error code of the broker (ErrorCode::ALL in crates/bzt-core/src/error.rs; a test reads that
 * list and fails on a code without an entry here), then the SDK's own codes (BztError).
 */
export const ERROR_MESSAGES = {
  invalid_request: '请求内容有误，请刷新页面后重试',
  unauthorized: '身份验证失败或会话凭据已失效，请刷新页面后重试',
  forbidden: '操作被拒绝：来源不被允许，或手机上选择的数字与网页显示的不一致',
  not_found: '二维码无效或会话不存在，请刷新二维码后重新扫码',
  method_not_allowed: '不支持的操作，请联系平台技术支持',
  already_claimed: '该二维码已被扫描，请刷新二维码后重新扫码',
  conflict: '会话已结束或状态已变化，请刷新二维码后重试',
  expired: '二维码已过期，请刷新后重新扫码',
  payload_too_large: '提交的内容过大，请减小文件或内容后重试',
  bad_signature: '签名验证未通过，请确认使用的是本人证书后重试',
  untrusted_certificate: '证书不被接受：证书不属于本二维码接受的类型、已过期、已吊销，或不是指定的证书',
  seal_not_acceptable: '电子印章不可用：印章不属于本证书、已过期，或制章机构不受信任',
  rate_limited: '操作过于频繁，请稍后再试',
  internal: '服务内部错误，请稍后重试',
  unavailable: '服务暂时不可用，请稍后重试',
  // The SDK's own (BztError codes that no broker answer carries).
  network: '网络连接失败，请检查网络后重试',
  timeout: '连接超时，请检查网络后重试',
  create_failed: '二维码获取失败，请稍后重试',
  closed: '连接已关闭',
  destroyed: '页面组件已关闭',
  conversation_ended: '会话已结束',
  bad_session: '会话数据无效，请刷新页面后重试',
  bad_message: '收到无法识别的消息，请刷新页面后重试',
  bad_options: '页面配置有误，请联系平台技术支持',
};

/** What the broker writes as `result.reason` or a request's `reason` (bzt_core::reason::ALL). */
export const REASON_MESSAGES = {
  match_failed: '手机上选择的数字与网页显示的不一致（二维码可能被他人转发）',
  too_many_bad_completions: '多次验证未通过，本次扫码已失败，请刷新二维码后重试',
  bad_signature: '签名验证未通过',
  certificate_not_acceptable: '证书已失效或已吊销，不能继续签署',
  conversation_ended: '会话已结束，该请求未签署',
};

/** Why a conversation ended (`ended.by`, EndedBy in crates/bzt-core/src/conversation.rs). */
export const ENDED_BY_MESSAGES = {
  phone: '会话已结束（手机端结束）',
  requester: '会话已结束（对方结束）',
  idle: '会话已结束（长时间无操作）',
  limit: '会话已结束（已达上限）',
  certificate: '会话已结束（证书已失效或已吊销）',
};

/** Every status of a session (docs/protocol.md "Session lifecycle"). */
export const STATUS_MESSAGES = {
  pending: '等待扫码',
  scanned: '已扫码，请在手机上确认',
  approved: '成功',
  rejected: '已拒绝',
  expired: '已过期',
  cancelled: '已取消',
  failed: '失败',
};

/** The two trust domains of the field (docs/protocol.md "Trust domains and the two QR kinds"). */
export const DOMAIN_LABELS = {
  platform: '本平台证书',
  national: '全国互认证书',
};

const GENERIC_ERROR = '操作未能完成，请稍后重试';
const GENERIC_REJECT = '已在手机上拒绝';
const HAS_CJK = /[\u3400-\u9fff\uf900-\ufaff]/;

function lookup(table, overrides, key) {
  if (overrides && typeof overrides[key] === 'string') return overrides[key];
  return Object.prototype.hasOwnProperty.call(table, key) ? table[key] : null;
}

/**
 * The zh-CN text for an error: a BztError, a protocol error body `{error: {code}}`, `{code}` or the
 * code itself; for `create_failed`, the code of its `cause` when that has a message. Never the
 * broker's English message: an unknown code gets a generic Chinese text.
 */
export function errorMessage(error, overrides) {
  let code = error;
  if (error && typeof error === 'object') {
    code = error.error && error.error.code ? error.error.code : error.code;
    // createSession failed: the page's backend usually knows why (the broker's code it passed on).
    const cause = error.cause;
    if (code === 'create_failed' && cause && typeof cause.code === 'string' && lookup(ERROR_MESSAGES, overrides, cause.code) != null) code = cause.code;
  }
  if (typeof code === 'string') {
    const text = lookup(ERROR_MESSAGES, overrides, code);
    if (text != null) return text;
    if (/^http_5\d\d$/.test(code)) return ERROR_MESSAGES.unavailable;
  }
  return GENERIC_ERROR;
}

/**
 * The zh-CN text for a terminal reason: the table's for the broker's own reasons; a phone's decline
 * in Chinese as it is; anything else (a phone's English text) `fallback`, by default 已在手机上拒绝.
 */
export function reasonMessage(reason, overrides, fallback) {
  if (typeof reason !== 'string' || !reason) return null;
  const text = lookup(REASON_MESSAGES, overrides, reason);
  if (text != null) return text;
  return HAS_CJK.test(reason) ? reason : fallback != null ? fallback : GENERIC_REJECT;
}

/** The zh-CN text for how a conversation ended. */
export function endedByMessage(by, overrides) {
  return lookup(ENDED_BY_MESSAGES, overrides, by) || '会话已结束';
}

/** 本平台证书 / 全国互认证书 for a trust domain name; another configured name is shown as it is. */
export function domainLabel(domain, overrides) {
  return lookup(DOMAIN_LABELS, overrides, domain) || (domain ? String(domain) : '');
}

/**
 * Reads an RFC 4514 name as the broker writes `subject` and `issuer` (`CN=张三,O=…,C=CN`): every
 * attribute in order, with `\` escapes undone (`\,`, `\+`, `\XX` hex bytes as UTF-8) and `+`
 * multi-valued RDNs split. Returns `{attributes: [{type, value}], get(type), name, organization,
 * unit, uscc, country}`, where `uscc` (统一社会信用代码) is organizationIdentifier (2.5.4.97),
 * unwrapping a `NTRCN-` prefix (ETSI EN 319 412-1) if present.
 */
export function parseSubject(subject) {
  const attributes = [];
  const s = typeof subject === 'string' ? subject : '';
  let i = 0;
  while (i < s.length) {
    let type = '';
    while (i < s.length && s[i] !== '=') type += s[i++];
    i++; // '='
    const bytes = [];
    let value = '';
    const flush = () => {
      if (bytes.length) {
        value += new TextDecoder().decode(new Uint8Array(bytes));
        bytes.length = 0;
      }
    };
    if (s[i] === '#') {
      // A value the writer could not show as text: keep its hex DER.
      while (i < s.length && s[i] !== ',' && s[i] !== '+') value += s[i++];
    } else {
      while (i < s.length && s[i] !== ',' && s[i] !== '+') {
        if (s[i] === '\\' && i + 1 < s.length) {
          if (/^[0-9a-fA-F]{2}$/.test(s.slice(i + 1, i + 3))) {
            bytes.push(parseInt(s.slice(i + 1, i + 3), 16));
            i += 3;
            continue;
          }
          flush();
          value += s[i + 1];
          i += 2;
          continue;
        }
        flush();
        value += s[i++];
      }
      flush();
    }
    i++; // ',' or '+'
    type = type.trim();
    if (type) attributes.push({ type, value });
  }
  const get = (...types) => {
    const want = types.map((t) => t.toLowerCase());
    const a = attributes.find((x) => want.indexOf(x.type.toLowerCase()) >= 0);
    return a ? a.value : null;
  };
  let uscc = get('organizationIdentifier', '2.5.4.97', 'OID.2.5.4.97');
  if (uscc && /^NTRCN-/.test(uscc)) uscc = uscc.slice(6);
  return {
    attributes,
    get,
    name: get('CN', 'commonName'),
    organization: get('O', 'organizationName'),
    unit: get('OU', 'organizationalUnitName'),
    uscc,
    country: get('C', 'countryName'),
  };
}

const pad = (n) => (n < 10 ? '0' : '') + n;

/**
 * An RFC 3339 time as Beijing time (UTC+8, no daylight saving): `2027-12-06 00:53:26`, with
 * `（北京时间）` appended unless `{suffix: false}`. Returns '' for a missing or invalid time.
 */
export function formatBeijingTime(time, options) {
  const ms = time instanceof Date ? time.getTime() : Date.parse(time);
  if (time == null || !isFinite(ms)) return '';
  const d = new Date(ms + 8 * 3600 * 1000);
  const text =
    d.getUTCFullYear() + '-' + pad(d.getUTCMonth() + 1) + '-' + pad(d.getUTCDate()) + ' ' +
    pad(d.getUTCHours()) + ':' + pad(d.getUTCMinutes()) + ':' + pad(d.getUTCSeconds());
  return options && options.suffix === false ? text : text + '（北京时间）';
}

/**
 * What a result panel shows of `result.certificate`: `{name, organization, uscc, domain,
 * domainLabel, serial, issuerName, notBefore, notAfter}` (times in Beijing time).
 */
export function describeCertificate(certificate, overrides) {
  const c = certificate || {};
  const subject = parseSubject(c.subject);
  const issuer = parseSubject(c.issuer);
  return {
    name: subject.name,
    organization: subject.organization,
    uscc: subject.uscc,
    domain: c.domain || null,
    domainLabel: domainLabel(c.domain, overrides),
    serial: c.serial || null,
    issuerName: issuer.name || issuer.organization || c.issuer || null,
    notBefore: formatBeijingTime(c.not_before),
    notAfter: formatBeijingTime(c.not_after),
  };
}
