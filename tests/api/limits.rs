//! Abuse limits: claim attempts per IP (a flood guard that lets a carrier's
//! NAT through), failed claims per session, sockets per session.

use crate::helpers::*;
use serde_json::json;

#[tokio::test]
async fn the_sixth_claim_attempt_in_a_minute_is_rate_limited() {
    let app = TestApp::spawn_with(|cfg| cfg.limits.claims_per_ip_per_minute = 5).await;
    let created = app.create_login().await;
    let (url, _) = created.qr_text.split_once('#').unwrap();
    for i in 0..5 {
        // Guessing secrets: each guess counts.
        let resp = app
            .claim_raw(
                &json!({"qr_text": format!("{url}#guess{i}"), "device": {"id": "a", "name": "b"}}),
            )
            .await;
        assert_error(resp, 404, "not_found").await;
    }
    let resp = app
        .claim_raw(&json!({"qr_text": created.qr_text, "device": {"id": "a", "name": "b"}}))
        .await;
    assert_retry_after_within_a_minute(&resp);
    assert_error(resp, 429, "rate_limited").await;
    assert_eq!(app.status_of(&created.id).await, "pending");
}

#[tokio::test]
async fn a_session_has_at_most_eight_sockets() {
    let app = TestApp::spawn().await;
    let created = app.create_login().await;
    let mut open = Vec::new();
    for _ in 0..8 {
        let mut b = app.browser(&created).await;
        assert_eq!(b.next_event().await["type"], "snapshot");
        open.push(b);
    }
    let err = Browser::connect(&created.ws_url, None)
        .await
        .err()
        .expect("the ninth socket must be refused");
    let (status, body) = ws_refusal(err);
    assert_eq!(status, 429);
    assert_error_body(&body, "rate_limited");
    // SSE shares the limit.
    let resp = app.http.get(&created.events_url).send().await.unwrap();
    assert!(resp.headers().contains_key("retry-after"));
    assert_error(resp, 429, "rate_limited").await;
    // Another session is not affected.
    let other = app.create_login().await;
    let mut b = app.browser(&other).await;
    assert_eq!(b.next_event().await["type"], "snapshot");
    // All eight still hear the outcome.
    app.cancel_session(&created.id).await;
    for b in &mut open {
        assert_eq!(b.next_event().await["status"], "cancelled");
    }
}

#[tokio::test]
async fn many_phones_behind_one_carrier_address_all_claim_at_the_defaults() {
    // CGNAT: 150 users of one mobile carrier scan 150 login QR codes within a
    // minute, all from the broker's point of view from one address.
    let app = TestApp::spawn().await;
    let mut created = Vec::new();
    for _ in 0..150 {
        created.push(app.create_login().await);
    }
    for (i, c) in created.iter().enumerate() {
        let resp = app
            .claim_raw(
                &json!({"qr_text": c.qr_text, "device": {"id": format!("d{i}"), "name": "手机"}}),
            )
            .await;
        assert_eq!(
            resp.status().as_u16(),
            200,
            "claim {i} from the shared address"
        );
    }
}

#[tokio::test]
async fn a_qr_codes_failed_claims_are_limited_whatever_the_address() {
    let app = TestApp::spawn_with(|cfg| cfg.trust_forwarded_for = true).await;
    let created = app.create_login().await;
    let other = app.create_login().await;
    let (url, _) = created.qr_text.split_once('#').unwrap();
    let claim_from = |ip: String, qr_text: String| {
        let app = &app;
        async move {
            app.http
                .post(app.url("/v1/claim"))
                .header("x-forwarded-for", ip)
                .json(&json!({"qr_text": qr_text, "device": {"id": "a", "name": "b"}}))
                .send()
                .await
                .unwrap()
        }
    };
    // Ten guesses, each from another address (a botnet, or a whole province).
    for i in 0..10 {
        let resp = claim_from(format!("198.51.100.{i}"), format!("{url}#guess{i}")).await;
        assert_error(resp, 404, "not_found").await;
    }
    // The eleventh is refused before its secret is looked at, even the right one.
    let resp = claim_from("203.0.113.9".into(), created.qr_text.clone()).await;
    assert_retry_after_within_a_minute(&resp);
    let message = assert_error(resp, 429, "rate_limited").await;
    assert!(message.contains("failed claims"), "{message}");
    assert_eq!(app.status_of(&created.id).await, "pending");
    // Another QR code, from an address that guessed, is not affected.
    let resp = claim_from("198.51.100.0".into(), other.qr_text.clone()).await;
    assert_eq!(resp.status().as_u16(), 200);
}

/// A 429 says when to come back: `Retry-After` in whole seconds, 1..=60.
fn assert_retry_after_within_a_minute(resp: &reqwest::Response) {
    let retry_after: u64 = resp
        .headers()
        .get("retry-after")
        .expect("429 carries Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After is whole seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
}
