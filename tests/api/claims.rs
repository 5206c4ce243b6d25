//! Claiming: one-time claims, wrong secrets, expiry and cancellation.

use crate::helpers::*;
use serde_json::{json, Value};
use std::time::Duration;

fn claim_body(qr_text: &str, device: &str) -> Value {
    json!({"qr_text": qr_text, "device": {"id": device, "name": device}})
}

#[tokio::test]
async fn fifty_concurrent_claims_have_exactly_one_winner() {
    let app = TestApp::spawn().await;
    let created = app.create_login().await;
    let attempts = (0..50).map(|i| {
        let app = &app;
        let body = claim_body(&created.qr_text, &format!("phone-{i}"));
        async move {
            let resp = app.claim_raw(&body).await;
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap())
        }
    });
    let answers = futures_util::future::join_all(attempts).await;
    let winners: Vec<_> = answers.iter().filter(|(s, _)| *s == 200).collect();
    assert_eq!(winners.len(), 1, "{answers:?}");
    let losers: Vec<_> = answers.iter().filter(|(s, _)| *s != 200).collect();
    assert_eq!(losers.len(), 49);
    for (status, body) in losers {
        assert_eq!(*status, 409, "{body}");
        assert_error_body(body, "already_claimed");
    }
    let winner: Value = serde_json::from_str(&winners[0].1).unwrap();
    let view = app.get_session(&created.id).await;
    assert_eq!(view["status"], "scanned");
    assert_eq!(view["version"], 2);
    assert_eq!(view["device"]["name"], winner_device(&answers));
    assert!(winner["phone_token"].as_str().unwrap().len() >= 22);
}

/// The device name of the winning claim is not in its answer; find it by elimination.
fn winner_device(answers: &[(u16, String)]) -> Value {
    let i = answers.iter().position(|(s, _)| *s == 200).unwrap();
    json!(format!("phone-{i}"))
}

#[tokio::test]
async fn a_wrong_claim_secret_answers_exactly_like_an_unknown_session() {
    let app = TestApp::spawn().await;
    let created = app.create_login().await;
    let (url, _secret) = created.qr_text.split_once('#').unwrap();

    let wrong = app
        .claim_raw(&claim_body(&format!("{url}#{}", "A".repeat(43)), "p"))
        .await;
    let wrong_status = wrong.status().as_u16();
    let wrong_body = wrong.text().await.unwrap();
    let unknown = app
        .claim_raw(&claim_body(
            &format!(
                "{}/q/AAAAAAAAAAAAAAAAAAAAAA#{}",
                app.address,
                "A".repeat(43)
            ),
            "p",
        ))
        .await;
    let unknown_status = unknown.status().as_u16();
    let unknown_body = unknown.text().await.unwrap();
    assert_eq!(wrong_status, 404, "{wrong_body}");
    assert_error_body(&wrong_body, "not_found");
    assert_eq!((wrong_status, &wrong_body), (unknown_status, &unknown_body));

    // The session is untouched and the right secret still claims it.
    assert_eq!(app.status_of(&created.id).await, "pending");
    let resp = app.claim_raw(&claim_body(&created.qr_text, "p")).await;
    assert_eq!(resp.status().as_u16(), 200);
    let second = app.claim_raw(&claim_body(&created.qr_text, "q")).await;
    assert_error(second, 409, "already_claimed").await;
}

#[tokio::test]
async fn a_pending_session_expires_and_its_socket_hears_it() {
    let app = TestApp::spawn().await;
    let created = app
        .create_session(json!({"kind": "login", "display": {"title": "t"}, "ttl_s": 30}))
        .await;
    assert_eq!(created.raw["ttl_s"], 30);
    let mut browser = app.browser(&created).await;
    assert_eq!(browser.next_event().await["type"], "snapshot");

    app.advance(Duration::from_secs(29));
    app.advance(Duration::from_millis(999));
    assert_eq!(app.status_of(&created.id).await, "pending", "not yet due");
    app.advance(Duration::from_millis(1));

    let result = browser.next_event().await;
    assert_eq!(
        result,
        json!({"type": "result", "status": "expired", "version": 2, "result": null})
    );
    assert_eq!(u16::from(browser.expect_close().await.code), 1000);

    let resp = app.claim_raw(&claim_body(&created.qr_text, "late")).await;
    assert_error(resp, 410, "expired").await;
    let view = app.get_session(&created.id).await;
    assert_eq!(view["status"], "expired");
    assert_eq!(view["result"], Value::Null);
    assert!(view.get("result").is_some(), "expired carries result: null");
}

