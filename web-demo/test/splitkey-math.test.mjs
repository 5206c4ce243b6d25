// The phone page's split-key code (splitkey.js, BigInt, hand-written) against independent
// implementations: npm sm-crypto (SM3, SM4, SM2 point arithmetic, SM2 encryption and signature
// verification), Python `cryptography` (HMAC/PBKDF2-HMAC-SM3, SM4-GCM), the OpenSSL 3 CLI (signature
// verification against a certificate, SM2 encryption), and the Rust co-signing service itself (key
// generation, the sealed channel, PIN proofs, co-signing) through a real development broker.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { startBroker, tempDir } from './harness.mjs';
import '../splitkey.js';

const require = createRequire(import.meta.url);
const smCrypto = require('sm-crypto');
const { BigInteger } = require('jsbn');
const { getGlobalCurve } = require('sm-crypto/src/sm2/utils.js');
const { math: M, enroll, sign, SplitKeyError } = globalThis.BztSplitKey;
const hex = M.bytesToHex;
const rnd = (n) => new Uint8Array(crypto.randomBytes(n));

function python(script, input) {
  return JSON.parse(execFileSync('python3', ['-c', script], { input: JSON.stringify(input), encoding: 'utf8' }));
}

/** SubjectPublicKeyInfo PEM of an SM2 point (id-ecPublicKey, curve SM2). */
function publicKeyPem(point) {
  const der = Buffer.concat([Buffer.from('3059301306072a8648ce3d020106082a811ccf5501822d034200', 'hex'), Buffer.from(M.encodePoint(point))]);
  return `-----BEGIN PUBLIC KEY-----\n${der.toString('base64').match(/.{1,64}/g).join('\n')}\n-----END PUBLIC KEY-----\n`;
}

/** The service's half, played here to check the phone's half against independent code. */
function enrolledPair() {
  const start = M.keygenStart();
  const d2 = M.randomScalar();
  const d2inv = M.inv(d2, M.N);
  const p2 = M.mul(d2inv, M.G);
  const proof2 = M.schnorrProve(d2inv, p2, M.concat(M.utf8('BZT-2P-KEYGEN-SERVICE-V1'), M.encodePoint(start.p1)));
  const joint = M.keygenFinish(start, p2, proof2);
  return { d1: start.d1, d2, joint };
}
function coSign(pair, msg) {
  const w1 = M.randomScalar();
  const q1 = M.mul(w1, M.G);
  const e = M.messageDigest(pair.joint, msg);
  const w2 = M.randomScalar();
  const x1 = M.affine(M.add(M.mul(w2, M.G), M.mul(M.inv(pair.d2, M.N), q1))).x;
  const r = M.mod(e + x1, M.N);
  const s1 = M.mod(pair.d2 * (r + w2), M.N);
  return M.signFinish(pair.d1, w1, pair.joint, msg, M.bigToBytes(r), M.bigToBytes(s1));
}
function coDecrypt(pair, der) {
  const ct = M.parseCiphertextDer(der);
  const w = M.randomScalar();
  const t2 = M.mul(M.inv(pair.d2, M.N), M.mul(w, ct.c1));
  return M.decryptFinish(pair.d1, w, ct, t2);
}

test('SM3 and HMAC/PBKDF2-HMAC-SM3 agree with sm-crypto and Python cryptography', () => {
  for (const len of [0, 1, 3, 55, 56, 63, 64, 65, 119, 200, 1000]) {
    const msg = rnd(len);
    assert.equal(hex(M.sm3(msg)), smCrypto.sm3(Array.from(msg)), `SM3 of ${len} bytes`);
  }
  const cases = [
    { key: hex(rnd(16)), msg: hex(rnd(32)), salt: hex(rnd(16)), pin: '135790', rounds: 1 },
    { key: hex(rnd(80)), msg: hex(rnd(100)), salt: hex(rnd(16)), pin: '000000', rounds: 1000 },
  ];
  const py = python(`
import sys, json
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
out = []
for c in json.load(sys.stdin):
    h = hmac.HMAC(bytes.fromhex(c['key']), hashes.SM3()); h.update(bytes.fromhex(c['msg']))
    k = PBKDF2HMAC(hashes.SM3(), 32, bytes.fromhex(c['salt']), c['rounds']).derive(c['pin'].encode())
    out.append({'hmac': h.finalize().hex(), 'pbkdf2': k.hex()})
print(json.dumps(out))`, cases);
  cases.forEach((c, i) => {
    assert.equal(hex(M.hmacSm3(M.hexToBytes(c.key), M.hexToBytes(c.msg))), py[i].hmac);
    assert.equal(hex(M.pbkdf2Sm3(M.utf8(c.pin), M.hexToBytes(c.salt), c.rounds)), py[i].pbkdf2);
  });
});

