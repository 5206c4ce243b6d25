// docs/deploy.md, tested: Debian's nginx with a test CA's server certificate in front of the broker, using
// docs/deploy/nginx.conf itself (only ports and certificate paths replaced). A whole login runs
// through it over https:// and wss:// in Chromium, the same kind of session is followed over SSE
// through nginx, and a forged X-Forwarded-For does not become the requester's address.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { REPO, freePort, startBroker, launchBrowser, openPhone, scan, confirmWithPin, qrTextOf, shot, brokerBinary } from './harness.mjs';

const NGINX = fs.existsSync('/usr/sbin/nginx') ? '/usr/sbin/nginx' : 'nginx';
const DOCUMENTED = path.join(REPO, 'docs/deploy/nginx.conf');

/** The documented file with the listen ports, the upstream and the certificate paths replaced. */
function nginxConf({ httpsPort, httpPort, brokerPort, cert, key }) {
  let conf = fs.readFileSync(DOCUMENTED, 'utf8');
  const replace = (from, to) => {
    assert.ok(conf.includes(from), `docs/deploy/nginx.conf no longer has "${from}": update this test with it`);
    conf = conf.split(from).join(to);
  };
  replace('listen 443 ssl;', `listen 127.0.0.1:${httpsPort} ssl;`);
  replace('listen 80;', `listen 127.0.0.1:${httpPort};`);
  replace('server 127.0.0.1:8700;', `server 127.0.0.1:${brokerPort};`);
  replace('/etc/ssl/bzt/fullchain.pem', cert);
  replace('/etc/ssl/bzt/privkey.pem', key);
  return conf;
}

