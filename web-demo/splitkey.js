/*
 * 密钥拆分 (split SM2 keys) for the phone simulator page: the phone's half of the two-party scheme
 * of docs/key-splitting.md, and its client of the co-signing service. Loaded by phone.html as a
 * classic script (globalThis.BztSplitKey) and by the Node tests as a module (same global).
 *
 * Why hand-written: the page's vendored sm-crypto (vendor/sm2.js, sm3.js) offers whole-key SM2 only.
 * It has no scalar inversion or point addition in its public API, no Schnorr proof, no PBKDF2 or
 * HMAC over SM3, and no SM4-GCM; and the other npm SM libraries would bring a bundler to a page that
 * has none. So this file carries the few primitives the scheme needs, on BigInt, each cross-checked
 * against independent code by web-demo/test/splitkey-math.test.mjs (npm sm-crypto, Python
 * `cryptography`, OpenSSL, and the Rust service itself).
 *
 * Not constant-time: BigInt arithmetic leaks timing. This is a development simulator; a real phone
 * app does this in its platform's keystore or the Rust code (crates/bzt-crypto/src/two_party/).
 *
 * What it keeps: nothing. The page stores the SplitKeyFile this returns (the share masked by the
 * PIN, no P1, no P2); d1 lives in a local variable for one operation.
 */
