// 企业证书授权 on the phone simulator page, end to end in Chromium: the administrator's page (its own
// split company key) grants to a member's page in another browser (its own storage), the member logs
// in on the demo login page with the company certificate and the result names the member (经办人),
// the administrator changes the end time and takes the grant back, and the member's next attempt is
// refused in Chinese. Real broker, real co-signing service (development mode), through the relay.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import smCrypto from 'sm-crypto';
import { setup, launchBrowser, scan, confirmWithPin, qrTextOf, shot, tempDir, download, openHall, scanAtTheHall, pickMatchCode, PIN } from './harness.mjs';

const { sm2 } = smCrypto;

const MEMBER_PIN = '864200';

test('grants: 添加被授权人 from an invitation, the member logs in as the company (经办人 shown), signs in the bid tool and opens a bid file with it, 更改结束时间, 解除授权 refuses the member', { timeout: 180000 }, async (t) => {
  const { broker, browser, errors } = await setup(t);
  // The member's phone: another browser, so another localStorage.
  const other = await launchBrowser();
  t.after(() => other.close());
  other.context.on('page', (p) => p.on('pageerror', (e) => errors.push(String(e))));

  // The administrator (王五) enrols the company's split key.
  const admin = await browser.context.newPage();
  await admin.setViewportSize({ width: 460, height: 900 });
  await admin.goto(broker.url + '/demo/phone.html');
  await admin.fill('#cn', '王五');
  await admin.selectOption('#key-mode', 'split');
  await admin.fill('#pin-new', PIN);
  await admin.click('#issue');
  await admin.locator('#cert-key-mode').waitFor({ timeout: 90000 });
  const serial = (await admin.textContent('#cert-serial')).trim();

  // The member (李四) makes an invitation.
  const member = await other.context.newPage();
  await member.setViewportSize({ width: 460, height: 900 });
  await member.goto(broker.url + '/demo/phone.html');
  await member.fill('#cn', '李四');
  await member.click('#grant-invite');
  await member.locator('#grant-invite-box:not(.hidden)').waitFor();
  const invite = await member.inputValue('#grant-invite-out');
  assert.ok(!/secret/.test(invite), 'the invitation carries no secret');
  assert.equal(JSON.parse(invite).name, '李四');

  // 添加被授权人.
  await admin.click('#admin-box summary');
  await admin.fill('#admin-invite-in', invite);
  await admin.fill('#admin-pin', PIN);
  await admin.click('#admin-grant');
  await admin.locator('#msg', { hasText: '已添加被授权人 李四' }).waitFor({ timeout: 30000 });
  await admin.locator('#admin-grants li', { hasText: '李四' }).filter({ hasText: '待被授权人接受' }).waitFor();
  const offer = await admin.inputValue('#admin-offer-out');
  await shot(admin, 'grants-01-admin-granted');

  // The member accepts under its own PIN; the page now holds the company certificate.
  await member.fill('#grant-offer-in', offer);
  await member.fill('#grant-pin', MEMBER_PIN);
  await member.click('#grant-accept');
  await member.locator('#msg', { hasText: '已接受授权' }).waitFor({ timeout: 30000 });
  assert.equal((await member.textContent('#cert-serial')).trim(), serial, 'the member uses the company certificate');
  await member.locator('#cert-grant', { hasText: '授权结束时间' }).waitFor();
  await member.locator('#granted-list li', { hasText: '授权结束时间' }).filter({ hasText: '授权中' }).waitFor();
  // What the member's page stored: the masked share and the certificate; no receiving key any more, no PIN.
  const stored = await member.evaluate(() => Object.fromEntries(Object.keys(localStorage).map((k) => [k, localStorage.getItem(k)])));
  assert.deepEqual(Object.keys(stored), ['bzt-phone-grants']);
  const kept = JSON.parse(stored['bzt-phone-grants']);
  assert.equal(kept.invite, null);
  assert.ok(!stored['bzt-phone-grants'].includes(MEMBER_PIN));
  await shot(member, 'grants-02-member-accepted');

  // The member logs in with the company certificate; the login page names the member (经办人).
  const login = await browser.context.newPage();
  await login.goto(broker.url + '/demo/login.html');
  await login.locator('.bzt-widget img').waitFor({ timeout: 20000 });
  await scan(member, await qrTextOf(login));
  await confirmWithPin(member, MEMBER_PIN);
  await login.locator('#outcome .ok', { hasText: '登录成功' }).waitFor({ timeout: 20000 });
  assert.ok((await login.textContent('#outcome')).includes(serial));
  assert.match(await login.textContent('#r-delegate'), /^李四（设备 web-[0-9a-f]+）$/);
  await shot(login, 'grants-03-login-delegate');

  // The bid tool with the company certificate: 会话签章 (the first page by QR, the next by the
  // conversation), signatures under the company key; a bid file sealed to it and opened at the hall.
  const companyKey = kept.grants[0].file.public_key;
  const tool = await browser.context.newPage();
  await tool.goto(broker.url + '/demo/bidtool.html');
  await tool.click('#start');
  await tool.waitForFunction(() => document.getElementById('qr-text').textContent.includes('/q/'), null, { timeout: 20000 });
  await scan(member, (await tool.textContent('#qr-text')).trim());
  await confirmWithPin(member, MEMBER_PIN);
  await tool.locator('#page-1[data-signed="true"]').waitFor({ timeout: 20000 });
  await member.locator('#conv-status', { hasText: '会话进行中' }).waitFor({ timeout: 10000 });
  await member.check('#auto-confirm');
  await tool.locator('#sign-rest:not([disabled])').waitFor();
  await tool.click('#sign-rest');
  await tool.locator('#page-2[data-signed="true"]').waitFor({ timeout: 30000 });
  const sigs = await tool.evaluate(() => [...document.querySelectorAll('#pages li')].map((li) => li.dataset.signature));
  const texts = await tool.evaluate(() => window.__pageTexts);
  for (const i of [0, 1]) assert.ok(sm2.doVerifySignature(texts[i], sigs[i], companyKey, { der: true, hash: true }), `page ${i + 1} verifies under the company key`);
  await member.click('#end-conv');
  await tool.locator('#conv-state', { hasText: '会话已结束' }).waitFor({ timeout: 15000 });
  const dir = tempDir(t);
  const original = Buffer.from('示例投标文件（被授权人）'.repeat(200));
  fs.writeFileSync(path.join(dir, '投标文件.txt'), original);
  await tool.setInputFiles('#enc-file', path.join(dir, '投标文件.txt'));
  await tool.click('#enc-start');
  await tool.waitForFunction(() => document.querySelector('#enc-qr-text').textContent.includes('/q/'), null, { timeout: 20000 });
  await scan(member, (await tool.textContent('#enc-qr-text')).trim());
  await confirmWithPin(member, MEMBER_PIN);
  await tool.locator('#enc-download').waitFor({ timeout: 30000 });
  const sealedPath = path.join(dir, '投标文件.txt.bze');
  await download(tool, '#enc-download', sealedPath);
  const hall = await openHall(browser, broker.url, sealedPath);
  await scanAtTheHall(hall, member);
  assert.ok(await member.locator('#decrypt-refusal').isHidden(), 'the member finds the entry of the company certificate');
  await pickMatchCode(hall, member);
  await confirmWithPin(member, MEMBER_PIN);
  await hall.locator('#download').waitFor({ timeout: 30000 });
  await download(hall, '#download', path.join(dir, 'opened.txt'));
  assert.ok(fs.readFileSync(path.join(dir, 'opened.txt')).equals(original), 'the hall opened the file with the granted certificate');

  // 更改证书授权结束时间: the list shows the new end.
  await admin.click('#admin-refresh');
  await admin.locator('#admin-grants li', { hasText: '授权中' }).waitFor({ timeout: 30000 });
  await admin.fill('#admin-end', '2031-06-30T18:00');
  await admin.click('#admin-grants li .grant-extend');
  await admin.locator('#msg', { hasText: '授权结束时间已改为' }).waitFor({ timeout: 30000 });
  assert.match(await admin.textContent('#admin-grants li .grant-end'), /^2031-06-30/);

  // 证书解除授权: a 收回记录 by the administrator, and the member is refused in Chinese.
  await admin.click('#admin-grants li .grant-ungrant');
  await admin.locator('#msg', { hasText: '已解除授权' }).waitFor({ timeout: 30000 });
  await admin.locator('#admin-grants li', { hasText: '已收回' }).waitFor();
  const record = await admin.textContent('#admin-reclaims');
  assert.ok(record.includes('管理员解除授权') && record.includes('李四') && record.includes('SM2 企业证书（密钥拆分）'), record);
  await shot(admin, 'grants-04-admin-reclaimed');

  await login.reload();
  await scan(member, await qrTextOf(login));
  await confirmWithPin(member, MEMBER_PIN);
  await member.locator('#msg', { hasText: '授权已收回' }).waitFor({ timeout: 20000 });
  await member.locator('#granted-list li', { hasText: '已收回或已到期' }).waitFor();
  assert.equal(await login.locator('#outcome .ok').count(), 0);
  await shot(member, 'grants-05-member-refused');
  assert.deepEqual(errors, []);
});
