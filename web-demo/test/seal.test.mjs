// 扫码签章 with an electronic seal, end to end through the demo pages: 张三's phone page makes seals
// in 印章管理 (a generated company seal, a handwritten signature drawn on the canvas, one renamed,
// one deleted), the bid tool asks for a seal signature, the phone picks the company seal and
// confirms with the PIN, and the bid tool stamps the seal picture on its page and offers the
// SES_Signature for download; `bzt seal verify` (Rust, another implementation than the page's
// JavaScript DER) accepts it for the page text and refuses it for another text. In the
// conversation the phone opened, the bid tool then seals a one-page OFD through the phone page and
// shows the seal its backend verified; Python's zipfile reads the OFD and `bzt seal verify` checks
// SignedValue.dat against Signature.xml.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { setup, openPhone, scan, confirmWithPin, shot, tempDir, download, REPO } from './harness.mjs';

function bzt(args) {
  const bin = path.join(process.env.CARGO_TARGET_DIR || path.join(REPO, 'target'), 'debug', 'bzt');
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('BZT_')));
  return spawnSync(bin, args, { encoding: 'utf8', env });
}

test('seal: the phone keeps seals, picks one for 扫码签章, the bid tool stamps the page', { timeout: 180000 }, async (t) => {
  const { broker, browser, errors } = await setup(t);
  const dir = tempDir(t);
  const phone = await openPhone(browser, broker.url, { cn: '张三' });

  // 印章管理: a company seal drawn from the name, a handwritten signature, rename, delete.
  await phone.fill('#seal-name', '示例建设有限公司');
  await phone.click('#seal-add-generated');
  await phone.locator('#seal-list li[data-es-id]').first().waitFor();
  await phone.fill('#seal-name', '张三');
  const pad = await phone.locator('#seal-canvas').boundingBox();
  await phone.mouse.move(pad.x + 30, pad.y + 80);
  await phone.mouse.down();
  for (let i = 1; i <= 20; i++) await phone.mouse.move(pad.x + 30 + i * 11, pad.y + 80 - 40 * Math.sin(i / 3));
  await phone.mouse.up();
  await phone.click('#seal-add-drawn');
  await phone.waitForFunction(() => document.querySelectorAll('#seal-list li[data-es-id]').length === 2);
  phone.once('dialog', (d) => d.accept('张三手写签名'));
  await phone.locator('#seal-list li[data-es-id]').nth(1).locator('.seal-rename').click();
  await phone.waitForFunction(() => document.querySelector('#seal-list').textContent.includes('张三手写签名'));
  await phone.fill('#seal-name', '临时印章');
  await phone.click('#seal-add-generated');
  await phone.waitForFunction(() => document.querySelectorAll('#seal-list li[data-es-id]').length === 3);
  await phone.locator('#seal-list li[data-es-id]').nth(2).locator('.seal-delete').click();
  await phone.waitForFunction(() => document.querySelectorAll('#seal-list li[data-es-id]').length === 2);
  assert.ok(!(await phone.textContent('#seal-list')).includes('临时印章'));

  // The bid tool asks for 扫码签章 with a seal.
  const bid = await browser.context.newPage();
  await bid.setViewportSize({ width: 1100, height: 1000 });
  await bid.goto(broker.url + '/demo/bidtool.html');
  await bid.click('#seal-start');
  await bid.waitForFunction(() => document.getElementById('seal-qr-text').textContent.includes('/q/'), null, { timeout: 20000 });
  const qr = (await bid.textContent('#seal-qr-text')).trim();
  await scan(phone, qr);
  assert.equal(await phone.textContent('#op-kind'), '扫码签章');
  await phone.locator('#seal-box:not(.hidden)').waitFor();
  assert.equal(await phone.locator('.seal-choice').count(), 2, 'both seals are made for this certificate');
  await phone.locator('.seal-choice', { hasText: '示例建设有限公司' }).click();
  await shot(phone, 'web-demo-phone-seals');
  await confirmWithPin(phone);

  await bid.locator('#seal-page[data-stamped="true"]').waitFor({ timeout: 20000 });
  assert.match(await bid.textContent('#seal-outcome'), /已加盖电子印章：示例建设有限公司/);
  const result = await bid.evaluate(() => window.__sealResult);
  assert.equal(result.seal.name, '示例建设有限公司');
  assert.equal(result.seal.type, 'company');
  assert.equal(result.seal.picture.width_mm, 40);
  // The stamp is on the page: red pixels where the seal went, none there before.
  const red = await bid.evaluate(() => {
    const d = document.getElementById('seal-page').getContext('2d').getImageData(220, 230, 160, 160).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i] > 150 && d[i + 1] < 110 && d[i + 2] < 110) n++;
    return n;
  });
  assert.ok(red > 300, `the seal is stamped on the page (${red} red pixels)`);
  await shot(bid, 'web-demo-bidtool-seal');

  // The SES_Signature the page offers verifies with the Rust verifier, for this page only.
  const { file } = await download(bid, '#seal-download', path.join(dir, '投标函.ses'));
  const pageText = path.join(dir, 'page.txt');
  fs.writeFileSync(pageText, await bid.evaluate(() => window.__sealPageText));
  let r = bzt(['seal', 'verify', file, '--data', pageText, '--data-dir', broker.dataDir]);
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /^OK: stamped .* with seal "示例建设有限公司"/);
  fs.appendFileSync(pageText, '（改）');
  r = bzt(['seal', 'verify', file, '--data', pageText, '--data-dir', broker.dataDir]);
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /TBS_Sign\.dataHash/);

  // In the conversation the phone opened, the bid tool seals a one-page OFD: a seal request over
  // the SM3 of its Signature.xml, confirmed on the phone; the tool's backend verifies the answer
  // and writes it into the OFD, and the page shows the verified seal.
  await phone.locator('#conv-status', { hasText: '会话进行中' }).waitFor({ timeout: 10000 });
  await bid.locator('#ofd-start:not([disabled])').waitFor({ timeout: 10000 });
  await bid.click('#ofd-start');
  const confirm = phone.locator('#conv-list li', { hasText: 'OFD 投标函加盖电子印章' }).locator('button.primary');
  await confirm.waitFor({ timeout: 20000 });
  await confirm.click();
  await bid.locator('#ofd-outcome .ok').waitFor({ timeout: 20000 }).catch(async (e) => {
    throw new Error(e.message + ' outcome: ' + (await bid.textContent('#ofd-outcome')) + ' phone: ' + (await phone.textContent('#conv-list')) + ' bid conv: ' + (await bid.textContent('#seal-conv-status')) + ' log: ' + broker.log().slice(-3000));
  });
  const outcome = await bid.textContent('#ofd-outcome');
  assert.match(outcome, /电子签章验证通过：印章 示例建设有限公司/);
  assert.ok(await bid.locator('#ofd-outcome img').isVisible(), 'the seal picture is shown');
  await shot(bid, 'web-demo-bidtool-ofd');
  const ofd = await download(bid, '#ofd-download', path.join(dir, '投标函.ofd'));
  // Another reader than ours takes the archive apart; the Rust verifier checks the stamp against
  // the Signature.xml it protects, and refuses it for a changed one.
  const unzip = spawnSync('python3', ['-c', `
import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
assert z.testzip() is None
names = z.namelist()
for n in ['OFD.xml', 'Doc_0/Signs/Signatures.xml', 'Doc_0/Signs/Sign_0/Signature.xml', 'Doc_0/Signs/Sign_0/SignedValue.dat']:
    assert n in names, (n, names)
open(sys.argv[2] + '/Signature.xml', 'wb').write(z.read('Doc_0/Signs/Sign_0/Signature.xml'))
open(sys.argv[2] + '/SignedValue.dat', 'wb').write(z.read('Doc_0/Signs/Sign_0/SignedValue.dat'))
`, ofd.file, dir], { encoding: 'utf8' });
  assert.equal(unzip.status, 0, unzip.stdout + unzip.stderr);
  r = bzt(['seal', 'verify', path.join(dir, 'SignedValue.dat'), '--data', path.join(dir, 'Signature.xml'), '--data-dir', broker.dataDir]);
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /^OK: stamped .* with seal "示例建设有限公司"/);
  fs.appendFileSync(path.join(dir, 'Signature.xml'), ' ');
  r = bzt(['seal', 'verify', path.join(dir, 'SignedValue.dat'), '--data', path.join(dir, 'Signature.xml'), '--data-dir', broker.dataDir]);
  assert.notEqual(r.status, 0);
  assert.deepEqual(errors, []);
});
