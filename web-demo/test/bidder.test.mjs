// What a bidder sees (issue 17): the two QR kinds, results in Chinese with 姓名 / 单位 / 统一社会信用代码
// and Beijing time, every error code in Chinese on the phone page, a refresh that clears the old
// status, the bind panel's own title, and the phone's confirm card after a failure.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { REPO, setup, openPhone, scan, confirmWithPin, qrTextOf, shot } from './harness.mjs';

/** ErrorCode::ALL of the broker, read from its source: a new code without a message fails here. */
function brokerErrorCodes() {
  const src = fs.readFileSync(path.join(REPO, 'crates/bzt-core/src/error.rs'), 'utf8');
  const count = Number(/pub const ALL: \[ErrorCode; (\d+)\]/.exec(src)[1]);
  const codes = [...new Set([...src.matchAll(/ErrorCode::\w+ => "(\w+)"/g)].map((m) => m[1]))];
  assert.equal(codes.length, count);
  return codes;
}

const beijing = (iso) => {
  const d = new Date(Date.parse(iso) + 8 * 3600 * 1000);
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getUTCFullYear()}-${p(d.getUTCMonth() + 1)}-${p(d.getUTCDate())} ${p(d.getUTCHours())}:${p(d.getUTCMinutes())}`;
};

test('two QR kinds: a national certificate is refused in Chinese on the platform tab and accepted on the national tab', { timeout: 150000 }, async (t) => {
  const { broker, browser, errors } = await setup(t);
  const login = await browser.context.newPage();
  await login.goto(broker.url + '/demo/login.html?qr=tabs');
  const tabs = await login.$$eval('.bzt-tab', (bs) => bs.map((b) => [b.textContent, b.getAttribute('aria-selected')]));
  assert.deepEqual(tabs, [['本平台证书', 'true'], ['全国互认证书', 'false']]);
  const platformQr = await qrTextOf(login);
  await shot(login, '20-login-tabs-platform');

  const phone = await openPhone(browser, broker.url, { domain: 'national' });
  assert.equal(await phone.textContent('#cert-domain'), '全国互认证书');
  await scan(phone, platformQr);
  const refusal = await phone.textContent('#domain-refusal');
  assert.match(refusal, /本二维码只接受本平台证书，本机证书是全国互认证书/);
  assert.ok(await phone.isVisible('#domain-refusal'));
  assert.ok(!(await phone.isVisible('#pin-field')), 'no PIN for a certificate that cannot be used');
  await shot(phone, '21-phone-refuses-other-kind');
  await phone.click('#approve');
  await phone.locator('#msg', { hasText: '已告知网页' }).waitFor({ timeout: 15000 });
  assert.ok(await phone.locator('#confirm.hidden').count(), 'the confirm card is gone');
  // The page says why, in Chinese, and in the widget too.
  await login.locator('#outcome .bad', { hasText: '本二维码只接受本平台证书' }).waitFor({ timeout: 15000 });
  assert.match(await login.textContent('.bzt-status'), /^已拒绝：本二维码只接受本平台证书/);
  assert.doesNotMatch(await login.textContent('#outcome-main'), /[A-Za-z]{4,}/, 'no English on the result panel');

  // The national tab: a new session limited to national certificates, accepted.
  await login.click('.bzt-tab[data-domain="national"]');
  const nationalQr = await qrTextOf(login, platformQr);
  assert.equal(await login.textContent('#outcome-main'), '等待扫码…', 'the new QR clears the refusal');
  await scan(phone, nationalQr);
  assert.ok(!(await phone.isVisible('#domain-refusal')));
  await confirmWithPin(phone);
  await login.locator('#outcome .ok', { hasText: '登录成功' }).waitFor({ timeout: 15000 });
  assert.equal(await login.textContent('#r-domain'), '全国互认证书');
  await shot(login, '22-login-national-tab');
  assert.deepEqual(errors, []);
});

test('result panel: 姓名, 单位, 统一社会信用代码, 本平台证书 and Beijing time; transport only in the developer panel', { timeout: 120000 }, async (t) => {
  const { broker, browser, errors } = await setup(t);
  const login = await browser.context.newPage();
  await login.goto(broker.url + '/demo/login.html');
  const qr = await qrTextOf(login);
  const phone = await openPhone(browser, broker.url, { cn: '王小明' });
  await scan(phone, qr);
  // After a scan the confirm card is on screen, not below the fold.
  const box = await phone.locator('#confirm h2').boundingBox();
  assert.ok(box && box.y >= 0 && box.y < 900, `confirm card in view (y = ${box && box.y})`);
  await confirmWithPin(phone);
  await login.locator('#outcome .ok', { hasText: '登录成功' }).waitFor({ timeout: 15000 });
  assert.equal(await login.textContent('#r-name'), '王小明');
  assert.equal(await login.textContent('#r-org'), '示例建设有限公司');
  assert.equal(await login.textContent('#r-uscc'), '91350100M000100Y43');
  assert.equal(await login.textContent('#r-domain'), '本平台证书');
  const time = await login.textContent('#r-time');
  assert.match(time, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d（北京时间）$/);
  // Beijing time of the session's completion, as the broker recorded it (UTC).
  const id = await login.evaluate(() => demoWidget().session.id);
  const view = await (await fetch(broker.url + '/demo/api/sessions/' + id)).json();
  assert.ok(time.startsWith(beijing(view.completed_at)), `${time} is ${view.completed_at} in Beijing time`);
  assert.equal(await login.textContent('#r-serial'), (await phone.textContent('#cert-serial')).trim());
  // Raw subject, UTC times and the transport are developer details, folded away.
  assert.equal(await login.getAttribute('#dev', 'open'), null);
  assert.doesNotMatch(await login.textContent('#outcome-main'), /CN=|Z$|\bws\b|信任域/);
  assert.match(await login.textContent('#dev'), /CN=王小明/);
  await shot(login, '23-login-readable-result');
  assert.deepEqual(errors, []);
});

test('bind: the panel is titled 绑定结果; a wrong number is refused in Chinese on the phone and the page', { timeout: 120000 }, async (t) => {
  const { broker, browser, errors } = await setup(t);
  const login = await browser.context.newPage();
  await login.goto(broker.url + '/demo/login.html?kind=bind');
  const qr = await qrTextOf(login);
  assert.equal(await login.textContent('#outcome-title'), '绑定结果');
  const phone = await openPhone(browser, broker.url);
  await scan(phone, qr);
  await login.locator('.bzt-match:not([hidden])').waitFor({ timeout: 15000 });
  const right = (await login.textContent('.bzt-match-code')).trim();
  const wrong = (await phone.$$eval('#match-choices button', (bs) => bs.map((b) => b.dataset.code))).find((c) => c !== right);
  await phone.click(`#match-choices button[data-code="${wrong}"]`);
  await confirmWithPin(phone);
  await phone.locator('#msg', { hasText: '确认失败：选择的数字与网页显示的不一致' }).waitFor({ timeout: 15000 });
  assert.doesNotMatch(await phone.textContent('#msg'), /[A-Za-z]{4,}/, 'no broker English on the phone');
  assert.ok(await phone.locator('#confirm.hidden').count(), 'the confirm card goes away after a failure');
  await login.locator('#outcome .bad', { hasText: '手机上选择的数字与网页显示的不一致' }).waitFor({ timeout: 15000 });
  assert.doesNotMatch(await login.textContent('#outcome-main'), /match_failed/);
  await shot(phone, '24-phone-wrong-number');
  assert.deepEqual(errors, []);
});

