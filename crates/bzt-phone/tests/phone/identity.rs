//! Identities from files, and signatures checked by OpenSSL (an independent verifier).

use bzt_phone::{sign, Error, PhoneIdentity};

use crate::common::{openssl, openssl_verifies, Fixture, DISTID_OPT};

#[test]
fn signatures_verify_with_openssl() {
    let fx = Fixture::new();
    let tbs = "BZT-CHALLENGE-V1\nkind:login\napp:demo\nsession:s1".as_bytes();
    let sig = sign(&fx.identity, tbs).unwrap();
    assert!(openssl_verifies(fx.dir.path(), "phone.pem", tbs, &sig));
    assert!(!openssl_verifies(
        fx.dir.path(),
        "phone.pem",
        b"another session",
        &sig
    ));

    // And a signature by another certificate's key does not pass for ours.
    let other = fx
        .ca
        .issue(&bzt_devca::LeafSpec::new("李四", "示例"))
        .unwrap();
    let other = PhoneIdentity::from_pem(&other.cert_pem, &other.key_pem, None).unwrap();
    assert!(!openssl_verifies(
        fx.dir.path(),
        "phone.pem",
        tbs,
        &other.sign(tbs).unwrap()
    ));
}

#[test]
fn openssl_signatures_verify_with_the_identity_certificate() {
    let fx = Fixture::new();
    let d = fx.dir.path();
    std::fs::write(d.join("msg"), b"rp bytes \x00\x01\x02").unwrap();
    let out = openssl(
        d,
        &[
            "pkeyutl",
            "-sign",
            "-inkey",
            "phone.key.pem",
            "-rawin",
            "-digest",
            "sm3",
            "-pkeyopt",
            DISTID_OPT,
            "-in",
            "msg",
            "-out",
            "sig.der",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let vk = bzt_devca::cert_verifying_key(fx.identity.certificate()).unwrap();
    let sig = std::fs::read(d.join("sig.der")).unwrap();
    bzt_devca::verify_der(&vk, b"rp bytes \x00\x01\x02", &sig).unwrap();
}

#[test]
fn pin_protected_key_files_load() {
    let fx = Fixture::new();
    let (cert, key) = fx
        .leaf
        .write_files(fx.dir.path(), "pin", Some("8642"))
        .unwrap();

    let identity = PhoneIdentity::from_files(&cert, &key, Some("8642")).unwrap();
    assert_eq!(identity.serial_hex(), fx.leaf.serial_hex);
    let sig = identity.sign(b"hello").unwrap();
    assert!(openssl_verifies(fx.dir.path(), "pin.pem", b"hello", &sig));

    assert!(matches!(
        PhoneIdentity::from_files(&cert, &key, None),
        Err(Error::Crypto(bzt_devca::Error::PinRequired))
    ));
    assert!(matches!(
        PhoneIdentity::from_files(&cert, &key, Some("0000")),
        Err(Error::Crypto(bzt_devca::Error::WrongPin))
    ));
    assert!(matches!(
        PhoneIdentity::from_files(fx.path("missing.pem"), &key, Some("8642")),
        Err(Error::Identity(_))
    ));
}

#[test]
fn a_key_of_another_certificate_is_refused() {
    let fx = Fixture::new();
    let other = fx
        .ca
        .issue(&bzt_devca::LeafSpec::new("王五", "示例"))
        .unwrap();
    match PhoneIdentity::from_pem(&fx.leaf.cert_pem, &other.key_pem, None) {
        Err(Error::Identity(msg)) => assert!(msg.contains("does not belong"), "{msg}"),
        other => panic!("expected an identity error, got {other:?}"),
    }
}

#[test]
fn a_certificate_bundle_gives_leaf_and_chain() {
    let fx = Fixture::new();
    let bundle = format!("leaf:\n{}\nissuer:\n{}", fx.leaf.cert_pem, fx.ca.cert_pem());
    let identity = PhoneIdentity::from_pem(&bundle, &fx.leaf.key_pem, None).unwrap();
    assert_eq!(identity.certificate_pem(), fx.leaf.cert_pem);
    assert_eq!(identity.chain_pem, vec![fx.ca.cert_pem().to_string()]);
    assert!(identity.subject().contains("CN=张三"));
    assert!(identity.device.id.starts_with("bzt-phone-"));
    assert_eq!(identity.device.id.len(), "bzt-phone-".len() + 16);
    let identity = identity.with_device("d1", "张三的手机").with_chain(vec![]);
    assert_eq!(identity.device.name, "张三的手机");
    assert!(identity.chain_pem.is_empty());
    assert!(
        !format!("{identity:?}").contains("BEGIN"),
        "Debug stays short and keyless"
    );
}