#[tokio::test]
async fn a_scanned_session_expires_and_a_late_completion_is_refused() {
    let app = TestApp::spawn().await;
    let created = app
        .create_session(json!({"kind": "bind", "display": {"title": "t"}, "ttl_s": 60}))
        .await;
    let mut browser = app.browser(&created).await;
    browser.next_event().await;
    let phone = app.phone("platform", "p");
    let claimed = phone.claim(&created).await;
    assert_eq!(browser.next_event().await["status"], "scanned");

    app.advance(Duration::from_secs(61));
    let result = browser.next_event().await;
    assert_eq!(result["status"], "expired");
    assert_eq!(result["version"], 3);
    assert_eq!(result["result"], Value::Null);
    assert_eq!(u16::from(browser.expect_close().await.code), 1000);

    let err = broker_error(phone.approve(&claimed).await.unwrap_err());
    assert_eq!((err.status, err.code.as_str()), (410, "expired"));
    assert_eq!(app.status_of(&created.id).await, "expired");
}

#[tokio::test]
async fn a_completion_after_expiry_is_refused_even_before_the_timer_reports_it() {
    let app = TestApp::spawn().await;
    let created = app
        .create_session(json!({"kind": "login", "display": {"title": "t"}, "ttl_s": 30}))
        .await;
    let phone = app.phone("platform", "p");
    let claimed = phone.claim(&created).await;
    app.advance(Duration::from_secs(31));
    let err = broker_error(phone.approve(&claimed).await.unwrap_err());
    assert_eq!((err.status, err.code.as_str()), (410, "expired"));
    let view = app.get_session(&created.id).await;
    assert_eq!(view["status"], "expired");
    assert_eq!(view["version"], 3);
}

#[tokio::test]
async fn the_rp_cancels() {
    let app = TestApp::spawn().await;
    let created = app.create_login().await;
    let mut browser = app.browser(&created).await;
    browser.next_event().await;

    let resp = app.cancel_session(&created.id).await;
    assert_eq!(resp.status().as_u16(), 200);
    let view: Value = resp.json().await.unwrap();
    assert_eq!(view["status"], "cancelled");
    assert_eq!(view["version"], 2);
    assert_eq!(view["result"], Value::Null);

    let result = browser.next_event().await;
    assert_eq!(
        result,
        json!({"type": "result", "status": "cancelled", "version": 2, "result": null})
    );
    assert_eq!(u16::from(browser.expect_close().await.code), 1000);

    // A terminal session never changes again.
    let again = app.cancel_session(&created.id).await;
    assert_error(again, 409, "conflict").await;
    let claim = app.claim_raw(&claim_body(&created.qr_text, "p")).await;
    assert_error(claim, 409, "conflict").await;
    assert_eq!(app.get_session(&created.id).await["version"], 2);
}

#[tokio::test]
async fn the_browser_cancels_with_its_token() {
    let app = TestApp::spawn().await;
    let created = app.create_login().await;
    let phone = app.phone("platform", "p");
    let claimed = phone.claim(&created).await;

    let url = app.url(&format!("/v1/sessions/{}?t=wrong-token", created.id));
    let resp = app.http.delete(url).send().await.unwrap();
    assert_error(resp, 401, "unauthorized").await;

    let url = app.url(&format!(
        "/v1/sessions/{}?t={}",
        created.id, created.browser_token
    ));
    let resp = app
        .http
        .delete(&url)
        .header("origin", ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap()),
        Some(ORIGIN)
    );
    let view: Value = resp.json().await.unwrap();
    assert_eq!(view["status"], "cancelled");

    let resp = app.http.delete(&url).send().await.unwrap();
    assert_error(resp, 409, "conflict").await;

    // The phone that had claimed it can no longer complete.
    let err = broker_error(phone.approve(&claimed).await.unwrap_err());
    assert_eq!((err.status, err.code.as_str()), (409, "conflict"));
}

#[tokio::test]
async fn the_browser_cancels_over_its_socket() {
    let app = TestApp::spawn().await;
    let created = app.create_login().await;
    let mut browser = app.browser(&created).await;
    browser.next_event().await;
    browser.send(json!({"type": "cancel"})).await;
    let result = browser.next_event().await;
    assert_eq!(
        result,
        json!({"type": "result", "status": "cancelled", "version": 2, "result": null})
    );
    assert_eq!(u16::from(browser.expect_close().await.code), 1000);
    assert_eq!(app.status_of(&created.id).await, "cancelled");
}

#[tokio::test]
async fn a_terminal_session_stays_readable_for_ten_minutes() {
    let app = TestApp::spawn().await;
    let created = app.create_login().await;
    let phone = app.phone("platform", "p");
    let claimed = phone.claim(&created).await;
    phone.approve(&claimed).await.unwrap();
    let view = app.get_session(&created.id).await;
    app.advance(Duration::from_secs(599));
    assert_eq!(app.get_session(&created.id).await, view);
    let mut browser = app.browser(&created).await;
    assert_eq!(browser.next_event().await["session"], view);
    assert_eq!(u16::from(browser.expect_close().await.code), 1000);

    // Likewise an expired one.
    let created = app
        .create_session(json!({"kind": "login", "display": {"title": "t"}, "ttl_s": 30}))
        .await;
    app.advance(Duration::from_secs(30));
    let view = app.await_change(&created.id, 1).await;
    assert_eq!(view["status"], "expired");
    app.advance(Duration::from_secs(599));
    assert_eq!(app.get_session(&created.id).await, view);
}
