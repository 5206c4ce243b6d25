//! Cross-checks against OpenSSL 3: what this CA issues must verify with an independent
//! implementation, and keys must sign both ways. These tests FAIL when `openssl` is missing:
//! a crypto path that has only ever agreed with itself proves nothing.

use std::process::Output;

use bzt_devca::{
    cert_verifying_key, key_from_pem, pem_certificate, serial_hex, sign_der, signing_key,
    verify_cert_signature, verify_der, DevCa, LeafSpec, SM2_DISTID,
};
use time::macros::datetime;

use bzt_openssl_cli::run as openssl;

const USCC: &str = "91350100M000100Y43";

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn distid_opt() -> String {
    format!("distid:{SM2_DISTID}")
}

/// A CA saved in a fresh temporary directory, with one valid leaf written as leaf.pem/leaf.key.pem.
fn setup() -> (tempfile::TempDir, DevCa) {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::generate("BZT 开发根证书", "bzt 开发", "platform").unwrap();
    ca.save(dir.path()).unwrap();
    let leaf = ca
        .issue(&LeafSpec::new("张三", "示例建设有限公司").with_uscc(USCC))
        .unwrap();
    leaf.write_files(dir.path(), "leaf", None).unwrap();
    (dir, ca)
}

#[test]
fn openssl_verifies_root_and_leaf() {
    let (dir, _ca) = setup();
    let d = dir.path();
    let distid = distid_opt();
    for target in ["ca.pem", "leaf.pem"] {
        let out = openssl(
            d,
            &["verify", "-vfyopt", &distid, "-CAfile", "ca.pem", target],
        );
        assert!(out.status.success(), "{target}: {}", text(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("{target}: OK")
        );
    }
    // Without the distinguishing ID OpenSSL 3 uses an empty one, and must fail: proof that the
    // signatures really carry ID 1234567812345678.
    let out = openssl(d, &["verify", "-CAfile", "ca.pem", "leaf.pem"]);
    assert!(
        !out.status.success(),
        "verified without distid: {}",
        text(&out)
    );
}

#[test]
fn openssl_shows_subject_and_extensions() {
    let (dir, ca) = setup();
    let d = dir.path();
    let out = openssl(
        d,
        &[
            "x509",
            "-in",
            "leaf.pem",
            "-noout",
            "-text",
            "-nameopt",
            "utf8,sep_comma_plus_space",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains(
            "Subject: C=CN, O=示例建设有限公司, organizationIdentifier=91350100M000100Y43, CN=张三"
        ),
        "{t}"
    );
    assert!(
        t.contains("Issuer: C=CN, O=bzt 开发, OU=platform, CN=BZT 开发根证书"),
        "{t}"
    );
    assert!(t.contains("Signature Algorithm: SM2-with-SM3"), "{t}");
    assert!(t.contains("ASN1 OID: SM2"), "{t}");
    assert!(
        t.contains("X509v3 Basic Constraints: critical\n                CA:FALSE"),
        "{t}"
    );
    assert!(
        t.contains("Digital Signature, Key Encipherment, Data Encipherment"),
        "{t}"
    );
    assert!(t.contains("TLS Web Client Authentication"), "{t}");
    assert!(t.contains("X509v3 Subject Key Identifier"), "{t}");

    let out = openssl(d, &["x509", "-in", "ca.pem", "-noout", "-text"]);
    let t = text(&out);
    assert!(t.contains("CA:TRUE"), "{t}");
    assert!(t.contains("Certificate Sign, CRL Sign"), "{t}");
    assert_eq!(ca.domain().as_deref(), Some("platform"));

    // serial_hex agrees with OpenSSL's serial (which is upper case).
    let leaf = pem_certificate(&std::fs::read_to_string(d.join("leaf.pem")).unwrap()).unwrap();
    let out = openssl(d, &["x509", "-in", "leaf.pem", "-noout", "-serial"]);
    let openssl_serial = text(&out)
        .trim()
        .trim_start_matches("serial=")
        .to_lowercase();
    assert_eq!(serial_hex(&leaf), openssl_serial.trim_start_matches('0'));
    assert_eq!(serial_hex(&leaf).len(), 32);
}

#[test]
fn expired_and_future_leaves_fail_openssl_verify() {
    let (dir, ca) = setup();
    let d = dir.path();
    let expired = ca
        .issue(&LeafSpec::new("过期", "示例").with_validity(
            datetime!(2020-01-01 00:00 UTC),
            datetime!(2021-01-01 00:00 UTC),
        ))
        .unwrap();
    expired.write_files(d, "expired", None).unwrap();
    let future = ca
        .issue(&LeafSpec::new("未来", "示例").with_validity(
            datetime!(2090-01-01 00:00 UTC),
            datetime!(2091-01-01 00:00 UTC),
        ))
        .unwrap();
    future.write_files(d, "future", None).unwrap();
    let distid = distid_opt();

    let out = openssl(
        d,
        &[
            "verify",
            "-vfyopt",
            &distid,
            "-CAfile",
            "ca.pem",
            "expired.pem",
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("certificate has expired"),
        "{}",
        text(&out)
    );
    let out = openssl(
        d,
        &[
            "verify",
            "-vfyopt",
            &distid,
            "-CAfile",
            "ca.pem",
            "future.pem",
        ],
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("not yet valid"), "{}", text(&out));
    // The signature itself is fine: only the dates are wrong.
    let out = openssl(d, &["x509", "-in", "expired.pem", "-noout", "-dates"]);
    assert!(
        text(&out).contains("notAfter=Jan  1 00:00:00 2021 GMT"),
        "{}",
        text(&out)
    );
    let root = cert_verifying_key(ca.certificate()).unwrap();
    verify_cert_signature(&expired.certificate().unwrap(), &root).unwrap();
}

#[test]
fn openssl_signature_verifies_with_our_verifier() {
    let (dir, _ca) = setup();
    let d = dir.path();
    std::fs::write(d.join("msg"), "BZT-CHALLENGE-V1\nkind:login").unwrap();
    let distid = distid_opt();
    let out = openssl(
        d,
        &[
            "pkeyutl",
            "-sign",
            "-inkey",
            "leaf.key.pem",
            "-rawin",
            "-digest",
            "sm3",
            "-pkeyopt",
            &distid,
            "-in",
            "msg",
            "-out",
            "sig.der",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let sig = std::fs::read(d.join("sig.der")).unwrap();
    let cert = pem_certificate(&std::fs::read_to_string(d.join("leaf.pem")).unwrap()).unwrap();
    let vk = cert_verifying_key(&cert).unwrap();
    verify_der(&vk, b"BZT-CHALLENGE-V1\nkind:login", &sig).unwrap();
    assert!(verify_der(&vk, b"BZT-CHALLENGE-V1\nkind:bind", &sig).is_err());
}

#[test]
fn our_signature_verifies_with_openssl() {
    let (dir, _ca) = setup();
    let d = dir.path();
    let msg = "BZT-CHALLENGE-V1\nkind:login\napp:demo".as_bytes();
    std::fs::write(d.join("msg"), msg).unwrap();
    std::fs::write(d.join("other"), b"something else").unwrap();
    let key = key_from_pem(
        &std::fs::read_to_string(d.join("leaf.key.pem")).unwrap(),
        None,
    )
    .unwrap();
    let sig = sign_der(&signing_key(&key).unwrap(), msg).unwrap();
    std::fs::write(d.join("sig.der"), sig).unwrap();
    let distid = distid_opt();
    let verify = |input: &str| {
        openssl(
            d,
            &[
                "pkeyutl", "-verify", "-certin", "-inkey", "leaf.pem", "-rawin", "-digest", "sm3",
                "-pkeyopt", &distid, "-in", input, "-sigfile", "sig.der",
            ],
        )
    };
    let out = verify("msg");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("Signature Verified Successfully"),
        "{}",
        text(&out)
    );
    assert!(!verify("other").status.success());
}

#[test]
fn pin_protected_keys_interoperate_with_openssl() {
    let (dir, ca) = setup();
    let d = dir.path();
    let leaf = ca.issue(&LeafSpec::new("李四", "示例")).unwrap();
    let (_, key_path) = leaf.write_files(d, "pin", Some("246810")).unwrap();
    let pem = std::fs::read_to_string(&key_path).unwrap();
    assert!(pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));

    // OpenSSL opens ours with the PIN, and yields the same key.
    let out = openssl(d, &["pkey", "-in", "pin.key.pem", "-passin", "pass:246810"]);
    assert!(out.status.success(), "{}", text(&out));
    let via_openssl = key_from_pem(&String::from_utf8_lossy(&out.stdout), None).unwrap();
    assert_eq!(via_openssl, key_from_pem(&leaf.key_pem, None).unwrap());
    let out = openssl(d, &["pkey", "-in", "pin.key.pem", "-passin", "pass:000000"]);
    assert!(!out.status.success());
    let out = openssl(d, &["asn1parse", "-in", "pin.key.pem"]);
    let t = text(&out);
    assert!(
        t.contains("PBES2") && t.contains("hmacWithSHA256") && t.contains("sm4-cbc"),
        "{t}"
    );
    assert!(t.contains(":0186A0"), "100000 iterations expected: {t}");

    // We open OpenSSL's, made with the same scheme.
    let out = openssl(
        d,
        &[
            "pkcs8",
            "-topk8",
            "-v2",
            "sm4-cbc",
            "-v2prf",
            "hmacWithSHA256",
            "-iter",
            "100000",
            "-in",
            "leaf.key.pem",
            "-passout",
            "pass:13579",
            "-out",
            "openssl-enc.pem",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let theirs = std::fs::read_to_string(d.join("openssl-enc.pem")).unwrap();
    let key = key_from_pem(&theirs, Some("13579")).unwrap();
    let plain = key_from_pem(
        &std::fs::read_to_string(d.join("leaf.key.pem")).unwrap(),
        None,
    )
    .unwrap();
    assert_eq!(key, plain);
    assert!(matches!(
        key_from_pem(&theirs, Some("97531")),
        Err(bzt_devca::Error::WrongPin)
    ));
}

#[test]
fn ca_survives_save_and_load() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("ca");
    let first = DevCa::load_or_generate(&d, "根", "组织", "national").unwrap();
    let second = DevCa::load_or_generate(&d, "ignored", "ignored", "ignored").unwrap();
    assert_eq!(first.cert_pem(), second.cert_pem());
    assert_eq!(second.domain().as_deref(), Some("national"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join("ca.key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // A leaf of the reloaded CA still verifies under the original root, and with OpenSSL.
    let leaf = second.issue(&LeafSpec::new("王五", "组织")).unwrap();
    let root = cert_verifying_key(first.certificate()).unwrap();
    verify_cert_signature(&leaf.certificate().unwrap(), &root).unwrap();
    leaf.write_files(&d, "leaf", None).unwrap();
    let out = openssl(
        &d,
        &[
            "verify",
            "-vfyopt",
            &distid_opt(),
            "-CAfile",
            "ca.pem",
            "leaf.pem",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));

    // A key that does not belong to the certificate is refused.
    let other = DevCa::generate("x", "y", "z").unwrap();
    let other_dir = dir.path().join("other");
    other.save(&other_dir).unwrap();
    std::fs::copy(other_dir.join("ca.key.pem"), d.join("ca.key.pem")).unwrap();
    assert!(DevCa::load(&d).is_err());
}

#[test]
fn bad_specs_are_refused() {
    let ca = DevCa::generate("根", "组织", "platform").unwrap();
    assert!(ca
        .issue(&LeafSpec::new("a", "b").with_uscc("91350100M000100Y44"))
        .is_err());
    let now = time::OffsetDateTime::now_utc();
    assert!(ca
        .issue(&LeafSpec::new("a", "b").with_validity(now, now - time::Duration::days(1)))
        .is_err());
    assert!(ca.issue(&LeafSpec::new("", "b")).is_err());
}
