// 扫码 with the camera: Chromium's fake camera plays a YUV4MPEG2 video, written here, of the QR
// code the login page shows for a real session (drawn from the broker's qr.svg); the phone page
// decodes it with the vendored jsQR, claims the session and confirms with the PIN.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { setup, launchBrowser, openPhone, confirmWithPin, qrTextOf, shot, tempDir, qrY4m, fakeCameraArgs } from './harness.mjs';

test('camera: the phone page scans the login QR from a (fake) camera and logs in', { timeout: 150000 }, async (t) => {
  const { broker, browser, errors } = await setup(t);
  const login = await browser.context.newPage();
  await login.goto(broker.url + '/demo/login.html');
  const qr = await qrTextOf(login);
  // `[src]`: the <img> is in the page before the widget has loaded the QR into it.
  const img = login.locator('.bzt-widget img[src]');
  await img.waitFor({ timeout: 20000 });
  // The widget's image (a blob: or the broker's qr.svg URL): read it in the page.
  const svg = await login.evaluate(async (src) => (await fetch(src)).text(), await img.getAttribute('src'));
  assert.match(svg, /^<\?xml|<svg/);

  const y4m = qrY4m(svg, path.join(tempDir(t), 'qr.y4m'));
  const camera = await launchBrowser(fakeCameraArgs(y4m));
  t.after(() => camera.close());
  const camErrors = [];
  camera.context.on('page', (p) => p.on('pageerror', (e) => camErrors.push(String(e))));

  const phone = await openPhone(camera, broker.url);
  await phone.click('#camera');
  await phone.locator('#confirm:not(.hidden)').waitFor({ timeout: 30000 });
  assert.equal(await phone.inputValue('#qr-input'), qr, 'the decoded text is the QR text of the session');
  assert.equal(await phone.textContent('#op-kind'), '扫码登录');
  assert.ok(await phone.locator('#camera-box').isHidden(), 'the camera is closed after a scan');
  await shot(phone, '18-phone-camera-scanned');
  await login.locator('#outcome', { hasText: '已扫码' }).waitFor({ timeout: 15000 });
  await confirmWithPin(phone);
  await login.locator('#outcome .ok', { hasText: '登录成功' }).waitFor({ timeout: 15000 });
  assert.ok((await login.textContent('#outcome')).includes((await phone.textContent('#cert-serial')).trim()));
  assert.deepEqual([...errors, ...camErrors], []);
});

test('camera: without a camera the page says so and pasting still works', { timeout: 120000 }, async (t) => {
  const { broker, browser } = await setup(t);
  const phone = await openPhone(browser, broker.url);
  // No fake device: make getUserMedia fail the way a denied permission does.
  await phone.evaluate(() => {
    navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException('denied', 'NotAllowedError'));
  });
  await phone.click('#camera');
  await phone.locator('#msg', { hasText: '无法打开摄像头：未获得摄像头权限' }).waitFor();
  assert.ok(await phone.locator('#camera').isEnabled());
  assert.ok(await phone.locator('#qr-input').isVisible());
});
