// Expiry: login.html?ttl=30 (the broker's minimum), wait for the overlay, click it, the new QR works.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setup, openPhone, scan, confirmWithPin, qrTextOf, shot } from './harness.mjs';

test('expiry: 二维码已过期，点击刷新 appears, clicking gives a new QR that logs in', { timeout: 150000 }, async (t) => {
  const { broker, browser } = await setup(t);
  const login = await browser.context.newPage();
  await login.goto(broker.url + '/demo/login.html?ttl=30');
  const first = await qrTextOf(login);
  const phone = await openPhone(browser, broker.url);
  const overlay = login.locator('.bzt-overlay', { hasText: '二维码已过期，点击刷新' });
  await overlay.waitFor({ timeout: 50000 });
  await shot(login, '06-login-expired');

  // The old code is dead at the broker too.
  await phone.fill('#qr-input', first);
  await phone.click('#claim');
  await phone.locator('#msg', { hasText: '扫码失败' }).waitFor({ timeout: 10000 });

  await overlay.click();
  const second = await qrTextOf(login, first);
  assert.notEqual(second, first);
  await scan(phone, second);
  await confirmWithPin(phone);
  await login.locator('#outcome .ok', { hasText: '登录成功' }).waitFor({ timeout: 15000 });
});
