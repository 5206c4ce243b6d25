// Transport fallback: WebSocket → Server-Sent Events → polling.
import { before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { setup, shot, waitStatus, sessionOf, waitFor, MOCK_ONLY, test } from './harness.mjs';

let env;
before(async () => {
  env = await setup();
});
after(async () => {
  await env?.teardown();
});
afterEach(() => {
  if (!env.broker.isMock) return;
  env.broker.control.refuseUpgrades(false);
  env.broker.control.hangUpgrades(false);
  env.broker.setAllowedOrigins([env.rp.origin]);
});

const transports = (page) => page.evaluate(() => eventsOf('transport').filter((e) => e.state === 'fallback').map((e) => e.from + '→' + e.transport));

test('WebSocket refused → falls back to SSE and completes', { skip: MOCK_ONLY }, async () => {
  const { broker } = env;
  broker.control.refuseUpgrades(true);
  const page = await env.newPage('/');
  await page.evaluate(() => mountWidget({ widget: { watchOptions: { backoffBaseMs: 100 } } }));
  const session = await sessionOf(page);
  await page.waitForFunction(() => widget.watcher.transport === 'sse' && widget.watcher.connection === 'open');
  assert.deepEqual(await transports(page), ['ws→sse']);
  assert.equal(broker.events('ws_refused', session.id).length, 2, 'fallbackAfter = 2 attempts');
  await waitFor(() => broker.events('sse_open', session.id).length === 1);

  await broker.phone.scan(session);
  await waitStatus(page, '已扫码，请在手机上确认');
  await broker.phone.approve(session);
  const outcome = await page.evaluate(() => widget.result);
  assert.equal(outcome.status, 'approved');
  assert.ok(outcome.result.certificate);
  assert.equal(await page.evaluate(() => eventsOf('result').length), 1);
  await shot(page, 'fallback-sse-approved');
  await page.close();
});

test('WebSocket that never opens (hangs) → timeout → SSE', { skip: MOCK_ONLY }, async () => {
  const { broker } = env;
  broker.control.hangUpgrades(true);
  const page = await env.newPage('/');
  await page.evaluate(() => mountWidget({ widget: { watchOptions: { wsConnectTimeoutMs: 700, backoffBaseMs: 100 } } }));
  const session = await sessionOf(page);
  await page.waitForFunction(() => widget.watcher.transport === 'sse' && widget.watcher.connection === 'open', null, { timeout: 10000 });
  assert.equal(broker.events('ws_hung', session.id).length, 2);
  await broker.phone.scan(session);
  await broker.phone.approve(session);
  assert.equal((await page.evaluate(() => widget.result)).status, 'approved');
  await page.close();
});

test('WebSocket and SSE both blocked → polling through the page backend completes', { skip: MOCK_ONLY }, async () => {
  const { broker } = env;
  broker.control.refuseUpgrades(true);
  const page = await env.newPage('/');
  // A proxy that kills event streams: every request to /events fails at the network level.
  let sseAttempts = 0;
  await page.route('**/v1/sessions/*/events?*', (route) => {
    sseAttempts++;
    return route.abort('connectionreset');
  });
  await page.evaluate(() => mountWidget({ usePoll: true, widget: { watchOptions: { backoffBaseMs: 100 } } }));
  const session = await sessionOf(page);
  await page.waitForFunction(() => widget.watcher.transport === 'poll');
  assert.deepEqual(await transports(page), ['ws→sse', 'sse→poll']);
  assert.equal(sseAttempts, 2);
  assert.equal(broker.events('sse_open', session.id).length, 0);
  await waitFor(() => broker.events('rp_wait', session.id).length >= 1); // a long-poll is waiting

  await broker.phone.scan(session);
  await waitStatus(page, '已扫码，请在手机上确认');
  await broker.phone.approve(session);
  const outcome = await page.evaluate(() => widget.result);
  assert.equal(outcome.status, 'approved');
  assert.equal(outcome.result.certificate.serial, '5a17c0de');
  assert.equal(await page.evaluate(() => eventsOf('result').length), 1);
  assert.deepEqual(await page.evaluate(() => eventsOf('status').map((s) => s.status)), ['pending', 'scanned', 'approved']);
  await shot(page, 'fallback-poll-approved');
  await page.close();
});

test('polling through the page backend shows the number-matching code (match_code in the RP view)', async () => {
  const { broker } = env;
  const page = await env.newPage('/');
  // Block both push paths in the page itself, so this runs against the mock and the real broker.
  await page.routeWebSocket(/\/v1\/sessions\/.*\/ws/, (ws) => ws.close({ code: 1006, reason: 'blocked by test' }));
  await page.route('**/v1/sessions/*/events?*', (route) => route.abort('connectionreset'));
  await page.evaluate(() =>
    mountWidget({ usePoll: true, body: { kind: 'bind', number_match: true, display: { title: '绑定证书' } }, widget: { watchOptions: { backoffBaseMs: 100 } } }),
  );
  const session = await sessionOf(page);
  await page.waitForFunction(() => widget.watcher.transport === 'poll', null, { timeout: 15000 });
  await broker.phone.scan(session);
  await waitStatus(page, '已扫码，请在手机上确认');
  await page.waitForFunction(() => !document.querySelector('.bzt-match').hidden, null, { timeout: 10000 });
  const shown = await page.textContent('.bzt-match-code');
  assert.match(shown, /^\d\d$/);
  if (broker.isMock) assert.equal(shown, broker.control.session(session.id).match_code);
  const ev = (await page.evaluate(() => eventsOf('status'))).find((e) => e.status === 'scanned');
  assert.equal(ev.match_code, shown);
  assert.equal(await page.evaluate(() => widget.watcher.matchCode), shown);
  await shot(page, 'fallback-poll-number-match');
  await page.evaluate(() => widget.destroy());
  await page.close();
});

test("poll without a pollSession hook: short SSE reads, re-opened", { skip: MOCK_ONLY }, async () => {
  const { broker } = env;
  const page = await env.newPage('/');
  await page.evaluate(() => mountWidget({ widget: { transport: 'poll', watchOptions: { pollWindowMs: 600, pollIntervalMs: 200 } } }));
  const session = await sessionOf(page);
  await waitFor(() => broker.events('sse_open', session.id).length >= 3, 8000);
  await broker.phone.scan(session);
  await waitStatus(page, '已扫码');
  await broker.phone.approve(session);
  assert.equal((await page.evaluate(() => widget.result)).status, 'approved');
  assert.equal(await page.evaluate(() => eventsOf('result').length), 1);
  await page.close();
});

test("transport 'sse': rotation arrives as an SSE qr event (id N.n)", { skip: MOCK_ONLY }, async () => {
  const { broker } = env;
  const page = await env.newPage('/');
  await page.evaluate(() => mountWidget({ widget: { transport: 'sse' } }));
  const session = await sessionOf(page);
  await page.waitForFunction(() => widget.watcher.connection === 'open');
  assert.equal(broker.events('ws_open', session.id).length, 0, 'no WebSocket tried');
  broker.control.rotate(session.id);
  await page.waitForFunction(() => eventsOf('qr').length === 1);
  assert.equal((await page.evaluate(() => eventsOf('qr')))[0].qr_text, broker.control.session(session.id).qr_text);
  await page.waitForFunction(() => document.querySelector('.bzt-qr').getAttribute('data-qr-rev') === '2');
  await broker.phone.scan(session);
  await broker.phone.approve(session);
  assert.equal((await page.evaluate(() => widget.result)).status, 'approved');
  await page.close();
});

test('origin not allowed: opaque to the page, so it retries with backoff and says it is reconnecting', { skip: MOCK_ONLY }, async () => {
  const { broker } = env;
  broker.setAllowedOrigins(['https://other.example']);
  const page = await env.newPage('/');
  await page.evaluate(() => mountWidget({ widget: { watchOptions: { backoffBaseMs: 200 } } }));
  const session = await sessionOf(page);
  // The broker's 403 carries no CORS headers, so the browser only sees network errors.
  await page.waitForFunction(() => !document.querySelector('.bzt-hint').hidden, null, { timeout: 8000 });
  assert.equal(await page.textContent('.bzt-hint'), '网络连接中断，正在重连…');
  await waitStatus(page, '等待扫码');
  const attempts = broker.log.filter((e) => e.id === session.id || e.type === 'preflight').length;
  assert.ok(attempts < 30, `backoff keeps attempts bounded (${attempts})`);
  const errs = await page.evaluate(() => eventsOf('error'));
  assert.ok(errs.length > 0 && errs.every((e) => !e.fatal));
  // Once the origin is allowed again the next attempt connects.
  broker.setAllowedOrigins([env.rp.origin]);
  await page.waitForFunction(() => widget.watcher.connection === 'open', null, { timeout: 15000 });
  await page.waitForFunction(() => document.querySelector('.bzt-hint').hidden);
  await broker.phone.scan(session);
  await broker.phone.approve(session);
  assert.equal((await page.evaluate(() => widget.result)).status, 'approved');
  await page.close();
});

test('a readable 401 (wrong browser token) is fatal: result rejects, widget offers a retry', { skip: MOCK_ONLY }, async () => {
  const { rp } = env;
  rp.transformAnswer = (a) => {
    const bad = (u) => u.replace(a.browser_token, 'wrong-token');
    return { ...a, browser_token: 'wrong-token', ws_url: bad(a.ws_url), events_url: bad(a.events_url), qr_svg_url: bad(a.qr_svg_url) };
  };
  try {
    const page = await env.newPage('/');
    await page.evaluate(() => {
      mountWidget({ widget: { watchOptions: { backoffBaseMs: 50 } } });
      window.outcome = widget.result.then((o) => 'resolved ' + o.status, (e) => 'rejected ' + e.code);
    });
    assert.equal(await page.evaluate(() => window.outcome), 'rejected unauthorized');
    await waitStatus(page, '失败');
    const fatal = (await page.evaluate(() => eventsOf('error'))).filter((e) => e.fatal);
    assert.equal(fatal.length, 1);
    assert.equal(fatal[0].code, 'unauthorized');
    assert.equal(await page.textContent('.bzt-overlay'), '点击重新获取二维码');
    rp.transformAnswer = null;
    await page.click('.bzt-overlay');
    await page.waitForFunction(() => widget.watcher && widget.watcher.connection === 'open');
    await page.close();
  } finally {
    rp.transformAnswer = null;
  }
});
