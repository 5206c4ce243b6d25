// The requester's conversation client (会话签章).
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setup, shot, waitFor, MOCK_ONLY, test } from './harness.mjs';

let env;
before(async () => {
  env = await setup();
});
after(async () => {
  await env?.teardown();
});

const SIGN_BODY = {
  kind: 'sign',
  display: { title: '签署投标文件', detail: '会话签章' },
  tbs_b64: Buffer.from('第一份文件').toString('base64'),
  conversation: { max_requests: 10, idle_s: 600, max_s: 3600 },
};

/** Creates a sign session, has the phone approve it with a conversation, opens the client. */
async function openConv(page, broker) {
  const session = await page.evaluate((body) => rp.createSession(body), SIGN_BODY);
  await page.evaluate((s) => {
    window.w = BztSdk.watchSession(s);
  }, session);
  await page.waitForFunction(() => w.connection === 'open');
  await broker.phone.scan(session);
  await broker.phone.approve(session, { openConversation: true });
  const cid = await page.evaluate(async () => {
    const outcome = await w.result;
    window.conv = BztSdk.openConversation(
      { ...outcome.result.conversation, baseUrl: outcome.baseUrl },
      {
        container: '#conv',
        sendRequest: rp.sendRequest,
        pollRequest: rp.pollRequest,
        end: rp.endConversation,
        onRequestResult: record('request_result'),
        onEnded: record('ended'),
        onState: record('state'),
      },
    );
    return outcome.result.conversation.id;
  });
  await page.waitForFunction(() => conv.state === 'open');
  return cid;
}

test('conversation: request → request_result; phone ends → 对方已结束会话', { skip: MOCK_ONLY }, async () => {
  const { broker } = env;
  const page = await env.newPage('/');
  const cid = await openConv(page, broker);
  assert.equal(await page.textContent('.bzt-conversation'), '会话进行中');

  await page.evaluate(() => {
    window.r1 = conv.request({ tbs_b64: btoa('doc-2'), display: { title: '签署 第二份文件' } });
  });
  const req = await waitFor(() => broker.events('conversation_request', cid)[0]);
  await page.waitForFunction(() => document.querySelector('.bzt-conversation').textContent.includes('等待手机签署 1 项'));
  assert.ok(broker.phone.respond(cid, req.rid, { status: 'approved', auto_confirmed: true }));
  const r1 = await page.evaluate(() => window.r1);
  assert.equal(r1.request_id, req.rid);
  assert.equal(r1.status, 'approved');
  assert.equal(r1.auto_confirmed, true);
  assert.ok(r1.signature_b64);

  // A rejected request resolves too (status rejected).
  await page.evaluate(() => {
    window.r2 = conv.request({ tbs_b64: btoa('doc-3'), display: { title: '签署 第三份文件' } });
  });
  const req2 = await waitFor(() => broker.events('conversation_request', cid)[1]);
  broker.phone.respond(cid, req2.rid, { status: 'rejected', reason: 'user_declined' });
  assert.equal((await page.evaluate(() => window.r2)).status, 'rejected');

  broker.phone.endConversation(cid, 'phone');
  const ended = await page.evaluate(() => conv.ended);
  assert.equal(ended.by, 'phone');
  assert.equal(ended.local, false);
  assert.match(ended.at, /^\d{4}-\d\d-\d\dT/);
  await page.waitForFunction(() => document.querySelector('.bzt-conversation').textContent === '对方已结束会话');
  await shot(page, 'conversation-ended-by-phone');
  const err = await page.evaluate(() => conv.request({ tbs_b64: 'eA==' }).then(() => null, (e) => e.code));
  assert.equal(err, 'conversation_ended');
  assert.equal(await page.evaluate(() => eventsOf('request_result').length), 2);
  await page.close();
});

test('conversation: end() goes through the backend hook; ended by requester', { skip: MOCK_ONLY }, async () => {
  const { broker } = env;
  const page = await env.newPage('/');
  const cid = await openConv(page, broker);
  const ended = await page.evaluate(() => conv.end());
  assert.equal(ended.by, 'requester');
  assert.equal(broker.events('conversation_end', cid)[0].by, 'requester');
  assert.equal(await page.textContent('.bzt-conversation'), '会话已结束');
  await page.close();
});

test('conversation: socket dropped, result sent while away → recovered after reconnect', { skip: MOCK_ONLY }, async () => {
  const { broker } = env;
  const page = await env.newPage('/');
  const cid = await openConv(page, broker);
  await page.evaluate(() => {
    window.r = conv.request({ tbs_b64: btoa('doc'), display: { title: '签署' } });
  });
  const req = await waitFor(() => broker.events('conversation_request', cid)[0]);
  await page.waitForFunction(() => conv._pending.size === 1);
  broker.dropConversation(cid);
  broker.phone.respond(cid, req.rid, { status: 'approved' }); // nobody listening: lost on the socket
  const r = await page.evaluate(() => window.r);
  assert.equal(r.status, 'approved');
  assert.ok(r.signature_b64);
  assert.ok(broker.events('conversation_ws_open', cid).length >= 2, 'reconnected');
  // The broker replays finished results on every connect and pollRequest may also find it:
  // still one delivery.
  await new Promise((res) => setTimeout(res, 200));
  assert.equal(await page.evaluate(() => eventsOf('request_result').length), 1);
  assert.equal(await page.evaluate(() => conv.state), 'open');
  await page.evaluate(() => conv.destroy());
  await page.close();
});
