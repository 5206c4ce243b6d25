// 生成投标文件 then 开标大厅, end to end through the demo pages and three phone pages:
// 张三 seals a binary file (every byte value, a few hundred KiB) to himself, his colleague 李四
// (certificate PEM pasted from 李四's phone page) and a colleague added with 添加同事证书; the
// hall opens the downloaded .bze with 张三's phone and again with 李四's (number matching on),
// and each plaintext download is byte for byte the original; 王五's phone, not a recipient, gets
// the Chinese refusal, and the hall shows it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import smCrypto from 'sm-crypto';
import { setup, openPhone, scan, confirmWithPin, shot, tempDir, download, openHall, pickMatchCode } from './harness.mjs';

const { sm3 } = smCrypto;

/** 300 KiB + 123 bytes, every byte value many times over, not periodic in 256. */
function bidBytes() {
  const n = 300 * 1024 + 123;
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 7 + (i >> 8) * 13) & 0xff;
  return b;
}

/** The QR text `selector` shows, once it is one and differs from `previous`. */
async function qrOf(page, selector, previous = null) {
  await page.waitForFunction(
    ([sel, prev]) => {
      const t = document.querySelector(sel).textContent.trim();
      return t.includes('/q/') && t !== prev;
    },
    [selector, previous],
    { timeout: 20000 },
  );
  return (await page.textContent(selector)).trim();
}

/** Starts a new 扫码解密 at the hall and lets `phone` scan its QR code (a new one each time). */
async function hallScan(hall, phone) {
  const previous = (await hall.textContent('#qr-text')).trim();
  await hall.click('#start');
  const qr = await qrOf(hall, '#qr-text', previous);
  await scan(phone, qr);
  assert.equal(await phone.textContent('#op-kind'), '扫码解密投标文件');
  return qr;
}

