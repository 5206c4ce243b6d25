// A mock of the bzt broker's browser-facing side (docs/protocol.md "Browser API", "Relay defences",
// "Conversations", "Errors") plus just enough of the RP API (create, get with long-poll, cancel,
// conversation requests) for the SDK's tests. The phone is simulated by test hooks.
//
// Use from tests:   const broker = await startMockBroker({ allowedOrigins: [origin] });
//                   broker.phone.scan(id); broker.phone.approve(id); ...; await broker.close();
// Or by hand:       node test/mock-broker.mjs [--port 8799] [--origin http://localhost:8080]
//                   (hooks: POST /_mock/sessions/<id>/<scan|approve|reject|expire|rotate|fail|drop>)
import http from 'node:http';
import crypto from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { WebSocketServer } from 'ws';

const KINDS = ['bind', 'login', 'sign', 'encrypt', 'decrypt'];
const TERMINAL = ['approved', 'rejected', 'expired', 'cancelled', 'failed'];
const CREATE_FIELDS = [
  'kind', 'ttl_s', 'display', 'accept', 'expect_cert', 'requester', 'tbs_b64', 'conversation',
  'envelope_header_b64', 'reply_key', 'webhook_url', 'rotate_s', 'number_match',
];

const rand = (n = 16) => crypto.randomBytes(n).toString('base64url');
const iso = (ms) => new Date(ms).toISOString(); // YYYY-MM-DDTHH:MM:SS.sssZ
const isTerminal = (s) => TERMINAL.includes(s);

class ApiError extends Error {
  constructor(status, code, message, headers) {
    super(message);
    this.status = status;
    this.code = code;
    this.headers = headers;
  }
}