(function () {
  'use strict';

  // ---------------------------------------------------------------- bytes
  const enc = new TextEncoder();
  const utf8 = (s) => enc.encode(s);
  function hexToBytes(h) {
    if (typeof h !== 'string' || h.length % 2 || /[^0-9a-fA-F]/.test(h)) throw new SplitKeyError('invalid_hex', '十六进制数据无效');
    const a = new Uint8Array(h.length / 2);
    for (let i = 0; i < a.length; i++) a[i] = parseInt(h.substr(i * 2, 2), 16);
    return a;
  }
  const bytesToHex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  function concat(...parts) {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let o = 0;
    for (const p of parts) { out.set(p, o); o += p.length; }
    return out;
  }
  const b64ToBytes = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
  function bytesToB64(b) { let s = ''; for (const x of b) s += String.fromCharCode(x); return btoa(s); }
  const bytesToBig = (b) => (b.length ? BigInt('0x' + bytesToHex(b)) : 0n);
  function bigToBytes(x, len = 32) {
    const h = x.toString(16).padStart(len * 2, '0');
    if (h.length > len * 2) throw new SplitKeyError('internal', '数值超出长度');
    return hexToBytes(h);
  }
  function randomBytes(n) { const b = new Uint8Array(n); globalThis.crypto.getRandomValues(b); return b; }
  function u64be(n) { const b = new Uint8Array(8); new DataView(b.buffer).setBigUint64(0, BigInt(n)); return b; }
  function equalBytes(a, b) {
    if (a.length !== b.length) return false;
    let d = 0;
    for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
    return d === 0;
  }

  /** An error with a stable code (the service's codes pass through) and a zh-CN message. */
  class SplitKeyError extends Error {
    constructor(code, message, detail) { super(message); this.code = code; this.detail = detail; }
  }

  // ---------------------------------------------------------------- SM3 (GB/T 32905)
  const IV = [0x7380166f, 0x4914b2b9, 0x172442d7, 0xda8a0600, 0xa96f30bc, 0x163138aa, 0xe38dee4d, 0xb0fb0e4e];
  const rotl = (x, n) => ((x << n) | (x >>> (32 - n))) >>> 0;
  const T = new Uint32Array(64);
  for (let j = 0; j < 64; j++) T[j] = rotl(j < 16 ? 0x79cc4519 : 0x7a879d8a, j % 32);
  const W = new Uint32Array(68);
  const W1 = new Uint32Array(64);
  /** One compression of the 64-byte block at `off` into state `v` (8 words, updated in place). */
  function sm3Compress(v, block, off) {
    for (let j = 0; j < 16; j++) {
      const o = off + j * 4;
      W[j] = ((block[o] << 24) | (block[o + 1] << 16) | (block[o + 2] << 8) | block[o + 3]) >>> 0;
    }
    for (let j = 16; j < 68; j++) {
      const x = W[j - 16] ^ W[j - 9] ^ rotl(W[j - 3], 15);
      W[j] = (x ^ rotl(x, 15) ^ rotl(x, 23) ^ rotl(W[j - 13], 7) ^ W[j - 6]) >>> 0;
    }
    for (let j = 0; j < 64; j++) W1[j] = (W[j] ^ W[j + 4]) >>> 0;
    let a = v[0], b = v[1], c = v[2], d = v[3], e = v[4], f = v[5], g = v[6], h = v[7];
    for (let j = 0; j < 64; j++) {
      const a12 = rotl(a, 12);
      const ss1 = rotl((a12 + e + T[j]) >>> 0, 7);
      const ss2 = ss1 ^ a12;
      const ff = j < 16 ? a ^ b ^ c : (a & b) | (a & c) | (b & c);
      const gg = j < 16 ? e ^ f ^ g : (e & f) | (~e & g);
      const tt1 = (ff + d + ss2 + W1[j]) >>> 0;
      const tt2 = (gg + h + ss1 + W[j]) >>> 0;
      d = c; c = rotl(b, 9); b = a; a = tt1;
      h = g; g = rotl(f, 19); f = e; e = (tt2 ^ rotl(tt2, 9) ^ rotl(tt2, 17)) >>> 0;
    }
    v[0] ^= a; v[1] ^= b; v[2] ^= c; v[3] ^= d; v[4] ^= e; v[5] ^= f; v[6] ^= g; v[7] ^= h;
  }
  /** SM3 of `msg`, continuing from `state` (after `prefixLen` bytes already compressed), 32 bytes. */
  function sm3From(state, prefixLen, msg) {
    const v = Uint32Array.from(state);
    const total = prefixLen + msg.length;
    const padLen = ((msg.length + 9 + 63) & ~63);
    const buf = new Uint8Array(padLen);
    buf.set(msg);
    buf[msg.length] = 0x80;
    new DataView(buf.buffer).setBigUint64(padLen - 8, BigInt(total) * 8n);
    for (let off = 0; off < padLen; off += 64) sm3Compress(v, buf, off);
    const out = new Uint8Array(32);
    const dv = new DataView(out.buffer);
    for (let i = 0; i < 8; i++) dv.setUint32(i * 4, v[i]);
    return out;
  }
  const sm3 = (msg) => sm3From(IV, 0, msg);

  /** HMAC-SM3 with the key's inner and outer states computed once (PBKDF2 calls it 100,000 times). */
  function hmacSm3Keyed(key) {
    if (key.length > 64) key = sm3(key);
    const ipad = new Uint8Array(64).fill(0x36);
    const opad = new Uint8Array(64).fill(0x5c);
    for (let i = 0; i < key.length; i++) { ipad[i] ^= key[i]; opad[i] ^= key[i]; }
    const inner = Uint32Array.from(IV); sm3Compress(inner, ipad, 0);
    const outer = Uint32Array.from(IV); sm3Compress(outer, opad, 0);
    // The 32-byte messages of PBKDF2's loop take one padded block each: fill it in place.
    const block = new Uint8Array(64);
    block[32] = 0x80;
    new DataView(block.buffer).setUint32(60, (64 + 32) * 8);
    const v = new Uint32Array(8);
    const out = new Uint8Array(32);
    const short = (state, msg) => {
      block.set(msg);
      v.set(state);
      sm3Compress(v, block, 0);
      for (let i = 0; i < 8; i++) { out[i * 4] = v[i] >>> 24; out[i * 4 + 1] = v[i] >>> 16; out[i * 4 + 2] = v[i] >>> 8; out[i * 4 + 3] = v[i]; }
      return Uint8Array.from(out);
    };
    return (msg) => (msg.length === 32 ? short(outer, short(inner, msg)) : sm3From(outer, 64, sm3From(inner, 64, msg)));
  }
  const hmacSm3 = (key, msg) => hmacSm3Keyed(key)(msg);

  /** PBKDF2-HMAC-SM3 (RFC 8018), `len` ≤ 32 bytes: one block. */
  function pbkdf2Sm3(password, salt, iterations, len = 32) {
    if (len > 32) throw new SplitKeyError('internal', 'PBKDF2 输出过长');
    const prf = hmacSm3Keyed(password);
    let u = prf(concat(salt, Uint8Array.of(0, 0, 0, 1)));
    const t = Uint8Array.from(u);
    for (let i = 1; i < iterations; i++) {
      u = prf(u);
      for (let j = 0; j < 32; j++) t[j] ^= u[j];
    }
    return t.subarray(0, len);
  }

  /** The SM2 KDF (GB/T 32918.4 §5.4.3): SM3(Z ‖ ct) for ct = 1, 2, … big-endian, cut to `len`. */
  function sm2Kdf(z, len) {
    const out = new Uint8Array(len);
    for (let ct = 1, off = 0; off < len; ct++, off += 32) {
      const c = new Uint8Array(4);
      new DataView(c.buffer).setUint32(0, ct);
      const block = sm3(concat(z, c));
      out.set(block.subarray(0, Math.min(32, len - off)), off);
    }
    return out;
  }

  // ---------------------------------------------------------------- SM2 curve (GB/T 32918.5)
  const P = 0xfffffffeffffffffffffffffffffffffffffffff00000000ffffffffffffffffn;
  const A = P - 3n;
  const B = 0x28e9fa9e9d9f5e344d5a9e4bcf6509a7f39789f515ab8f92ddbcbd414d940e93n;
  const N = 0xfffffffeffffffffffffffffffffffff7203df6b21c6052b53bbf40939d54123n;
  const GX = 0x32c4ae2c1f1981195f9904466a39c9948fe30bbff2660be1715a4589334c74c7n;
  const GY = 0xbc3736a2f4f6779c59bdcee36b692153d0a9877cc62a474002df32e52139f0a0n;

  const mod = (a, m) => { const r = a % m; return r < 0n ? r + m : r; };
  /** a⁻¹ mod m (extended Euclid); a must be non-zero mod m. */
  function inv(a, m) {
    let [r0, r1] = [mod(a, m), m];
    let [s0, s1] = [1n, 0n];
    if (r0 === 0n) throw new SplitKeyError('internal', '零没有逆元');
    while (r1 !== 0n) {
      const q = r0 / r1;
      [r0, r1] = [r1, r0 - q * r1];
      [s0, s1] = [s1, s0 - q * s1];
    }
    return mod(s0, m);
  }
  const fp = (a) => mod(a, P);

  // Points in Jacobian coordinates {x, y, z}: affine (x/z², y/z³); z = 0 is the point at infinity.
  const INFINITY = Object.freeze({ x: 1n, y: 1n, z: 0n });
  const G = Object.freeze({ x: GX, y: GY, z: 1n });
  function dbl(p) {
    if (p.z === 0n || p.y === 0n) return INFINITY;
    const y2 = fp(p.y * p.y);
    const s = fp(4n * p.x * y2);
    const z2 = fp(p.z * p.z);
    const m = fp(3n * (p.x - z2) * (p.x + z2)); // a = -3
    const x = fp(m * m - 2n * s);
    const y = fp(m * (s - x) - 8n * y2 * y2);
    const z = fp(2n * p.y * p.z);
    return { x, y, z };
  }
  function add(p, q) {
    if (p.z === 0n) return q;
    if (q.z === 0n) return p;
    const z1z1 = fp(p.z * p.z);
    const z2z2 = fp(q.z * q.z);
    const u1 = fp(p.x * z2z2);
    const u2 = fp(q.x * z1z1);
    const s1 = fp(p.y * q.z * z2z2);
    const s2 = fp(q.y * p.z * z1z1);
    if (u1 === u2) return s1 === s2 ? dbl(p) : INFINITY;
    const h = fp(u2 - u1);
    const r = fp(s2 - s1);
    const h2 = fp(h * h);
    const h3 = fp(h2 * h);
    const v = fp(u1 * h2);
    const x = fp(r * r - h3 - 2n * v);
    const y = fp(r * (v - x) - s1 * h3);
    const z = fp(h * p.z * q.z);
    return { x, y, z };
  }
  const neg = (p) => ({ x: p.x, y: fp(-p.y), z: p.z });
  /** k·p, k reduced mod n (left-to-right double-and-add). */
  function mul(k, p) {
    k = mod(k, N);
    let r = INFINITY;
    for (let i = BigInt(k.toString(2).length) - 1n; i >= 0n; i--) {
      r = dbl(r);
      if ((k >> i) & 1n) r = add(r, p);
    }
    return r;
  }
  function affine(p) {
    if (p.z === 0n) throw new SplitKeyError('invalid_point', '无穷远点没有坐标');
    const zi = inv(p.z, P);
    const zi2 = fp(zi * zi);
    return { x: fp(p.x * zi2), y: fp(p.y * zi2 * zi) };
  }
  const isIdentity = (p) => p.z === 0n;
  function samePoint(p, q) {
    if (isIdentity(p) || isIdentity(q)) return isIdentity(p) && isIdentity(q);
    const a = affine(p); const b = affine(q);
    return a.x === b.x && a.y === b.y;
  }
  /** 04 ‖ X ‖ Y. */
  function encodePoint(p) { const a = affine(p); return concat(Uint8Array.of(4), bigToBytes(a.x), bigToBytes(a.y)); }
  /**
   * Every point received is parsed here: uncompressed, coordinates below p, on the curve, not the
   * identity (docs/key-splitting.md; an unchecked point would make the other party's
   * multiplication an oracle). The curve's cofactor is 1, so on the curve means in the group.
   */
  function decodePoint(bytes) {
    if (!(bytes instanceof Uint8Array) || bytes.length !== 65 || bytes[0] !== 4) throw new SplitKeyError('invalid_point', '不是有效的 SM2 点（应为 04‖X‖Y）');
    const x = bytesToBig(bytes.subarray(1, 33));
    const y = bytesToBig(bytes.subarray(33));
    if (x >= P || y >= P || fp(y * y) !== fp(x * x * x + A * x + B)) throw new SplitKeyError('invalid_point', '点不在 SM2 曲线上');
    return { x, y, z: 1n };
  }
  const pointToHex = (p) => bytesToHex(encodePoint(p));
  const pointFromHex = (h) => decodePoint(hexToBytes(h));

  /** A 32-byte scalar in [1, n-1] (as the Rust side's decode_scalar). */
  function decodeScalar(bytes) {
    if (bytes.length !== 32) throw new SplitKeyError('invalid_scalar', '标量长度应为 32 字节');
    const k = bytesToBig(bytes);
    if (k === 0n || k >= N) throw new SplitKeyError('invalid_scalar', '标量不在 [1, n-1] 内');
    return k;
  }
  /** A uniformly random scalar in [1, n-1] from the browser's CSPRNG (rejection sampling). */
  function randomScalar() {
    for (;;) {
      const k = bytesToBig(randomBytes(32));
      if (k > 0n && k < N) return k;
    }
  }

  // ---------------------------------------------------------------- SM2 signatures (verify only)
  const DIST_ID = utf8('1234567812345678');
  /** Z = SM3(ENTL ‖ ID ‖ a ‖ b ‖ xG ‖ yG ‖ xA ‖ yA) (GB/T 32918.2 §5.5). */
  function zOf(pub) {
    const a = affine(pub);
    const entl = Uint8Array.of((DIST_ID.length * 8) >> 8, (DIST_ID.length * 8) & 0xff);
    return sm3(concat(entl, DIST_ID, bigToBytes(A), bigToBytes(B), bigToBytes(GX), bigToBytes(GY), bigToBytes(a.x), bigToBytes(a.y)));
  }
  const messageDigest = (pub, msg) => mod(bytesToBig(sm3(concat(zOf(pub), msg))), N);
  function verify(pub, msg, r, s) {
    if (r <= 0n || r >= N || s <= 0n || s >= N) return false;
    const t = mod(r + s, N);
    if (t === 0n) return false;
    const pt = add(mul(s, G), mul(t, pub));
    if (isIdentity(pt)) return false;
    return mod(messageDigest(pub, msg) + affine(pt).x, N) === r;
  }
  function derInteger(x) {
    let b = Array.from(bigToBytes(x));
    while (b.length > 1 && b[0] === 0) b.shift();
    if (b[0] & 0x80) b.unshift(0);
    return [0x02, b.length, ...b];
  }
  /** SEQUENCE { INTEGER r, INTEGER s } (at most 72 bytes: short-form lengths). */
  function signatureDer(r, s) {
    const body = [...derInteger(r), ...derInteger(s)];
    return Uint8Array.from([0x30, body.length, ...body]);
  }

  // ---------------------------------------------------------------- Schnorr proofs (Fiat–Shamir over SM3)
  const SCHNORR_DOMAIN = utf8('BZT-2P-SCHNORR-V1');
  /** SM3 of length-prefixed parts (8-byte big-endian lengths), reduced mod n. */
  const hashToScalar = (parts) => mod(bytesToBig(sm3(concat(...parts.flatMap((p) => [u64be(p.length), p])))), N);
  const challenge = (context, pub, commitment) => hashToScalar([SCHNORR_DOMAIN, context, encodePoint(pub), encodePoint(commitment)]);
  /** Proof of knowledge of x with pub = x·G, bound to `context`: R ‖ z, 97 bytes. */
  function schnorrProve(x, pub, context) {
    const k = randomScalar();
    const commitment = mul(k, G);
    const z = mod(k + challenge(context, pub, commitment) * x, N);
    return concat(encodePoint(commitment), bigToBytes(z));
  }
  function schnorrVerify(proof, pub, context) {
    if (proof.length !== 97) return false;
    let commitment;
    try { commitment = decodePoint(proof.subarray(0, 65)); } catch { return false; }
    const z = bytesToBig(proof.subarray(65));
    if (z >= N) return false;
    const c = challenge(context, pub, commitment);
    if (c === 0n) return false;
    return samePoint(mul(z, G), add(commitment, mul(c, pub)));
  }

  // ---------------------------------------------------------------- SM4 (GB/T 32907) and SM4-GCM
  const SBOX = hexToBytes(
    'd690e9fecce13db716b614c228fb2c052b679a762abe04c3aa441326498606999c4250f491ef987a33540b43edcfac62'
    + 'e4b31ca9c908e89580df94fa758f3fa64707a7fcf37317ba83593c19e6854fa8686b81b27164da8bf8eb0f4b70569d35'
    + '1e240e5e6358d1a225227c3b01217887d40046579fd327524c3602e7a0c4c89eeabf8ad240c738b5a3f7f2cef96115a1'
    + 'e0ae5da49b341a55ad933230f58cb1e31df6e22e8266ca60c02923ab0d534e6fd5db3745defd8e2f03ff6a726d6c5b51'
    + '8d1baf92bbddbc7f11d95c411f105ad80ac13188a5cd7bbd2d74d012b8e5b4b08969974a0c96777e65b9f109c56ec684'
    + '18f07dec3adc4d2079ee5f3ed7cb3948');
  const FK = [0xa3b1bac6, 0x56aa3350, 0x677d9197, 0xb27022dc];
  const CK = Array.from({ length: 32 }, (_, i) => {
    let w = 0;
    for (let j = 0; j < 4; j++) w = (w << 8) | (((4 * i + j) * 7) & 0xff);
    return w >>> 0;
  });
  const tau = (a) => ((SBOX[a >>> 24] << 24) | (SBOX[(a >>> 16) & 0xff] << 16) | (SBOX[(a >>> 8) & 0xff] << 8) | SBOX[a & 0xff]) >>> 0;
  const lRound = (b) => (b ^ rotl(b, 2) ^ rotl(b, 10) ^ rotl(b, 18) ^ rotl(b, 24)) >>> 0;
  const lKey = (b) => (b ^ rotl(b, 13) ^ rotl(b, 23)) >>> 0;
  const words = (b) => { const dv = new DataView(b.buffer, b.byteOffset, 16); return [0, 1, 2, 3].map((i) => dv.getUint32(i * 4)); };
  function sm4RoundKeys(key) {
    if (key.length !== 16) throw new SplitKeyError('internal', 'SM4 密钥应为 16 字节');
    const k = words(key).map((w, i) => (w ^ FK[i]) >>> 0);
    const rk = new Uint32Array(32);
    for (let i = 0; i < 32; i++) {
      const t = (k[i + 1] ^ k[i + 2] ^ k[i + 3] ^ CK[i]) >>> 0;
      k.push((k[i] ^ lKey(tau(t))) >>> 0);
      rk[i] = k[i + 4];
    }
    return rk;
  }
  /** One SM4 block encryption under expanded keys `rk`. */
  function sm4Block(rk, block) {
    const x = words(block);
    for (let i = 0; i < 32; i++) x.push((x[i] ^ lRound(tau((x[i + 1] ^ x[i + 2] ^ x[i + 3] ^ rk[i]) >>> 0))) >>> 0);
    const out = new Uint8Array(16);
    const dv = new DataView(out.buffer);
    for (let i = 0; i < 4; i++) dv.setUint32(i * 4, x[35 - i]);
    return out;
  }
  // GCM (NIST SP 800-38D) over SM4, as RFC 8998 uses it; 12-byte nonces, 16-byte tags.
  const R_GCM = 0xe1n << 120n;
  function gfMul(x, y) {
    let z = 0n; let v = y;
    for (let i = 127n; i >= 0n; i--) {
      if ((x >> i) & 1n) z ^= v;
      v = v & 1n ? (v >> 1n) ^ R_GCM : v >> 1n;
    }
    return z;
  }
  function ghash(h, aad, ct) {
    let y = 0n;
    const blocks = (data) => { for (let o = 0; o < data.length; o += 16) { const blk = new Uint8Array(16); blk.set(data.subarray(o, o + 16)); y = gfMul(y ^ bytesToBig(blk), h); } };
    blocks(aad); blocks(ct);
    y = gfMul(y ^ ((BigInt(aad.length * 8) << 64n) | BigInt(ct.length * 8)), h);
    return bigToBytes(y, 16);
  }
  function gcmCtr(rk, j0, data) {
    const out = new Uint8Array(data.length);
    const ctr = Uint8Array.from(j0);
    const dv = new DataView(ctr.buffer);
    for (let o = 0; o < data.length; o += 16) {
      dv.setUint32(12, (dv.getUint32(12) + 1) >>> 0);
      const ks = sm4Block(rk, ctr);
      for (let i = 0; i < 16 && o + i < data.length; i++) out[o + i] = data[o + i] ^ ks[i];
    }
    return out;
  }
  function gcmParts(key, nonce) {
    if (nonce.length !== 12) throw new SplitKeyError('internal', 'GCM 随机数应为 12 字节');
    const rk = sm4RoundKeys(key);
    const h = bytesToBig(sm4Block(rk, new Uint8Array(16)));
    const j0 = concat(nonce, Uint8Array.of(0, 0, 0, 1));
    return { rk, h, j0 };
  }
  /** SM4-GCM: ciphertext ‖ 16-byte tag. */
  function sm4GcmSeal(key, nonce, aad, plaintext) {
    const { rk, h, j0 } = gcmParts(key, nonce);
    const ct = gcmCtr(rk, j0, plaintext);
    const tag = ghash(h, aad, ct);
    const ek = sm4Block(rk, j0);
    for (let i = 0; i < 16; i++) tag[i] ^= ek[i];
    return concat(ct, tag);
  }
  function sm4GcmOpen(key, nonce, aad, sealed) {
    if (sealed.length < 16) throw new SplitKeyError('bad_channel', '加密通道数据无效');
    const { rk, h, j0 } = gcmParts(key, nonce);
    const ct = sealed.subarray(0, sealed.length - 16);
    const tag = ghash(h, aad, ct);
    const ek = sm4Block(rk, j0);
    for (let i = 0; i < 16; i++) tag[i] ^= ek[i];
    if (!equalBytes(tag, sealed.subarray(sealed.length - 16))) throw new SplitKeyError('bad_channel', '协同签名服务的应答无法解密（通道密钥不符或数据被篡改）');
    return gcmCtr(rk, j0, ct);
  }

  // ---------------------------------------------------------------- the channel to the service
  const CHANNEL_LABEL = utf8('BZT-COSIGN-CHANNEL-V1');
  /** k_req ‖ k_resp = KDF_SM2(label ‖ x ‖ y ‖ E ‖ S, 32). */
  function channelKeys(shared, ephemeral, service) {
    const okm = sm2Kdf(concat(CHANNEL_LABEL, encodePoint(shared).subarray(1), encodePoint(ephemeral), encodePoint(service)), 32);
    return { request: okm.slice(0, 16), response: okm.slice(16) };
  }
  /** Seals `plaintext` to the service key for `POST path`; returns the wire body and the answer's key. */
  function sealRequest(service, path, plaintext, ephemeralSecret = randomScalar(), nonce = randomBytes(12)) {
    const ephemeral = mul(ephemeralSecret, G);
    const keys = channelKeys(mul(ephemeralSecret, service), ephemeral, service);
    const aad = utf8('req:POST ' + path);
    const body = { ephemeral: pointToHex(ephemeral), nonce_b64: bytesToB64(nonce), ciphertext_b64: bytesToB64(sm4GcmSeal(keys.request, nonce, aad, plaintext)) };
    return { body, keys };
  }
  /**
   * Seals `plaintext` to any receiving key with associated data `aad` (the channel construction with
   * "req:" ‖ aad, as crates/bzt-crypto's seal_request): the grant package's share is sealed this way
   * to the member's receiving key, associated data `grant:<grant_id>`.
   */
  function sealTo(receiver, aad, plaintext, ephemeralSecret = randomScalar(), nonce = randomBytes(12)) {
    const ephemeral = mul(ephemeralSecret, G);
    const keys = channelKeys(mul(ephemeralSecret, receiver), ephemeral, receiver);
    return { ephemeral: pointToHex(ephemeral), nonce_b64: bytesToB64(nonce), ciphertext_b64: bytesToB64(sm4GcmSeal(keys.request, nonce, concat(utf8('req:'), aad), plaintext)) };
  }
  /** Opens what sealTo sealed, with the receiving key's secret (ChannelKey::open_request). */
  function openSealed(secret, aad, body) {
    if (!body || typeof body.ephemeral !== 'string' || typeof body.nonce_b64 !== 'string' || typeof body.ciphertext_b64 !== 'string') throw new SplitKeyError('protocol', '加密数据格式不符');
    const ephemeral = pointFromHex(body.ephemeral);
    const receiver = mul(secret, G);
    const keys = channelKeys(mul(secret, ephemeral), ephemeral, receiver);
    const nonce = b64ToBytes(body.nonce_b64);
    if (nonce.length !== 12) throw new SplitKeyError('protocol', '加密数据格式不符');
    return sm4GcmOpen(keys.request, nonce, concat(utf8('req:'), aad), b64ToBytes(body.ciphertext_b64));
  }
  function openResponse(keys, path, answer) {
    if (!answer || typeof answer.nonce_b64 !== 'string' || typeof answer.ciphertext_b64 !== 'string') throw new SplitKeyError('protocol', '协同签名服务的应答格式不符');
    const nonce = b64ToBytes(answer.nonce_b64);
    return sm4GcmOpen(keys.response, nonce, utf8('resp:POST ' + path), b64ToBytes(answer.ciphertext_b64));
  }

  // ---------------------------------------------------------------- the PIN
  const DEFAULT_PIN_ITERATIONS = 50000;
  /** m = PBKDF2-HMAC-SM3(PIN, salt, rounds) mod n. */
  function pinScalar(pin, salt, iterations) {
    const m = mod(bytesToBig(pbkdf2Sm3(utf8(pin), salt, Math.max(1, iterations))), N);
    if (m === 0n) throw new SplitKeyError('invalid_scalar', 'PIN 派生值无效');
    return m;
  }
  /** d1·m mod n, with a fresh salt: what the page stores. */
  function maskShare(d1, pin, iterations = DEFAULT_PIN_ITERATIONS, salt = randomBytes(16)) {
    return { masked: bigToBytes(mod(d1 * pinScalar(pin, salt, iterations), N)), salt, iterations };
  }
  /** d1 for the right PIN, an unrelated scalar for a wrong one: nothing here tells which. */
  function unmaskShare(masked, salt, iterations, pin) {
    return mod(decodeScalar(masked) * inv(pinScalar(pin, salt, iterations), N), N);
  }
  function pinStatement(keyId, operation, context, point, nonce, issuedAt) {
    return utf8(`BZT-COSIGN-PIN-V1\nkey:${keyId}\nop:${operation}\ncontext:${context}\npoint:${pointToHex(point)}\nnonce:${bytesToHex(nonce)}\nissued_at:${issuedAt}`);
  }
  /** The PIN proof: knowledge of d1⁻¹ for P1, bound to this operation, a fresh nonce and the time. */
  function pinProof(d1, keyId, operation, context, point, issuedAt = Math.floor(Date.now() / 1000)) {
    const nonce = randomBytes(16);
    const x = inv(d1, N);
    const proof = schnorrProve(x, mul(x, G), pinStatement(keyId, operation, context, point, nonce, issuedAt));
    return { nonce: bytesToHex(nonce), issued_at: issuedAt, proof: bytesToHex(proof) };
  }

  /** The canonical context line of a PIN proof (crates/bzt-cosigner/src/wire.rs `Context::canonical`). */
  function canonicalContext(context) {
    if (context.session) return 'session:' + context.session.id;
    if (context.conversation) return 'conversation:' + context.conversation.id + ':' + context.conversation.request_id;
    if (context.grant) return 'grant:' + bytesToHex(sm3(b64ToBytes(context.grant.tbs_b64)));
    throw new SplitKeyError('internal', '未知的协同上下文');
  }

  // ---------------------------------------------------------------- the two-party steps (phone side)
  const PHONE_CONTEXT = utf8('BZT-2P-KEYGEN-PHONE-V1');
  const SERVICE_CONTEXT = utf8('BZT-2P-KEYGEN-SERVICE-V1');
  /** Key generation, first half: d1, P1 = d1⁻¹·G and the proof for P1. */
  function keygenStart() {
    const d1 = randomScalar();
    const x = inv(d1, N);
    const p1 = mul(x, G);
    return { d1, p1, proof1: schnorrProve(x, p1, PHONE_CONTEXT) };
  }
  /** Second half: checks the service's proof (bound to our P1) and derives P = d1⁻¹·P2 − G. */
  function keygenFinish(start, p2, proof2) {
    if (!schnorrVerify(proof2, p2, concat(SERVICE_CONTEXT, encodePoint(start.p1)))) throw new SplitKeyError('bad_proof', '协同签名服务的密钥证明未通过验证，已停止申请');
    const joint = add(mul(inv(start.d1, N), p2), neg(G));
    if (isIdentity(joint)) throw new SplitKeyError('invalid_point', '联合公钥无效');
    return joint;
  }
  /** Signing finish: s = d1·(s1 + w1) − r; refuses s = 0 or s + r = 0, and checks (r, s) under P. */
  function signFinish(d1, w1, joint, msg, rBytes, s1Bytes) {
    const r = decodeScalar(rBytes);
    const s1 = decodeScalar(s1Bytes);
    const s = mod(d1 * (s1 + w1) - r, N);
    if (s === 0n || mod(s + r, N) === 0n) throw new SplitKeyError('degenerate', '协同签名结果退化，请重试');
    if (!verify(joint, msg, r, s)) throw new SplitKeyError('bad_signature', '协同签名未通过验证（协同签名服务签署的内容与本次请求不符），未发送');
    return { r, s };
  }
  /** GM/T 0009 SM2 ciphertext DER: SEQUENCE { x INTEGER, y INTEGER, C3 OCTET STRING, C2 OCTET STRING }. */
  function parseCiphertextDer(der) {
    const read = (buf, pos) => {
      if (pos + 2 > buf.length) throw new SplitKeyError('decrypt', 'SM2 密文截断');
      const tag = buf[pos];
      let len = buf[pos + 1];
      let off = pos + 2;
      if (len & 0x80) {
        const n = len & 0x7f;
        if (n < 1 || n > 3) throw new SplitKeyError('decrypt', 'SM2 密文长度无效');
        len = 0;
        for (let i = 0; i < n; i++) len = (len << 8) | buf[off + i];
        off += n;
      }
      if (off + len > buf.length) throw new SplitKeyError('decrypt', 'SM2 密文截断');
      return { tag, body: buf.subarray(off, off + len), end: off + len };
    };
    const seq = read(der, 0);
    if (seq.tag !== 0x30 || seq.end !== der.length) throw new SplitKeyError('decrypt', '不是 SM2 密文');
    const parts = [];
    for (let p = 0; p < seq.body.length;) { const t = read(seq.body, p); parts.push(t); p = t.end; }
    if (parts.length !== 4 || parts[0].tag !== 2 || parts[1].tag !== 2 || parts[2].tag !== 4 || parts[3].tag !== 4 || parts[2].body.length !== 32) throw new SplitKeyError('decrypt', 'SM2 密文结构不符');
    const coord = (b) => { const v = bytesToBig(b); if (v >= P) throw new SplitKeyError('decrypt', 'SM2 密文坐标无效'); return bigToBytes(v); };
    const c1 = decodePoint(concat(Uint8Array.of(4), coord(parts[0].body), coord(parts[1].body)));
    return { c1, c3: parts[2].body, c2: parts[3].body };
  }
  /** Decryption finish: (w⁻¹·d1⁻¹)·T2 − C1 = d·C1, then KDF, XOR and the C3 check. */
  function decryptFinish(d1, w, ct, t2) {
    const shared = add(mul(mod(inv(w, N) * inv(d1, N), N), t2), neg(ct.c1));
    if (isIdentity(shared)) throw new SplitKeyError('decrypt', '解密失败');
    const a = affine(shared);
    const x2 = bigToBytes(a.x); const y2 = bigToBytes(a.y);
    const t = sm2Kdf(concat(x2, y2), ct.c2.length);
    if (t.every((b) => b === 0)) throw new SplitKeyError('decrypt', '解密失败');
    const m = ct.c2.map((b, i) => b ^ t[i]);
    if (!equalBytes(sm3(concat(x2, m, y2)), ct.c3)) throw new SplitKeyError('decrypt', '协同解密失败：C3 校验未通过');
    return m;
  }

  // ---------------------------------------------------------------- the service client
  /** The service's JSON error (`{"error": {"code", "message"}}`) as a SplitKeyError with its code. */
  async function call(base, method, path, body, bearer) {
    const headers = {};
    if (body) headers['Content-Type'] = 'application/json';
    if (bearer) headers.Authorization = 'Bearer ' + bearer;
    let r;
    try {
      r = await fetch(base.replace(/\/+$/, '') + path, { method, headers, body: body ? JSON.stringify(body) : undefined });
    } catch (e) {
      throw new SplitKeyError('network', '无法连接协同签名服务', String(e && e.message));
    }
    const j = await r.json().catch(() => null);
    if (!r.ok) {
      const code = (j && j.error && j.error.code) || 'http_' + r.status;
      throw new SplitKeyError(code, SERVICE_ERRORS[code] || '协同签名服务拒绝了请求（' + code + '）', (j && j.error && j.error.message) || '');
    }
    return j;
  }
  // The service's error codes (docs/key-splitting.md) in the words the phone shows.
  const SERVICE_ERRORS = {
    wrong_pin: 'PIN 码错误',
    locked: 'PIN 码连续错误 5 次，密钥已锁定，请联系管理员解锁',
    frozen: '证书已挂失（冻结），暂不能使用',
    revoked: '证书已注销，不能再签名或解密',
    not_requested: '协同签名服务未找到对应的扫码请求（二维码可能已过期或已被处理）',
    outside_opening_window: '未到开标时间或已过解密截止时间，协同签名服务拒绝解密',
    already_used: '本次解密已完成过，不能重复解密',
    replayed: 'PIN 证明已使用过，请重试',
    stale_proof: '手机时间与协同签名服务相差过大，请校准时间后重试',
    bad_channel: '与协同签名服务的加密通道建立失败',
    bad_proof: '协同签名服务未接受本机的密钥证明',
    unauthorized: '协同签名服务需要申请授权码',
    not_found: '协同签名服务中没有这个密钥',
    invalid_request: '协同签名服务无法识别请求',
    unavailable: '协同签名服务暂不可用，请稍后重试',
    reclaimed: '该企业证书的授权已收回（已解除授权、授权已到期或企业证书已注销），本机不能再使用该证书；如需使用请联系管理员重新授权',
    not_authorised: '授权请求未经管理员本人的证书分量签名，协同签名服务拒绝',
    conflict: '该授权已被接受过，或授权编号已被占用',
  };
  async function sealedCall(file, path, request, bearer) {
    const service = pointFromHex(file.service_key);
    const { body, keys } = sealRequest(service, path, utf8(JSON.stringify(request)));
    const answer = await call(file.cosigner_url, 'POST', path, body, bearer);
    let plain;
    try { plain = JSON.parse(new TextDecoder().decode(openResponse(keys, path, answer))); } catch (e) {
      if (e instanceof SplitKeyError) throw e;
      throw new SplitKeyError('protocol', '协同签名服务的应答格式不符');
    }
    return plain;
  }
  const keyPath = (keyId, op) => '/v1/keys/' + encodeURIComponent(keyId) + '/' + op;

  /**
   * 密钥拆分 enrolment: pins the service's channel key (GET /v1/info, trust on first use), runs key
   * generation, and returns the SplitKeyFile to store: the joint public key P (to certify) and d1
   * masked by the PIN. `iterations` below the default is for tests only.
   */
  async function enroll({ cosignerUrl, pin, label, enrolmentToken = null, iterations = DEFAULT_PIN_ITERATIONS }) {
    if (!/^\d{6}$/.test(pin)) throw new SplitKeyError('invalid_pin', 'PIN 码须为 6 位数字');
    const info = await call(cosignerUrl, 'GET', '/v1/info');
    const serviceKey = pointFromHex(String(info && info.service_key));
    const start = keygenStart();
    const file = { cosigner_url: cosignerUrl, service_key: pointToHex(serviceKey) };
    const answer = await sealedCall(file, '/v1/keys', { p1: pointToHex(start.p1), proof1: bytesToHex(start.proof1), label }, enrolmentToken);
    const joint = keygenFinish(start, pointFromHex(String(answer.p2)), hexToBytes(String(answer.proof2)));
    const masked = maskShare(start.d1, pin, iterations);
    start.d1 = 0n; // BigInts cannot be wiped; drop the reference at least
    return {
      version: 1,
      key_id: String(answer.key_id),
      cosigner_url: cosignerUrl,
      service_key: file.service_key,
      public_key: pointToHex(joint),
      masked_share: bytesToHex(masked.masked),
      salt: bytesToHex(masked.salt),
      iterations: masked.iterations,
    };
  }
  function checkFile(file) {
    const ok = file && file.version === 1 && typeof file.key_id === 'string' && typeof file.cosigner_url === 'string'
      && /^[0-9a-f]{64}$/i.test(file.masked_share || '') && /^[0-9a-f]{32}$/i.test(file.salt || '') && Number.isInteger(file.iterations) && file.iterations > 0;
    if (!ok) throw new SplitKeyError('damaged', '本机的拆分密钥文件已损坏');
    return file;
  }
  const unmaskFile = (file, pin) => unmaskShare(hexToBytes(file.masked_share), hexToBytes(file.salt), file.iterations, pin);

  /**
   * Co-signs `tbs` for `context` ({session: {id, phone_token}} or {conversation: {id, request_id,
   * phone_token}}). The service signs the bytes the broker holds for that context; we check the
   * result under P over `tbs` before releasing it. Returns the DER signature.
   */
  // sealTbs: `tbs` is DER(TBS_Sign) of a seal signature, which the phone builds around its seal; it
  // travels as `seal_tbs_b64` and the service signs it only when it carries the hash and
  // propertyInfo the broker holds for `context` (docs/key-splitting.md).
  async function sign(file, pin, context, tbs, { sealTbs = false } = {}) {
    checkFile(file);
    const joint = pointFromHex(file.public_key);
    const d1 = unmaskFile(file, pin);
    const w1 = randomScalar();
    const q1 = mul(w1, G);
    const request = { context, q1: pointToHex(q1), pin_proof: pinProof(d1, file.key_id, 'sign', canonicalContext(context), q1) };
    if (sealTbs) request.seal_tbs_b64 = bytesToB64(tbs);
    const answer = await sealedCall(file, keyPath(file.key_id, 'sign'), request);
    const { r, s } = signFinish(d1, w1, joint, tbs, hexToBytes(String(answer.r)), hexToBytes(String(answer.s1)));
    return signatureDer(r, s);
  }

  /** Blinded co-decryption of a GM/T 0009 DER ciphertext sealed to P, for a `decrypt` session. */
  async function decrypt(file, pin, context, ciphertextDer) {
    checkFile(file);
    const ct = parseCiphertextDer(ciphertextDer);
    const d1 = unmaskFile(file, pin);
    const w = randomScalar();
    const t1 = mul(w, ct.c1);
    const request = { context, t1: pointToHex(t1), pin_proof: pinProof(d1, file.key_id, 'decrypt', canonicalContext(context), t1) };
    const answer = await sealedCall(file, keyPath(file.key_id, 'decrypt'), request);
    return decryptFinish(d1, w, ct, pointFromHex(String(answer.t2)));
  }

  // ---------------------------------------------------------------- 企业证书授权 (re-sharing)
  // Follows crates/bzt-crypto/src/two_party/reshare.rs and crates/bzt-cosigner/src/client.rs step by
  // step (docs/key-splitting.md, 企业证书授权); web-demo/test/grants.test.mjs checks it against them.
  const MEMBER_CONTEXT = utf8('BZT-2P-RESHARE-MEMBER-V1');
  const GRANT_HEADER = 'BZT-GRANT-V1';
  function memberContext(grantId, p1) {
    const id = utf8(grantId);
    return concat(MEMBER_CONTEXT, u64be(id.length), id, encodePoint(p1));
  }
  /**
   * The text of an administrator's request (crates/bzt-cosigner/src/grants.rs): these lines in this
   * order, LF-separated, no trailing newline. A field holding a line break would change the lines:
   * refused here as the service would.
   */
  function grantRequestText({ action, keyId, grantId, member, certificate, notAfter, nonce, issuedAt }) {
    const lines = [GRANT_HEADER, 'action:' + action, 'key:' + keyId];
    if (grantId != null) lines.push('grant:' + grantId);
    if (member) lines.push('member:' + member.name, 'device:' + member.device);
    if (certificate) lines.push('certificate:' + certificate.serial, 'ca:' + certificate.ca, 'certificate_type:' + certificate.certificate_type);
    if (notAfter != null) lines.push('not_after:' + notAfter);
    lines.push('nonce:' + nonce, 'issued_at:' + issuedAt);
    for (const l of lines.slice(1)) {
      const v = l.slice(l.indexOf(':') + 1);
      if (!v || /[\r\n]/.test(v)) throw new SplitKeyError('invalid_request', '姓名、设备或证书信息不能为空，也不能含换行');
    }
    return lines.join('\n');
  }
  /** Signs a request with the administrator's share (context {grant: {tbs_b64}}) and sends it. */
  async function grantCall(file, pin, fields, factor) {
    checkFile(file);
    const text = grantRequestText({ keyId: file.key_id, nonce: bytesToHex(randomBytes(16)), issuedAt: Math.floor(Date.now() / 1000), ...fields });
    const tbs = utf8(text);
    const tbsB64 = bytesToB64(tbs);
    const signature = await sign(file, pin, { grant: { tbs_b64: tbsB64 } }, tbs);
    const call = { request_b64: tbsB64, signature_b64: bytesToB64(signature) };
    if (factor) call.factor = factor;
    return sealedCall(file, keyPath(file.key_id, 'grants'), call);
  }
  /** A receiving key for a grant invitation: its secret stays on the member's page until it accepts. */
  function grantInviteKey() {
    const secret = randomScalar();
    return { secret: bytesToHex(bigToBytes(secret)), receiving_key: pointToHex(mul(secret, G)) };
  }
  /**
   * 添加被授权人: draws t, has the service keep d2·t⁻¹ (the request co-signed with the
   * administrator's share carries t) and seals d1·t to the member's receiving key. Returns the
   * service's answer and the offer for the member ({package, certificate_pem}, as `bzt phone grant`).
   */
  async function grant(file, pin, { invite, certificate, end, certificatePem }) {
    checkFile(file);
    const receiver = pointFromHex(String(invite.receiving_key));
    const grantId = bytesToHex(randomBytes(16));
    const t = randomScalar();
    const member = { name: String(invite.name), device: String(invite.device && invite.device.id != null ? invite.device.id : invite.device) };
    const list = await grantCall(file, pin, { action: 'grant', grantId, member, certificate, notAfter: end }, bytesToHex(bigToBytes(t)));
    // The PIN was checked by the service just now: d1 is the administrator's share.
    const d1 = unmaskFile(file, pin);
    const share = utf8(bytesToHex(bigToBytes(mod(d1 * t, N))));
    const offer = {
      package: { grant_id: grantId, cosigner_url: file.cosigner_url, service_key: file.service_key, public_key: file.public_key, end, share: sealTo(receiver, utf8('grant:' + grantId), share) },
      certificate_pem: certificatePem,
    };
    return { list, offer };
  }
  const extendGrant = (file, pin, grantId, end) => grantCall(file, pin, { action: 'extend', grantId, notAfter: end });
  const ungrant = (file, pin, grantId) => grantCall(file, pin, { action: 'ungrant', grantId });
  const listGrants = (file, pin) => grantCall(file, pin, { action: 'list' });
  /**
   * The member's phone: opens d1·t with the receiving key, draws u, keeps d1'' = d1·t·u, proves
   * d1''⁻¹ to the service, checks d1''⁻¹·P2'' − G = P, and returns its SplitKeyFile (d1'' masked by
   * its own PIN), exactly as enrolment does.
   */
  async function acceptGrant(pkg, receivingSecret, pin, iterations = DEFAULT_PIN_ITERATIONS) {
    if (!/^\d{6}$/.test(pin)) throw new SplitKeyError('invalid_pin', 'PIN 码须为 6 位数字');
    if (!pkg || typeof pkg.grant_id !== 'string' || !/^[A-Za-z0-9_-]{8,64}$/.test(pkg.grant_id)) throw new SplitKeyError('protocol', '授权数据格式不符');
    const joint = pointFromHex(String(pkg.public_key));
    let dealt;
    try {
      dealt = decodeScalar(hexToBytes(new TextDecoder().decode(openSealed(decodeScalar(hexToBytes(receivingSecret)), utf8('grant:' + pkg.grant_id), pkg.share))));
    } catch (e) {
      throw new SplitKeyError('bad_channel', '无法打开授权数据：它不是发给本机这份邀请的', String(e && e.message));
    }
    const u = randomScalar();
    const d1 = mod(dealt * u, N);
    const x = inv(d1, N);
    const p1 = mul(x, G);
    const file = { cosigner_url: String(pkg.cosigner_url), service_key: pointToHex(pointFromHex(String(pkg.service_key))) };
    const answer = await sealedCall(file, '/v1/grants/' + encodeURIComponent(pkg.grant_id) + '/accept', { factor: bytesToHex(bigToBytes(u)), proof: bytesToHex(schnorrProve(x, p1, memberContext(pkg.grant_id, p1))) });
    const check = add(mul(x, pointFromHex(String(answer.p2))), neg(G));
    if (isIdentity(check) || !samePoint(check, joint)) throw new SplitKeyError('bad_proof', '协同签名服务返回的分量与企业证书公钥不符，未接受授权');
    const masked = maskShare(d1, pin, iterations);
    return {
      file: {
        version: 1, key_id: String(answer.key_id), cosigner_url: file.cosigner_url, service_key: file.service_key, public_key: pointToHex(joint),
        masked_share: bytesToHex(masked.masked), salt: bytesToHex(masked.salt), iterations: masked.iterations,
      },
      end: String(answer.end),
    };
  }

  globalThis.BztSplitKey = {
    SplitKeyError,
    DEFAULT_PIN_ITERATIONS,
    enroll,
    sign,
    decrypt,
    grantInviteKey,
    grant,
    extendGrant,
    ungrant,
    listGrants,
    acceptGrant,
    serviceErrorText: (code) => SERVICE_ERRORS[code] || null,
    // The primitives, for the cross-checks in web-demo/test/splitkey-math.test.mjs.
    math: {
      N, P, G, hexToBytes, bytesToHex, concat, utf8, bytesToBig, bigToBytes,
      sm3, hmacSm3, pbkdf2Sm3, sm2Kdf,
      mul, add, neg, inv, mod, affine, samePoint, isIdentity, encodePoint, decodePoint, pointToHex, pointFromHex, decodeScalar, randomScalar,
      zOf, messageDigest, verify, signatureDer,
      schnorrProve, schnorrVerify, hashToScalar,
      sm4RoundKeys, sm4Block, sm4GcmSeal, sm4GcmOpen,
      sealRequest, openResponse, channelKeys,
      pinScalar, maskShare, unmaskShare, pinStatement, pinProof, canonicalContext,
      keygenStart, keygenFinish, signFinish, parseCiphertextDer, decryptFinish,
      sealTo, openSealed, memberContext, grantRequestText,
    },
  };
})();
