//! Two-party SM2 checked against implementations that are not ours:
//! a co-signature verifies with `openssl pkeyutl -verify` against a
//! certificate OpenSSL issued for the joint key, a blinded co-decryption opens
//! what `openssl pkeyutl -encrypt` sealed to that certificate, and the
//! channel's SM4-GCM opens with Python `cryptography`.

mod support;

use std::path::Path;
use std::process::Command;

use support::{new_sm2_key, openssl};

use bzt_crypto::two_party::channel::{request_key_for_interop, seal_request};
use bzt_crypto::two_party::{
    decode_point, encode_point, message_digest, service_decrypt, service_sign, BlindedDecryption,
    ChannelKey, MemberAcceptance, PhoneKeygen, PhoneSigning, ReshareDealer, ServiceShare,
};
use sm2::pkcs8::{EncodePublicKey, LineEnding};
use sm2::{NonZeroScalar, ProjectivePoint, PublicKey};

const DISTID: &str = "distid:1234567812345678";

fn enrolled() -> (NonZeroScalar, ServiceShare, ProjectivePoint) {
    let phone = PhoneKeygen::start().unwrap();
    let (share, p2, proof2, _) = ServiceShare::enrol(phone.p1(), &phone.proof().unwrap()).unwrap();
    let (d1, joint) = phone.finish(&p2, &proof2).unwrap();
    (d1, share, joint)
}

/// An OpenSSL CA certifies the joint key (`-force_pubkey`: nobody can sign a
/// request with a key that exists nowhere, so a throwaway key signs it).
fn openssl_certificate_for(dir: &Path, joint: &ProjectivePoint) {
    let public = PublicKey::from_sec1_bytes(&encode_point(joint)).unwrap();
    std::fs::write(
        dir.join("joint.pem"),
        public.to_public_key_pem(LineEnding::LF).unwrap(),
    )
    .unwrap();
    for key in ["ca.key", "throwaway.key"] {
        new_sm2_key(dir, key);
    }
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-x509",
            "-key",
            "ca.key",
            "-subj",
            "/CN=Interop CA",
            "-days",
            "2",
            "-sigopt",
            DISTID,
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            "throwaway.key",
            "-subj",
            "/CN=split key",
            "-sigopt",
            DISTID,
            "-out",
            "req.csr",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "req.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-force_pubkey",
            "joint.pem",
            "-days",
            "1",
            "-sigopt",
            DISTID,
            "-vfyopt",
            DISTID,
            "-out",
            "cert.pem",
        ],
    );
}

#[test]
fn a_co_signature_verifies_with_openssl_against_a_certificate_for_the_joint_key() {
    let dir = tempfile::tempdir().unwrap();
    let (d1, share, joint) = enrolled();
    openssl_certificate_for(dir.path(), &joint);
    let msg = b"BZT-CHALLENGE-V1\nkind:login\napp:demo";

    let phone = PhoneSigning::start().unwrap();
    let e = message_digest(&joint, msg).unwrap();
    let (r, s1) = service_sign(&share, phone.q1(), &e).unwrap();
    let sig = phone.finish(&d1, &joint, msg, &r, &s1).unwrap();

    std::fs::write(dir.path().join("msg"), msg).unwrap();
    std::fs::write(dir.path().join("sig.der"), sig.to_der().as_bytes()).unwrap();
    let verify = [
        "pkeyutl", "-verify", "-certin", "-inkey", "cert.pem", "-rawin", "-digest", "sm3",
        "-pkeyopt", DISTID, "-in", "msg", "-sigfile", "sig.der",
    ];
    let out = openssl(dir.path(), &verify);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Signature Verified Successfully"));

    // The same signature over other bytes is refused by OpenSSL: the check can fail.
    std::fs::write(dir.path().join("msg"), b"other bytes").unwrap();
    let refused = Command::new("openssl")
        .args(verify)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!refused.status.success());
}

/// OpenSSL's verdict on `sig` over `msg` against `cert.pem` in `dir`.
fn openssl_verifies(dir: &Path, msg: &[u8], sig: &sm2::dsa::Signature) -> bool {
    std::fs::write(dir.join("msg"), msg).unwrap();
    std::fs::write(dir.join("sig.der"), sig.to_der().as_bytes()).unwrap();
    let out = Command::new("openssl")
        .args([
            "pkeyutl", "-verify", "-certin", "-inkey", "cert.pem", "-rawin", "-digest", "sm3",
            "-pkeyopt", DISTID, "-in", "msg", "-sigfile", "sig.der",
        ])
        .current_dir(dir)
        .output()
        .unwrap();
    out.status.success()
        && String::from_utf8_lossy(&out.stdout).contains("Signature Verified Successfully")
}