export async function startMockBroker(options = {}) {
  const cfg = {
    host: '127.0.0.1',
    port: 0,
    apiKey: 'mock-api-key',
    appId: 'demo',
    appName: '示例交易平台',
    allowedOrigins: [],
    relativeUrls: false, // answer "/v1/..." URLs instead of absolute ones
    pingMs: 25000,
    realTimers: true, // expire at ttl_s and rotate every rotate_s by the clock
    ...options,
  };
  const sessions = new Map();
  const conversations = new Map();
  /** Everything that happened, in order: {t, type, id, ...}. Tests assert on it. */
  const log = [];
  const firewall = { refuseUpgrades: false, hangUpgrades: false, refuseIds: new Set(), hanging: new Set() };
  const record = (type, extra) => log.push({ t: Date.now(), type, ...extra });
  let base = '';

  // ---- sessions ---------------------------------------------------------------------------------

  function newQr(s) {
    s.claim_secret = rand(18);
    s.qr_text = `${base}/q/${s.id}#${s.claim_secret}`;
  }

  function rpView(s) {
    const v = {
      id: s.id, kind: s.kind, status: s.status, version: s.version, display: s.display,
      created_at: s.created_at, expires_at: s.expires_at,
    };
    if (s.scanned_at) v.scanned_at = s.scanned_at;
    if (s.completed_at) v.completed_at = s.completed_at;
    if (s.device) v.device = { name: s.device.name }; // the device id is not shown (docs/protocol.md)
    if (isTerminal(s.status)) v.result = s.result;
    // As the broker's GET view (docs/protocol.md): the number to pick while scanned.
    if (s.match_code && s.status === 'scanned') v.match_code = s.match_code;
    return v;
  }

  function browserView(s) {
    const v = rpView(s);
    if (s.status === 'pending') {
      v.qr_text = s.qr_text;
      v.qr_seq = s.qr_seq;
    }
    return v;
  }

  function urlsFor(s) {
    const p = `/v1/sessions/${s.id}`;
    const t = `?t=${s.browser_token}`;
    const abs = cfg.relativeUrls ? '' : base;
    const wsAbs = cfg.relativeUrls ? '' : base.replace(/^http/, 'ws');
    return {
      ws_url: `${wsAbs}${p}/ws${t}`,
      events_url: `${abs}${p}/events${t}`,
      qr_svg_url: `${abs}${p}/qr.svg${t}`,
      qr_png_url: `${abs}${p}/qr.png${t}`,
    };
  }

  function createSession(body) {
    if (!body || typeof body !== 'object' || Array.isArray(body)) throw new ApiError(400, 'invalid_request', 'body must be an object');
    for (const k of Object.keys(body)) if (!CREATE_FIELDS.includes(k)) throw new ApiError(400, 'invalid_request', `unknown field ${k}`);
    if (!KINDS.includes(body.kind)) throw new ApiError(400, 'invalid_request', 'kind');
    if (!body.display || typeof body.display.title !== 'string' || !body.display.title || body.display.title.length > 200) {
      throw new ApiError(400, 'invalid_request', 'display.title is required (≤ 200 chars)');
    }
    const ttl = body.ttl_s ?? 180;
    if (!Number.isInteger(ttl) || ttl < 30 || ttl > 600) throw new ApiError(400, 'invalid_request', 'ttl_s must be 30..600');
    if (body.rotate_s != null && (!Number.isInteger(body.rotate_s) || body.rotate_s < 5 || body.rotate_s > 60)) {
      throw new ApiError(400, 'invalid_request', 'rotate_s must be 5..60');
    }
    if (body.kind === 'sign' && !body.tbs_b64) throw new ApiError(400, 'invalid_request', 'tbs_b64 is required for sign');
    if (body.kind !== 'sign' && (body.tbs_b64 || body.conversation)) throw new ApiError(400, 'invalid_request', 'tbs_b64/conversation are for sign only');
    const now = Date.now();
    const s = {
      id: 'ses_' + rand(12),
      kind: body.kind,
      status: 'pending',
      version: 1,
      display: body.display,
      created_at: iso(now),
      expires_at: iso(now + ttl * 1000),
      ttl_s: ttl,
      browser_token: rand(24),
      number_match: !!body.number_match,
      rotate_s: body.rotate_s || null,
      conversation_cfg: body.conversation || null,
      tbs_b64: body.tbs_b64 || null,
      qr_seq: 0,
      result: null,
      watchers: new Set(),
      waiters: new Set(),
      timers: [],
    };
    newQr(s);
    sessions.set(s.id, s);
    if (cfg.realTimers) {
      s.timers.push(setTimeout(() => transition(s, 'expired', null), ttl * 1000));
      if (s.rotate_s) s.timers.push(setInterval(() => rotate(s.id), s.rotate_s * 1000));
    }
    record('create', { id: s.id, kind: s.kind, accept: body.accept || null });
    return {
      id: s.id, kind: s.kind, status: s.status, version: s.version, qr_text: s.qr_text,
      browser_token: s.browser_token, ...urlsFor(s), created_at: s.created_at, expires_at: s.expires_at, ttl_s: ttl,
    };
  }

  function getSession(id) {
    const s = sessions.get(id);
    if (!s) throw new ApiError(404, 'not_found', 'no such session');
    return s;
  }

  function broadcast(s, msg, sseId) {
    for (const w of s.watchers) w.send(msg, sseId);
  }

  function notifyWaiters(s) {
    for (const w of s.waiters) w();
    s.waiters.clear();
  }

  function transition(s, status, result, extra) {
    if (isTerminal(s.status)) return false;
    s.status = status;
    s.version += 1;
    if (isTerminal(status)) {
      s.result = result;
      s.completed_at = iso(Date.now());
      for (const t of s.timers) clearTimeout(t);
      record('terminal', { id: s.id, status });
      broadcast(s, { type: 'result', status, version: s.version, result }, String(s.version));
      for (const w of s.watchers) w.end();
      s.watchers.clear();
    } else {
      const msg = { type: 'status', status, version: s.version, ...extra };
      broadcast(s, msg, String(s.version));
    }
    notifyWaiters(s);
    return true;
  }

  function rotate(id) {
    const s = getSession(id);
    if (s.status !== 'pending') return false;
    s.qr_seq += 1;
    newQr(s);
    record('rotate', { id, seq: s.qr_seq });
    broadcast(s, { type: 'qr', qr_text: s.qr_text, version: s.version, seq: s.qr_seq }, `${s.version}.${s.qr_seq}`);
    return true;
  }

  function challenge(s) {
    return [
      'BZT-CHALLENGE-V1', `kind:${s.kind}`, `app:${cfg.appId}`, `session:${s.id}`,
      `nonce:${rand(16)}`, `expires:${s.expires_at}`,
    ].join('\n');
  }

  const MOCK_CERT = {
    pem: '-----BEGIN CERTIFICATE-----\nTU9DSyBDRVJUSUZJQ0FURQ==\n-----END CERTIFICATE-----\n',
    serial: '5a17c0de',
    subject: 'CN=张三,OU=投标部,O=示例投标有限公司,C=CN',
    issuer: 'CN=Mock Platform CA,O=bzt mock,C=CN',
    not_before: '2026-01-01T00:00:00.000Z',
    not_after: '2028-01-01T00:00:00.000Z',
    domain: 'platform',
  };

  /** The simulated phone. Every hook returns false when the transition is not allowed. */
  const phone = {
    scan(id, device = { id: 'dev-1', name: '测试手机' }) {
      const s = getSession(id);
      if (s.status !== 'pending') return false;
      s.device = device;
      s.scanned_at = iso(Date.now());
      if (s.number_match) s.match_code = String(crypto.randomInt(10, 100));
      const extra = { device: { name: device.name } };
      if (s.match_code) extra.match_code = s.match_code;
      return transition(s, 'scanned', null, extra);
    },
    approve(id, opts = {}) {
      const s = getSession(id);
      if (s.status !== 'scanned') return false;
      const tbs = s.tbs_b64 || Buffer.from(challenge(s)).toString('base64');
      const result = {
        certificate: { ...MOCK_CERT },
        signature_b64: crypto.randomBytes(71).toString('base64'),
        tbs_b64: tbs,
      };
      if (opts.openConversation && s.kind === 'sign' && s.conversation_cfg) {
        result.conversation = openConversation(s);
      }
      return transition(s, 'approved', result);
    },
    reject(id, reason = 'user_declined') {
      const s = getSession(id);
      if (s.status !== 'scanned') return false;
      return transition(s, 'rejected', { reason });
    },
    fail(id) {
      return transition(getSession(id), 'failed', { reason: 'too_many_bad_completions' });
    },
    // Conversation side of the phone.
    respond(cid, rid, answer = {}) {
      const c = conversations.get(cid);
      const r = c && c.requests.get(rid);
      if (!r || r.status !== 'pending') return false;
      r.status = answer.status || 'approved';
      if (r.status === 'approved') {
        r.signature_b64 = answer.signature_b64 || crypto.randomBytes(70).toString('base64');
        r.auto_confirmed = answer.auto_confirmed ?? true;
      } else if (answer.reason) r.reason = answer.reason;
      const ev = requestResult(r);
      record('request_result', { id: cid, rid, status: r.status });
      for (const w of c.watchers) w.send(ev);
      for (const f of r.waiters) f();
      r.waiters.clear();
      return true;
    },
    endConversation(cid, by = 'phone') {
      return endConversation(cid, by);
    },
  };

  /** Broker-side events the tests trigger. */
  const control = {
    expire: (id) => transition(getSession(id), 'expired', null),
    rotate,
    /** Kills every socket/stream of a session abruptly (the browser sees 1006 / a broken stream). */
    drop(id) {
      const s = getSession(id);
      const n = s.watchers.size;
      for (const w of s.watchers) w.kill();
      s.watchers.clear();
      record('drop', { id, n });
      return n;
    },
    /** Closes every WebSocket of a session with 1012, as a broker node shutting down does. */
    restart(id) {
      const s = getSession(id);
      const n = s.watchers.size;
      for (const w of s.watchers) (w.restart || w.kill)();
      s.watchers.clear();
      record('restart', { id, n });
      return n;
    },
    /** Refuse (reset) WebSocket upgrades: all of them, or one session's. */
    refuseUpgrades(on = true, id) {
      if (id) on ? firewall.refuseIds.add(id) : firewall.refuseIds.delete(id);
      else firewall.refuseUpgrades = on;
    },
    /** Accept the TCP connection but never answer the upgrade (a silently dropping middlebox). */
    hangUpgrades(on = true) {
      firewall.hangUpgrades = on;
      if (!on) for (const sock of firewall.hanging) sock.destroy();
    },
    session: (id) => getSession(id),
    sessions: () => [...sessions.values()],
    conversation: (cid) => conversations.get(cid),
    /** Live watchers (sockets + SSE streams) of a session. */
    watchers: (id) => getSession(id).watchers.size,
  };

  // ---- conversations ----------------------------------------------------------------------------

  function openConversation(s) {
    const c = {
      id: 'cnv_' + rand(12),
      token: rand(24),
      phone_token: rand(24),
      opened_at: Date.now(),
      expires_at: iso(Date.now() + (s.conversation_cfg.max_s || 7200) * 1000),
      max_requests: s.conversation_cfg.max_requests || 200,
      requests: new Map(),
      watchers: new Set(),
      ended_by: null,
    };
    conversations.set(c.id, c);
    record('conversation_open', { id: c.id, session: s.id });
    return { id: c.id, token: c.token, expires_at: c.expires_at };
  }

  function requestResult(r) {
    const ev = { type: 'request_result', request_id: r.id, status: r.status, expires_at: r.expires_at };
    if (r.signature_b64) ev.signature_b64 = r.signature_b64;
    if (r.auto_confirmed != null) ev.auto_confirmed = r.auto_confirmed;
    if (r.reason) ev.reason = r.reason;
    return ev;
  }

  function endConversation(cid, by) {
    const c = conversations.get(cid);
    if (!c || c.ended_by) return false;
    c.ended_by = by;
    c.ended_at = iso(Date.now());
    record('conversation_end', { id: cid, by });
    for (const w of c.watchers) {
      w.send({ type: 'ended', by, at: c.ended_at });
      w.end();
    }
    c.watchers.clear();
    return true;
  }

  // ---- HTTP -------------------------------------------------------------------------------------

  function originAllowed(origin) {
    return !origin || cfg.allowedOrigins.includes(origin);
  }

  /** Browser endpoints: 403 for a present, disallowed Origin; CORS headers for allowed ones. */
  function browserCors(req, res) {
    const origin = req.headers.origin;
    if (!originAllowed(origin)) throw new ApiError(403, 'forbidden', 'origin not allowed');
    if (origin) {
      res.setHeader('Access-Control-Allow-Origin', origin);
      res.setHeader('Vary', 'Origin');
    }
  }

  function send(res, status, body, headers = {}) {
    const text = body === undefined ? '' : JSON.stringify(body);
    res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Cache-Control': 'no-store', ...headers });
    res.end(text);
  }

  function auth(req) {
    const h = req.headers.authorization || '';
    if (h !== `Bearer ${cfg.apiKey}`) throw new ApiError(401, 'unauthorized', 'missing or wrong API key');
  }

  function browserAuth(s, url) {
    if (url.searchParams.get('t') !== s.browser_token) throw new ApiError(401, 'unauthorized', 'wrong browser token');
  }

  async function readBody(req) {
    const chunks = [];
    let size = 0;
    for await (const c of req) {
      size += c.length;
      if (size > 256 * 1024) throw new ApiError(413, 'payload_too_large', 'body over 256 KiB');
      chunks.push(c);
    }
    const text = Buffer.concat(chunks).toString('utf8');
    if (!text) return undefined;
    try {
      return JSON.parse(text);
    } catch (_) {
      throw new ApiError(400, 'invalid_request', 'body is not JSON');
    }
  }

  function qrSvg(text) {
    // Not a real QR code (the mock has no encoder): a 29×29 pattern derived from the text, with the
    // text itself in <desc> so tests can tell which qr_text an image shows.
    const h = crypto.createHash('sha256').update(text).digest();
    const n = 29;
    let rects = '';
    for (let y = 0; y < n; y++) {
      for (let x = 0; x < n; x++) {
        const finder = (x < 7 && y < 7) || (x >= n - 7 && y < 7) || (x < 7 && y >= n - 7);
        let on;
        if (finder) {
          const fx = x >= n - 7 ? x - (n - 7) : x;
          const fy = y >= n - 7 ? y - (n - 7) : y;
          on = fx === 0 || fx === 6 || fy === 0 || fy === 6 || (fx >= 2 && fx <= 4 && fy >= 2 && fy <= 4);
        } else {
          const bit = (y * n + x) % 256;
          on = (h[bit >> 3] >> (bit & 7)) & 1 ? (x * 7 + y * 13 + h[(x + y) % 32]) % 3 !== 0 : (x + y * 3 + h[x % 32]) % 5 === 0;
        }
        if (on) rects += `<rect x="${x + 2}" y="${y + 2}" width="1" height="1"/>`;
      }
    }
    const esc = text.replace(/&/g, '&amp;').replace(/</g, '&lt;');
    return `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${n + 4} ${n + 4}" shape-rendering="crispEdges">` +
      `<desc>${esc}</desc><rect width="100%" height="100%" fill="#fff"/><g fill="#000">${rects}</g></svg>`;
  }

  function sseStream(req, res, s) {
    res.writeHead(200, {
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-store',
      Connection: 'keep-alive',
      'X-Accel-Buffering': 'no',
    });
    const write = (event, data, id) => res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\nid: ${id}\n\n`);
    write('snapshot', { type: 'snapshot', session: browserView(s) }, String(s.version));
    record('sse_open', { id: s.id, origin: req.headers.origin || null });
    if (isTerminal(s.status)) {
      res.end();
      record('sse_close', { id: s.id });
      return;
    }
    const ping = setInterval(() => res.write(': ping\n\n'), cfg.pingMs);
    const w = {
      kind: 'sse',
      send: (msg, id) => write(msg.type, msg, id ?? String(s.version)),
      end: () => {
        clearInterval(ping);
        res.end();
      },
      kill: () => {
        clearInterval(ping);
        res.destroy();
      },
    };
    s.watchers.add(w);
    res.on('close', () => {
      clearInterval(ping);
      if (s.watchers.delete(w)) record('sse_close', { id: s.id });
    });
  }

  async function route(req, res) {
    const url = new URL(req.url, base);
    const p = url.pathname;
    let m;

    if (req.method === 'OPTIONS') {
      // CORS preflight (DELETE ?t= from the page, keepalive or not).
      const origin = req.headers.origin;
      if (!/^\/v1\/(sessions|conversations)\//.test(p) || !origin || !originAllowed(origin)) {
        throw new ApiError(403, 'forbidden', 'preflight refused');
      }
      record('preflight', { path: p, origin, method: req.headers['access-control-request-method'] });
      res.writeHead(204, {
        'Access-Control-Allow-Origin': origin,
        'Access-Control-Allow-Methods': 'GET, DELETE',
        'Access-Control-Allow-Headers': 'Content-Type, Accept',
        'Access-Control-Max-Age': '600',
        Vary: 'Origin',
      });
      return res.end();
    }

    if (p === '/healthz') return send(res, 200, { status: 'ok' });

    if (p === '/v1/sessions') {
      if (req.method !== 'POST') throw new ApiError(405, 'method_not_allowed', 'POST only');
      auth(req);
      const body = await readBody(req);
      return send(res, 201, createSession(body));
    }

    if ((m = /^\/v1\/sessions\/([^/]+)$/.exec(p))) {
      const s = getSession(decodeURIComponent(m[1]));
      if (req.method === 'GET') {
        auth(req);
        const waitStr = url.searchParams.get('wait');
        if (waitStr != null) {
          const wait = Number(waitStr);
          if (!Number.isInteger(wait) || wait < 0 || wait > 30) throw new ApiError(400, 'invalid_request', 'wait must be 0..30');
          const vStr = url.searchParams.get('version');
          const since = vStr == null ? s.version : Number(vStr);
          if (s.version === since && !isTerminal(s.status) && wait > 0) {
            record('rp_wait', { id: s.id, version: since });
            await new Promise((resolve) => {
              const t = setTimeout(() => {
                s.waiters.delete(done);
                resolve();
              }, wait * 1000);
              const done = () => {
                clearTimeout(t);
                resolve();
              };
              s.waiters.add(done);
              res.on('close', done);
            });
          }
        }
        return send(res, 200, rpView(s));
      }
      if (req.method === 'DELETE') {
        if (url.searchParams.has('t')) {
          browserCors(req, res);
          browserAuth(s, url);
        } else auth(req);
        record('delete', { id: s.id, via: url.searchParams.has('t') ? 'browser_token' : 'api_key', origin: req.headers.origin || null });
        if (isTerminal(s.status)) throw new ApiError(409, 'conflict', 'session already ' + s.status);
        transition(s, 'cancelled', null);
        return send(res, 200, rpView(s));
      }
      throw new ApiError(405, 'method_not_allowed', 'GET or DELETE');
    }

    if ((m = /^\/v1\/sessions\/([^/]+)\/(events|qr\.svg)$/.exec(p))) {
      if (req.method !== 'GET') throw new ApiError(405, 'method_not_allowed', 'GET only');
      browserCors(req, res);
      const s = getSession(decodeURIComponent(m[1]));
      browserAuth(s, url);
      if (m[2] === 'events') return sseStream(req, res, s);
      record('qr_svg', { id: s.id, qr_seq: s.qr_seq, origin: req.headers.origin || null });
      // Rendered only while pending: 410 after expiry, 409 once scanned or otherwise finished.
      if (s.status === 'expired') throw new ApiError(410, 'expired', 'session expired');
      if (s.status !== 'pending') throw new ApiError(409, 'conflict', 'session is ' + s.status);
      res.writeHead(200, { 'Content-Type': 'image/svg+xml', 'Cache-Control': 'no-store' });
      return res.end(qrSvg(s.qr_text));
    }

    if ((m = /^\/q\/([^/]+)$/.exec(p))) {
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
      return res.end('<!doctype html><meta charset="utf-8"><title>扫码</title><p>请使用手机证书应用扫描此二维码。</p>');
    }

    if ((m = /^\/v1\/conversations\/([^/]+)(\/requests(?:\/([^/]+))?)?$/.exec(p))) {
      const c = conversations.get(decodeURIComponent(m[1]));
      if (!c) throw new ApiError(404, 'not_found', 'no such conversation');
      if (!m[2] && req.method === 'DELETE') {
        if (url.searchParams.has('t')) {
          browserCors(req, res);
          if (url.searchParams.get('t') !== c.token) throw new ApiError(401, 'unauthorized', 'wrong token');
        } else auth(req);
        if (c.ended_by) throw new ApiError(410, 'expired', 'already ended');
        endConversation(c.id, 'requester');
        return send(res, 200, { id: c.id, ended_by: 'requester' });
      }
      auth(req);
      if (m[2] && !m[3] && req.method === 'POST') {
        const body = await readBody(req);
        for (const k of Object.keys(body || {})) if (!['tbs_b64', 'display'].includes(k)) throw new ApiError(400, 'invalid_request', `unknown field ${k}`);
        if (!body || !body.tbs_b64) throw new ApiError(400, 'invalid_request', 'tbs_b64 required');
        if (c.ended_by) throw new ApiError(410, 'expired', 'conversation ended');
        const rid = 'req_' + rand(9);
        const r = { id: rid, status: 'pending', tbs_b64: body.tbs_b64, display: body.display, expires_at: iso(Date.now() + 60000), waiters: new Set() };
        c.requests.set(rid, r);
        record('conversation_request', { id: c.id, rid });
        return send(res, 202, { request_id: rid, expires_at: r.expires_at });
      }
      if (m[3] && req.method === 'GET') {
        const r = c.requests.get(decodeURIComponent(m[3]));
        if (!r) throw new ApiError(404, 'not_found', 'no such request');
        const wait = Number(url.searchParams.get('wait') || 0);
        if (r.status === 'pending' && wait > 0) {
          await new Promise((resolve) => {
            const t = setTimeout(resolve, Math.min(wait, 30) * 1000);
            r.waiters.add(() => {
              clearTimeout(t);
              resolve();
            });
          });
        }
        const v = { request_id: r.id, status: r.status, expires_at: r.expires_at };
        if (r.signature_b64) v.signature_b64 = r.signature_b64;
        if (r.auto_confirmed != null) v.auto_confirmed = r.auto_confirmed;
        if (r.reason) v.reason = r.reason;
        return send(res, 200, v);
      }
      throw new ApiError(405, 'method_not_allowed', 'not allowed');
    }

    // Test hooks, for driving the mock by hand.
    if ((m = /^\/_mock\/sessions\/([^/]+)\/(\w+)$/.exec(p)) && req.method === 'POST') {
      const id = decodeURIComponent(m[1]);
      const fn = phone[m[2]] || control[m[2]];
      if (!fn) throw new ApiError(404, 'not_found', 'no such hook');
      return send(res, 200, { ok: fn(id) });
    }
    if (p === '/_mock/log') return send(res, 200, log);

    throw new ApiError(404, 'not_found', 'no such endpoint');
  }

  const server = http.createServer((req, res) => {
    route(req, res).catch((err) => {
      if (res.headersSent) return res.destroy();
      if (err instanceof ApiError) return send(res, err.status, { error: { code: err.code, message: err.message } }, err.headers);
      console.error('mock broker:', err);
      send(res, 500, { error: { code: 'internal', message: 'internal error' } });
    });
  });

  // ---- WebSocket --------------------------------------------------------------------------------

  const wss = new WebSocketServer({ noServer: true });

  function refuseUpgrade(socket, status, code) {
    const body = JSON.stringify({ error: { code, message: code } });
    socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
  }

  server.on('upgrade', (req, socket, head) => {
    const url = new URL(req.url, base);
    let m;
    if ((m = /^\/v1\/sessions\/([^/]+)\/ws$/.exec(url.pathname))) {
      const id = decodeURIComponent(m[1]);
      if (firewall.refuseUpgrades || firewall.refuseIds.has(id)) {
        record('ws_refused', { id });
        return socket.destroy();
      }
      if (firewall.hangUpgrades) {
        record('ws_hung', { id });
        firewall.hanging.add(socket);
        socket.on('close', () => firewall.hanging.delete(socket));
        return;
      }
      const s = sessions.get(id);
      if (!s) return refuseUpgrade(socket, 404, 'not_found');
      if (!originAllowed(req.headers.origin)) return refuseUpgrade(socket, 403, 'forbidden');
      if (url.searchParams.get('t') !== s.browser_token) return refuseUpgrade(socket, 401, 'unauthorized');
      return wss.handleUpgrade(req, socket, head, (ws) => onSessionSocket(ws, s, req));
    }
    if ((m = /^\/v1\/conversations\/([^/]+)\/ws$/.exec(url.pathname))) {
      const c = conversations.get(decodeURIComponent(m[1]));
      if (!c) return refuseUpgrade(socket, 404, 'not_found');
      if (!originAllowed(req.headers.origin)) return refuseUpgrade(socket, 403, 'forbidden');
      if (url.searchParams.get('t') !== c.token) return refuseUpgrade(socket, 401, 'unauthorized');
      return wss.handleUpgrade(req, socket, head, (ws) => onConversationSocket(ws, c));
    }
    refuseUpgrade(socket, 404, 'not_found');
  });

  function onSessionSocket(ws, s, req) {
    record('ws_open', { id: s.id, origin: req.headers.origin || null });
    ws.send(JSON.stringify({ type: 'snapshot', session: browserView(s) }));
    if (isTerminal(s.status)) {
      ws.close(1000);
      record('ws_close', { id: s.id });
      return;
    }
    const ping = setInterval(() => ws.ping(), cfg.pingMs);
    const w = {
      kind: 'ws',
      send: (msg) => ws.send(JSON.stringify(msg)),
      end: () => ws.close(1000),
      kill: () => ws.terminate(),
      restart: () => ws.close(1012, 'service restart: reconnect'),
    };
    s.watchers.add(w);
    ws.on('message', (data) => {
      let msg;
      try {
        msg = JSON.parse(String(data));
      } catch (_) {
        msg = null;
      }
      if (msg && msg.type === 'cancel') {
        record('ws_cancel', { id: s.id });
        if (!transition(s, 'cancelled', null)) {
          ws.send(JSON.stringify({ type: 'error', error: { code: 'conflict', message: 'session already ' + s.status } }));
        }
      } else {
        ws.send(JSON.stringify({ type: 'error', error: { code: 'invalid_request', message: 'only {"type":"cancel"} is accepted' } }));
      }
    });
    ws.on('close', () => {
      clearInterval(ping);
      s.watchers.delete(w);
      record('ws_close', { id: s.id });
    });
  }

  function onConversationSocket(ws, c) {
    record('conversation_ws_open', { id: c.id });
    // Every finished result is sent again on each (re)connect, in request order (docs/protocol.md).
    for (const r of c.requests.values()) if (r.status !== 'pending') ws.send(JSON.stringify(requestResult(r)));
    if (c.ended_by) {
      ws.send(JSON.stringify({ type: 'ended', by: c.ended_by, at: c.ended_at }));
      ws.close(1000);
      return;
    }
    const w = { send: (msg) => ws.send(JSON.stringify(msg)), end: () => ws.close(1000), kill: () => ws.terminate() };
    c.watchers.add(w);
    ws.on('close', () => c.watchers.delete(w));
  }

  await new Promise((resolve) => server.listen(cfg.port, cfg.host, resolve));
  base = `http://${cfg.host}:${server.address().port}`;

  return {
    url: base,
    apiKey: cfg.apiKey,
    config: cfg,
    isMock: true,
    log,
    phone,
    control,
    /** Log entries of one type (and session). */
    events(type, id) {
      return log.filter((e) => e.type === type && (id == null || e.id === id));
    },
    setAllowedOrigins(list) {
      cfg.allowedOrigins = list;
    },
    dropConversation(cid) {
      const c = conversations.get(cid);
      for (const w of c.watchers) w.kill();
      c.watchers.clear();
    },
    async close() {
      for (const s of sessions.values()) {
        for (const t of s.timers) clearTimeout(t);
        for (const w of s.watchers) w.kill();
        notifyWaiters(s);
      }
      for (const c of conversations.values()) for (const w of c.watchers) w.kill();
      for (const sock of firewall.hanging) sock.destroy();
      for (const client of wss.clients) client.terminate();
      server.closeAllConnections?.();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

// Run by hand: node test/mock-broker.mjs --port 8799 --origin http://localhost:8080
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const arg = (name, dflt) => {
    const i = process.argv.indexOf(name);
    return i > 0 ? process.argv[i + 1] : dflt;
  };
  const broker = await startMockBroker({
    port: Number(arg('--port', 8799)),
    allowedOrigins: [arg('--origin', 'http://localhost:8080')],
    apiKey: arg('--api-key', 'mock-api-key'),
  });
  console.log(`mock broker on ${broker.url} (API key ${broker.apiKey}); hooks: POST /_mock/sessions/<id>/<scan|approve|reject|expire|rotate|fail|drop>`);
}
