//! The broker's checks of a completion: signature binding, certificate trust,
//! and the three-strikes rule.

use crate::helpers::*;
use bzt_devca::{DevCa, LeafSpec};
use serde_json::{json, Value};
use std::sync::Arc;

/// Claims a fresh session of `body` and returns its claim with the phone.
async fn claimed_by(app: &TestApp, phone: &TestPhone, body: Value) -> bzt_phone::Claimed {
    let created = app.create_session(body).await;
    phone.claim(&created).await
}

/// Completes with `body` and expects a 422 `code`; returns the message.
async fn expect_422(
    phone: &TestPhone,
    claimed: &bzt_phone::Claimed,
    body: &Value,
    code: &str,
) -> String {
    let err = broker_error(phone.phone.complete_raw(claimed, body).await.unwrap_err());
    assert_eq!(
        (err.status, err.code.as_str()),
        (422, code),
        "{}",
        err.message
    );
    err.message
}

#[tokio::test]
async fn signatures_for_another_session_app_or_kind_fail_and_the_third_fails_the_session() {
    let app = TestApp::spawn().await;
    let phone = app.phone("platform", "p");
    let created = app.create_login().await;
    let mut browser = app.browser(&created).await;
    browser.next_event().await;
    let target = phone.claim(&created).await;
    assert_eq!(browser.next_event().await["status"], "scanned");

    // Challenges of other sessions: same app and kind; another app; another kind.
    let other_session = claimed_by(&app, &phone, login_body()).await;
    let other_app = {
        let c = app.create_session_as(OTHER_API_KEY, login_body()).await;
        phone.claim(&c).await
    };
    let other_kind = claimed_by(
        &app,
        &phone,
        json!({"kind": "bind", "display": {"title": "b"}}),
    )
    .await;
    assert_eq!(other_app.app.id, OTHER_APP_ID);
    assert!(String::from_utf8_lossy(&other_kind.tbs).contains("kind:bind"));

    for (n, foreign) in [&other_session, &other_app, &other_kind].iter().enumerate() {
        let body = phone.completion_over(&foreign.tbs);
        let message = expect_422(&phone, &target, &body, "bad_signature").await;
        let view = app.get_session(&created.id).await;
        if n < 2 {
            assert_eq!(
                view["status"], "scanned",
                "a 422 leaves the session scanned"
            );
            assert_eq!(view["version"], 2);
        } else {
            assert!(message.contains("failed"), "{message}");
            assert_eq!(view["status"], "failed");
            assert_eq!(view["version"], 3);
            assert_eq!(
                view["result"],
                json!({"reason": "too_many_bad_completions"})
            );
        }
    }
    let result = browser.next_event().await;
    assert_eq!(
        result,
        json!({"type": "result", "status": "failed", "version": 3,
               "result": {"reason": "too_many_bad_completions"}})
    );
    assert_eq!(u16::from(browser.expect_close().await.code), 1000);

    // Even a good signature cannot revive a failed session.
    let err = broker_error(phone.approve(&target).await.unwrap_err());
    assert_eq!((err.status, err.code.as_str()), (409, "conflict"));
}

#[tokio::test]
async fn a_signature_that_is_not_der_is_a_bad_signature() {
    let app = TestApp::spawn().await;
    let phone = app.phone("platform", "p");
    let claimed = claimed_by(&app, &phone, login_body()).await;
    let body = json!({
        "certificate_pem": phone.identity.certificate_pem(),
        "signature_b64": b64(&[0u8; 64]),
    });
    expect_422(&phone, &claimed, &body, "bad_signature").await;
    assert_eq!(app.status_of(&claimed.session_id).await, "scanned");
    // And the right one still goes through.
    phone.approve(&claimed).await.unwrap();
}

#[tokio::test]
async fn unparsable_completions_answer_400_and_do_not_count() {
    let app = TestApp::spawn().await;
    let phone = app.phone("platform", "p");
    let claimed = claimed_by(&app, &phone, login_body()).await;
    let sig = b64(&bzt_phone::sign(&phone.identity, &claimed.tbs).unwrap());
    let bad_bodies = [
        json!({"certificate_pem": "not a certificate", "signature_b64": sig}),
        json!({"certificate_pem": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "signature_b64": sig}),
        json!({"certificate_pem": phone.identity.certificate_pem(), "signature_b64": "%%%"}),
        json!({"certificate_pem": format!("{0}{0}", phone.identity.certificate_pem()), "signature_b64": sig}),
    ];
    for body in &bad_bodies {
        let resp = app
            .complete_raw(&claimed.session_id, claimed.phone_token.expose(), body)
            .await;
        assert_error(resp, 400, "invalid_request").await;
    }
    assert_eq!(app.status_of(&claimed.session_id).await, "scanned");
    // Text around the PEM block is ignored (RFC 7468).
    let body = json!({
        "certificate_pem": format!("subject=张三\n{}\ntrailing text", phone.identity.certificate_pem()),
        "signature_b64": sig,
    });
    let resp = app
        .complete_raw(&claimed.session_id, claimed.phone_token.expose(), &body)
        .await;
    assert_eq!(
        resp.status().as_u16(),
        200,
        "{}",
        resp.text().await.unwrap()
    );
    assert_eq!(app.status_of(&claimed.session_id).await, "approved");
}

