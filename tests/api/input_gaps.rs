//! Issue 13, smaller gaps between the docs and the code: a `reply_key` off
//! the curve, unbounded or undisplayable `requester` fields, and a QR text
//! naming another host are refused with `400 invalid_request`.

use crate::helpers::*;
use serde_json::json;

#[tokio::test]
async fn a_reply_key_that_is_not_a_curve_point_is_refused_at_create() {
    let app = TestApp::spawn().await;
    // 04 || x=1 || y=1: the right shape, not on the SM2 curve.
    let off_curve = format!("04{:064x}{:064x}", 1, 1);
    let answer = app
        .post_session(&json!({
            "kind": "decrypt",
            "display": {"title": "开标解密"},
            "envelope_header_b64": b64(b"header"),
            "reply_key": off_curve,
        }))
        .await;
    let message = assert_error(answer, 400, "invalid_request").await;
    assert!(
        message.contains("not a point on the SM2 curve"),
        "{message}"
    );

    // A real public key (a phone certificate's) is accepted.
    let phone = app.phone("platform", "p");
    let cert = phone.leaf.certificate().unwrap();
    let point = hex::encode(
        cert.tbs_certificate()
            .subject_public_key_info()
            .subject_public_key
            .raw_bytes(),
    );
    let answer = app
        .post_session(&json!({
            "kind": "decrypt",
            "display": {"title": "开标解密"},
            "envelope_header_b64": b64(b"header"),
            "reply_key": point,
        }))
        .await;
    assert_eq!(answer.status(), 201, "{}", answer.text().await.unwrap());
}

#[tokio::test]
async fn requester_fields_are_bounded_and_validated() {
    let app = TestApp::spawn().await;
    for (requester, says) in [
        (
            json!({"user_agent": "M".repeat(100 * 1024)}),
            "`requester.user_agent` is longer than 512",
        ),
        (
            json!({"user_agent": "Mozilla\u{202E}"}),
            "`requester.user_agent` contains U+202E",
        ),
        (
            json!({"ip": "not-an-ip"}),
            "`requester.ip` must be an IPv4 or IPv6 address",
        ),
        (
            json!({"origin": "javascript:alert(1)"}),
            "`requester.origin` must be an http(s) origin",
        ),
    ] {
        let answer = app
            .post_session(
                &json!({"kind": "login", "display": {"title": "登录"}, "requester": requester}),
            )
            .await;
        let message = assert_error(answer, 400, "invalid_request").await;
        assert!(message.contains(says), "{message}");
    }
    let created = app
        .create_session(json!({"kind": "login", "display": {"title": "登录"},
            "requester": {"ip": "2001:db8::1", "user_agent": "Mozilla/5.0 (Windows NT 10.0)",
                          "origin": "https://bid.example.cn"}}))
        .await;
    assert_eq!(app.status_of(&created.id).await, "pending");
}

#[tokio::test]
async fn a_qr_text_naming_another_host_does_not_claim() {
    let app = TestApp::spawn().await;
    let created = app.create_login().await;
    let (_, rest) = created.qr_text.split_once("/q/").unwrap();
    for phished in [
        format!("https://phish.example/q/{rest}"),
        format!("{}/x/q/{rest}", app.address),
    ] {
        let answer = app
            .claim_raw(&json!({"qr_text": phished, "device": {"id": "d1", "name": "手机"}}))
            .await;
        let message = assert_error(answer, 400, "invalid_request").await;
        assert!(
            message.contains("not a QR code of this broker"),
            "{message}"
        );
    }
    assert_eq!(app.status_of(&created.id).await, "pending");
    // The broker's own QR text (scheme and host in any case) claims.
    let upper = created
        .qr_text
        .replacen("http://127.0.0.1", "HTTP://127.0.0.1", 1);
    let answer = app
        .claim_raw(&json!({"qr_text": upper, "device": {"id": "d1", "name": "手机"}}))
        .await;
    assert_eq!(answer.status(), 200);
}
