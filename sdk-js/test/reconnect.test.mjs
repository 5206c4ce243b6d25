// Dropped connections: the reconnect's snapshot is the source of truth, and the outcome is
// delivered exactly once.
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

test('socket dropped mid-session, approved while away → reconnect snapshot delivers it once', { skip: MOCK_ONLY }, async () => {
  const { broker } = env;
  const page = await env.newPage('/');
  await page.evaluate(() => mountWidget());
  const session = await sessionOf(page);
  await page.waitForFunction(() => widget.watcher.connection === 'open');
  await broker.phone.scan(session);
  await waitStatus(page, '已扫码');

  // Kill the socket and complete the session in the same tick: the browser cannot have
  // reconnected in between, so it learns the outcome only from the next snapshot.
  assert.equal(broker.control.drop(session.id), 1);
  assert.ok(await broker.phone.approve(session));
  assert.equal(broker.control.watchers(session.id), 0);

  const outcome = await page.evaluate(() => widget.result);
  assert.equal(outcome.status, 'approved');
  assert.equal(outcome.result.certificate.serial, '5a17c0de');
  assert.equal(broker.events('ws_open', session.id).length, 2, 'reconnected once over WebSocket');
  await new Promise((r) => setTimeout(r, 300)); // anything late would show up now
  assert.equal(await page.evaluate(() => eventsOf('result').length), 1, 'result delivered exactly once');
  assert.deepEqual(await page.evaluate(() => eventsOf('status').map((e) => e.status)), ['pending', 'scanned', 'approved']);
  await waitStatus(page, '成功');
  assert.equal(await page.evaluate(() => widget.watcher.transport), 'ws');
  await page.close();
});

test('everything happens while disconnected: pending → approved straight from the snapshot', { skip: MOCK_ONLY }, async () => {
  const { broker } = env;
  const page = await env.newPage('/');
  await page.evaluate(() => mountWidget({ widget: { watchOptions: { backoffBaseMs: 400 } } }));
  const session = await sessionOf(page);
  await page.waitForFunction(() => widget.watcher.connection === 'open');
  broker.control.refuseUpgrades(true, session.id);
  broker.control.drop(session.id);
  await page.waitForFunction(() => widget.watcher.connection !== 'open');
  await broker.phone.scan(session);
  await broker.phone.approve(session);
  broker.control.refuseUpgrades(false, session.id);
  const outcome = await page.evaluate(() => widget.result);
  assert.equal(outcome.status, 'approved');
  const statuses = await page.evaluate(() => eventsOf('status').map((e) => [e.previous, e.status]));
  assert.deepEqual(statuses, [[null, 'pending'], ['pending', 'approved']]);
  assert.equal(await page.evaluate(() => eventsOf('result').length), 1);
  await page.close();
});

test('SSE stream dropped mid-session → reconnects, result once', { skip: MOCK_ONLY }, async () => {
  const { broker } = env;
  const page = await env.newPage('/');
  await page.evaluate(() => mountWidget({ widget: { transport: 'sse' } }));
  const session = await sessionOf(page);
  await page.waitForFunction(() => widget.watcher.connection === 'open');
  await waitFor(() => broker.control.watchers(session.id) === 1);
  broker.control.drop(session.id);
  await broker.phone.scan(session);
  await broker.phone.reject(session, 'user_declined');
  const outcome = await page.evaluate(() => widget.result);
  assert.equal(outcome.status, 'rejected');
  assert.deepEqual(outcome.result, { reason: 'user_declined' });
  assert.equal(broker.events('sse_open', session.id).length, 2);
  assert.equal(await page.evaluate(() => eventsOf('result').length), 1);
  await page.close();
});

test('reconnects back off exponentially with full jitter (capped)', { skip: MOCK_ONLY }, async () => {
  const { broker } = env;
  const page = await env.newPage('/');
  // transport 'ws' never falls back, so every attempt is a WebSocket one.
  await page.evaluate(() => mountWidget({ widget: { transport: 'ws', watchOptions: { backoffBaseMs: 100, backoffCapMs: 800 } } }));
  const session = await sessionOf(page);
  await page.waitForFunction(() => widget.watcher.connection === 'open');
  broker.control.refuseUpgrades(true, session.id);
  broker.control.drop(session.id);
  await new Promise((r) => setTimeout(r, 4000));
  const refused = broker.events('ws_refused', session.id).map((e) => e.t);
  // Ceilings 100, 200, 400, 800, 800, ... ms: in 4 s at least 5 and (with jitter ≥ 0) at most ~45.
  assert.ok(refused.length >= 5 && refused.length <= 45, `attempts: ${refused.length}`);
  const gaps = refused.slice(1).map((t, i) => t - refused[i]);
  assert.ok(gaps.every((g) => g <= 800 + 150), `every gap under the cap: ${gaps}`);
  broker.control.refuseUpgrades(false, session.id);
  await page.waitForFunction(() => widget.watcher.connection === 'open', null, { timeout: 5000 });
  await page.evaluate(() => widget.destroy());
  await page.close();
});

test('1012 (a broker node shutting down): reconnects at once, no error, no hint, outcome once', { skip: MOCK_ONLY }, async () => {
  const { broker } = env;
  const page = await env.newPage('/');
  // A long backoff: only the 1012 path can reconnect within the wait below.
  await page.evaluate(() => mountWidget({ widget: { watchOptions: { backoffBaseMs: 5000, backoffCapMs: 5000 } } }));
  const session = await sessionOf(page);
  await page.waitForFunction(() => widget.watcher.connection === 'open');
  assert.equal(broker.control.restart(session.id), 1);
  // Wait on the broker's side: right after the close the page may still report 'open' for the
  // old socket, so waiting on the page alone races the close event.
  await waitFor(() => broker.events('ws_open', session.id).length >= 2, 2000);
  await page.waitForFunction(() => widget.watcher.connection === 'open', null, { timeout: 2000 });
  assert.equal(broker.events('ws_open', session.id).length, 2, 'reconnected once over WebSocket');
  assert.equal(await page.evaluate(() => eventsOf('error').length), 0, 'no error event');
  assert.equal(await page.evaluate(() => document.querySelector('.bzt-hint').hidden), true, 'no reconnect hint');
  await broker.phone.scan(session);
  await broker.phone.approve(session);
  const outcome = await page.evaluate(() => widget.result);
  assert.equal(outcome.status, 'approved');
  assert.equal(await page.evaluate(() => eventsOf('result').length), 1);
  await page.close();
});
