//! Issue 13: an end-entity certificate's keyUsage, where present, decides
//! what it may do. Without digitalSignature it cannot sign or log in;
//! without keyEncipherment or dataEncipherment it cannot receive a bid file.
//! Certificates come from the dev CA and from the OpenSSL 3 command line
//! (signed by the same test root), so the extension is read as another
//! implementation writes it.

use crate::helpers::*;
use bzt_devca::LeafSpec;
use bzt_phone::PhoneIdentity;
use serde_json::json;
use std::path::Path;
use x509_cert::ext::pkix::{KeyUsage, KeyUsages};

/// A leaf made by OpenSSL for a fresh SM2 key, signed by the platform test
/// root (saved to `dir`), with `extensions` as an OpenSSL extension section
/// body. Returns (certificate PEM, key PEM).
fn openssl_leaf(app: &TestApp, dir: &Path, name: &str, extensions: &str) -> (String, String) {
    app.cas.platform.save(dir).unwrap();
    std::fs::write(
        dir.join(format!("{name}.cnf")),
        format!("[leaf]\n{extensions}\n"),
    )
    .unwrap();
    let (key, csr, pem) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
    );
    bzt_openssl_cli::new_sm2_key(dir, &key);
    openssl_ok(
        dir,
        &[
            "req",
            "-new",
            "-key",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={name}/O=Interop Co"),
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
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key.pem",
            "-set_serial",
            "0x4242",
            "-out",
            &pem,
            "-days",
            "30",
            "-sm3",
            "-sigopt",
            DISTID_OPT,
            "-vfyopt",
            DISTID_OPT,
            "-extfile",
            &format!("{name}.cnf"),
            "-extensions",
            "leaf",
        ],
    );
    (
        std::fs::read_to_string(dir.join(pem)).unwrap(),
        std::fs::read_to_string(dir.join(key)).unwrap(),
    )
}

/// Logs in with `cert_pem`/`key_pem`; `Ok` or the broker's (status, code, message).
/// OpenSSL starts validity at the current second: the broker's clock is moved
/// past it first.
async fn login_with(
    app: &TestApp,
    cert_pem: &str,
    key_pem: &str,
) -> Result<(), (u16, String, String)> {
    let identity = PhoneIdentity::from_pem(cert_pem, key_pem, None)
        .unwrap()
        .with_device("ku-1", "测试手机");
    let phone = bzt_phone::Phone::new(app.http.clone());
    app.advance(std::time::Duration::from_secs(2));
    let created = app.create_login().await;
    let claimed = phone.claim(&created.qr(), &identity).await.unwrap();
    match phone
        .approve(&claimed, &identity, bzt_phone::ApproveExtras::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(e) => {
            let b = broker_error(e);
            Err((b.status, b.code, b.message))
        }
    }
}

#[tokio::test]
async fn a_certificate_without_digital_signature_cannot_log_in() {
    let app = TestApp::spawn().await;
    let encipher_only = app
        .cas
        .platform
        .issue(
            &LeafSpec::new("李四", "示例建设有限公司")
                .with_key_usage(KeyUsage(KeyUsages::KeyEncipherment.into())),
        )
        .unwrap();
    let (status, code, message) = login_with(&app, &encipher_only.cert_pem, &encipher_only.key_pem)
        .await
        .unwrap_err();
    assert_eq!(
        (status, code.as_str()),
        (422, "untrusted_certificate"),
        "{message}"
    );
    assert!(
        message.contains("lacks digitalSignature (it allows: keyEncipherment)"),
        "{message}"
    );

    // The same from OpenSSL; and an OpenSSL leaf without the extension is
    // not restricted ("where present").
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = openssl_leaf(
        &app,
        dir.path(),
        "enc",
        "keyUsage = critical,keyEncipherment",
    );
    let (_, code, message) = login_with(&app, &cert, &key).await.unwrap_err();
    assert_eq!(code, "untrusted_certificate");
    assert!(message.contains("lacks digitalSignature"), "{message}");
    let (cert, key) = openssl_leaf(&app, dir.path(), "plain", "basicConstraints = CA:FALSE");
    login_with(&app, &cert, &key).await.unwrap();
    let (cert, key) = openssl_leaf(
        &app,
        dir.path(),
        "sig",
        "keyUsage = critical,digitalSignature",
    );
    login_with(&app, &cert, &key).await.unwrap();
}

#[tokio::test]
async fn a_recipient_needs_key_or_data_encipherment() {
    let app = TestApp::spawn().await;
    let alice = app.phone("platform", "alice");
    let dir = tempfile::tempdir().unwrap();
    let (sign_only, _) = openssl_leaf(
        &app,
        dir.path(),
        "bob",
        "keyUsage = critical,digitalSignature",
    );
    let data_only = app
        .cas
        .platform
        .issue(
            &LeafSpec::new("丙", "示例建设有限公司").with_key_usage(KeyUsage(
                KeyUsages::DataEncipherment | KeyUsages::DigitalSignature,
            )),
        )
        .unwrap();

    app.advance(std::time::Duration::from_secs(2));
    let encrypt = json!({"kind": "encrypt", "display": {"title": "生成投标文件"}});
    let created = app.create_session(encrypt.clone()).await;
    let claimed = alice.claim(&created).await;
    let refused = alice
        .phone
        .approve_encrypt(
            &claimed,
            &alice.identity,
            &[data_only.cert_pem.clone(), sign_only],
            None,
        )
        .await
        .unwrap_err();
    let e = broker_error(refused);
    assert_eq!(
        (e.status, e.code.as_str()),
        (422, "untrusted_certificate"),
        "{}",
        e.message
    );
    // The phone lists its own certificate first, then the colleagues.
    assert!(
        e.message.starts_with("recipients_pem[2]: "),
        "{}",
        e.message
    );
    assert!(
        e.message
            .contains("neither keyEncipherment nor dataEncipherment (it allows: digitalSignature)"),
        "{}",
        e.message
    );

    // dataEncipherment alone is enough.
    let created = app.create_session(encrypt).await;
    let claimed = alice.claim(&created).await;
    alice
        .phone
        .approve_encrypt(&claimed, &alice.identity, &[data_only.cert_pem], None)
        .await
        .unwrap();
}
