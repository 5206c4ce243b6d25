// Unit tests of the browser SDK's logic, run in Node on src/ (no browser needed).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SseParser } from '../src/sse.js';
import { backoffDelay, formatCountdown } from '../src/util.js';
import { sessionEndpoints } from '../src/session.js';
import { watchSession } from '../src/watch.js';

test('SSE parser: fields, multi-line data, comments, CRLF, split chunks', () => {
  const got = [];
  const p = new SseParser((e) => got.push(e));
  p.push(': keep-alive\n\nevent: snapshot\ndata: {"a":\ndata: 1}\nid: 1\n\n');
  p.push('event: qr\r\ndata:{"seq":2}\r\nid: 1.2\r');
  p.push('\n\r\n');
  p.push('data: no-event-name\n');
  p.push('\n');
  p.push('event: x\ndata: unterminated');
  assert.deepEqual(got, [
    { event: 'snapshot', data: '{"a":\n1}', id: '1' },
    { event: 'qr', data: '{"seq":2}', id: '1.2' },
    { event: 'message', data: 'no-event-name', id: null },
  ]);
});

test('backoff: full jitter under an exponential ceiling, capped', () => {
  assert.equal(backoffDelay(0, 500, 10000, () => 0.999999), 499);
  assert.equal(backoffDelay(3, 500, 10000, () => 0.999999), 3999);
  assert.equal(backoffDelay(10, 500, 10000, () => 0.999999), 9999);
  assert.equal(backoffDelay(50, 500, 10000, () => 0.5), 5000);
  assert.equal(backoffDelay(2, 500, 10000, () => 0), 0);
});

test('countdown format mm:ss', () => {
  assert.equal(formatCountdown(180000), '03:00');
  assert.equal(formatCountdown(59001), '01:00');
  assert.equal(formatCountdown(9000), '00:09');
  assert.equal(formatCountdown(-5), '00:00');
});

test('endpoints: absolute URLs, relative ones against baseUrl (with a path prefix), derived ones', () => {
  const abs = sessionEndpoints({
    id: 's1', browser_token: 'tok',
    ws_url: 'wss://b.example/bzt/v1/sessions/s1/ws?t=tok',
    events_url: 'https://b.example/bzt/v1/sessions/s1/events?t=tok',
    qr_svg_url: 'https://b.example/bzt/v1/sessions/s1/qr.svg?t=tok',
  });
  assert.equal(abs.base, 'https://b.example/bzt');
  assert.equal(abs.cancelUrl, 'https://b.example/bzt/v1/sessions/s1?t=tok');
  const rel = sessionEndpoints({ id: 's1', browser_token: 'tok', ws_url: '/v1/sessions/s1/ws?t=tok', events_url: '/v1/sessions/s1/events?t=tok' }, 'https://b.example/bzt/');
  assert.equal(rel.wsUrl, 'wss://b.example/bzt/v1/sessions/s1/ws?t=tok');
  assert.equal(rel.eventsUrl, 'https://b.example/bzt/v1/sessions/s1/events?t=tok');
  assert.equal(rel.qrSvgUrl, 'https://b.example/bzt/v1/sessions/s1/qr.svg?t=tok');
  assert.throws(() => sessionEndpoints({ id: 's1' }, 'https://b.example'), /browser_token/);
});

/** A scripted WebSocket: the test decides when it opens, what it receives, when it closes. */
function fakeSockets() {
  const made = [];
  class FakeWS {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      made.push(this);
    }
    open() {
      this.readyState = 1;
      this.onopen && this.onopen({});
    }
    recv(msg) {
      this.onmessage && this.onmessage({ data: JSON.stringify(msg) });
    }
    drop(code = 1006) {
      this.readyState = 3;
      this.onclose && this.onclose({ code });
    }
    send(t) {
      this.sent.push(t);
    }
    close() {
      this.readyState = 3;
    }
  }
  return { FakeWS, made };
}

const SESSION = {
  id: 's1', status: 'pending', version: 1, browser_token: 'tok', qr_text: 'http://b/q/s1#a',
  ws_url: 'ws://b.example/v1/sessions/s1/ws?t=tok', events_url: 'http://b.example/v1/sessions/s1/events?t=tok',
  qr_svg_url: 'http://b.example/v1/sessions/s1/qr.svg?t=tok',
};
const tick = (ms = 5) => new Promise((r) => setTimeout(r, ms));