#[tokio::test]
async fn a_certificate_of_an_unknown_ca_is_untrusted() {
    let app = TestApp::spawn().await;
    let stranger_ca = DevCa::generate("陌生 CA", "未知机构", "platform").unwrap();
    let phone = app.phone_with(
        stranger_ca.issue(&LeafSpec::new("王五", "某公司")).unwrap(),
        "p",
    );
    let claimed = claimed_by(&app, &phone, login_body()).await;
    let body = phone.completion_over(&claimed.tbs);
    let message = expect_422(&phone, &claimed, &body, "untrusted_certificate").await;
    assert!(
        message.contains("not a CA of any configured trust domain"),
        "{message}"
    );
    assert_eq!(app.status_of(&claimed.session_id).await, "scanned");
}

#[tokio::test]
async fn an_expired_or_not_yet_valid_certificate_is_untrusted() {
    let app = TestApp::spawn().await;
    let now = time::OffsetDateTime::now_utc();
    let expired = app
        .cas
        .platform
        .issue(&LeafSpec::new("张三", "公司").with_validity(
            now - time::Duration::days(30),
            now - time::Duration::days(1),
        ))
        .unwrap();
    let phone = app.phone_with(expired, "p");
    let claimed = claimed_by(&app, &phone, login_body()).await;
    let message = expect_422(
        &phone,
        &claimed,
        &phone.completion_over(&claimed.tbs),
        "untrusted_certificate",
    )
    .await;
    assert!(message.contains("certificate expired at"), "{message}");

    let future = app
        .cas
        .platform
        .issue(&LeafSpec::new("张三", "公司").with_validity(
            now + time::Duration::days(1),
            now + time::Duration::days(30),
        ))
        .unwrap();
    let phone = app.phone_with(future, "p");
    let claimed = claimed_by(&app, &phone, login_body()).await;
    let message = expect_422(
        &phone,
        &claimed,
        &phone.completion_over(&claimed.tbs),
        "untrusted_certificate",
    )
    .await;
    assert!(message.contains("not valid before"), "{message}");
}

/// A phone whose certificate became valid yesterday and expires 60 s from now.
fn a_phone_whose_certificate_expires_in_a_minute(app: &TestApp) -> TestPhone {
    let now = time::OffsetDateTime::now_utc();
    let short = app
        .cas
        .platform
        .issue(&LeafSpec::new("张三", "公司").with_validity(
            now - time::Duration::days(1),
            now + time::Duration::seconds(60),
        ))
        .unwrap();
    app.phone_with(short, "p")
}

#[tokio::test]
async fn a_certificate_expiring_while_the_clock_moves_is_untrusted() {
    let app = TestApp::spawn().await;
    let phone = a_phone_whose_certificate_expires_in_a_minute(&app);
    let claimed = claimed_by(
        &app,
        &phone,
        json!({"kind": "login", "display": {"title": "t"}, "ttl_s": 600}),
    )
    .await;
    // The broker's clock, not the system's, decides validity.
    app.advance(std::time::Duration::from_secs(120));
    let message = expect_422(
        &phone,
        &claimed,
        &phone.completion_over(&claimed.tbs),
        "untrusted_certificate",
    )
    .await;
    assert!(message.contains("expired"), "{message}");
}

