// 扫码登录 end to end: login page (SDK widget) + phone simulator page, real broker, real SM2 in the page.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setup, openPhone, scan, confirmWithPin, qrTextOf, shot } from './harness.mjs';

test('login: QR, phone scans and confirms with PIN, page shows 已扫码 then the subject', { timeout: 120000 }, async (t) => {
  const { broker, browser, errors } = await setup(t);
  const login = await browser.context.newPage();
  await login.goto(broker.url + '/demo/login.html');
  await login.locator('.bzt-widget img').waitFor({ timeout: 20000 });
  const qr = await qrTextOf(login);
  assert.match(qr, /^http:\/\/127\.0\.0\.1:\d+\/q\/[^#]+#.+/);
  await shot(login, '01-login-qr');

  const phone = await openPhone(browser, broker.url);
  await scan(phone, qr);
  assert.equal(await phone.textContent('#op-app'), '示例交易平台');
  assert.equal(await phone.textContent('#op-kind'), '扫码登录');
  assert.match(await phone.textContent('#op-title'), /登录/);
  assert.match(await phone.textContent('#op-requester'), /127\.0\.0\.1/);
  await shot(phone, '02-phone-confirm');

  await login.locator('#outcome', { hasText: '已扫码' }).waitFor({ timeout: 15000 });
  await login.locator('.bzt-overlay', { hasText: '已扫码' }).waitFor({ timeout: 5000 });
  await shot(login, '03-login-scanned');

  // A wrong PIN is refused in the page and nothing is sent.
  await confirmWithPin(phone, '000000');
  await phone.locator('#msg', { hasText: 'PIN 码错误' }).waitFor();
  assert.equal(await login.locator('#outcome .ok').count(), 0);

  await confirmWithPin(phone);
  await phone.locator('#msg', { hasText: '已确认' }).waitFor({ timeout: 15000 });
  await login.locator('#outcome .ok', { hasText: '登录成功' }).waitFor({ timeout: 15000 });
  const outcome = await login.textContent('#outcome');
  assert.match(outcome, /CN=张三/);
  assert.match(outcome, /示例建设有限公司/);
  const serial = (await phone.textContent('#cert-serial')).trim();
  assert.ok(outcome.includes(serial), `the page shows the phone's certificate serial ${serial}`);
  await shot(login, '04-login-done');
  await shot(phone, '05-phone-done');
  assert.deepEqual(errors, []);
});

test('login: the phone can reject, and the page says 已拒绝', { timeout: 120000 }, async (t) => {
  const { broker, browser } = await setup(t);
  const login = await browser.context.newPage();
  await login.goto(broker.url + '/demo/login.html');
  const qr = await qrTextOf(login);
  const phone = await openPhone(browser, broker.url);
  await scan(phone, qr);
  await phone.click('#reject');
  await login.locator('#outcome .bad', { hasText: '已拒绝' }).waitFor({ timeout: 15000 });
});
