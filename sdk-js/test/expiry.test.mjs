// Expiry: the overlay, and a click that replaces the session (never two alive for one widget).
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setup, shot, waitStatus, sessionOf, waitFor, MOCK_ONLY, test } from './harness.mjs';

let env;
before(async () => {
  env = await setup();
});
after(async () => {
  await env?.teardown();
});

test('expired: overlay 二维码已过期，点击刷新; click → a NEW session that completes', { skip: MOCK_ONLY }, async () => {
  const { broker, rp } = env;
  const page = await env.newPage('/');
  await page.evaluate(() => mountWidget());
  const first = await sessionOf(page);
  await page.waitForFunction(() => widget.watcher.connection === 'open');
  const firstResult = page.evaluate(() => widget.result);

  broker.control.expire(first.id);
  await page.waitForFunction(() => {
    const o = document.querySelector('.bzt-overlay');
    return !o.hidden && o.textContent === '二维码已过期，点击刷新';
  });
  await waitStatus(page, '已过期');
  assert.equal((await firstResult).status, 'expired');
  assert.equal((await firstResult).result, null);
  await shot(page, 'expiry-1-overlay');
  await waitFor(() => broker.control.watchers(first.id) === 0);

  await page.click('.bzt-overlay');
  const second = await sessionOf(page, first.id);
  assert.notEqual(second.id, first.id);
  assert.equal(broker.events('create').length, rp.creates.length);
  assert.deepEqual(rp.creates.slice(-2).map((a) => a.id), [first.id, second.id], 'the mock saw a second create');
  await page.waitForFunction(() => widget.watcher.connection === 'open');
  await waitStatus(page, '等待扫码');
  await shot(page, 'expiry-2-refreshed');

  // The first session is not watched any more: no socket or stream is open for it, and no new
  // connection to it was made after the refresh.
  assert.equal(broker.control.watchers(first.id), 0);
  const lastFirst = Math.max(...broker.log.filter((e) => e.id === first.id && /_open$/.test(e.type)).map((e) => e.t));
  const secondCreate = broker.events('create', second.id)[0].t;
  assert.ok(lastFirst <= secondCreate, 'no connection to the old session after the refresh');

  await broker.phone.scan(second);
  await broker.phone.approve(second);
  const outcome = await page.evaluate(() => widget.result);
  assert.equal(outcome.status, 'approved');
  assert.equal(outcome.session.id, second.id);
  await waitStatus(page, '成功');
  const results = await page.evaluate(() => eventsOf('result').map((r) => [r.session.id, r.status]));
  assert.deepEqual(results, [[first.id, 'expired'], [second.id, 'approved']]);
  await page.close();
});

test('refresh() while live cancels the old session before creating the next', { skip: MOCK_ONLY }, async () => {
  const { broker } = env;
  const page = await env.newPage('/');
  await page.evaluate(() => mountWidget());
  const first = await sessionOf(page);
  await page.waitForFunction(() => widget.watcher.connection === 'open');
  await page.evaluate(() => widget.refresh());
  const second = await sessionOf(page, first.id);
  assert.equal(broker.control.session(first.id).status, 'cancelled');
  const cancelAt = broker.events('terminal', first.id)[0].t;
  assert.ok(cancelAt <= broker.events('create', second.id)[0].t, 'old one cancelled before the new one was created');
  assert.equal(broker.control.watchers(first.id), 0);
  await page.evaluate(() => widget.destroy());
  await page.close();
});

test('countdown runs out without the broker: the widget reports a local expiry', { skip: MOCK_ONLY }, async () => {
  const { broker, rp } = env;
  // A session whose expires_at is 2 s away (the mock's ttl is ≥ 30 s, so fake the answer).
  rp.transformAnswer = (a) => ({ ...a, expires_at: new Date(Date.now() + 2000).toISOString(), created_at: new Date().toISOString() });
  try {
    const page = await env.newPage('/');
    await page.evaluate(() => mountWidget({ widget: { watchOptions: { expiryGraceMs: 1000 } } }));
    await sessionOf(page);
    const outcome = await page.evaluate(() => widget.result);
    assert.equal(outcome.status, 'expired');
    assert.equal(outcome.local, true);
    await waitStatus(page, '已过期');
    await page.close();
  } finally {
    rp.transformAnswer = null;
  }
});
