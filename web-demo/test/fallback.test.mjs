// WebSocket blocked: every session socket is closed by the network; the SDK falls back (SSE, then
// polling) and the login still completes. With SSE blocked too, the SDK polls through the demo
// backend, whose view carries match_code, so number matching still works.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setup, openPhone, scan, confirmWithPin, qrTextOf, shot } from './harness.mjs';

test('fallback: with WebSocket blocked the login completes over SSE / polling', { timeout: 120000 }, async (t) => {
  const { broker, browser } = await setup(t);
  const login = await browser.context.newPage();
  let blocked = 0;
  await login.routeWebSocket(/\/v1\/sessions\/.*\/ws/, (ws) => {
    blocked++;
    ws.close({ code: 1006, reason: 'blocked by test' });
  });
  await login.goto(broker.url + '/demo/login.html');
  const qr = await qrTextOf(login);
  await login.waitForFunction(() => /^(sse|poll)/.test(document.getElementById('transport').textContent), null, { timeout: 30000 });
  assert.ok(blocked >= 1, 'the page tried the WebSocket first');
  const phone = await openPhone(browser, broker.url);
  await scan(phone, qr);
  await login.locator('#outcome', { hasText: '已扫码' }).waitFor({ timeout: 15000 });
  await confirmWithPin(phone);
  await login.locator('#outcome .ok', { hasText: '登录成功' }).waitFor({ timeout: 20000 });
  assert.match(await login.textContent('#transport'), /^(sse|poll)/);
  await shot(login, '07-login-fallback');
});

test('fallback: WebSocket and SSE blocked, 扫码绑定 with number matching polls through the demo backend and still shows the digits', { timeout: 120000 }, async (t) => {
  const { broker, browser, errors } = await setup(t);
  const login = await browser.context.newPage();
  await login.routeWebSocket(/\/v1\/sessions\/.*\/ws/, (ws) => ws.close({ code: 1006, reason: 'blocked by test' }));
  let sse = 0;
  await login.route('**/v1/sessions/*/events?*', (route) => {
    sse++;
    return route.abort('connectionreset');
  });
  await login.goto(broker.url + '/demo/login.html');
  const loginQr = await qrTextOf(login);
  await login.check('input[name=kind][value=bind]');
  const bindQr = await qrTextOf(login, loginQr);
  await login.waitForFunction(() => /^poll/.test(document.getElementById('transport').textContent), null, { timeout: 40000 });
  assert.ok(sse >= 1, 'the page tried SSE before polling');

  const phone = await openPhone(browser, broker.url);
  await scan(phone, bindQr);
  assert.equal(await phone.textContent('#op-kind'), '扫码绑定证书');
  await login.locator('.bzt-match:not([hidden])').waitFor({ timeout: 30000 });
  const code = (await login.textContent('.bzt-match-code')).trim();
  assert.match(code, /^\d\d$/);
  const choices = await phone.$$eval('#match-choices button', (bs) => bs.map((b) => b.dataset.code));
  assert.ok(choices.includes(code), `${code} is one of ${choices}`);
  assert.match(await login.textContent('#transport'), /^poll/);
  await shot(login, '19-bind-poll-match-code');
  await phone.click(`#match-choices button[data-code="${code}"]`);
  await confirmWithPin(phone);
  await login.locator('#outcome .ok', { hasText: '证书已绑定到当前账号' }).waitFor({ timeout: 30000 });
  assert.deepEqual(errors, []);
});
