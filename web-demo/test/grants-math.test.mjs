// 企业证书授权 in splitkey.js against the Rust side: the page's re-sharing steps with the real
// broker (development mode) and its real co-signing service, through the demo relay, and with the
// Rust reference phone (`bzt phone grant-invite|accept-grant|approve`). A JS grant is accepted by the
// Rust phone and by the JS member; each member's signature verifies with `openssl pkeyutl -verify`
// against the company certificate; the relay refuses the operator's routes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { startBroker, brokerBinary, tempDir, REPO } from './harness.mjs';
import '../splitkey.js';

const { enroll, sign, grantInviteKey, grant, acceptGrant, listGrants, ungrant, extendGrant, math: M } = globalThis.BztSplitKey;

test('grants: a JS grant accepted by the service, by the JS member and by the Rust phone; members sign under the company certificate (OpenSSL); ungrant stops the member', { timeout: 180000 }, async (t) => {
  const broker = await startBroker();
  t.after(() => broker.stop());
  const dir = tempDir(t);
  const secrets = JSON.parse(fs.readFileSync(path.join(broker.dataDir, 'dev-secrets.json'), 'utf8'));
  const cosignerUrl = broker.url + '/demo/cosigner';
  const json = async (method, url, body, token) => {
    const r = await fetch(url, { method, headers: { 'Content-Type': 'application/json', ...(token ? { Authorization: 'Bearer ' + token } : {}) }, body: body && JSON.stringify(body) });
    return { status: r.status, body: await r.json().catch(() => null) };
  };

  // The relay passes the phone's grant routes and none of the operator's.
  // (The service itself answers these with the admin token: the relay must not reach them.)
  const serviceUrl = broker.cosignerUrl;
  assert.equal((await json('GET', serviceUrl + '/v1/admin/grants', null, secrets.cosigner_admin_token)).status, 200);
  for (const [method, p] of [['GET', '/v1/admin/grants'], ['POST', '/v1/admin/grants/abcdefgh12/reclaim'], ['POST', '/v1/keys/abc/freeze'], ['GET', '/v1/audit'], ['POST', '/v1/audit'], ['POST', '/v1/admin/keys/abc/revoke'], ['DELETE', '/v1/grants/abc']]) {
    const r = await json(method, cosignerUrl + p, method === 'POST' ? {} : null, secrets.cosigner_admin_token);
    assert.equal(r.status, 404, `${method} ${p} is not relayed (${r.status})`);
    assert.equal(r.body && r.body.error && r.body.error.code, 'not_found', `${method} ${p}: the usual error body`);
    assert.ok(!(r.body && (r.body.grants || r.body.records)), `${method} ${p} gives nothing of the service`);
  }
  assert.equal((await json('POST', cosignerUrl + '/v1/grants/a%2F..%2Fadmin/accept', {})).status, 400);

  // The administrator (王五) enrols the company key and gets the company certificate.
  const adminPin = '246810';
  const admin = await enroll({ cosignerUrl, pin: adminPin, label: '管理员', iterations: 2000 });
  const company = (await json('POST', broker.url + '/demo/api/phone-certificate', { public_key_hex: admin.public_key, cn: '王五', org: '示例建设有限公司' })).body;
  fs.writeFileSync(path.join(dir, 'company.pem'), company.certificate_pem);
  const certificate = { serial: company.serial, ca: company.issuer, certificate_type: 'SM2 企业证书（密钥拆分）' };
  const info = (await json('POST', cosignerUrl + '/certificate-info', { certificate_pem: company.certificate_pem })).body;
  assert.deepEqual(info, { serial: company.serial, subject: company.subject, issuer: company.issuer });
  const inAnHour = new Date(Date.now() + 3600e3).toISOString().replace(/\.\d{3}Z$/, 'Z');

  /** A login session, claimed; signed by `signer(context, tbs)`; the approved result. */
  async function login(signWith) {
    const created = await json('POST', broker.url + '/v1/sessions', { kind: 'login', display: { title: '登录' } }, secrets.demo_api_key);
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const claim = (await json('POST', broker.url + '/v1/claim', { qr_text: created.body.qr_text, device: { id: 'js-test', name: 'Node' } })).body;
    const tbs = Buffer.from(claim.tbs_b64, 'base64');
    const der = await signWith({ session: { id: claim.session.id, phone_token: claim.phone_token } }, tbs);
    const done = await json('POST', `${broker.url}/v1/sessions/${claim.session.id}/complete`, { certificate_pem: company.certificate_pem, signature_b64: Buffer.from(der).toString('base64') }, claim.phone_token);
    assert.equal(done.status, 200, JSON.stringify(done.body));
    return (await json('GET', `${broker.url}/v1/sessions/${claim.session.id}`, null, secrets.demo_api_key)).body;
  }
  const opensslVerifies = (result, name) => {
    fs.writeFileSync(path.join(dir, name + '.tbs'), Buffer.from(result.result.tbs_b64, 'base64'));
    fs.writeFileSync(path.join(dir, name + '.sig'), Buffer.from(result.result.signature_b64, 'base64'));
    const out = execFileSync('openssl', ['pkeyutl', '-verify', '-certin', '-inkey', 'company.pem', '-rawin', '-digest', 'sm3', '-pkeyopt', 'distid:1234567812345678', '-in', name + '.tbs', '-sigfile', name + '.sig'], { cwd: dir, encoding: 'utf8' });
    assert.match(out, /Signature Verified Successfully/);
  };

  // 1. A JS member (李四): invitation, the JS administrator's grant, acceptance under its own PIN.
  const memberPin = '135790';
  const key = grantInviteKey();
  const { list, offer } = await grant(admin, adminPin, { invite: { name: '李四', device: { id: 'dev-lisi', name: '李四的手机' }, receiving_key: key.receiving_key }, certificate, end: inAnHour, certificatePem: company.certificate_pem });
  assert.equal(list.grant.status, 'pending');
  assert.deepEqual(list.grant.member, { name: '李四', device: 'dev-lisi' });
  assert.deepEqual(list.grant.certificate, certificate);
  // Only the member's receiving key opens the dealt share.
  await assert.rejects(acceptGrant(offer.package, grantInviteKey().secret, memberPin, 2000), (e) => e.code === 'bad_channel');
  const { file: member, end } = await acceptGrant(offer.package, key.secret, memberPin, 2000);
  assert.equal(end, inAnHour);
  assert.equal(member.public_key, admin.public_key, 'the member holds a share of the company key');
  const d1Admin = M.unmaskShare(M.hexToBytes(admin.masked_share), M.hexToBytes(admin.salt), admin.iterations, adminPin);
  const d1Member = M.unmaskShare(M.hexToBytes(member.masked_share), M.hexToBytes(member.salt), member.iterations, memberPin);
  assert.notEqual(d1Member, d1Admin, 'the member share differs from the administrator share');
  // The dealt share d1·t is not the member's share either (the member re-randomised it by u).
  assert.ok(!M.samePoint(M.mul(d1Member, M.G), M.mul(d1Admin, M.G)));

  const lisi = await login((ctx, tbs) => sign(member, memberPin, ctx, tbs));
  assert.equal(lisi.status, 'approved');
  assert.deepEqual(lisi.result.delegate, { name: '李四', device: 'dev-lisi' });
  opensslVerifies(lisi, 'lisi');
  const own = await login((ctx, tbs) => sign(admin, adminPin, ctx, tbs));
  assert.equal(own.result.delegate, undefined, 'the administrator signs as itself');
  opensslVerifies(own, 'admin');
  // A member cannot grant: the service refuses the grant context through a member's key.
  await assert.rejects(listGrants(member, memberPin), (e) => e.code === 'not_requested');

  // 2. The Rust reference phone as member (赵六): its invitation, the JS grant, `bzt phone accept-grant`,
  // and a login with `bzt phone approve`.
  const bzt = brokerBinary();
  const cli = (...args) => execFileSync(bzt, ['phone', ...args], { cwd: dir, encoding: 'utf8', env: { ...process.env, BZT_PHONE_PIN: '' } });
  cli('grant-invite', '--name', '赵六', '--dir', 'zhaoliu', '--out', 'invite.json', '--device-id', 'dev-zhaoliu');
  const rustInvite = JSON.parse(fs.readFileSync(path.join(dir, 'invite.json'), 'utf8'));
  const second = await grant(admin, adminPin, { invite: rustInvite, certificate, end: inAnHour, certificatePem: company.certificate_pem });
  fs.writeFileSync(path.join(dir, 'offer.json'), JSON.stringify(second.offer));
  cli('accept-grant', '--dir', 'zhaoliu', '--offer', 'offer.json', '--pin', '112233');
  const created = await json('POST', broker.url + '/v1/sessions', { kind: 'login', display: { title: '登录' } }, secrets.demo_api_key);
  cli('approve', created.body.qr_text, '--identity', 'zhaoliu', '--pin', '112233');
  const zhaoliu = (await json('GET', `${broker.url}/v1/sessions/${created.body.id}`, null, secrets.demo_api_key)).body;
  assert.equal(zhaoliu.status, 'approved');
  assert.deepEqual(zhaoliu.result.delegate, { name: '赵六', device: 'dev-zhaoliu' });
  opensslVerifies(zhaoliu, 'zhaoliu');

  // 3. Extend, then 解除授权 李四: the member is refused (410 reclaimed), the administrator and 赵六 are not;
  // one reclaim record, by the administrator.
  const later = new Date(Date.now() + 7200e3).toISOString().replace(/\.\d{3}Z$/, 'Z');
  assert.equal((await extendGrant(admin, adminPin, offer.package.grant_id, later)).grant.end, later);
  const after = await ungrant(admin, adminPin, offer.package.grant_id);
  assert.equal(after.grant.status, 'reclaimed');
  assert.equal(after.reclaims.length, 1);
  assert.equal(after.reclaims[0].actor, 'administrator');
  assert.deepEqual(after.reclaims[0].member, { name: '李四', device: 'dev-lisi' });
  await assert.rejects(login((ctx, tbs) => sign(member, memberPin, ctx, tbs)), (e) => e.code === 'reclaimed' && /授权已收回/.test(e.message));
  assert.equal((await login((ctx, tbs) => sign(admin, adminPin, ctx, tbs))).status, 'approved');
  const listed = await listGrants(admin, adminPin);
  assert.deepEqual(listed.grants.map((g) => [g.member.name, g.status]).sort(), [['李四', 'reclaimed'], ['赵六', 'active']]);
  assert.ok(REPO);
});
