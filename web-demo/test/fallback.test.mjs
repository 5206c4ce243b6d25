// WebSocket blocked: every session socket is closed by the network; the SDK falls back (SSE, then
// polling) and the login still completes.
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