test('watcher: versions order events; stale and duplicate ones are dropped; result exactly once', async () => {
  const { FakeWS, made } = fakeSockets();
  const seen = [];
  const w = watchSession(SESSION, {
    WebSocket: FakeWS, backoffBaseMs: 1, random: () => 0,
    onStatus: (e) => seen.push(['status', e.status, e.version]),
    onQr: (e) => seen.push(['qr', e.qr_text, e.seq]),
    onResult: (e) => seen.push(['result', e.status]),
  });
  const ws = made[0];
  ws.open();
  ws.recv({ type: 'snapshot', session: { id: 's1', status: 'pending', version: 1, qr_text: 'http://b/q/s1#a' } });
  ws.recv({ type: 'qr', qr_text: 'http://b/q/s1#b', version: 1, seq: 1 });
  ws.recv({ type: 'qr', qr_text: 'http://b/q/s1#old', version: 1, seq: 1 }); // duplicate seq
  ws.recv({ type: 'status', status: 'scanned', version: 2, match_code: '42' });
  ws.recv({ type: 'status', status: 'scanned', version: 2 }); // duplicate
  ws.recv({ type: 'qr', qr_text: 'http://b/q/s1#c', version: 2, seq: 2 }); // not pending any more
  ws.drop();
  await tick();
  const ws2 = made[1];
  assert.ok(ws2, 'reconnected');
  ws2.open();
  ws2.recv({ type: 'snapshot', session: { id: 's1', status: 'pending', version: 1 } }); // stale snapshot
  ws2.recv({ type: 'snapshot', session: { id: 's1', status: 'approved', version: 3, result: { ok: 1 } } });
  ws2.recv({ type: 'result', status: 'approved', version: 3, result: { ok: 1 } }); // duplicate
  const outcome = await w.result;
  assert.equal(outcome.status, 'approved');
  assert.deepEqual(outcome.result, { ok: 1 });
  assert.equal(w.matchCode, '42');
  assert.deepEqual(seen, [
    ['qr', 'http://b/q/s1#b', 1],
    ['status', 'scanned', 2],
    ['status', 'approved', 3],
    ['result', 'approved'],
  ]);
  assert.equal(made.length, 2, 'no reconnect after the terminal state');
});

test('watcher: auto falls back to SSE after N sockets that never opened', async () => {
  const { FakeWS, made } = fakeSockets();
  const fetched = [];
  const fetch = async (url) => {
    fetched.push(String(url));
    const body = 'event: snapshot\ndata: {"type":"snapshot","session":{"id":"s1","status":"rejected","version":3,"result":{"reason":"match_failed"}}}\nid: 3\n\n';
    return new Response(body, { status: 200, headers: { 'Content-Type': 'text/event-stream' } });
  };
  const transports = [];
  const w = watchSession(SESSION, {
    WebSocket: FakeWS, fetch, backoffBaseMs: 1, random: () => 0, fallbackAfter: 3,
    onTransport: (e) => e.state === 'fallback' && transports.push(e.from + '→' + e.transport),
  });
  for (let i = 0; i < 3; i++) {
    await tick();
    made[i].drop();
  }
  const outcome = await w.result;
  assert.equal(made.length, 3);
  assert.deepEqual(transports, ['ws→sse']);
  assert.equal(outcome.status, 'rejected');
  assert.deepEqual(outcome.result, { reason: 'match_failed' });
  assert.deepEqual(fetched, [SESSION.events_url]);
});

test('watcher: a socket that opened and dropped never triggers the fallback', async () => {
  const { FakeWS, made } = fakeSockets();
  const w = watchSession(SESSION, { WebSocket: FakeWS, backoffBaseMs: 1, random: () => 0, fallbackAfter: 2 });
  for (let i = 0; i < 5; i++) {
    await tick();
    made[i].open();
    made[i].drop();
  }
  await tick();
  assert.equal(w.transport, 'ws');
  assert.equal(made.length, 6);
  w.close();
  await assert.rejects(w.result, (e) => e.code === 'closed');
});

test('watcher: cancel() sends {"type":"cancel"} on an open socket', async () => {
  const { FakeWS, made } = fakeSockets();
  const w = watchSession(SESSION, { WebSocket: FakeWS });
  made[0].open();
  const p = w.cancel();
  await tick();
  assert.deepEqual(made[0].sent, ['{"type":"cancel"}']);
  made[0].recv({ type: 'result', status: 'cancelled', version: 2, result: null });
  assert.equal((await p).status, 'cancelled');
});

test("watcher: an error frame is reported; 'conflict' makes it reconnect to learn the outcome", async () => {
  const { FakeWS, made } = fakeSockets();
  const errors = [];
  const w = watchSession(SESSION, { WebSocket: FakeWS, onError: (e) => errors.push([e.code, e.fatal]) });
  made[0].open();
  made[0].recv({ type: 'error', error: { code: 'invalid_request', message: 'x' } });
  assert.equal(made.length, 1);
  made[0].recv({ type: 'error', error: { code: 'conflict', message: 'already approved' } });
  assert.equal(made.length, 2, 'reconnected at once');
  made[1].open();
  made[1].recv({ type: 'snapshot', session: { id: 's1', status: 'approved', version: 3, result: { ok: 1 } } });
  assert.equal((await w.result).status, 'approved');
  assert.deepEqual(errors, [['invalid_request', false], ['conflict', false]]);
});
