'use strict';
// Server-side helper for Node backends (Node >= 18: built-in fetch and crypto, no dependencies).
// The API key lives here, on the relying party's backend; the browser only ever gets the create
// answer (its browser_token is scoped to one session).
const crypto = require('node:crypto');

/** A non-2xx answer from the broker: `code` is the protocol's error code (PROTOCOL.md "Errors"). */
class BztApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message || code);
    this.name = 'BztApiError';
    this.status = status;
    this.code = code;
    if (retryAfter !== undefined) this.retryAfter = retryAfter;
  }
}

function trimSlash(s) {
  return String(s).replace(/\/+$/, '');
}

/**
 * A client bound to one API key and broker base URL.
 * Options: apiKey, baseUrl, fetch (default globalThis.fetch), timeoutMs (default 15000; long-polls
 * add their wait).
 */
function createClient(opts) {
  const o = opts || {};
  if (!o.apiKey) throw new TypeError('createClient: apiKey is required');
  if (!o.baseUrl) throw new TypeError('createClient: baseUrl is required');
  const base = trimSlash(o.baseUrl);
  const fetchFn = o.fetch || globalThis.fetch;
  if (typeof fetchFn !== 'function') throw new TypeError('createClient: no fetch (Node >= 18 has one)');
  const timeoutMs = o.timeoutMs || 15000;

  async function call(method, path, body, extraTimeoutMs) {
    const headers = { Authorization: 'Bearer ' + o.apiKey, Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const signal = AbortSignal.timeout(timeoutMs + (extraTimeoutMs || 0));
    let res;
    try {
      res = await fetchFn(base + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal,
      });
    } catch (err) {
      const e = new BztApiError(0, err && err.name === 'TimeoutError' ? 'timeout' : 'network', 'bzt broker unreachable: ' + (err && err.message));
      e.cause = err;
      throw e;
    }
    const text = await res.text();
    let json = null;
    if (text) {
      try {
        json = JSON.parse(text);
      } catch (_) {
        json = null;
      }
    }
    if (!res.ok) {
      const err = json && json.error ? json.error : {};
      const ra = res.headers.get('Retry-After');
      throw new BztApiError(res.status, err.code || 'http_' + res.status, err.message || 'HTTP ' + res.status, ra != null && ra !== '' && !isNaN(Number(ra)) ? Number(ra) : undefined);
    }
    return json;
  }

  const sid = (id) => '/v1/sessions/' + encodeURIComponent(id);
  const cid = (id) => '/v1/conversations/' + encodeURIComponent(id);

  return {
    baseUrl: base,
    /** POST /v1/sessions → the create answer (pass it to the page as is). */
    createSession(body) {
      return call('POST', '/v1/sessions', body);
    },
    /** GET /v1/sessions/<id> → the session view. */
    getSession(id) {
      return call('GET', sid(id));
    },
    /**
     * Long-poll: GET /v1/sessions/<id>?wait=<wait>&version=<version>. Answers when the version differs
     * from `version` (or at once if terminal), else after `wait` seconds (1..30, default 25) with the
     * unchanged view. Without a version it waits for the next change.
     */
    waitSession(id, version, wait) {
      const w = wait == null ? 25 : Number(wait);
      if (!(w >= 0 && w <= 30)) throw new RangeError('waitSession: wait must be 0..30 seconds');
      let q = '?wait=' + Math.floor(w);
      if (version != null) q += '&version=' + encodeURIComponent(version);
      return call('GET', sid(id) + q, undefined, w * 1000);
    },
    /** DELETE /v1/sessions/<id> → the (cancelled) view; throws code `conflict` if already terminal. */
    cancelSession(id) {
      return call('DELETE', sid(id));
    },
    /** POST /v1/conversations/<cid>/requests {tbs_b64, display} → {request_id, expires_at}. */
    sendConversationRequest(conversationId, body) {
      return call('POST', cid(conversationId) + '/requests', body);
    },
    /** GET /v1/conversations/<cid>/requests/<rid>?wait=N → the request's state / result. */
    getConversationRequest(conversationId, requestId, wait) {
      const w = wait == null ? 0 : Number(wait);
      return call('GET', cid(conversationId) + '/requests/' + encodeURIComponent(requestId) + (w ? '?wait=' + Math.floor(w) : ''), undefined, w * 1000);
    },
    /** DELETE /v1/conversations/<cid>: ends the conversation. */
    endConversation(conversationId) {
      return call('DELETE', cid(conversationId));
    },
  };
}

