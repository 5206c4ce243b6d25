// The login widget in real headless Chromium against the (mock) broker.
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

test('login: QR, countdown, scan → 已扫码, approve → result with the certificate', async () => {
  const { broker } = env;
  const page = await env.newPage('/');
  await page.evaluate(() => mountWidget());
  const session = await sessionOf(page);
  await waitStatus(page, '等待扫码');
  // The broker's SVG is shown (loaded through fetch into a blob: URL).
  await page.waitForFunction(() => {
    const img = document.querySelector('.bzt-qr');
    return img && img.complete && img.naturalWidth > 0 && img.src.startsWith('blob:');
  });
  const svg = await page.evaluate(() => fetch(document.querySelector('.bzt-qr').src).then((r) => r.text()));
  assert.match(svg, /^<svg|<\?xml/, 'the image is the broker SVG');
  // The mock writes the qr_text into its SVG; a real broker draws the modules.
  if (broker.isMock) assert.ok(svg.includes(session.qr_text.replace(/&/g, '&amp;')), 'the SVG of this session');
  const countdown = await page.textContent('.bzt-countdown');
  assert.match(countdown, /^0[23]:\d\d 后失效$/, 'countdown mm:ss to expires_at');
  await shot(page, 'login-1-waiting');

  assert.ok(await broker.phone.scan(session));
  await waitStatus(page, '已扫码，请在手机上确认');
  await shot(page, 'login-2-scanned');

  assert.ok(await broker.phone.approve(session));
  const outcome = await page.evaluate(() => widget.result);
  assert.equal(outcome.status, 'approved');
  assert.equal(outcome.session.id, session.id);
  if (broker.isMock) assert.equal(outcome.result.certificate.serial, '5a17c0de');
  assert.match(outcome.result.certificate.subject, /CN=张三/);
  assert.match(outcome.result.certificate.pem, /BEGIN CERTIFICATE/);
  assert.ok(outcome.result.signature_b64);
  await waitStatus(page, '成功');
  await shot(page, 'login-3-approved');

  const approved = await page.evaluate(() => widget.approved);
  assert.equal(approved.session.id, session.id);
  const statuses = await page.evaluate(() => eventsOf('status').map((e) => e.status));
  assert.deepEqual(statuses, ['pending', 'scanned', 'approved']);
  assert.equal(await page.evaluate(() => eventsOf('result').length), 1);
  assert.deepEqual(page.pageErrors, []);
  await page.close();
});

test('ESM build: watchSession follows a session to its result', async () => {
  const { broker } = env;
  const page = await env.newPage('/esm.html');
  await page.waitForFunction(() => window.esmReady);
  const session = await page.evaluate(() => rp.createSession({}));
  await page.evaluate((s) => {
    window.w = BztSdk.watchSession(s, { onStatus: record('status'), onResult: record('result') });
  }, session);
  await page.waitForFunction(() => w.connection === 'open');
  await broker.phone.scan(session);
  await page.waitForFunction(() => w.status === 'scanned');
  await broker.phone.reject(session, 'user_declined');
  const outcome = await page.evaluate(() => w.result);
  assert.equal(outcome.status, 'rejected', 'non-approved outcomes resolve, not reject');
  if (broker.isMock) assert.deepEqual(outcome.result, { reason: 'user_declined' });
  else assert.equal(typeof outcome.result.reason, 'string');
  await page.close();
});

test('rejected: status 已拒绝 and a retry overlay', async () => {
  const { broker } = env;
  const page = await env.newPage('/');
  await page.evaluate(() => mountWidget());
  const session = await sessionOf(page);
  await broker.phone.scan(session);
  await waitStatus(page, '已扫码');
  await broker.phone.reject(session, 'user_declined');
  const outcome = await page.evaluate(() => widget.result);
  assert.equal(outcome.status, 'rejected');
  await waitStatus(page, '已拒绝');
  assert.equal(await page.textContent('.bzt-overlay'), '点击重新获取二维码');
  await page.close();
});

