// 密钥拆分 on the phone simulator page, end to end: the real broker in development mode (which
// starts the real co-signing service as its child), the login page, and the phone page enrolling a
// split key and using it. The RP sees an ordinary signature; the service checks the PIN; the page's
// storage holds neither d, d2, d1 nor the PIN.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import smCrypto from 'sm-crypto';
import { setup, scan, confirmWithPin, qrTextOf, shot, tempDir, download, openHall, scanAtTheHall, pickMatchCode, PIN } from './harness.mjs';
import '../splitkey.js';

const { math: M } = globalThis.BztSplitKey;
const { sm2 } = smCrypto;

/** Opens phone.html and enrols a split key with the development co-signing service. */
async function openSplitPhone(browser, base, { cn = '李四', pin = PIN } = {}) {
  const phone = await browser.context.newPage();
  await phone.setViewportSize({ width: 460, height: 900 });
  await phone.goto(base + '/demo/phone.html');
  await phone.fill('#cn', cn);
  await phone.selectOption('#key-mode', 'split');
  await phone.fill('#pin-new', pin);
  await phone.click('#issue');
  await phone.locator('#cert-key-mode').waitFor({ timeout: 90000 });
  return phone;
}

/** Everything the page could have persisted: local and session storage, IndexedDB, cookies. */
async function pageStorage(page) {
  return page.evaluate(async () => {
    const dump = (s) => Object.fromEntries(Array.from({ length: s.length }, (_, i) => [s.key(i), s.getItem(s.key(i))]));
    const dbs = indexedDB.databases ? await indexedDB.databases() : [];
    return { local: dump(localStorage), session: dump(sessionStorage), indexedDB: dbs.map((d) => d.name), cookies: document.cookie };
  });
}

/** Every 32-byte value written in `text` as hex or base64. */
function scalarsIn(text) {
  const out = [];
  for (const m of text.matchAll(/[0-9a-fA-F]{64,}/g)) {
    for (let i = 0; i + 64 <= m[0].length; i += 2) out.push(BigInt('0x' + m[0].slice(i, i + 64)));
  }
  for (const m of text.matchAll(/[A-Za-z0-9+/_-]{43,}={0,2}/g)) {
    const bytes = Buffer.from(m[0].replace(/-/g, '+').replace(/_/g, '/'), 'base64');
    for (let i = 0; i + 32 <= bytes.length; i++) out.push(M.bytesToBig(bytes.subarray(i, i + 32)));
  }
  return out;
}

/** Which of d1, d1⁻¹, d (x·G = P) and d2 ((d1·x)⁻¹·G − G = P) occur in `text`. */
function secretsIn(text, d1, joint) {
  const found = new Set();
  for (const x of scalarsIn(text)) {
    if (x === 0n || x >= M.N) continue;
    if (x === d1) found.add('d1');
    if (x === M.inv(d1, M.N)) found.add('d1⁻¹');
    if (M.samePoint(M.mul(x, M.G), joint)) found.add('d');
    if (M.samePoint(M.add(M.mul(M.inv(M.mod(d1 * x, M.N), M.N), M.G), M.neg(M.G)), joint)) found.add('d2');
  }
  return [...found];
}

