// Shared test plumbing: the broker under test (the mock, or a real one via BZT_BROKER_URL), a tiny
// relying-party server (the page's "own backend", using node/ for the API key), and Debian's
// Chromium driven by playwright-core.
import http from 'node:http';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test as nodeTest } from 'node:test';
import { chromium } from 'playwright-core';
import { startMockBroker } from './mock-broker.mjs';
import { createClient, BztApiError } from '../node/index.mjs';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const OUT = path.join(ROOT, 'test-output');
export const CHROMIUM = process.env.BZT_CHROMIUM || '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-quic',
  '--no-first-run',
  '--disable-sync',
];

/** node:test's test() with a per-test timeout, so a hang fails that test instead of the run. */
export function test(name, opts, fn) {
  if (typeof opts === 'function') {
    fn = opts;
    opts = {};
  }
  return nodeTest(name, { timeout: Number(process.env.BZT_TEST_TIMEOUT_MS || 45000), ...opts }, fn);
}

/** True when the tests target a real broker (BZT_BROKER_URL) instead of the mock. */
export const REAL = !!process.env.BZT_BROKER_URL;
/** Pass as `{ skip: MOCK_ONLY }` to tests that need the mock's hooks (expire, drop, firewall...). */
export const MOCK_ONLY = REAL ? 'needs the mock broker hooks (BZT_BROKER_URL is set)' : false;

export function assertChromium() {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(
      `Chromium not found at ${CHROMIUM}. These tests run in real headless Chromium: ` +
        `install it with "apt-get install -y chromium" (or set BZT_CHROMIUM to its path).`,
    );
  }
}

/** Debian's Chromium with a fresh, throw-away user-data-dir. */
export async function launchBrowser() {
  assertChromium();
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'bzt-sdk-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 480, height: 520 },
    locale: 'zh-CN',
  });
  return {
    context,
    async close() {
      await context.close().catch(() => {});
      fs.rmSync(userDataDir, { recursive: true, force: true });
    },
  };
}

/**
 * The broker under test. With BZT_BROKER_URL (and BZT_API_KEY) it is that broker, whose phone is
 * driven by the module named by BZT_PHONE_DRIVER (exporting async scan({id, qr_text}),
 * approve({id}), reject({id}, reason)); the page origin must be in the app's allowed_origins
 * (BZT_RP_PORT fixes the RP server's port for that). Otherwise it is the mock.
 */
export async function startBroker(opts = {}) {
  if (REAL) {
    let driver = null;
    if (process.env.BZT_PHONE_DRIVER) driver = await import(path.resolve(process.env.BZT_PHONE_DRIVER));
    const need = () => {
      if (!driver) throw new Error('set BZT_PHONE_DRIVER to a phone driver module to run against a real broker');
      return driver;
    };
    return {
      url: process.env.BZT_BROKER_URL.replace(/\/+$/, ''),
      apiKey: process.env.BZT_API_KEY,
      isMock: false,
      phone: {
        scan: (s) => need().scan(s),
        approve: (s, o) => need().approve(s, o),
        reject: (s, r) => need().reject(s, r),
      },
      setAllowedOrigins() {},
      async close() {},
    };
  }
  const mock = await startMockBroker({ realTimers: false, ...opts });
  const phone = mock.phone;
  return {
    ...mock,
    mock,
    // The harness's phone takes the session (id + qr_text) so the same tests can drive a real phone.
    phone: {
      scan: (s, device) => phone.scan(s.id ?? s, device),
      approve: (s, o) => phone.approve(s.id ?? s, o),
      reject: (s, r) => phone.reject(s.id ?? s, r),
      respond: phone.respond,
      endConversation: phone.endConversation,
    },
  };
}

const PAGE = `<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>示例交易平台 — 登录</title>
<style>body{font-family:sans-serif;margin:16px} h1{font-size:18px}</style></head>
<body><h1>示例交易平台 扫码登录</h1><div id="login"></div><div id="conv"></div>
<script src="/dist/bzt-sdk.js"></script><script src="/rp.js"></script></body></html>`;

