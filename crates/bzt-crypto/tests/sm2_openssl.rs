//! The hand-written SM2 verify accepts signatures made by the OpenSSL 3 CLI
//! (`openssl pkeyutl -sign -rawin -digest sm3 -pkeyopt distid:…`) on every
//! path — a key's first use, the use that builds its table, and with the
//! table — and refuses them altered, over another message, or made with
//! OpenSSL's default empty distinguishing ID.

mod support;

use bzt_crypto::sm2verify::{verify, verify_without_table};
use bzt_crypto::{KeptKey, SM2_DISTID as DEFAULT_DIST_ID};
use sm2::dsa::{Signature, VerifyingKey};
use sm2::pkcs8::DecodePublicKey;
use std::path::{Path, PathBuf};

fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    support::openssl(dir, args).stdout
}

fn work_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bzt-sm2-openssl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn sign(dir: &Path, msg: &[u8], distid: Option<&str>) -> Signature {
    std::fs::write(dir.join("msg"), msg).expect("write message");
    let mut args = vec![
        "pkeyutl", "-sign", "-inkey", "key.pem", "-rawin", "-digest", "sm3",
    ];
    let opt = distid.map(|id| format!("distid:{id}"));
    if let Some(opt) = &opt {
        args.extend(["-pkeyopt", opt]);
    }
    args.extend(["-in", "msg", "-out", "sig.der"]);
    openssl(dir, &args);
    Signature::from_der(&std::fs::read(dir.join("sig.der")).expect("signature"))
        .expect("OpenSSL writes DER SEQUENCE{r, s}")
}

#[test]
fn signatures_made_by_openssl_verify_on_every_path_and_altered_ones_do_not() {
    let dir = work_dir();
    support::new_sm2_key(&dir, "key.pem");
    let public_pem = String::from_utf8(openssl(&dir, &["pkey", "-in", "key.pem", "-pubout"]))
        .expect("PEM is ASCII");
    let public = sm2::PublicKey::from_public_key_pem(&public_pem).expect("SM2 public key");
    let key =
        KeptKey::new(VerifyingKey::new(DEFAULT_DIST_ID, public).expect("key")).expect("default ID");

    for i in 0..12usize {
        // Lengths around SM3's 64-byte block, and an empty message.
        let msg: Vec<u8> = (0..(i * 23) % 130).map(|j| (i * 31 + j) as u8).collect();
        let sig = sign(&dir, &msg, Some(DEFAULT_DIST_ID));
        assert!(
            verify_without_table(&key, &msg, &sig),
            "first use, message {i}"
        );
        assert!(verify(&key, &msg, &sig), "message {i}");
        assert!(
            verify(&key, &msg, &sig),
            "with the key's table, message {i}"
        );

        let mut other = msg.clone();
        other.push(0);
        assert!(!verify(&key, &other, &sig), "another message {i}");
        assert!(
            !verify_without_table(&key, &other, &sig),
            "another message {i}"
        );
        let mut der = sig.to_der().as_bytes().to_vec();
        let last = der.len() - 1;
        der[last] ^= 0x01;
        let altered = Signature::from_der(&der).expect("still DER");
        assert!(!verify(&key, &msg, &altered), "altered s, message {i}");
        assert!(!verify_without_table(&key, &msg, &altered), "altered s {i}");
    }
    // OpenSSL 3.0's default is an empty ID: Z differs, so the signature
    // must not verify under the standard ID.
    let msg = b"BZT-CHALLENGE-V1\nkind:login";
    let empty_id = sign(&dir, msg, None);
    assert!(!verify(&key, msg, &empty_id));
    assert!(!verify_without_table(&key, msg, &empty_id));
    let _ = std::fs::remove_dir_all(&dir);
}