test('SM4 agrees with sm-crypto, SM4-GCM with Python cryptography both ways', () => {
  for (let i = 0; i < 8; i++) {
    const key = rnd(16); const block = rnd(16);
    assert.equal(hex(M.sm4Block(M.sm4RoundKeys(key), block)), smCrypto.sm4.encrypt(Array.from(block), hex(key), { padding: 'none' }));
  }
  const cases = [0, 5, 16, 33, 200].map((len) => ({ key: hex(rnd(16)), nonce: hex(rnd(12)), aad: hex(rnd(len % 21)), pt: hex(rnd(len)) }));
  const py = python(`
import sys, json, os
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
out = []
for c in json.load(sys.stdin):
    key, nonce, aad = bytes.fromhex(c['key']), bytes.fromhex(c['nonce']), bytes.fromhex(c['aad'])
    e = Cipher(algorithms.SM4(key), modes.GCM(nonce)).encryptor(); e.authenticate_additional_data(aad)
    ct = e.update(bytes.fromhex(c['pt'])) + e.finalize() + e.tag
    out.append({'sealed': ct.hex()})
print(json.dumps(out))`, cases);
  cases.forEach((c, i) => {
    const [key, nonce, aad, pt] = [c.key, c.nonce, c.aad, c.pt].map(M.hexToBytes);
    assert.equal(hex(M.sm4GcmSeal(key, nonce, aad, pt)), py[i].sealed);
    assert.equal(hex(M.sm4GcmOpen(key, nonce, aad, M.hexToBytes(py[i].sealed))), c.pt);
    const tampered = M.hexToBytes(py[i].sealed); tampered[tampered.length - 1] ^= 1;
    assert.throws(() => M.sm4GcmOpen(key, nonce, aad, tampered), SplitKeyError);
  });
});

test('SM2 point arithmetic agrees with sm-crypto; invalid points are refused', () => {
  const curve = getGlobalCurve();
  for (let i = 0; i < 4; i++) {
    const k = M.randomScalar();
    const kHex = k.toString(16).padStart(64, '0');
    assert.equal(M.pointToHex(M.mul(k, M.G)), smCrypto.sm2.getPublicKeyFromPrivateKey(kHex));
    const a = M.mul(M.randomScalar(), M.G); const b = M.mul(M.randomScalar(), M.G);
    const sa = curve.decodePointHex(M.pointToHex(a)); const sb = curve.decodePointHex(M.pointToHex(b));
    const theirs = sa.add(sb).multiply(new BigInteger(kHex, 16));
    const want = '04' + theirs.getX().toBigInteger().toString(16).padStart(64, '0') + theirs.getY().toBigInteger().toString(16).padStart(64, '0');
    assert.equal(M.pointToHex(M.mul(k, M.add(a, b))), want, 'k·(A + B)');
    assert.equal(M.pointToHex(M.add(M.mul(k, a), M.neg(a))), M.pointToHex(M.mul(k - 1n, a)), 'k·A − A');
  }
  const g = M.encodePoint(M.G);
  const off = Uint8Array.from(g); off[64] ^= 1;
  assert.throws(() => M.decodePoint(off), (e) => e.code === 'invalid_point');
  assert.throws(() => M.decodePoint(new Uint8Array(65)), (e) => e.code === 'invalid_point');
  assert.throws(() => M.decodePoint(M.concat(Uint8Array.of(2), g.subarray(1, 33))), (e) => e.code === 'invalid_point');
});