const ESM_PAGE = `<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>ESM</title></head>
<body><div id="login"></div><div id="conv"></div>
<script type="module">import * as BztSdk from '/dist/bzt-sdk.mjs'; window.BztSdk = BztSdk; window.esmReady = true;</script>
<script src="/rp.js"></script></body></html>`;

// What the page's own code looks like: it talks to its own backend, never to the API key.
const RP_JS = `
window.events = [];
function plain(v) {
  if (v instanceof Error) return { name: v.name, code: v.code, message: v.message, fatal: v.fatal, status: v.status };
  return JSON.parse(JSON.stringify(v));
}
window.record = (type) => (ev) => window.events.push({ type, ev: plain(ev) });
window.eventsOf = (type) => window.events.filter((e) => e.type === type).map((e) => e.ev);
async function json(res) {
  const body = await res.json().catch(() => null);
  if (!res.ok) { const e = new Error((body && body.error && body.error.message) || 'HTTP ' + res.status); e.code = body && body.error && body.error.code; e.status = res.status; throw e; }
  return body;
}
window.rp = {
  createSession: (body) => fetch('/api/sessions', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body || {}) }).then(json),
  pollSession: ({ id, version, wait, signal }) => fetch('/api/sessions/' + encodeURIComponent(id) + '/poll?version=' + version + '&wait=' + wait, { signal }).then(json),
  sendRequest: ({ conversation_id, tbs_b64, display }) => fetch('/api/conversations/' + encodeURIComponent(conversation_id) + '/requests', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ tbs_b64, display }) }).then(json),
  pollRequest: ({ conversation_id, request_id, wait }) => fetch('/api/conversations/' + encodeURIComponent(conversation_id) + '/requests/' + encodeURIComponent(request_id) + '?wait=' + (wait || 0)).then(json),
  endConversation: ({ id }) => fetch('/api/conversations/' + encodeURIComponent(id), { method: 'DELETE' }).then(json),
};
window.mountWidget = (opts) => {
  opts = opts || {};
  window.widget = BztSdk.createLoginWidget(Object.assign({
    container: '#login',
    createSession: () => rp.createSession(opts.body),
    pollSession: opts.usePoll ? rp.pollSession : undefined,
    onStatus: record('status'), onResult: record('result'), onQr: record('qr'),
    onError: record('error'), onTransport: record('transport'), onSession: record('session'),
  }, opts.widget || {}));
  return true;
};
`;

/**
 * The relying party: serves the test pages and dist/, and implements the page's backend with the
 * Node helper (createSession, long-poll for the poll fallback, conversation requests).
 */