fn co_sign(
    d1: &NonZeroScalar,
    share: &ServiceShare,
    joint: &ProjectivePoint,
    msg: &[u8],
) -> sm2::dsa::Signature {
    let phone = PhoneSigning::start().unwrap();
    let e = message_digest(joint, msg).unwrap();
    let (r, s1) = service_sign(share, phone.q1(), &e).unwrap();
    phone.finish(d1, joint, msg, &r, &s1).unwrap()
}

#[test]
fn a_members_re_shared_pair_and_the_administrators_both_verify_with_openssl_against_the_company_certificate(
) {
    let dir = tempfile::tempdir().unwrap();
    let admin = PhoneKeygen::start().unwrap();
    let admin_p1 = *admin.p1();
    let (admin_share, p2, proof2, _) =
        ServiceShare::enrol(admin.p1(), &admin.proof().unwrap()).unwrap();
    let (admin_d1, joint) = admin.finish(&p2, &proof2).unwrap();
    openssl_certificate_for(dir.path(), &joint);

    // 授权: the administrator deals t, the member re-randomises by u.
    let dealer = ReshareDealer::start().unwrap();
    let (pending, pending_p1) = admin_share
        .reshare(&admin_p1, &dealer.service_factor())
        .unwrap();
    let member = MemberAcceptance::start(&dealer.member_share(&admin_d1)).unwrap();
    let (member_share, _, member_p2) = pending
        .accept_member(
            &pending_p1,
            &member.service_factor(),
            &member.proof("grant-1").unwrap(),
            "grant-1",
        )
        .unwrap();
    let member_d1 = member.finish(&member_p2, &joint).unwrap();

    let msg = b"BZT-CHALLENGE-V1\nkind:sign\napp:bid";
    let by_member = co_sign(&member_d1, &member_share, &joint, msg);
    assert!(openssl_verifies(dir.path(), msg, &by_member));
    let by_admin = co_sign(&admin_d1, &admin_share, &joint, msg);
    assert!(openssl_verifies(dir.path(), msg, &by_admin));
    // OpenSSL refuses the member's signature over other bytes: the check can fail.
    assert!(!openssl_verifies(dir.path(), b"other bytes", &by_member));
}

#[test]
fn a_blinded_co_decryption_opens_what_openssl_encrypted_to_the_joint_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (d1, share, joint) = enrolled();
    openssl_certificate_for(dir.path(), &joint);
    std::fs::write(dir.path().join("key16"), b"content-key-16B!").unwrap();
    openssl(
        dir.path(),
        &[
            "pkeyutl",
            "-encrypt",
            "-certin",
            "-inkey",
            "cert.pem",
            "-in",
            "key16",
            "-out",
            "wrapped.der",
        ],
    );
    let wrapped = std::fs::read(dir.path().join("wrapped.der")).unwrap();

    let phone = BlindedDecryption::start_der(&wrapped).unwrap();
    // The service sees T1 only as bytes and validates it like any received point.
    let t1 = decode_point(&encode_point(phone.t1())).unwrap();
    let t2 = service_decrypt(&share, &t1);
    assert_eq!(phone.finish(&d1, &t2).unwrap(), b"content-key-16B!");
}

#[test]
fn the_channel_request_opens_with_python_cryptographys_sm4_gcm() {
    let service = ChannelKey::generate().unwrap();
    let (sealed, _) = seal_request(
        service.public(),
        b"POST /v1/keys/k1/sign",
        b"{\"q1\":\"04ab\"}",
    )
    .unwrap();
    let key = request_key_for_interop(&service, &sealed).unwrap();
    let (ct, tag) = sealed.ciphertext.split_at(sealed.ciphertext.len() - 16);
    let script = format!(
        "from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes\n\
         d = Cipher(algorithms.SM4(bytes.fromhex('{}')), modes.GCM(bytes.fromhex('{}'), bytes.fromhex('{}'))).decryptor()\n\
         d.authenticate_additional_data(b'req:POST /v1/keys/k1/sign')\n\
         print((d.update(bytes.fromhex('{}')) + d.finalize()).decode())",
        hex::encode(key),
        hex::encode(sealed.nonce),
        hex::encode(tag),
        hex::encode(ct)
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "{\"q1\":\"04ab\"}"
    );
}