test('a co-signature made with the page code verifies in sm-crypto and OpenSSL; co-decryption opens sm-crypto and OpenSSL ciphertexts', (t) => {
  const dir = tempDir(t);
  const pair = enrolledPair();
  const msg = M.utf8('BZT-CHALLENGE-V1\nkind:login\n投标');
  const { r, s } = coSign(pair, msg);
  const pub = M.pointToHex(pair.joint);
  assert.ok(smCrypto.sm2.doVerifySignature(Array.from(msg), r.toString(16).padStart(64, '0') + s.toString(16).padStart(64, '0'), pub, { hash: true }));
  fs.writeFileSync(path.join(dir, 'pub.pem'), publicKeyPem(pair.joint));
  fs.writeFileSync(path.join(dir, 'msg'), msg);
  fs.writeFileSync(path.join(dir, 'other'), M.utf8('something else'));
  fs.writeFileSync(path.join(dir, 'sig.der'), M.signatureDer(r, s));
  const verify = (file) => execFileSync('openssl', ['pkeyutl', '-verify', '-pubin', '-inkey', 'pub.pem', '-rawin', '-digest', 'sm3', '-pkeyopt', 'distid:1234567812345678', '-in', file, '-sigfile', 'sig.der'], { cwd: dir, encoding: 'utf8' });
  assert.match(verify('msg'), /Signature Verified Successfully/);
  assert.throws(() => verify('other'));
  // Either share alone does not sign: with d2 replaced, the phone's own check refuses.
  assert.throws(() => coSign({ ...pair, d2: 1n }, msg), (e) => e.code === 'bad_signature');

  const key = rnd(16);
  const c1c3c2 = smCrypto.sm2.doEncrypt(Array.from(key), pub, 1);
  const b = M.hexToBytes(c1c3c2);
  const derInt = (x) => { let a = Array.from(x); while (a.length > 1 && a[0] === 0) a.shift(); if (a[0] & 0x80) a.unshift(0); return [2, a.length, ...a]; };
  const body = [...derInt(b.subarray(0, 32)), ...derInt(b.subarray(32, 64)), 4, 32, ...b.subarray(64, 96), 4, b.length - 96, ...b.subarray(96)];
  assert.equal(hex(coDecrypt(pair, Uint8Array.from([0x30, body.length, ...body]))), hex(key), 'sm-crypto ciphertext');
  fs.writeFileSync(path.join(dir, 'key16'), key);
  execFileSync('openssl', ['pkeyutl', '-encrypt', '-pubin', '-inkey', 'pub.pem', '-in', 'key16', '-out', 'wrapped.der'], { cwd: dir });
  const wrapped = new Uint8Array(fs.readFileSync(path.join(dir, 'wrapped.der')));
  assert.equal(hex(coDecrypt(pair, wrapped)), hex(key), 'OpenSSL ciphertext');
  assert.throws(() => coDecrypt({ ...pair, d2: 1n }, wrapped), (e) => e.code === 'decrypt', 'd1 alone does not decrypt');
});

