// 密钥拆分 on the phone simulator page: enrolment, and the split key's signing and decryption for
// phone.html's flows (login, bind, sign, encrypt, decrypt, 会话签章). The mathematics and the
// co-signing service's client are splitkey.js; this file is the page's part. Loaded after
// phone.html's own script and uses its helpers (phone, $, api, say, esc, bytes).
//
// What the page keeps (docs/key-splitting.md, "The phone simulator page"): in localStorage under
// STORAGE_KEY the SplitKeyFile — key id, service URL and channel key, the joint public key P, the
// share d1 masked by the PIN, salt and rounds — with the certificate. Never d1, the PIN, P1 or P2:
// a copy of the storage gives a thief nothing to test PIN guesses against. The PIN is asked for each
// operation and lives in memory only for that operation (and, for an open 会话签章, until it ends,
// as `bzt phone converse --pin` does).
'use strict';
window.BztPhoneSplit = (() => {
  const STORAGE_KEY = 'bzt-phone-split-key';
  const K = window.BztSplitKey;

  const isSplit = () => !!phone.split;

  function show(meta) {
    $('cert-info').innerHTML = '<p class="ok">证书已签发（密钥拆分）</p><dl class="cert"><dt>持有人</dt><dd>' + esc(meta.cn) + ' · ' + esc(meta.org)
      + '</dd><dt>序列号</dt><dd id="cert-serial">' + esc(meta.serial) + '</dd><dt>证书类型</dt><dd id="cert-domain">' + esc(meta.grant ? '企业证书（被授权使用）' : BztSdk.domainLabel(meta.domain))
      + '</dd><dt>密钥</dt><dd id="cert-key-mode">密钥拆分：本机分量 + 协同签名服务分量（密钥编号 ' + esc(meta.file.key_id) + '）</dd>'
      + (meta.grant ? '<dt>授权</dt><dd id="cert-grant">被授权使用的企业证书（管理员授权），授权结束时间 ' + esc(BztSdk.formatBeijingTime(meta.grant.end)) + '</dd>' : '')
      + '</dl><details><summary>证书 PEM（可发给同事，用于多证书加密）</summary><pre id="cert-pem">' + esc(meta.certificate_pem) + '</pre></details>'
      + (meta.grant ? '' : '<div class="row"><button id="split-forget">删除本机拆分密钥</button></div>');
    if (!meta.grant) $('split-forget').addEventListener('click', forget);
  }

  function adopt(meta) {
    phone.splitMeta = meta;
    Object.assign(phone, {
      keys: null, split: meta.file, certPem: meta.certificate_pem, serial: meta.serial, issuer: meta.issuer,
      subject: meta.subject, domain: meta.domain, pin: null,
    });
    show(meta);
    $('claim').disabled = false;
    $('camera').disabled = false;
    BztSeals.render();
  }

  function forget() {
    localStorage.removeItem(STORAGE_KEY);
    Object.assign(phone, { keys: null, split: null, splitMeta: null, certPem: null, serial: null, issuer: null, subject: null, domain: null, pin: null });
    $('cert-info').textContent = '尚无证书';
    $('claim').disabled = true;
    $('camera').disabled = true;
    say('已删除本机拆分密钥');
  }

  /** 密钥拆分 enrolment: key generation with the service, then the development CA certifies P. */
  async function enroll() {
    const pin = $('pin-new').value;
    if (!/^\d{6}$/.test(pin)) { say('PIN 码须为 6 位数字', 'bad'); return; }
    const cn = $('cn').value;
    const org = $('org').value;
    const cosignerUrl = $('cosigner-url').value.trim() || location.origin + '/demo/cosigner';
    $('issue').disabled = true;
    say('正在与协同签名服务生成拆分密钥…');
    try {
      const file = await K.enroll({ cosignerUrl, pin, label: cn + ' · ' + org });
      $('pin-new').value = '';
      const res = await api('POST', '/demo/api/phone-certificate', { public_key_hex: file.public_key, cn, org, uscc: $('uscc').value, domain: $('domain').value });
      const meta = { file, certificate_pem: res.certificate_pem, serial: res.serial, issuer: res.issuer, subject: res.subject, domain: res.domain, cn, org };
      localStorage.setItem(STORAGE_KEY, JSON.stringify(meta));
      adopt(meta);
      say('拆分密钥证书已就绪，可以扫码（每次操作需输入 PIN 码，由协同签名服务验证）');
    } catch (e) {
      sayError('申请拆分密钥失败', e);
    } finally {
      $('issue').disabled = false;
    }
  }

  /** The split key's signature (DER, base64) over `tbs` for a session or a conversation request. */
  async function signB64For(context, tbs, pin) {
    return bytesToB64(await K.sign(phone.split, pin, context, tbs));
  }
  /** The split key's signature (DER bytes) over DER(TBS_Sign) of a seal signature: co-signed only
   * if it carries what the session or request asked to seal. */
  async function sealSignFor(context, tbs, pin) {
    return K.sign(phone.split, pin, context, tbs, { sealTbs: true });
  }
  const sessionContext = (claim) => ({ session: { id: claim.session.id, phone_token: claim.phone_token } });
  const conversationContext = (c, m) => ({ conversation: { id: c.id, request_id: m.request_id, phone_token: c.token } });

  /** The content key of our envelope entry, co-decrypted blinded (the service never sees C1). */
  async function contentKey(claim, keyDer, pin) {
    return K.decrypt(phone.split, pin, sessionContext(claim), keyDer);
  }

  /** A refusal by the service that leaves the session as it was: the user may try again. */
  const retryable = (e) => e instanceof K.SplitKeyError && ['wrong_pin', 'frozen', 'replayed', 'stale_proof', 'network', 'unavailable', 'degenerate'].includes(e.code);

  /** zh-CN text of a split-key error; wrong_pin says how many attempts are left. */
  function errorText(e) {
    if (!(e instanceof K.SplitKeyError)) return null;
    if (e.code === 'wrong_pin') {
      const left = /(\d+) attempt/.exec(e.detail || '');
      return left ? 'PIN 码错误，还可尝试 ' + left[1] + ' 次（连续错误 5 次将锁定密钥）' : e.message;
    }
    return e.message;
  }

  // The key mode selector shows the service's address only for split keys.
  function init() {
    const url = $('cosigner-url');
    if (!url.value) url.value = location.origin + '/demo/cosigner';
    const sync = () => $('cosigner-box').classList.toggle('hidden', $('key-mode').value !== 'split');
    $('key-mode').addEventListener('change', sync);
    sync();
    let meta = null;
    try { meta = JSON.parse(localStorage.getItem(STORAGE_KEY) || 'null'); } catch { meta = null; }
    if (meta && meta.file && meta.certificate_pem) {
      $('key-mode').value = 'split';
      sync();
      adopt(meta);
      say('已载入本机拆分密钥证书，可以扫码');
    }
  }

  /** The page's own split key (not a granted one), if stored: the administrator's certificate. */
  function ownMeta() {
    try { return JSON.parse(localStorage.getItem(STORAGE_KEY) || 'null'); } catch { return null; }
  }

  return { adopt, ownMeta, isSplit, enroll, signB64For, sealSignFor, sessionContext, conversationContext, contentKey, retryable, errorText, init, STORAGE_KEY };
})();
BztPhoneSplit.init();
