// The Node backend helper: webhook signatures and the RP API client (against the mock).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { verifyWebhook, signWebhook, createClient, BztApiError } from '../node/index.mjs';
import { startMockBroker } from './mock-broker.mjs';

const SECRET = 'whsec_test_0123456789';
const BODY = JSON.stringify({ id: 'ses_1', kind: 'login', status: 'approved', version: 3, result: { certificate: { serial: '5a17c0de' } } });
const NOW = 1_800_000_000;

test('verifyWebhook accepts a correct signature', () => {
  const header = signWebhook(SECRET, BODY, NOW);
  assert.match(header, /^t=1800000000,v1=[0-9a-f]{64}$/);
  assert.equal(verifyWebhook(SECRET, header, BODY, 300, NOW), true);
  assert.equal(verifyWebhook(SECRET, header, Buffer.from(BODY), 300, NOW + 299), true, 'Buffer body, within tolerance');
  assert.equal(verifyWebhook(SECRET, header, new TextEncoder().encode(BODY), 300, NOW), true, 'Uint8Array body');
  assert.equal(verifyWebhook(SECRET, header.replace(',', ' , '), BODY, 300, NOW), true, 'spaces around parts');
});

test('verifyWebhook matches an independent HMAC computation', async () => {
  const { createHmac } = await import('node:crypto');
  const mac = createHmac('sha256', SECRET).update(`${NOW}.${BODY}`).digest('hex');
  assert.equal(verifyWebhook(SECRET, `t=${NOW},v1=${mac}`, BODY, 300, NOW), true);
  assert.equal(verifyWebhook(SECRET, `t=${NOW},v1=${mac.toUpperCase()}`, BODY, 300, NOW), true, 'hex case-insensitive');
});

test('verifyWebhook rejects a tampered body', () => {
  const header = signWebhook(SECRET, BODY, NOW);
  assert.equal(verifyWebhook(SECRET, header, BODY.replace('approved', 'rejected'), 300, NOW), false);
  assert.equal(verifyWebhook(SECRET, header, BODY + ' ', 300, NOW), false);
});

test('verifyWebhook rejects a wrong secret', () => {
  const header = signWebhook('another-secret', BODY, NOW);
  assert.equal(verifyWebhook(SECRET, header, BODY, 300, NOW), false);
});

test('verifyWebhook rejects a stale (or future) timestamp', () => {
  const header = signWebhook(SECRET, BODY, NOW);
  assert.equal(verifyWebhook(SECRET, header, BODY, 300, NOW + 301), false);
  assert.equal(verifyWebhook(SECRET, header, BODY, 300, NOW - 301), false);
  assert.equal(verifyWebhook(SECRET, header, BODY, 600, NOW + 400), true, 'tolerance is configurable');
});

test('verifyWebhook rejects malformed headers and a re-timed signature', () => {
  const header = signWebhook(SECRET, BODY, NOW);
  const v1 = header.split('v1=')[1];
  assert.equal(verifyWebhook(SECRET, `t=${NOW + 1},v1=${v1}`, BODY, 300, NOW), false, 't is signed');
  assert.equal(verifyWebhook(SECRET, `v1=${v1}`, BODY, 300, NOW), false, 'no t');
  assert.equal(verifyWebhook(SECRET, `t=${NOW}`, BODY, 300, NOW), false, 'no v1');
  assert.equal(verifyWebhook(SECRET, `t=${NOW},v1=${v1.slice(2)}`, BODY, 300, NOW), false, 'short v1');
  assert.equal(verifyWebhook(SECRET, `t=abc,v1=${v1}`, BODY, 300, NOW), false);
  assert.equal(verifyWebhook(SECRET, `t=${NOW},t=${NOW},v1=${v1}`, BODY, 300, NOW), false, 'two t');
  assert.equal(verifyWebhook(SECRET, '', BODY, 300, NOW), false);
  assert.equal(verifyWebhook(SECRET, header, JSON.parse(BODY), 300, NOW), false, 'parsed JSON is not the raw body');
  // Several v1 (secret rotation): any match is enough.
  assert.equal(verifyWebhook(SECRET, `t=${NOW},v1=${'0'.repeat(64)},v1=${v1}`, BODY, 300, NOW), true);
});

test('require() works too (CommonJS entry)', () => {
  const require = createRequire(import.meta.url);
  const cjs = require('../node/index.cjs');
  assert.equal(typeof cjs.verifyWebhook, 'function');
  assert.equal(cjs.verifyWebhook(SECRET, signWebhook(SECRET, BODY, NOW), BODY, 300, NOW), true);
});

test('client: create, get, long-poll, cancel, errors', async () => {
  const broker = await startMockBroker({ realTimers: false });
  try {
    const bzt = createClient({ apiKey: broker.apiKey, baseUrl: broker.url + '/' });
    const s = await bzt.createSession({ kind: 'login', display: { title: '登录' } });
    assert.equal(s.status, 'pending');
    assert.ok(s.browser_token && s.ws_url.startsWith('ws://') && s.events_url && s.qr_svg_url);
    assert.equal((await bzt.getSession(s.id)).version, 1);

    // Long-poll answers when the version moves.
    const t0 = Date.now();
    const waiting = bzt.waitSession(s.id, 1, 10);
    setTimeout(() => broker.phone.scan(s.id), 200);
    const v = await waiting;
    assert.equal(v.status, 'scanned');
    assert.equal(v.version, 2);
    assert.ok(Date.now() - t0 < 5000);

    const cancelled = await bzt.cancelSession(s.id);
    assert.equal(cancelled.status, 'cancelled');
    await assert.rejects(bzt.cancelSession(s.id), (e) => e instanceof BztApiError && e.status === 409 && e.code === 'conflict');
    await assert.rejects(bzt.createSession({ kind: 'login', display: { title: 'x' }, typo: 1 }), (e) => e.code === 'invalid_request' && e.status === 400);
    const wrong = createClient({ apiKey: 'nope', baseUrl: broker.url });
    await assert.rejects(wrong.getSession(s.id), (e) => e.code === 'unauthorized' && e.status === 401);
    assert.throws(() => bzt.waitSession(s.id, 1, 31), RangeError);
  } finally {
    await broker.close();
  }
});