test('against the Rust co-signing service: enrol, the same joint key, a co-signed login the broker and OpenSSL accept, a wrong PIN refused', { timeout: 120000 }, async (t) => {
  const broker = await startBroker();
  t.after(() => broker.stop());
  const dir = tempDir(t);
  const secrets = JSON.parse(fs.readFileSync(path.join(broker.dataDir, 'dev-secrets.json'), 'utf8'));
  const serviceUrl = broker.cosignerUrl;
  const pin = '246810';
  // Every byte the page's client sends to or receives from the service (through the relay).
  const wire = [];
  const realFetch = globalThis.fetch;
  globalThis.fetch = async (url, init = {}) => {
    const r = await realFetch(url, init);
    if (String(url).includes('/demo/cosigner/')) wire.push(String(init.body || ''), await r.clone().text());
    return r;
  };
  t.after(() => { globalThis.fetch = realFetch; });
  // Key generation with the real service, through the demo's relay (as the page does): the
  // service checked our Schnorr proof, we checked its proof bound to our P1.
  const file = await enroll({ cosignerUrl: broker.url + '/demo/cosigner', pin, label: 'JS cross-check', iterations: 2000 });
  const status = await (await fetch(`${serviceUrl}/v1/admin/keys/${file.key_id}`, { headers: { Authorization: 'Bearer ' + secrets.cosigner_admin_token } })).json();
  assert.equal(status.public_key.toLowerCase(), file.public_key, 'the service derived the same joint key P');
  assert.equal(status.state, 'active');

  const json = async (method, url, body, token) => {
    const r = await fetch(url, { method, headers: { 'Content-Type': 'application/json', ...(token ? { Authorization: 'Bearer ' + token } : {}) }, body: body && JSON.stringify(body) });
    return { status: r.status, body: await r.json().catch(() => null) };
  };
  const cert = (await json('POST', broker.url + '/demo/api/phone-certificate', { public_key_hex: file.public_key, cn: '王五', org: '示例建设有限公司' })).body;
  const created = await json('POST', broker.url + '/v1/sessions', { kind: 'login', display: { title: '登录' } }, secrets.demo_api_key);
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const claim = (await json('POST', broker.url + '/v1/claim', { qr_text: created.body.qr_text, device: { id: 'js-test', name: 'Node' } })).body;
  const tbs = Buffer.from(claim.tbs_b64, 'base64');
  const context = { session: { id: claim.session.id, phone_token: claim.phone_token } };

  await assert.rejects(sign(file, '000000', context, tbs), (e) => e.code === 'wrong_pin' && /4 attempt/.test(e.detail));
  const der = await sign(file, pin, context, tbs);
  fs.writeFileSync(path.join(dir, 'cert.pem'), cert.certificate_pem);
  fs.writeFileSync(path.join(dir, 'tbs'), tbs);
  fs.writeFileSync(path.join(dir, 'sig.der'), der);
  const out = execFileSync('openssl', ['pkeyutl', '-verify', '-certin', '-inkey', 'cert.pem', '-rawin', '-digest', 'sm3', '-pkeyopt', 'distid:1234567812345678', '-in', 'tbs', '-sigfile', 'sig.der'], { cwd: dir, encoding: 'utf8' });
  assert.match(out, /Signature Verified Successfully/);
  const done = await json('POST', `${broker.url}/v1/sessions/${claim.session.id}/complete`, { certificate_pem: cert.certificate_pem, signature_b64: Buffer.from(der).toString('base64') }, claim.phone_token);
  assert.equal(done.status, 200, JSON.stringify(done.body));
  const result = await json('GET', `${broker.url}/v1/sessions/${claim.session.id}`, null, secrets.demo_api_key);
  assert.equal(result.body.status, 'approved');
  // What a relay, proxy or log in front of the service saw: sealed bodies only. No field of the
  // protocol in clear, no PIN, no d1, no P1 (with which a holder of the phone file could test PINs).
  const d1 = M.unmaskShare(M.hexToBytes(file.masked_share), M.hexToBytes(file.salt), file.iterations, pin);
  const captured = wire.join('\n');
  assert.ok(captured.includes('ciphertext_b64'));
  for (const field of ['p1', 'proof1', 'p2', 'proof2', 'q1', 'pin_proof', 'r', 's1', 'phone_token']) {
    assert.ok(!captured.includes(`"${field}"`), `${field} does not travel in clear`);
  }
  for (const secret of [pin, M.bytesToHex(M.bigToBytes(d1)), M.pointToHex(M.mul(M.inv(d1, M.N), M.G)).slice(2, 66), claim.phone_token]) {
    assert.ok(!captured.toLowerCase().includes(secret.toLowerCase()), 'no PIN, d1, P1 or phone token on the wire');
  }

  // The demo relay passes on the phone's calls only: not the admin routes, not another path.
  for (const [method, url] of [
    ['POST', `/demo/cosigner/v1/keys/${file.key_id}/freeze`],
    ['POST', `/demo/cosigner/v1/keys/${file.key_id}/revoke`],
    ['GET', `/demo/cosigner/v1/admin/keys/${file.key_id}`],
    ['GET', '/demo/cosigner/v1/audit'],
  ]) {
    const r = await fetch(broker.url + url, { method, headers: { Authorization: 'Bearer ' + secrets.cosigner_admin_token } });
    assert.equal(r.status, 404, `${method} ${url}`);
  }
  const odd = await fetch(`${broker.url}/demo/cosigner/v1/keys/${encodeURIComponent('../admin')}/sign`, { method: 'POST', body: '{}' });
  assert.equal(odd.status, 400);
  const after = await (await fetch(`${serviceUrl}/v1/admin/keys/${file.key_id}`, { headers: { Authorization: 'Bearer ' + secrets.cosigner_admin_token } })).json();
  assert.equal(after.state, 'active', 'nothing reached the admin routes through the relay');

  // The session is over: the service's broker check refuses another co-signature for it.
  await assert.rejects(sign(file, pin, context, tbs), (e) => e.code === 'not_requested' || e.code === 'conflict');
});
