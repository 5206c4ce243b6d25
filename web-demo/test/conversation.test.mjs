// 会话签章: bidtool.html signs 5 pages — the first by QR (PIN on the phone), the other 4 in the
// conversation with 自动确认 on; every signature is checked here against the phone page's key.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import smCrypto from 'sm-crypto';
import { setup, openPhone, scan, confirmWithPin, shot } from './harness.mjs';

const { sm2 } = smCrypto;

test('conversation: 5 signatures, first by QR, the last 4 auto-confirmed, then 结束会话', { timeout: 150000 }, async (t) => {
  const { broker, browser, errors } = await setup(t);
  const tool = await browser.context.newPage();
  await tool.goto(broker.url + '/demo/bidtool.html');
  await tool.click('#start');
  await tool.waitForFunction(() => document.getElementById('qr-text').textContent.includes('/q/'), null, { timeout: 20000 });
  const qr = (await tool.textContent('#qr-text')).trim();
  await shot(tool, '08-bidtool-qr');

  const phone = await openPhone(browser, broker.url);
  const publicKey = await phone.evaluate(() => phone.keys.publicKey);
  await scan(phone, qr);
  assert.equal(await phone.textContent('#op-kind'), '扫码签章');
  assert.match(await phone.textContent('#op-tbs'), /第 1 页 \/ 共 5 页：投标函/);
  assert.ok(await phone.isChecked('#open-conv'));
  await confirmWithPin(phone);

  await tool.locator('#page-1[data-signed="true"]').waitFor({ timeout: 15000 });
  await phone.locator('#conv:not(.hidden)').waitFor();
  await phone.locator('#conv-status', { hasText: '会话进行中' }).waitFor({ timeout: 10000 });
  await phone.check('#auto-confirm');
  await tool.locator('#sign-rest:not([disabled])').waitFor();
  await tool.click('#sign-rest');
  for (let i = 2; i <= 5; i++) {
    await tool.locator(`#page-${i}[data-signed="true"]`).waitFor({ timeout: 20000 });
  }
  await shot(tool, '09-bidtool-signed');
  await phone.locator('#conv-list li', { hasText: '已签署' }).nth(3).waitFor({ timeout: 10000 });
  assert.equal(await phone.locator('#conv-list li').count(), 4);
  await shot(phone, '10-phone-conversation');

  // Each page's signature verifies with the phone's key over exactly that page (SM2, SM3, ID 1234567812345678).
  const pages = await tool.evaluate(() =>
    [...document.querySelectorAll('#pages li')].map((li, i) => ({
      sig: li.dataset.signature,
      state: li.querySelector('.state').textContent,
    })),
  );
  assert.equal(pages.length, 5);
  const sigs = new Set();
  for (const [i, p] of pages.entries()) {
    assert.ok(p.sig, `page ${i + 1} has a signature`);
    sigs.add(p.sig);
    assert.equal(p.state.includes('自动确认'), i > 0, `page ${i + 1}: ${p.state}`);
  }
  assert.equal(sigs.size, 5);
  const tbs = await tool.evaluate(() => window.__pageTexts);
  assert.equal(tbs.length, 5);
  for (let i = 0; i < 5; i++) {
    assert.ok(sm2.doVerifySignature(tbs[i], pages[i].sig, publicKey, { der: true, hash: true }), `page ${i + 1} signature verifies`);
    assert.ok(!sm2.doVerifySignature(tbs[(i + 1) % 5], pages[i].sig, publicKey, { der: true, hash: true }), 'and not for another page');
  }

  await phone.click('#end-conv');
  await phone.locator('#conv-status', { hasText: '会话已结束' }).waitFor({ timeout: 10000 });
  await tool.locator('#conv-state', { hasText: '会话已结束（手机结束）' }).waitFor({ timeout: 15000 });
  assert.deepEqual(errors, []);
});
