//! Cross-checks against independent implementations: OpenSSL for SM2 key wrapping and
//! certificate names, Python `cryptography` for SM3 and SM4-GCM.

use bzt_envelope::{
    header_digest, inspect, open_with_content_key, read_header, seal_with_content_key, unwrap_key,
    wrap_key, ContentKey, SealOptions,
};

use crate::helpers::{data, openssl, path, python, Pki};

#[test]
fn wrap_key_output_decrypts_with_openssl() {
    let pki = Pki::new(&["alice"]);
    let alice = &pki.parties[0];
    let key = ContentKey::generate().expect("key");
    let wrapped = wrap_key(alice.recipient.public_key(), key.as_bytes()).expect("wrap");
    let wrapped_path = pki.dir.path().join("wrapped.der");
    std::fs::write(&wrapped_path, &wrapped).expect("write");
    let out = openssl(&[
        "pkeyutl",
        "-decrypt",
        "-inkey",
        path(&alice.key_path),
        "-in",
        path(&wrapped_path),
    ]);
    assert_eq!(out, key.as_bytes());
}

#[test]
fn openssl_wrapped_key_unwraps() {
    let pki = Pki::new(&["alice"]);
    let alice = &pki.parties[0];
    let key_path = pki.dir.path().join("key16");
    let wrapped_path = pki.dir.path().join("wrapped.der");
    let key = [0x5a_u8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 0xff];
    std::fs::write(&key_path, key).expect("write");
    openssl(&[
        "pkeyutl",
        "-encrypt",
        "-certin",
        "-inkey",
        path(&alice.cert_path),
        "-in",
        path(&key_path),
        "-out",
        path(&wrapped_path),
    ]);
    let wrapped = std::fs::read(&wrapped_path).expect("read");
    assert_eq!(unwrap_key(&alice.secret, &wrapped).expect("unwrap"), key);
}

/// The header's serial and issuer are what OpenSSL prints (`-nameopt RFC2253`).
#[test]
fn recipient_identity_matches_openssl() {
    let pki = Pki::new(&["alice"]);
    let alice = &pki.parties[0];
    let text = String::from_utf8(openssl(&[
        "x509",
        "-in",
        path(&alice.cert_path),
        "-noout",
        "-serial",
        "-issuer",
        "-nameopt",
        "RFC2253",
    ]))
    .expect("utf-8");
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .trim()
            .to_owned()
    };
    assert_eq!(field("serial=").to_lowercase(), alice.recipient.serial());
    assert_eq!(field("issuer="), alice.recipient.issuer());
}

/// Python reads the file by the docs/protocol.md rules alone: framing, SM3 of the header bytes as
/// AAD, nonce = prefix || index || final flag, SM4-GCM per chunk.
const PY_OPEN: &str = r#"
import sys, json, base64, struct
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
src, key_hex, dst = sys.argv[1:4]
data = open(src, 'rb').read()
assert data[:4] == b'BZE1'
hlen = struct.unpack('>I', data[4:8])[0]
raw = data[8:8 + hlen]
h = json.loads(raw)
assert h['v'] == 1 and h['alg'] == 'SM4-GCM-STREAM'
chunk = h['chunk']
prefix = base64.b64decode(h['nonce_prefix_b64'])
assert len(prefix) == 7
d = hashes.Hash(hashes.SM3()); d.update(raw); aad = d.finalize()
body = data[8 + hlen:]
slot = chunk + 16
assert len(body) % slot >= 16
n = len(body) // slot + 1
key = bytes.fromhex(key_hex)
plain = b''
for i in range(n):
    c = body[i * slot:(i + 1) * slot]
    nonce = prefix + struct.pack('>I', i) + bytes([1 if i == n - 1 else 0])
    dec = Cipher(algorithms.SM4(key), modes.GCM(nonce, c[-16:])).decryptor()
    dec.authenticate_additional_data(aad)
    plain += dec.update(c[:-16]) + dec.finalize()
open(dst, 'wb').write(plain)
print(n, aad.hex())
"#;