test('bid file: sealed to three certificates in the bid tool, opened at the hall by two of them, refused for a non-recipient', { timeout: 240000 }, async (t) => {
  const { broker, browser, errors } = await setup(t);
  const dir = tempDir(t);
  const original = bidBytes();
  for (let v = 0; v < 256; v++) assert.ok(original.includes(v), `byte ${v} occurs`);
  const inputPath = path.join(dir, '示例道路工程投标文件.bin');
  fs.writeFileSync(inputPath, original);
  const originalSm3 = sm3(Array.from(original));

  const zhang = await openPhone(browser, broker.url, { cn: '张三' });
  const li = await openPhone(browser, broker.url, { cn: '李四' });
  const wang = await openPhone(browser, broker.url, { cn: '王五' });
  const serialOf = async (p) => (await p.textContent('#cert-serial')).trim();
  const [zhangSerial, liSerial, wangSerial] = [await serialOf(zhang), await serialOf(li), await serialOf(wang)];
  const liPem = (await li.textContent('#cert-pem')).trim();
  assert.match(liPem, /^-----BEGIN CERTIFICATE-----/);

  // ---- 投标工具: 生成投标文件 ----
  const tool = await browser.context.newPage();
  await tool.goto(broker.url + '/demo/bidtool.html');
  await tool.setInputFiles('#enc-file', inputPath);
  await tool.click('#enc-start');
  await tool.locator('#enc-upload', { hasText: '已上传' }).waitFor({ timeout: 20000 });
  const encQr = await qrOf(tool, '#enc-qr-text');
  await shot(tool, '11-bidtool-encrypt-qr');

  await scan(zhang, encQr);
  assert.equal(await zhang.textContent('#op-kind'), '扫码生成投标文件（多证书加密）');
  assert.match(await zhang.textContent('#op-title'), /生成投标文件：示例道路工程投标文件\.bin/);
  await zhang.click('#add-colleague');
  await zhang.locator('#recipient-list li').nth(1).waitFor({ timeout: 15000 });
  await zhang.fill('#recipients-extra', liPem);
  const listed = await zhang.textContent('#recipient-list');
  assert.ok(listed.includes(zhangSerial), 'own certificate listed first');
  await shot(zhang, '12-phone-encrypt-recipients');
  await confirmWithPin(zhang);
  await zhang.locator('#msg', { hasText: '已确认' }).waitFor({ timeout: 15000 });

  await tool.locator('#enc-download').waitFor({ timeout: 30000 });
  const rows = await tool.$$eval('#enc-recipients tbody tr', (trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent)));
  assert.equal(rows.length, 3, JSON.stringify(rows));
  assert.equal(rows[0][2], zhangSerial);
  assert.match(rows[0][1], /CN=张三/);
  assert.match(rows[1][1], /CN=赵六/, 'the colleague added with 添加同事证书');
  assert.equal(rows[2][2], liSerial);
  assert.ok(!rows.some((r) => r[2] === wangSerial));
  assert.ok((await tool.textContent('#enc-result')).includes(originalSm3), 'the page shows the SM3 of the original');
  await shot(tool, '13-bidtool-sealed');
  const sealedPath = path.join(dir, 'out', '示例道路工程投标文件.bin.bze');
  fs.mkdirSync(path.dirname(sealedPath));
  const dl = await download(tool, '#enc-download', sealedPath);
  assert.equal(dl.suggested, '示例道路工程投标文件.bin.bze');
  const sealed = fs.readFileSync(sealedPath);
  assert.equal(sealed.subarray(0, 4).toString('latin1'), 'BZE1');
  assert.ok(sealed.length > original.length && sealed.indexOf(original.subarray(0, 64)) < 0, 'the body is ciphertext');
  const headerLen = sealed.readUInt32BE(4);
  const header = JSON.parse(sealed.subarray(8, 8 + headerLen).toString('utf8'));
  assert.deepEqual(header.recipients.map((r) => r.serial).filter((s) => s === zhangSerial || s === liSerial), [zhangSerial, liSerial]);

  // ---- 开标大厅: open with 张三's phone, then with 李四's ----
  const hall = await openHall(browser, broker.url, sealedPath);
  for (const [who, phone, name] of [['张三', zhang, 'owner'], ['李四', li, 'colleague']]) {
    const hallQr = await hallScan(hall, phone);
    assert.match(await phone.textContent('#decrypt-info'), /可解密证书 3 个/);
    assert.ok(await phone.locator('#decrypt-refusal').isHidden());
    // Number matching: pick the digits the hall shows.
    if (name === 'colleague') {
      await hall.locator('.bzt-match:not([hidden])').waitFor({ timeout: 15000 });
      await shot(hall, '14-hall-match-code');
    }
    const code = await pickMatchCode(hall, phone);
    assert.match(code, /^\d\d$/);
    await confirmWithPin(phone);
    await hall.locator('#download').waitFor({ timeout: 30000 });
    assert.equal((await hall.textContent('#plain-sm3')).trim(), originalSm3);
    assert.match(await hall.textContent('#plain-size'), new RegExp('^' + original.length + ' 字节'));
    assert.match(await hall.textContent('#signer'), new RegExp('CN=' + who));
    const out = path.join(dir, `opened-${name}.bin`);
    const got = await download(hall, '#download', out);
    assert.equal(got.suggested, '示例道路工程投标文件.bin');
    assert.ok(fs.readFileSync(out).equals(original), `${who}: the plaintext is byte for byte the original`);
    if (name === 'colleague') await shot(hall, '15-hall-opened');
    // The session id is in the QR code for anyone to see: the outcome (with the plaintext's
    // download link) needs the page's browser token too.
    const sid = /\/q\/([^#]+)#/.exec(hallQr)[1];
    const anon = await fetch(`${broker.url}/demo/api/decrypt/${sid}`);
    assert.equal(anon.status, 401);
    assert.equal((await anon.json()).error.code, 'unauthorized');
  }

  // ---- 王五 is not a recipient: the phone says so, declines, and the hall shows the reason ----
  await hallScan(hall, wang);
  await wang.locator('#decrypt-refusal:not(.hidden)').waitFor();
  const refusal = await wang.textContent('#decrypt-refusal');
  assert.match(refusal, /^无法解密：本证书不在该投标文件的解密证书列表中（本证书序列号 /);
  assert.ok(refusal.includes(wangSerial) && refusal.includes(zhangSerial) && refusal.includes(liSerial), refusal);
  assert.equal(await wang.textContent('#approve'), '确认并告知开标大厅');
  await shot(wang, '16-phone-not-a-recipient');
  await wang.click('#approve');
  await wang.locator('#msg', { hasText: '已告知开标大厅' }).waitFor({ timeout: 15000 });
  await hall.locator('#hall-error').waitFor({ timeout: 30000 });
  const shown = await hall.textContent('#hall-error');
  assert.match(shown, /^手机拒绝解密：本证书不在该投标文件的解密证书列表中/);
  assert.ok(shown.includes(wangSerial), shown);
  assert.equal(await hall.locator('#download').count(), 0);
  await shot(hall, '17-hall-not-a-recipient');
  assert.deepEqual(errors, []);
});

test('bid file: uploads over the limit and files that are not sealed get clear errors', { timeout: 120000 }, async (t) => {
  const { broker, browser } = await setup(t);
  const dir = tempDir(t);
  const big = path.join(dir, 'big.bin');
  fs.writeFileSync(big, Buffer.alloc(20 * 1024 * 1024 + 1, 1));
  const tool = await browser.context.newPage();
  await tool.goto(broker.url + '/demo/bidtool.html');
  await tool.setInputFiles('#enc-file', big);
  await tool.click('#enc-start');
  await tool.locator('#enc-upload .bad', { hasText: '文件超过 20 MiB' }).waitFor();

  // The backend refuses it too (the page's check is only a convenience).
  const r = await fetch(broker.url + '/demo/api/files?name=big.bin', { method: 'POST', body: fs.readFileSync(big) });
  assert.equal(r.status, 413);
  assert.equal((await r.json()).error.code, 'payload_too_large');

  const plain = path.join(dir, 'not-sealed.bze');
  fs.writeFileSync(plain, 'just text, no envelope');
  const hall = await openHall(browser, broker.url, plain);
  await hall.click('#start');
  await hall.locator('#upload .bad', { hasText: '这不是加密的投标文件' }).waitFor({ timeout: 20000 });
});