export async function startRpServer(broker, opts = {}) {
  const client = createClient({ apiKey: broker.apiKey, baseUrl: broker.url });
  const rp = { creates: [], createBody: opts.createBody || {} };
  const send = (res, status, body, type = 'application/json; charset=utf-8') => {
    res.writeHead(status, { 'Content-Type': type, 'Cache-Control': 'no-store' });
    res.end(typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body));
  };
  const readJson = async (req) => {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const t = Buffer.concat(chunks).toString('utf8');
    return t ? JSON.parse(t) : {};
  };
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://x');
    const p = url.pathname;
    let m;
    try {
      if (p === '/' || p === '/index.html') return send(res, 200, PAGE, 'text/html; charset=utf-8');
      if (p === '/esm.html') return send(res, 200, ESM_PAGE, 'text/html; charset=utf-8');
      if (p === '/rp.js') return send(res, 200, RP_JS, 'text/javascript; charset=utf-8');
      if ((m = /^\/dist\/(bzt-sdk\.m?js)$/.exec(p))) {
        return send(res, 200, fs.readFileSync(path.join(ROOT, 'dist', m[1])), 'text/javascript; charset=utf-8');
      }
      if (p === '/api/sessions' && req.method === 'POST') {
        const body = await readJson(req);
        if (rp.createDelayMs) await new Promise((r) => setTimeout(r, rp.createDelayMs));
        if (rp.failNextCreate) {
          rp.failNextCreate = false;
          return send(res, 503, { error: { code: 'unavailable', message: 'test: create failed' } });
        }
        const answer = await client.createSession({
          kind: 'login',
          display: { title: '登录 示例交易平台', detail: 'SDK 测试' },
          ...rp.createBody,
          ...body,
        });
        rp.creates.push(answer);
        if (rp.transformAnswer) return send(res, 200, rp.transformAnswer(answer));
        return send(res, 200, answer);
      }
      if ((m = /^\/api\/sessions\/([^/]+)\/poll$/.exec(p))) {
        const v = url.searchParams.get('version');
        const view = await client.waitSession(decodeURIComponent(m[1]), v == null ? undefined : Number(v), Number(url.searchParams.get('wait') || 25));
        return send(res, 200, view);
      }
      if ((m = /^\/api\/conversations\/([^/]+)\/requests$/.exec(p)) && req.method === 'POST') {
        return send(res, 200, await client.sendConversationRequest(decodeURIComponent(m[1]), await readJson(req)));
      }
      if ((m = /^\/api\/conversations\/([^/]+)\/requests\/([^/]+)$/.exec(p))) {
        return send(res, 200, await client.getConversationRequest(decodeURIComponent(m[1]), decodeURIComponent(m[2]), Number(url.searchParams.get('wait') || 0)));
      }
      if ((m = /^\/api\/conversations\/([^/]+)$/.exec(p)) && req.method === 'DELETE') {
        return send(res, 200, await client.endConversation(decodeURIComponent(m[1])));
      }
      send(res, 404, { error: { code: 'not_found', message: p } });
    } catch (err) {
      if (err instanceof BztApiError) return send(res, err.status || 502, { error: { code: err.code, message: err.message } });
      send(res, 500, { error: { code: 'internal', message: String(err && err.message) } });
    }
  });
  const port = Number(process.env.BZT_RP_PORT || 0);
  await new Promise((resolve) => server.listen(REAL ? port : 0, '127.0.0.1', resolve));
  rp.origin = `http://127.0.0.1:${server.address().port}`;
  rp.url = (p = '/') => rp.origin + p;
  rp.close = () =>
    new Promise((resolve) => {
      server.closeAllConnections?.();
      server.close(resolve);
    });
  broker.setAllowedOrigins([rp.origin]);
  return rp;
}

/** A broker + RP server + browser for one test file. */
export async function setup(brokerOpts) {
  fs.mkdirSync(OUT, { recursive: true });
  const broker = await startBroker(brokerOpts);
  const rp = await startRpServer(broker);
  const browser = await launchBrowser();
  return {
    broker,
    rp,
    browser,
    async newPage(p = '/') {
      const page = await browser.context.newPage();
      page.pageErrors = [];
      page.on('pageerror', (e) => page.pageErrors.push(e));
      if (process.env.BZT_TEST_DEBUG) page.on('console', (m) => console.log('[page]', m.type(), m.text()));
      await page.goto(rp.url(p));
      await page.waitForFunction(() => window.BztSdk && window.rp);
      return page;
    },
    async teardown() {
      await browser.close();
      await rp.close();
      await broker.close();
    },
  };
}

export async function shot(page, name) {
  await page.screenshot({ path: path.join(OUT, name + '.png') });
}

/** Waits until the widget's status line reads `text` (substring). */
export function waitStatus(page, text, timeout = 15000) {
  return page.waitForFunction((t) => {
    const el = document.querySelector('.bzt-status');
    return el && el.textContent.includes(t);
  }, text, { timeout });
}

/** The widget's current session id (waits for one, different from `notId` if given). */
export async function sessionOf(page, notId) {
  const h = await page.waitForFunction(
    (not) => window.widget && window.widget.session && window.widget.session.id !== not && window.widget.status === 'pending' && window.widget.session,
    notId ?? null,
    { timeout: 15000 },
  );
  return h.jsonValue();
}

export function waitFor(cond, timeout = 10000, step = 25) {
  const end = Date.now() + timeout;
  return new Promise((resolve, reject) => {
    const tick = async () => {
      let v;
      try {
        v = await cond();
      } catch (e) {
        return reject(e);
      }
      if (v) return resolve(v);
      if (Date.now() > end) return reject(new Error('waitFor: timed out'));
      setTimeout(tick, step);
    };
    tick();
  });
}