test('QR rotation redraws the code without changing the status', { skip: MOCK_ONLY }, async () => {
  const { broker } = env;
  const page = await env.newPage('/');
  await page.evaluate(() => mountWidget());
  const session = await sessionOf(page);
  await page.waitForFunction(() => widget.watcher.connection === 'open');
  await page.waitForFunction(() => document.querySelector('.bzt-qr').getAttribute('data-qr-rev') === '1');
  const before = broker.events('qr_svg', session.id).length;
  assert.ok(broker.control.rotate(session.id));
  const rotated = broker.control.session(session.id).qr_text;
  assert.notEqual(rotated, session.qr_text);
  await page.waitForFunction(() => document.querySelector('.bzt-qr').getAttribute('data-qr-rev') === '2');
  const svg = await page.evaluate(() => fetch(document.querySelector('.bzt-qr').src).then((r) => r.text()));
  assert.ok(svg.includes(rotated.replace(/&/g, '&amp;')), 'the new SVG shows the new qr_text');
  assert.equal(broker.events('qr_svg', session.id).length, before + 1, 'the SVG was fetched again');
  const qrEvents = await page.evaluate(() => eventsOf('qr'));
  assert.equal(qrEvents.length, 1);
  assert.equal(qrEvents[0].qr_text, rotated);
  assert.equal(qrEvents[0].seq, 1);
  assert.equal(qrEvents[0].version, 1, 'a rotation does not bump the version');
  assert.deepEqual(await page.evaluate(() => eventsOf('status').map((e) => e.status)), ['pending']);
  await waitStatus(page, '等待扫码');
  await shot(page, 'rotation');
  await page.evaluate(() => widget.destroy());
  await page.close();
});

test('number matching shows the two-digit code large', async () => {
  const { broker } = env;
  const page = await env.newPage('/');
  await page.evaluate(() => mountWidget({ body: { kind: 'bind', number_match: true, display: { title: '绑定证书' } } }));
  const session = await sessionOf(page);
  await broker.phone.scan(session);
  await waitStatus(page, '已扫码，请在手机上确认');
  const code = broker.isMock ? broker.control.session(session.id).match_code : null;
  await page.waitForFunction(() => !document.querySelector('.bzt-match').hidden);
  const shown = await page.textContent('.bzt-match-code');
  assert.match(shown, /^\d\d$/);
  if (code) assert.equal(shown, code);
  assert.equal((await page.textContent('.bzt-match')).replace(/\s+/g, ' ').trim(), `请在手机上选择 ${shown}`);
  const size = await page.$eval('.bzt-match-code', (e) => parseFloat(getComputedStyle(e).fontSize));
  assert.ok(size >= 32, 'the code is large');
  const ev = (await page.evaluate(() => eventsOf('status'))).find((e) => e.status === 'scanned');
  assert.equal(ev.match_code, shown);
  await shot(page, 'number-match');
  await page.evaluate(() => widget.destroy());
  await page.close();
});

test('destroy() cancels the live session (DELETE ?t= reaches the broker)', { skip: MOCK_ONLY }, async () => {
  const { broker } = env;
  const page = await env.newPage('/');
  await page.evaluate(() => mountWidget());
  const session = await sessionOf(page);
  await page.waitForFunction(() => widget.watcher.connection === 'open');
  await page.evaluate(() => {
    window.destroyedResult = widget.result.then(() => 'resolved', (e) => e.code);
    widget.destroy();
  });
  await waitFor(() => broker.control.session(session.id).status === 'cancelled');
  const del = broker.events('delete', session.id);
  assert.equal(del.length, 1);
  assert.equal(del[0].via, 'browser_token');
  assert.equal(del[0].origin, env.rp.origin, 'sent by the page, with its Origin');
  await waitFor(() => broker.control.watchers(session.id) === 0);
  assert.equal(await page.evaluate(() => document.querySelector('.bzt-widget')), null, 'DOM removed');
  assert.equal(await page.evaluate(() => window.destroyedResult), 'destroyed');
  await page.close();
});