/** createSession(apiKey, baseUrl, body): one-shot form of createClient(...).createSession(body). */
function createSession(apiKey, baseUrl, body) {
  return createClient({ apiKey, baseUrl }).createSession(body);
}
function getSession(apiKey, baseUrl, id) {
  return createClient({ apiKey, baseUrl }).getSession(id);
}
function waitSession(apiKey, baseUrl, id, version, wait) {
  return createClient({ apiKey, baseUrl }).waitSession(id, version, wait);
}
function cancelSession(apiKey, baseUrl, id) {
  return createClient({ apiKey, baseUrl }).cancelSession(id);
}

function toBuffer(body) {
  if (Buffer.isBuffer(body)) return body;
  if (body instanceof Uint8Array) return Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  if (body instanceof ArrayBuffer) return Buffer.from(body);
  if (typeof body === 'string') return Buffer.from(body, 'utf8');
  throw new TypeError('rawBody must be the exact bytes received (Buffer, Uint8Array or string), not parsed JSON');
}

/** The `Bzt-Signature` header value for `rawBody` at unix time `t` (what the broker sends). */
function signWebhook(secret, rawBody, t) {
  const ts = t == null ? Math.floor(Date.now() / 1000) : Math.floor(t);
  const mac = crypto.createHmac('sha256', secret).update(ts + '.').update(toBuffer(rawBody)).digest('hex');
  return 't=' + ts + ',v1=' + mac;
}

/**
 * Checks a webhook: `header` is the `Bzt-Signature` value `t=<unix>,v1=<hex HMAC-SHA256(secret,
 * "<t>.<body>")>`, `rawBody` the exact bytes received (verify before parsing JSON). Returns true
 * only if some v1 matches (constant-time compare) and |now - t| <= toleranceSeconds (default 300).
 * Several v1 entries are allowed (secret rotation). `nowSeconds` is for tests.
 */
function verifyWebhook(secret, header, rawBody, toleranceSeconds, nowSeconds) {
  if (!secret || typeof header !== 'string' || rawBody == null) return false;
  const tol = toleranceSeconds == null ? 300 : Number(toleranceSeconds);
  if (!(tol >= 0)) return false;
  let t = null;
  const sigs = [];
  for (const part of header.split(',')) {
    const i = part.indexOf('=');
    if (i < 0) continue;
    const k = part.slice(0, i).trim();
    const v = part.slice(i + 1).trim();
    if (k === 't') {
      if (!/^\d{1,15}$/.test(v) || t !== null) return false;
      t = Number(v);
    } else if (k === 'v1' && /^[0-9a-fA-F]{64}$/.test(v)) {
      sigs.push(Buffer.from(v, 'hex'));
    }
  }
  if (t === null || !sigs.length) return false;
  const now = nowSeconds == null ? Math.floor(Date.now() / 1000) : nowSeconds;
  if (Math.abs(now - t) > tol) return false;
  let body;
  try {
    body = toBuffer(rawBody);
  } catch (_) {
    return false;
  }
  const expected = crypto.createHmac('sha256', secret).update(t + '.').update(body).digest();
  let ok = false;
  for (const s of sigs) {
    // Both are 32 bytes (checked above), so timingSafeEqual never throws; no early exit either.
    if (crypto.timingSafeEqual(s, expected)) ok = true;
  }
  return ok;
}

module.exports = {
  BztApiError,
  createClient,
  createSession,
  getSession,
  waitSession,
  cancelSession,
  verifyWebhook,
  signWebhook,
};