test('split key: enrol on the phone page, a wrong PIN is refused by the service, login verifies, storage holds no key or PIN, 挂失 refuses until unfrozen', { timeout: 180000 }, async (t) => {
  const { broker, browser, errors } = await setup(t);
  const login = await browser.context.newPage();
  await login.goto(broker.url + '/demo/login.html');
  await login.locator('.bzt-widget img').waitFor({ timeout: 20000 });
  const qr = await qrTextOf(login);

  const phone = await openSplitPhone(browser, broker.url);
  const serial = (await phone.textContent('#cert-serial')).trim();
  await shot(phone, 'split-01-enrolled');

  await scan(phone, qr);
  assert.equal(await phone.textContent('#op-kind'), '扫码登录');
  // A wrong PIN: the page cannot tell (it keeps nothing that checks a PIN); the service refuses
  // the proof and counts it. The session stays scanned and the same card can be confirmed again.
  await confirmWithPin(phone, '000000');
  await phone.locator('#msg', { hasText: 'PIN 码错误，还可尝试 4 次' }).waitFor({ timeout: 20000 });
  assert.equal(await phone.locator('#confirm:not(.hidden)').count(), 1);
  assert.equal(await login.locator('#outcome .ok').count(), 0);

  await confirmWithPin(phone);
  await phone.locator('#msg', { hasText: '已确认' }).waitFor({ timeout: 20000 });
  // The RP (the demo backend) got an ordinary verified login: subject and serial of the joint key's certificate.
  await login.locator('#outcome .ok', { hasText: '登录成功' }).waitFor({ timeout: 15000 });
  const outcome = await login.textContent('#outcome');
  assert.match(outcome, /CN=李四/);
  assert.ok(outcome.includes(serial), `the RP shows the split key's certificate ${serial}`);
  await shot(phone, 'split-02-login-done');

  // What the page stored: the SplitKeyFile (masked share) and the certificate, nothing else.
  const stored = await pageStorage(phone);
  assert.deepEqual(Object.keys(stored.local), ['bzt-phone-split-key']);
  assert.deepEqual(stored.session, {});
  assert.deepEqual(stored.indexedDB, []);
  assert.equal(stored.cookies, '');
  const text = JSON.stringify(stored);
  const { file } = JSON.parse(stored.local['bzt-phone-split-key']);
  const joint = M.pointFromHex(file.public_key);
  // d1, as the page unmasks it with the right PIN (the test's own copy of the page's arithmetic).
  const d1 = M.unmaskShare(M.hexToBytes(file.masked_share), M.hexToBytes(file.salt), file.iterations, PIN);
  const p1 = M.mul(M.inv(d1, M.N), M.G);
  assert.ok(!text.includes(PIN), 'the PIN is not stored');
  assert.ok(!text.toLowerCase().includes(M.pointToHex(p1)), 'P1 is not stored');
  assert.deepEqual(secretsIn(text, d1, joint), [], 'no d1, d1⁻¹, d or d2 in the storage');
  assert.ok(scalarsIn(text).length > 0, 'the search sees the stored scalars (the masked share at least)');

  // The search finds each secret where a page could have put it (hex, HEX, base64, inside longer
  // text): a synthetic split key whose d1, d2 and d this test knows.
  const start = M.keygenStart();
  const d2 = M.randomScalar();
  const fakeJoint = M.keygenFinish(start, M.mul(M.inv(d2, M.N), M.G), M.schnorrProve(M.inv(d2, M.N), M.mul(M.inv(d2, M.N), M.G), M.concat(M.utf8('BZT-2P-KEYGEN-SERVICE-V1'), M.encodePoint(start.p1))));
  const d = M.mod(M.inv(M.mod(start.d1 * d2, M.N), M.N) - 1n, M.N);
  const b = (x) => M.bigToBytes(x);
  const planted = JSON.stringify({ a: 'x' + M.bytesToHex(b(d)).toUpperCase(), b: Buffer.from(b(d2)).toString('base64'), c: M.bytesToHex(b(start.d1)) });
  assert.deepEqual(secretsIn(planted, start.d1, fakeJoint).sort(), ['d', 'd1', 'd2']);

  // The stored file is the whole of the phone's side: after a reload the page signs again with it.
  await phone.reload();
  await phone.locator('#cert-key-mode').waitFor({ timeout: 10000 });
  assert.equal((await phone.textContent('#cert-serial')).trim(), serial);
  await login.reload();
  await scan(phone, await qrTextOf(login));
  await confirmWithPin(phone);
  await login.locator('#outcome .ok', { hasText: '登录成功' }).waitFor({ timeout: 20000 });

  // 挂失: the app owner freezes the key through the broker's admin API; the service refuses and the
  // phone says so in Chinese. Unfrozen, the same session goes through.
  const { admin_token: adminToken } = JSON.parse(fs.readFileSync(path.join(broker.dataDir, 'dev-secrets.json'), 'utf8'));
  const admin = async (action) => {
    const r = await fetch(`${broker.url}/v1/admin/cosigner/keys/${file.key_id}/${action}`, { method: 'POST', headers: { Authorization: 'Bearer ' + adminToken } });
    assert.equal(r.status, 200, `${action}: ${await r.text()}`);
  };
  await admin('freeze');
  await login.reload();
  await scan(phone, await qrTextOf(login));
  await confirmWithPin(phone);
  await phone.locator('#msg', { hasText: '证书已挂失（冻结），暂不能使用' }).waitFor({ timeout: 20000 });
  assert.equal(await login.locator('#outcome .ok').count(), 0);
  await admin('unfreeze');
  await confirmWithPin(phone);
  await login.locator('#outcome .ok', { hasText: '登录成功' }).waitFor({ timeout: 20000 });
  assert.deepEqual(errors, []);
});

