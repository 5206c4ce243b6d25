//! Interoperability with the OpenSSL 3 command line: a CA and a phone
//! certificate made by OpenSSL are accepted as a trust domain, and a
//! signature made by `openssl pkeyutl` completes a session.

use crate::helpers::*;
use bzt::config::TrustDomainConfig;
use bzt_phone::PhoneIdentity;
use serde_json::json;
use std::path::Path;

const OPENSSL_CNF: &str = "\
[req]
distinguished_name = dn
prompt = no

[dn]
CN = OpenSSL Interop Root CA
O = bzt interop

[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash

[v3_leaf]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
";

/// Makes `ca.pem`/`ca.key` and `phone.pem`/`phone.key` in `dir` with OpenSSL.
fn openssl_pki(dir: &Path) {
    std::fs::write(dir.join("openssl.cnf"), OPENSSL_CNF).unwrap();
    let genkey = |out: &str| bzt_openssl_cli::new_sm2_key(dir, out);
    genkey("ca.key");
    openssl_ok(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-config",
            "openssl.cnf",
            "-extensions",
            "v3_ca",
            "-key",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "30",
            "-sm3",
            "-sigopt",
            DISTID_OPT,
        ],
    );
    genkey("phone.key");
    openssl_ok(
        dir,
        &[
            "req",
            "-new",
            "-config",
            "openssl.cnf",
            "-key",
            "phone.key",
            "-out",
            "phone.csr",
            "-subj",
            "/CN=Li Si/O=Interop Construction Co",
            "-sm3",
            "-sigopt",
            DISTID_OPT,
        ],
    );
    openssl_ok(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "phone.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "phone.pem",
            "-days",
            "30",
            "-sm3",
            "-sigopt",
            DISTID_OPT,
            "-vfyopt",
            DISTID_OPT,
            "-extfile",
            "openssl.cnf",
            "-extensions",
            "v3_leaf",
        ],
    );
    // OpenSSL itself agrees the chain is sound.
    openssl_ok(
        dir,
        &[
            "verify",
            "-vfyopt",
            DISTID_OPT,
            "-CAfile",
            "ca.pem",
            "phone.pem",
        ],
    );
}

fn openssl_sign(dir: &Path, tbs: &[u8], distid: Option<&str>) -> Vec<u8> {
    std::fs::write(dir.join("tbs"), tbs).unwrap();
    let mut args = vec![
        "pkeyutl",
        "-sign",
        "-inkey",
        "phone.key",
        "-rawin",
        "-digest",
        "sm3",
    ];
    if let Some(id) = distid {
        args.extend(["-pkeyopt", id]);
    }
    args.extend(["-in", "tbs", "-out", "sig.der"]);
    openssl_ok(dir, &args);
    std::fs::read(dir.join("sig.der")).unwrap()
}

/// The serial OpenSSL printed (`serial=0A1B...`), in the protocol's form.
fn openssl_serial(dir: &Path) -> String {
    let out = openssl_ok(dir, &["x509", "-in", "phone.pem", "-noout", "-serial"]);
    let text = String::from_utf8(out.stdout).unwrap();
    let hex = text.trim().strip_prefix("serial=").unwrap().to_lowercase();
    hex.trim_start_matches('0').to_owned()
}

