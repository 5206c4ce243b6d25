// The login widget speaks Chinese: every broker error code and every reason the broker writes is
// shown through the SDK's zh-CN tables (read from the broker's source, so a new code without a
// message fails), and the tabs per trust domain create sessions limited by `accept`.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setup, shot, waitStatus, sessionOf, waitFor, MOCK_ONLY, test } from './harness.mjs';
import { brokerErrorCodes, brokerReasons } from './broker-source.mjs';
import { ERROR_MESSAGES, REASON_MESSAGES } from '../dist/bzt-sdk.mjs';

let env;
before(async () => {
  env = await setup();
});
after(async () => {
  await env?.teardown();
});

test('every broker error code is rendered in Chinese by the widget', async () => {
  const page = await env.newPage('/');
  for (const code of brokerErrorCodes()) {
    // The page's backend answered {error: {code, message}} and passed the code on (the cause of create_failed).
    await page.evaluate((code) => {
      if (window.widget) window.widget.destroy();
      mountWidget({ widget: { createSession: () => Promise.reject(Object.assign(new Error('broker said: English text'), { code })) } });
    }, code);
    await page.waitForFunction(() => widget.status === 'error');
    assert.equal(await page.evaluate(() => widget.error.code), 'create_failed');
    const shown = await page.textContent('.bzt-error');
    assert.equal(shown, ERROR_MESSAGES[code], code);
    assert.doesNotMatch(await page.textContent('.bzt-widget'), /English|[a-z]+_[a-z]+/, `${code}: no English on screen`);
    if (code === 'untrusted_certificate') await shot(page, 'widget-error-untrusted');
  }
  assert.deepEqual(page.pageErrors, []);
  await page.close();
});

test('every reason the broker writes is rendered in Chinese after 已拒绝 / 失败', { skip: MOCK_ONLY }, async () => {
  const { broker } = env;
  const page = await env.newPage('/');
  for (const reason of brokerReasons()) {
    await page.evaluate(() => {
      if (window.widget) window.widget.destroy();
      mountWidget();
    });
    const session = await sessionOf(page);
    await broker.phone.scan(session);
    await waitStatus(page, '已扫码');
    await broker.phone.reject(session, reason);
    const outcome = await page.evaluate(() => widget.result);
    assert.equal(outcome.result.reason, reason);
    const text = await page.textContent('.bzt-status');
    if (reason === 'match_failed') assert.equal(text, '已拒绝（数字选择错误）');
    else assert.equal(text, '已拒绝：' + REASON_MESSAGES[reason], reason);
  }
  // A phone's English decline is not shown; its Chinese one is.
  for (const [reason, want] of [['user_declined', '已拒绝'], ['用户在手机上拒绝', '已拒绝：用户在手机上拒绝']]) {
    await page.evaluate(() => {
      widget.destroy();
      mountWidget();
    });
    const session = await sessionOf(page);
    await broker.phone.scan(session);
    await waitStatus(page, '已扫码');
    await broker.phone.reject(session, reason);
    await page.evaluate(() => widget.result);
    assert.equal(await page.textContent('.bzt-status'), want);
  }
  await page.close();
});

test('tabs per trust domain: each tab is a session limited by accept, switching cancels the other', { skip: MOCK_ONLY }, async () => {
  const { broker } = env;
  const page = await env.newPage('/');
  await page.evaluate(() => {
    mountWidget({
      widget: {
        domains: ['platform', 'national'],
        createSession: (ctx) => rp.createSession(ctx.accept ? { accept: ctx.accept } : {}),
      },
    });
  });
  const first = await sessionOf(page);
  const tabs = await page.$$eval('.bzt-tab', (bs) => bs.map((b) => [b.textContent, b.getAttribute('aria-selected')]));
  assert.deepEqual(tabs, [['本平台证书', 'true'], ['全国互认证书', 'false']]);
  assert.deepEqual(broker.events('create', first.id).at(-1).accept, ['platform']);
  await shot(page, 'widget-tabs-platform');

  await page.click('.bzt-tab[data-domain="national"]');
  const second = await sessionOf(page, first.id);
  assert.deepEqual(broker.events('create', second.id).at(-1).accept, ['national']);
  assert.equal(await page.evaluate(() => widget.domain), 'national');
  assert.equal(await page.getAttribute('.bzt-tab[data-domain="national"]', 'aria-selected'), 'true');
  await waitFor(() => broker.control.session(first.id).status === 'cancelled');
  await waitStatus(page, '等待扫码');

  // One QR for every domain (no `domains`): no tabs, no accept.
  await page.evaluate(() => {
    widget.destroy();
    mountWidget({ widget: { createSession: (ctx) => rp.createSession(ctx.accept ? { accept: ctx.accept } : {}) } });
  });
  const third = await sessionOf(page, second.id);
  assert.equal(await page.locator('.bzt-tab').count(), 0);
  assert.equal(broker.events('create', third.id).at(-1).accept, null);
  assert.deepEqual(page.pageErrors, []);
  await page.close();
});