/// From a certificate's second completion on, its chain comes from the cache
/// and the one signature is checked on the request's own task instead of
/// the check pool: every check still applies.
#[tokio::test]
async fn a_certificate_verified_before_is_still_checked_in_full() {
    let app = TestApp::spawn().await;
    let phone = a_phone_whose_certificate_expires_in_a_minute(&app);
    let long_login = json!({"kind": "login", "display": {"title": "t"}, "ttl_s": 600});
    let first = claimed_by(&app, &phone, long_login.clone()).await;
    phone.approve(&first).await.unwrap();

    // A signature over another session's bytes, then one that is not DER.
    let second = claimed_by(&app, &phone, long_login.clone()).await;
    let replayed = phone.completion_over(&first.tbs);
    expect_422(&phone, &second, &replayed, "bad_signature").await;
    let not_der = json!({
        "certificate_pem": phone.identity.certificate_pem(),
        "signature_b64": b64(&[0u8; 64]),
    });
    expect_422(&phone, &second, &not_der, "bad_signature").await;
    phone.approve(&second).await.unwrap();

    // Validity is checked at every use, not cached with the chain.
    let third = claimed_by(&app, &phone, long_login).await;
    app.advance(std::time::Duration::from_secs(120));
    let message = expect_422(
        &phone,
        &third,
        &phone.completion_over(&third.tbs),
        "untrusted_certificate",
    )
    .await;
    assert!(message.contains("expired"), "{message}");
}

#[tokio::test]
async fn a_serial_revoked_in_the_configuration_is_untrusted() {
    let cas = Arc::new(TestCas::generate());
    let leaf = cas.leaf("platform", "张三");
    // Serials compare case-insensitively, colons and leading zeros allowed.
    let configured = format!("00{}", leaf.serial_hex.to_uppercase());
    let app = TestApp::spawn_with_cas(cas, |cfg| cfg.revocation.serials = vec![configured]).await;
    let phone = app.phone_with(leaf, "p");
    let claimed = claimed_by(&app, &phone, login_body()).await;
    let message = expect_422(
        &phone,
        &claimed,
        &phone.completion_over(&claimed.tbs),
        "untrusted_certificate",
    )
    .await;
    assert!(message.contains("revoked"), "{message}");
    assert!(message.contains(&phone.serial()), "{message}");
    // Another certificate of the same CA is fine.
    let good = app.phone("platform", "q");
    let claimed = claimed_by(&app, &good, login_body()).await;
    good.approve(&claimed).await.unwrap();
}

#[tokio::test]
async fn a_serial_revoked_through_the_admin_api_is_untrusted() {
    let app = TestApp::spawn().await;
    let phone = app.phone("platform", "p");
    let claimed = claimed_by(&app, &phone, login_body()).await;

    let revoke = |token: Option<&str>| {
        let mut req = app
            .http
            .post(app.url("/v1/admin/revocations"))
            .json(&json!({"serial": phone.serial().to_uppercase()}));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    assert_error(revoke(None).await.unwrap(), 401, "unauthorized").await;
    assert_error(revoke(Some("wrong")).await.unwrap(), 401, "unauthorized").await;
    assert_error(revoke(Some(API_KEY)).await.unwrap(), 401, "unauthorized").await;
    let resp = revoke(Some(ADMIN_TOKEN)).await.unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["serial"], phone.serial().as_str());

    let message = expect_422(
        &phone,
        &claimed,
        &phone.completion_over(&claimed.tbs),
        "untrusted_certificate",
    )
    .await;
    assert!(message.contains("revoked"), "{message}");

    // Lifting the run-time revocation lets the certificate through again.
    let resp = app
        .http
        .delete(app.url(&format!("/v1/admin/revocations/{}", phone.serial())))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    phone.approve(&claimed).await.unwrap();
}

#[tokio::test]
async fn only_the_expected_certificate_may_complete() {
    let app = TestApp::spawn().await;
    let bound = app.phone("platform", "bound");
    let other = app.phone("platform", "other");
    let body = json!({
        "kind": "login",
        "display": {"title": "t"},
        "expect_cert": {"serial": bound.serial().to_uppercase()},
    });
    let claimed = claimed_by(&app, &other, body.clone()).await;
    let message = expect_422(
        &other,
        &claimed,
        &other.completion_over(&claimed.tbs),
        "untrusted_certificate",
    )
    .await;
    assert!(message.contains("expects certificate serial"), "{message}");
    assert!(message.contains(&bound.serial()), "{message}");

    let claimed = claimed_by(&app, &bound, body).await;
    bound.approve(&claimed).await.unwrap();

    // The issuer, as OpenSSL prints it (RFC 4514), narrows it further.
    std::fs::write(app.dir.path().join("bound.pem"), &bound.leaf.cert_pem).unwrap();
    let out = openssl_ok(
        app.dir.path(),
        &[
            "x509",
            "-in",
            "bound.pem",
            "-noout",
            "-issuer",
            "-nameopt",
            "RFC2253,-esc_msb",
        ],
    );
    let issuer = String::from_utf8(out.stdout).unwrap();
    let issuer = issuer.trim().strip_prefix("issuer=").unwrap();
    let body = json!({
        "kind": "login",
        "display": {"title": "t"},
        "expect_cert": {"serial": bound.serial(), "issuer": issuer},
    });
    let claimed = claimed_by(&app, &bound, body).await;
    bound.approve(&claimed).await.unwrap();

    // The issuer, when given, must match too.
    let body = json!({
        "kind": "login",
        "display": {"title": "t"},
        "expect_cert": {"serial": bound.serial(), "issuer": "CN=Somebody Else,O=Nowhere"},
    });
    let claimed = claimed_by(&app, &bound, body).await;
    let message = expect_422(
        &bound,
        &claimed,
        &bound.completion_over(&claimed.tbs),
        "untrusted_certificate",
    )
    .await;
    assert!(message.contains("expects certificate serial"), "{message}");
    assert!(message.contains("CN=Somebody Else"), "{message}");
}