test('page unload cancels the live session with a keepalive DELETE', { skip: MOCK_ONLY }, async () => {
  const { broker } = env;
  const page = await env.newPage('/');
  await page.evaluate(() => mountWidget());
  const session = await sessionOf(page);
  await page.waitForFunction(() => widget.watcher.connection === 'open');
  await page.goto('about:blank');
  await waitFor(() => broker.control.session(session.id).status === 'cancelled', 5000);
  assert.equal(broker.events('delete', session.id).length, 1);
  await page.close();
});

test('widget.cancel() cancels over the socket', { skip: MOCK_ONLY }, async () => {
  const { broker } = env;
  const page = await env.newPage('/');
  await page.evaluate(() => mountWidget());
  const session = await sessionOf(page);
  await page.waitForFunction(() => widget.watcher.connection === 'open');
  const outcome = await page.evaluate(() => widget.cancel());
  assert.equal(outcome.status, 'cancelled');
  assert.equal(broker.events('ws_cancel', session.id).length, 1);
  assert.equal(broker.events('delete', session.id).length, 0);
  await waitStatus(page, '已取消');
  await page.close();
});

test('relative URLs in the create answer are resolved against baseUrl', { skip: MOCK_ONLY }, async () => {
  const { broker, rp } = env;
  rp.transformAnswer = (a) => {
    const strip = (u) => u.replace(broker.url, '').replace(broker.url.replace(/^http/, 'ws'), '');
    return { ...a, ws_url: strip(a.ws_url), events_url: strip(a.events_url), qr_svg_url: strip(a.qr_svg_url), qr_png_url: strip(a.qr_png_url) };
  };
  try {
    const page = await env.newPage('/');
    await page.evaluate((base) => mountWidget({ widget: { baseUrl: base } }), broker.url);
    const session = await sessionOf(page);
    assert.ok(session.ws_url.startsWith('/v1/'));
    await page.waitForFunction(() => widget.watcher.connection === 'open');
    await page.waitForFunction(() => document.querySelector('.bzt-qr').naturalWidth > 0);
    await broker.phone.scan(session);
    await broker.phone.approve(session);
    assert.equal((await page.evaluate(() => widget.result)).status, 'approved');
    await page.close();
  } finally {
    rp.transformAnswer = null;
  }
});

test('createSession failure shows a retry overlay; clicking it retries', { skip: MOCK_ONLY }, async () => {
  const { rp } = env;
  rp.failNextCreate = true;
  const page = await env.newPage('/');
  await page.evaluate(() => mountWidget());
  await page.waitForFunction(() => document.querySelector('.bzt-overlay').textContent === '二维码获取失败，点击重试');
  const err = (await page.evaluate(() => eventsOf('error')))[0];
  assert.equal(err.code, 'create_failed');
  assert.match(err.message, /test: create failed/, "the backend's message reaches the page");
  await page.click('.bzt-overlay');
  await sessionOf(page);
  await waitStatus(page, '等待扫码');
  await page.evaluate(() => widget.destroy());
  await page.close();
});

test('destroyed while createSession is in flight: the late session is cancelled, not left waiting', { skip: MOCK_ONLY }, async () => {
  const { broker, rp } = env;
  rp.createDelayMs = 400;
  try {
    const page = await env.newPage('/');
    const before = rp.creates.length;
    await page.evaluate(() => {
      mountWidget();
      widget.destroy();
    });
    await waitFor(() => rp.creates.length === before + 1);
    const late = rp.creates[before];
    await waitFor(() => broker.control.session(late.id).status === 'cancelled');
    assert.equal(broker.events('ws_open', late.id).length, 0);
    await page.close();
  } finally {
    rp.createDelayMs = 0;
  }
});