#[test]
fn python_cryptography_opens_what_we_seal() {
    let pki = Pki::new(&["alice"]);
    let key = ContentKey::generate().expect("key");
    // 5 chunks with a short final one; 4 full chunks and an empty final one; the empty file.
    for (chunk, len) in [(64u32, 300usize), (64, 256), (64, 0), (1000, 2500)] {
        let plain = data(len);
        let mut sealed = Vec::new();
        seal_with_content_key(
            &pki.recipients(1),
            &key,
            &plain[..],
            &mut sealed,
            &SealOptions { chunk_size: chunk },
        )
        .expect("seal");
        let sealed_path = pki.dir.path().join("bid.bze");
        let out_path = pki.dir.path().join("bid.py.out");
        std::fs::write(&sealed_path, &sealed).expect("write");
        let stdout = python(
            PY_OPEN,
            &[
                path(&sealed_path),
                &hex::encode(key.as_bytes()),
                path(&out_path),
            ],
        );
        let stdout = String::from_utf8(stdout).expect("utf-8");
        let (n, aad) = stdout.trim().split_once(' ').expect("two fields");
        let (_, raw) = read_header(&sealed[..]).expect("header");
        assert_eq!(aad, hex::encode(header_digest(&raw)), "SM3 of the header");
        assert_eq!(n.parse::<usize>().expect("n"), len / chunk as usize + 1);
        assert!(
            std::fs::read(&out_path).expect("read") == plain,
            "chunk {chunk}, len {len}"
        );
    }
}

/// Python writes an envelope by the same rules (with its own JSON spacing and an extra
/// field) and we open it with the content key.
const PY_SEAL: &str = r#"
import sys, json, base64, struct, os
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
src, key_hex, chunk, dst = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
plain = open(src, 'rb').read()
key = bytes.fromhex(key_hex)
prefix = os.urandom(7)
header = {"v": 1, "alg": "SM4-GCM-STREAM", "chunk": chunk,
          "nonce_prefix_b64": base64.b64encode(prefix).decode(),
          "recipients": [{"serial": "1", "issuer": "CN=Py", "key_b64": "MAA="}],
          "comment": "written by python"}
raw = json.dumps(header, indent=1).encode()
d = hashes.Hash(hashes.SM3()); d.update(raw); aad = d.finalize()
pieces = [plain[i:i + chunk] for i in range(0, len(plain) - len(plain) % chunk, chunk)]
pieces.append(plain[len(plain) - len(plain) % chunk:])
out = b'BZE1' + struct.pack('>I', len(raw)) + raw
for i, p in enumerate(pieces):
    nonce = prefix + struct.pack('>I', i) + bytes([1 if i == len(pieces) - 1 else 0])
    enc = Cipher(algorithms.SM4(key), modes.GCM(nonce)).encryptor()
    enc.authenticate_additional_data(aad)
    out += enc.update(p) + enc.finalize() + enc.tag
open(dst, 'wb').write(out)
"#;

#[test]
fn we_open_what_python_cryptography_seals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = ContentKey::generate().expect("key");
    for (chunk, len) in [(64u32, 300usize), (64, 256), (64, 0), (4096, 20_000)] {
        let plain = data(len);
        let plain_path = dir.path().join("plain");
        let sealed_path = dir.path().join("py.bze");
        std::fs::write(&plain_path, &plain).expect("write");
        python(
            PY_SEAL,
            &[
                path(&plain_path),
                &hex::encode(key.as_bytes()),
                &chunk.to_string(),
                path(&sealed_path),
            ],
        );
        let sealed = std::fs::read(&sealed_path).expect("read");
        let inspection = inspect(&sealed[..]).expect("inspect");
        assert_eq!(inspection.plaintext_len, Some(len as u64));
        let mut out = Vec::new();
        open_with_content_key(&key, &sealed[..], &mut out)
            .unwrap_or_else(|e| panic!("chunk {chunk}, len {len}: {e}"));
        assert!(out == plain, "chunk {chunk}, len {len}");
    }
}