#[tokio::test]
async fn openssl_ca_certificate_and_signature_are_accepted() {
    let pki = tempfile::tempdir().unwrap();
    openssl_pki(pki.path());
    let ca_file = pki.path().join("ca.pem");
    let app = TestApp::spawn_with(|cfg| {
        cfg.trust_domains.push(TrustDomainConfig {
            name: "interop".into(),
            ca_pem_files: vec![ca_file],
            ..Default::default()
        })
    })
    .await;

    let created = app
        .create_session(json!({
            "kind": "login",
            "display": {"title": "OpenSSL interop"},
            "accept": ["interop"],
        }))
        .await;
    let cert_pem = std::fs::read_to_string(pki.path().join("phone.pem")).unwrap();
    let key_pem = std::fs::read_to_string(pki.path().join("phone.key")).unwrap();
    // The reference phone library loads OpenSSL's key and certificate too.
    let identity = PhoneIdentity::from_pem(&cert_pem, &key_pem, None)
        .unwrap()
        .with_device("openssl-1", "OpenSSL 手机");
    let phone = bzt_phone::Phone::new(app.http.clone());
    let claimed = phone.claim(&created.qr(), &identity).await.unwrap();
    claimed.check_challenge().unwrap();

    // OpenSSL's default (empty) distinguishing ID is not the protocol's: refused.
    let wrong_id = openssl_sign(pki.path(), &claimed.tbs, None);
    let err = phone
        .complete_raw(
            &claimed,
            &json!({"certificate_pem": cert_pem, "signature_b64": b64(&wrong_id)}),
        )
        .await
        .unwrap_err();
    let err = broker_error(err);
    assert_eq!((err.status, err.code.as_str()), (422, "bad_signature"));
    assert_eq!(app.status_of(&created.id).await, "scanned");

    // With distid:1234567812345678, OpenSSL's signature completes the session.
    let sig = openssl_sign(pki.path(), &claimed.tbs, Some(DISTID_OPT));
    let done = phone
        .complete_raw(
            &claimed,
            &json!({"certificate_pem": cert_pem, "signature_b64": b64(&sig)}),
        )
        .await
        .unwrap();
    assert_eq!(done.status, bzt_phone::SessionStatus::Approved.as_str());

    let view = app.get_session(&created.id).await;
    let cert = &view["result"]["certificate"];
    assert_eq!(cert["domain"], "interop");
    assert_eq!(cert["serial"], openssl_serial(pki.path()).as_str());
    assert!(cert["issuer"]
        .as_str()
        .unwrap()
        .contains("CN=OpenSSL Interop Root CA"));
    assert_eq!(
        unb64(view["result"]["signature_b64"].as_str().unwrap()),
        sig
    );
    assert!(openssl_verifies(
        pki.path(),
        cert["pem"].as_str().unwrap(),
        &claimed.tbs,
        &sig
    ));
}

#[tokio::test]
async fn openssl_certificate_is_refused_where_its_domain_is_not_accepted() {
    let pki = tempfile::tempdir().unwrap();
    openssl_pki(pki.path());
    let ca_file = pki.path().join("ca.pem");
    let app = TestApp::spawn_with(|cfg| {
        cfg.trust_domains.push(TrustDomainConfig {
            name: "interop".into(),
            ca_pem_files: vec![ca_file],
            ..Default::default()
        })
    })
    .await;
    let created = app
        .create_session(json!({
            "kind": "login",
            "display": {"title": "platform only"},
            "accept": ["platform"],
        }))
        .await;
    let cert_pem = std::fs::read_to_string(pki.path().join("phone.pem")).unwrap();
    let key_pem = std::fs::read_to_string(pki.path().join("phone.key")).unwrap();
    let identity = PhoneIdentity::from_pem(&cert_pem, &key_pem, None).unwrap();
    let phone = bzt_phone::Phone::new(app.http.clone());
    let claimed = phone.claim(&created.qr(), &identity).await.unwrap();
    let sig = openssl_sign(pki.path(), &claimed.tbs, Some(DISTID_OPT));
    let err = phone
        .complete_raw(
            &claimed,
            &json!({"certificate_pem": cert_pem, "signature_b64": b64(&sig)}),
        )
        .await
        .unwrap_err();
    let err = broker_error(err);
    assert_eq!(
        (err.status, err.code.as_str()),
        (422, "untrusted_certificate")
    );
    assert!(err.message.contains("interop"), "{}", err.message);
    assert!(
        err.message.contains("accepts only platform"),
        "{}",
        err.message
    );
}