test('every error code is rendered in Chinese on the phone page', { timeout: 60000 }, async (t) => {
  const { broker, browser, errors } = await setup(t);
  const phone = await browser.context.newPage();
  await phone.goto(broker.url + '/demo/phone.html');
  await phone.waitForFunction(() => window.BztSdk && window.sayError);
  for (const code of brokerErrorCodes()) {
    // As api() throws it: the broker's English message, its code.
    await phone.evaluate((code) => sayError('确认失败', Object.assign(new Error('the broker said something in English'), { code })), code);
    const text = await phone.textContent('#msg');
    assert.match(text, /^确认失败：[^A-Za-z]*[\u4e00-\u9fff][^A-Za-z]*$/, `${code}: ${text}`);
  }
  // And for real: a QR that was already scanned.
  const created = await (await fetch(broker.url + '/demo/api/sessions', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{"kind":"login"}' })).json();
  const other = await openPhone(browser, broker.url, { cn: '李四' });
  await scan(other, created.qr_text);
  await phone.fill('#cn', '张三');
  await phone.fill('#pin-new', '135790');
  await phone.click('#issue');
  await phone.locator('#cert-serial').waitFor({ timeout: 20000 });
  await phone.fill('#qr-input', created.qr_text);
  await phone.click('#claim');
  await phone.locator('#msg', { hasText: '扫码失败：该二维码已被扫描' }).waitFor({ timeout: 10000 });
  assert.deepEqual(errors, []);
});

test('a refresh clears the old status: no 已过期 next to a fresh QR', { timeout: 150000 }, async (t) => {
  const { broker, browser } = await setup(t);
  const login = await browser.context.newPage();
  await login.goto(broker.url + '/demo/login.html?ttl=30');
  const first = await qrTextOf(login);
  await login.locator('#outcome .bad', { hasText: '已过期' }).waitFor({ timeout: 50000 });
  await login.locator('.bzt-overlay', { hasText: '二维码已过期，点击刷新' }).click();
  await qrTextOf(login, first);
  await login.locator('.bzt-status', { hasText: '等待扫码' }).waitFor({ timeout: 10000 });
  assert.equal(await login.textContent('#outcome-main'), '等待扫码…');
  assert.equal(await login.textContent('#dev-cert'), '');
  await shot(login, '25-login-refreshed');
});