#[tokio::test]
async fn accept_national_refuses_a_platform_certificate() {
    let app = TestApp::spawn().await;
    let body = json!({"kind": "login", "display": {"title": "t"}, "accept": ["national"]});
    let platform = app.phone("platform", "p");
    let claimed = claimed_by(&app, &platform, body.clone()).await;
    assert_eq!(claimed.accept, vec!["national"]);
    let message = expect_422(
        &platform,
        &claimed,
        &platform.completion_over(&claimed.tbs),
        "untrusted_certificate",
    )
    .await;
    assert!(
        message.contains("trust domain platform") && message.contains("accepts only national"),
        "{message}"
    );

    let national = app.phone("national", "n");
    let claimed = claimed_by(&app, &national, body).await;
    national.approve(&claimed).await.unwrap();
    let view = app.get_session(&claimed.session_id).await;
    assert_eq!(view["result"]["certificate"]["domain"], "national");
}

#[tokio::test]
async fn accept_must_name_configured_domains() {
    let app = TestApp::spawn().await;
    let resp = app
        .post_session(&json!({"kind": "login", "display": {"title": "t"}, "accept": ["nowhere"]}))
        .await;
    let message = assert_error(resp, 400, "invalid_request").await;
    assert!(message.contains("nowhere"), "{message}");
}

#[tokio::test]
async fn a_run_time_revocation_survives_a_restart_and_is_in_the_audit_trail() {
    let app = TestApp::spawn().await;
    let phone = app.phone("platform", "p");
    let resp = app
        .http
        .post(app.url("/v1/admin/revocations"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"serial": phone.serial(), "revoked_by": "值班员 李四", "reason": "手机遗失"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);

    // Who revoked is in the audit trail, before anything else is answered.
    let records = app
        .broker()
        .audit()
        .query(bzt::store::AuditQuery {
            app: Some(String::new()),
            serial: Some(phone.serial()),
            since: None,
            delegate: None,
            limit: 10,
        })
        .await
        .unwrap();
    let op = records[0].operation().unwrap();
    assert_eq!(op.kind, "revocation");
    assert_eq!(op.outcome, "revoked");
    assert_eq!(op.actor.as_deref(), Some("值班员 李四"));
    assert_eq!(op.reason.as_deref(), Some("手机遗失"));
    assert_eq!(op.requester_ip.as_deref(), Some("127.0.0.1"));

    // A new process on the same data directory still refuses the serial.
    let app = app.restarted(|_| {}).await;
    let claimed = claimed_by(&app, &phone, login_body()).await;
    let message = expect_422(
        &phone,
        &claimed,
        &phone.completion_over(&claimed.tbs),
        "untrusted_certificate",
    )
    .await;
    assert!(message.contains("revoked"), "{message}");
    let listed: Value = app.rp_get_as(ADMIN_TOKEN, "/v1/admin/revocations").await;
    assert_eq!(listed["runtime"], json!([phone.serial()]));
    assert_eq!(listed["runtime_records"][0]["revoked_by"], "值班员 李四");

    // Lifting it is recorded too, and also survives a restart.
    let resp = app
        .http
        .delete(app.url(&format!(
            "/v1/admin/revocations/{}?by=张主任",
            phone.serial()
        )))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let app = app.restarted(|_| {}).await;
    let claimed = claimed_by(&app, &phone, login_body()).await;
    phone.approve(&claimed).await.unwrap();
    let records = app
        .broker()
        .audit()
        .query(bzt::store::AuditQuery {
            app: Some(String::new()),
            serial: Some(phone.serial()),
            since: None,
            delegate: None,
            limit: 10,
        })
        .await
        .unwrap();
    let lifted = records[1].operation().unwrap();
    assert_eq!(
        (lifted.outcome.as_str(), lifted.actor.as_deref()),
        ("lifted", Some("张主任"))
    );
}
