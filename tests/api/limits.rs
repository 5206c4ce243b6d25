//! Abuse limits: claim attempts per IP, sockets per session.

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
    let retry_after: u64 = resp
        .headers()
        .get("retry-after")
        .expect("429 carries Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After is whole seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
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
