// 密钥拆分 on the phone simulator page, end to end: the real broker in development mode (which
// starts the real co-signing service as its child), the login page, and the phone page enrolling a
// split key and using it. The RP sees an ordinary signature; the service checks the PIN; the page's
// storage holds neither d, d2, d1 nor the PIN.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setup, scan, confirmWithPin, qrTextOf, shot, PIN } from './harness.mjs';
import '../splitkey.js';

const { math: M } = globalThis.BztSplitKey;

/** Opens phone.html and enrols a split key with the development co-signing service. */
async function openSplitPhone(browser, base, { cn = '李四', pin = PIN } = {}) {
  const phone = await browser.context.newPage();
  await phone.setViewportSize({ width: 460, height: 900 });
  await phone.goto(base + '/demo/phone.html');
  await phone.fill('#cn', cn);
  await phone.selectOption('#key-mode', 'split');
  await phone.fill('#pin-new', pin);
  await phone.click('#issue');
  await phone.locator('#cert-key-mode').waitFor({ timeout: 30000 });
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

test('split key: enrol on the phone page, a wrong PIN is refused by the service, login verifies, storage holds no key or PIN', { timeout: 180000 }, async (t) => {
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
  const candidates = scalarsIn(text);
  assert.ok(candidates.length > 0, 'the scan sees the stored scalars (the masked share at least)');
  for (const x of candidates) {
    if (x === 0n || x >= M.N) continue;
    assert.notEqual(x, d1, 'd1 is not stored');
    assert.notEqual(x, M.inv(d1, M.N), 'd1⁻¹ is not stored');
    assert.ok(!M.samePoint(M.mul(x, M.G), joint), 'd (x·G = P) is not stored');
    // d2 is the x with (d1·x)⁻¹·G − G = P.
    assert.ok(!M.samePoint(M.add(M.mul(M.inv(M.mod(d1 * x, M.N), M.N), M.G), M.neg(M.G)), joint), 'd2 is not stored');
  }
  assert.deepEqual(errors, []);
});