/** Starts nginx as this user in `dir`; resolves once it answers on `httpsPort`. */
async function startNginx(t, dir, site, httpsPort, ca) {
  for (const d of ['tmp/body', 'tmp/proxy', 'tmp/fastcgi', 'tmp/uwsgi', 'tmp/scgi']) fs.mkdirSync(path.join(dir, d), { recursive: true });
  fs.writeFileSync(path.join(dir, 'bzt.conf'), site);
  const main = `worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path ${dir}/tmp/body;
  proxy_temp_path ${dir}/tmp/proxy;
  fastcgi_temp_path ${dir}/tmp/fastcgi;
  uwsgi_temp_path ${dir}/tmp/uwsgi;
  scgi_temp_path ${dir}/tmp/scgi;
  include ${dir}/bzt.conf;
}
`;
  const conf = path.join(dir, 'nginx.conf');
  fs.writeFileSync(conf, main);
  const check = spawnSync(NGINX, ['-t', '-p', dir, '-e', path.join(dir, 'error.log'), '-c', conf], { encoding: 'utf8' });
  assert.equal(check.status, 0, `nginx -t refused the documented configuration:\n${check.stderr}`);
  const child = spawn(NGINX, ['-p', dir, '-e', path.join(dir, 'error.log'), '-c', conf, '-g', 'daemon off;'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr.on('data', (d) => { log += d; });
  t.after(async () => {
    if (child.exitCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    }
  });
  const deadline = Date.now() + 15000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`nginx exited (${child.exitCode}): ${log}${fs.readFileSync(path.join(dir, 'error.log'), 'utf8')}`);
    try {
      const r = await request(`https://127.0.0.1:${httpsPort}/healthz`, { ca });
      if (r.status === 200) return;
    } catch {}
    if (Date.now() > deadline) throw new Error('nginx did not answer in 15 s');
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** An HTTPS request that trusts only `ca`; resolves with {status, headers, body}. */
function request(url, { ca, method = 'GET', headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const req = https.request(url, { method, ca, headers }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** Follows an SSE stream over HTTPS; `events` fills as they arrive. */
function followSse(url, { ca, headers }) {
  const events = [];
  let req;
  const done = new Promise((resolve, reject) => {
    req = https.get(url, { ca, headers: { Accept: 'text/event-stream', ...headers } }, (res) => {
      events.status = res.statusCode;
      events.contentType = res.headers['content-type'];
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => {
        buf += chunk;
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const type = /^event: (.*)$/m.exec(block);
          const data = /^data: (.*)$/m.exec(block);
          if (type && data) events.push({ type: type[1], data: JSON.parse(data[1]), at: Date.now() });
        }
      });
      res.on('end', resolve);
    });
    req.on('error', reject);
  });
  return { events, done, close: () => req.destroy() };
}

const waitUntil = async (cond, ms, what) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out waiting for ' + what);
    await new Promise((r) => setTimeout(r, 50));
  }
};

test('the documented nginx configuration keeps socket and SSE timeouts above the 25 s ping', () => {
  const conf = fs.readFileSync(DOCUMENTED, 'utf8');
  const block = (re) => {
    const m = re.exec(conf);
    assert.ok(m, `no location ${re}`);
    return conf.slice(m.index, conf.indexOf('}', m.index));
  };
  const ws = block(/location ~ \^\/v1\/\(sessions\|conversations\)\/\[\^\/\]\+\/\(ws\|phone\)\$/);
  const sse = block(/location ~ \^\/v1\/sessions\/\[\^\/\]\+\/events\$/);
  for (const [name, b] of [['sockets', ws], ['SSE', sse]]) {
    const timeout = Number(/proxy_read_timeout (\d+)s;/.exec(b)[1]);
    assert.ok(timeout > 25 * 2, `${name}: proxy_read_timeout ${timeout}s must be well above the 25 s ping`);
  }
  assert.match(ws, /proxy_set_header Upgrade\s+\$http_upgrade;/);
  assert.match(ws, /proxy_set_header Connection\s+\$connection_upgrade;/);
  assert.match(sse, /proxy_buffering off;/);
  // Overwritten, never appended: the broker trusts the first address.
  assert.doesNotMatch(conf, /\$proxy_add_x_forwarded_for/);
});

test('deploy: a login through nginx over https:// and wss://, SSE unbuffered, X-Forwarded-For overwritten', { timeout: 150000 }, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bzt-nginx-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  // A test CA and a server certificate for 127.0.0.1 signed by it (the OpenSSL CLI), as a platform's
  // own CA would issue one: clients trust the CA, not the server certificate itself.
  const f = (name) => path.join(dir, name);
  const openssl = (...args) => {
    const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' });
    assert.equal(r.status, 0, `openssl ${args.join(' ')}: ${r.stderr}`);
  };
  const p256 = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  openssl('req', '-x509', ...p256, '-days', '2', '-subj', '/CN=bzt deploy test CA', '-keyout', f('ca-key.pem'), '-out', f('ca.pem'));
  openssl('req', '-new', ...p256, '-subj', '/CN=127.0.0.1', '-keyout', f('key.pem'), '-out', f('server.csr'));
  fs.writeFileSync(f('server.ext'), 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n');
  openssl('x509', '-req', '-in', f('server.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca-key.pem'), '-CAcreateserial', '-days', '2', '-extfile', f('server.ext'), '-out', f('server.pem'));
  const cert = f('server.pem');
  const key = f('key.pem');
  const ca = fs.readFileSync(f('ca.pem'));

  const httpsPort = await freePort();
  const httpPort = await freePort();
  const base = `https://127.0.0.1:${httpsPort}`;
  // The broker as docs/deploy.md configures it: public https:// name, requester IP from the proxy.
  const broker = await startBroker({ env: { BZT_PUBLIC_BASE_URL: base, BZT_TRUST_FORWARDED_FOR: 'true' } });
  t.after(() => broker.stop());
  const brokerPort = Number(new URL(broker.url).port);
  await startNginx(t, dir, nginxConf({ httpsPort, httpPort, brokerPort, cert, key }), httpsPort, ca);

  const redirect = await new Promise((resolve, reject) => {
    import('node:http').then(({ default: http }) => http.get(`http://127.0.0.1:${httpPort}/demo/`, (r) => resolve(r)).on('error', reject));
  });
  assert.equal(redirect.statusCode, 301, 'plain http is redirected');
  assert.match(redirect.headers.location, /^https:\/\//);

  // 1. An RP backend creates a session through nginx; a forged X-Forwarded-For rides on the first
  //    browser request (the SSE stream), which nginx must overwrite with the address it saw.
  const apiKey = JSON.parse(fs.readFileSync(path.join(broker.dataDir, 'dev-secrets.json'), 'utf8')).demo_api_key;
  const created = await request(base + '/v1/sessions', {
    ca, method: 'POST',
    headers: { Authorization: 'Bearer ' + apiKey, 'Content-Type': 'application/json' },
    body: JSON.stringify({ kind: 'login', display: { title: '登录 示例交易平台（经 nginx）' } }),
  });
  assert.equal(created.status, 201, created.body);
  const session = JSON.parse(created.body);
  assert.ok(session.qr_text.startsWith(base + '/q/'), 'QR text on the public https:// name');
  assert.ok(session.ws_url.startsWith(`wss://127.0.0.1:${httpsPort}/`), 'socket URL is wss://');
  assert.ok(session.events_url.startsWith(base + '/'), 'events URL is https://');
  const sse = followSse(session.events_url, { ca, headers: { 'X-Forwarded-For': '203.0.113.9' } });
  t.after(() => sse.close());
  await waitUntil(() => sse.events.length >= 1, 10000, 'the SSE snapshot through nginx');
  assert.equal(sse.events.status, 200);
  assert.match(sse.events.contentType, /text\/event-stream/);
  assert.equal(sse.events[0].type, 'snapshot');

  const browser = await launchBrowser(['--ignore-certificate-errors']);
  t.after(() => browser.close());
  const errors = [];
  browser.context.on('page', (p) => p.on('pageerror', (e) => errors.push(String(e))));
  const phone = await openPhone(browser, base);
  await scan(phone, session.qr_text);
  const requester = await phone.textContent('#op-requester');
  assert.match(requester, /127\.0\.0\.1/, 'the address nginx saw');
  assert.doesNotMatch(requester, /203\.0\.113\.9/, 'not the forged X-Forwarded-For');
  // Unbuffered: the scanned status arrives while the session is still open.
  await waitUntil(() => sse.events.some((e) => e.type === 'status' && e.data.status === 'scanned'), 10000, 'status scanned over SSE');
  await confirmWithPin(phone);
  await waitUntil(() => sse.events.some((e) => e.type === 'result'), 10000, 'the result over SSE');
  const result = sse.events.find((e) => e.type === 'result').data;
  assert.equal(result.status, 'approved');
  assert.match(result.result.certificate.subject, /CN=张三/);
  await sse.done;

  // 1b. The reference phone on the command line, over https:// through nginx (trusting the CA with
  //     --ca-file), approving a session an RP created through nginx.
  const bin = brokerBinary();
  const cli = (...args) => {
    const env = { ...process.env, BZT_DATA_DIR: broker.dataDir };
    const r = spawnSync(bin, args, { cwd: dir, env, encoding: 'utf8', timeout: 60000 });
    assert.equal(r.status, 0, `bzt ${args.join(' ')}: ${r.stdout}${r.stderr}`);
    return r.stdout;
  };
  cli('dev-ca', 'issue', '--cn', '李四', '--org', '示例建设有限公司', '--uscc', '91350100M000100Y43', '--out', f('phone-cli'));
  const second = JSON.parse((await request(base + '/v1/sessions', {
    ca, method: 'POST',
    headers: { Authorization: 'Bearer ' + apiKey, 'Content-Type': 'application/json' },
    body: JSON.stringify({ kind: 'login', display: { title: '登录（命令行手机，经 nginx）' } }),
  })).body);
  cli('phone', 'approve', '--ca-file', f('ca.pem'), '--cert', f('phone-cli/cert.pem'), '--key', f('phone-cli/key.pem'), second.qr_text);
  const after = JSON.parse((await request(base + '/v1/sessions/' + second.id, { ca, headers: { Authorization: 'Bearer ' + apiKey } })).body);
  assert.equal(after.status, 'approved');
  assert.match(after.result.certificate.subject, /CN=李四/);

  // 2. The demo login page over https://: the widget's socket is wss:// through nginx.
  const login = await browser.context.newPage();
  await login.goto(base + '/demo/login.html');
  const qr = await qrTextOf(login);
  assert.ok(qr.startsWith(base + '/q/'), qr);
  await login.waitForFunction(() => document.getElementById('transport').textContent === 'ws · open', null, { timeout: 20000 });
  assert.ok((await login.evaluate(() => demoWidget().watcher.endpoints.wsUrl)).startsWith(`wss://127.0.0.1:${httpsPort}/`));
  await scan(phone, qr);
  await login.locator('#outcome', { hasText: '已扫码' }).waitFor({ timeout: 15000 });
  await confirmWithPin(phone);
  await login.locator('#outcome .ok', { hasText: '登录成功' }).waitFor({ timeout: 15000 });
  assert.equal(await login.textContent('#r-name'), '张三');
  assert.equal(await login.textContent('#transport'), 'ws · closed', 'the result came over wss://');
  await shot(login, '30-login-through-nginx');
  assert.deepEqual(errors, []);
});