test('split key: 会话签章 of five pages in the bid tool, then a bid file sealed to the split key and opened at the hall', { timeout: 240000 }, async (t) => {
  const { broker, browser, errors } = await setup(t);
  const dir = tempDir(t);
  const phone = await openSplitPhone(browser, broker.url, { cn: '张三' });
  const { file } = await phone.evaluate((k) => JSON.parse(localStorage.getItem(k)), 'bzt-phone-split-key');

  // ---- 会话签章: the first page by QR (PIN), the other four co-signed in the conversation ----
  const tool = await browser.context.newPage();
  await tool.goto(broker.url + '/demo/bidtool.html');
  await tool.click('#start');
  await tool.waitForFunction(() => document.getElementById('qr-text').textContent.includes('/q/'), null, { timeout: 20000 });
  await scan(phone, (await tool.textContent('#qr-text')).trim());
  assert.ok(await phone.isChecked('#open-conv'));
  await confirmWithPin(phone);
  await tool.locator('#page-1[data-signed="true"]').waitFor({ timeout: 20000 });
  await phone.locator('#conv-status', { hasText: '会话进行中' }).waitFor({ timeout: 10000 });
  await phone.check('#auto-confirm');
  await tool.locator('#sign-rest:not([disabled])').waitFor();
  await tool.click('#sign-rest');
  for (let i = 2; i <= 5; i++) await tool.locator(`#page-${i}[data-signed="true"]`).waitFor({ timeout: 30000 });
  const sigs = await tool.evaluate(() => [...document.querySelectorAll('#pages li')].map((li) => li.dataset.signature));
  const texts = await tool.evaluate(() => window.__pageTexts);
  for (let i = 0; i < 5; i++) {
    // Ordinary SM2 signatures under the certificate's key, checked by independent code.
    assert.ok(sm2.doVerifySignature(texts[i], sigs[i], file.public_key, { der: true, hash: true }), `page ${i + 1} verifies under P`);
    assert.ok(!sm2.doVerifySignature(texts[(i + 1) % 5], sigs[i], file.public_key, { der: true, hash: true }));
  }
  await phone.click('#end-conv');
  await tool.locator('#conv-state', { hasText: '会话已结束' }).waitFor({ timeout: 15000 });

  // ---- 生成投标文件: sealed to the split key's certificate (the encrypt session co-signed) ----
  const original = Buffer.from('示例投标文件内容 '.repeat(500));
  const inputPath = path.join(dir, '投标文件.txt');
  fs.writeFileSync(inputPath, original);
  await tool.setInputFiles('#enc-file', inputPath);
  await tool.click('#enc-start');
  await tool.locator('#enc-upload', { hasText: '已上传' }).waitFor({ timeout: 20000 });
  await tool.waitForFunction(() => document.querySelector('#enc-qr-text').textContent.includes('/q/'), null, { timeout: 20000 });
  await scan(phone, (await tool.textContent('#enc-qr-text')).trim());
  await confirmWithPin(phone);
  await tool.locator('#enc-download').waitFor({ timeout: 30000 });
  const sealedPath = path.join(dir, 'out', '投标文件.txt.bze');
  fs.mkdirSync(path.dirname(sealedPath));
  await download(tool, '#enc-download', sealedPath);

  // ---- 开标大厅: blinded co-decryption of the phone's entry, number matching on ----
  const hall = await openHall(browser, broker.url, sealedPath);
  await scanAtTheHall(hall, phone);
  assert.equal(await phone.textContent('#op-kind'), '扫码解密投标文件');
  assert.ok(await phone.locator('#decrypt-refusal').isHidden());
  await pickMatchCode(hall, phone);
  await confirmWithPin(phone);
  await hall.locator('#download').waitFor({ timeout: 30000 });
  const out = path.join(dir, 'opened.txt');
  await download(hall, '#download', out);
  assert.ok(fs.readFileSync(out).equals(original), 'the hall opened the file with the split key');
  await shot(hall, 'split-03-hall-opened');
  assert.deepEqual(errors, []);
});

test('split key: 扫码签章 with a seal and an OFD sealed in the conversation, co-signed over TBS_Sign', { timeout: 180000 }, async (t) => {
  const { broker, browser, errors } = await setup(t);
  const dir = tempDir(t);
  const phone = await openSplitPhone(browser, broker.url, { cn: '李四' });
  await phone.fill('#seal-name', '示例建设有限公司');
  await phone.click('#seal-add-generated');
  await phone.locator('#seal-list li[data-es-id]').first().waitFor();

  const bid = await browser.context.newPage();
  await bid.setViewportSize({ width: 1100, height: 1000 });
  await bid.goto(broker.url + '/demo/bidtool.html');
  await bid.click('#seal-start');
  await bid.waitForFunction(() => document.getElementById('seal-qr-text').textContent.includes('/q/'), null, { timeout: 20000 });
  await scan(phone, (await bid.textContent('#seal-qr-text')).trim());
  await phone.locator('#seal-box:not(.hidden)').waitFor();
  assert.equal(await phone.locator('.seal-choice').count(), 1);
  await confirmWithPin(phone);
  await bid.locator('#seal-page[data-stamped="true"]').waitFor({ timeout: 30000 });
  const result = await bid.evaluate(() => window.__sealResult);
  assert.equal(result.seal.name, '示例建设有限公司');
  // The SES_Signature's SM2 signature is the co-signature over DER(TBS_Sign): sm-crypto checks it
  // against the split key's certificate.
  const publicKey = await phone.evaluate(() => phone.split.public_key);
  const tbs = Buffer.from(result.tbs_b64, 'base64');
  const sigHex = Buffer.from(result.signature_b64, 'base64').toString('hex');
  assert.ok(sm2.doVerifySignature(Array.from(tbs), sigHex, publicKey, { der: true, hash: true }), 'the co-signature verifies over TBS_Sign');

  // A seal on the OFD in the conversation, co-signed with the PIN the page keeps while it lasts.
  await phone.locator('#conv-status', { hasText: '会话进行中' }).waitFor({ timeout: 10000 });
  await bid.locator('#ofd-start:not([disabled])').waitFor({ timeout: 10000 });
  await bid.click('#ofd-start');
  const confirm = phone.locator('#conv-list li', { hasText: 'OFD 投标函加盖电子印章' }).locator('button.primary');
  await confirm.waitFor({ timeout: 20000 });
  await confirm.click();
  await bid.locator('#ofd-outcome .ok').waitFor({ timeout: 30000 });
  assert.match(await bid.textContent('#ofd-outcome'), /电子签章验证通过：印章 示例建设有限公司/);
  const { file } = await download(bid, '#ofd-download', path.join(dir, '投标函.ofd'));
  assert.equal(fs.readFileSync(file).subarray(0, 2).toString(), 'PK');
  await shot(phone, 'split-04-seal-conversation');
  assert.deepEqual(errors, []);
});
