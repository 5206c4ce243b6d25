//! Operations endpoints: health, readiness, metrics, the admin API.

use crate::helpers::*;
use serde_json::Value;

#[tokio::test]
async fn health_and_readiness() {
    let app = TestApp::spawn().await;
    for path in ["/healthz", "/readyz"] {
        let resp = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{path}");
    }
}

#[tokio::test]
async fn metrics_count_created_sessions() {
    let app = TestApp::spawn().await;
    app.create_login().await;
    let resp = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = resp.text().await.unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("bzt_sessions_created_total{") && l.contains("kind=\"login\"")),
        "{text}"
    );
}

#[tokio::test]
async fn the_admin_api_lists_revocations() {
    let app = TestApp::spawn_with(|cfg| cfg.revocation.serials = vec!["0A:BC".into()]).await;
    let resp = app
        .http
        .get(app.url("/v1/admin/revocations"))
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "unauthorized").await;
    let resp = app
        .http
        .post(app.url("/v1/admin/revocations"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"serial": "not hex"}))
        .send()
        .await
        .unwrap();
    assert_error(resp, 400, "invalid_request").await;
    let resp = app
        .http
        .post(app.url("/v1/admin/revocations"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"serial": "00FF"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let resp = app
        .http
        .get(app.url("/v1/admin/revocations"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let list: Value = resp.json().await.unwrap();
    assert_eq!(list["configured"], serde_json::json!(["abc"]));
    assert_eq!(list["runtime"], serde_json::json!(["ff"]));
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_request_finish_and_takes_no_new_ones() {
    let app = TestApp::spawn_with(|cfg| cfg.shutdown_drain_s = 10).await;
    let created = app.create_login().await;
    // An RP long-poll, in flight when the node is told to stop.
    let poll = {
        let http = app.http.clone();
        let url = app.url(&format!("/v1/sessions/{}?wait=20&version=1", created.id));
        tokio::spawn(async move { http.get(url).bearer_auth(API_KEY).send().await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let stopping = app.begin_shutdown();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !stopping.server.is_finished(),
        "the node must wait for its in-flight request"
    );
    // New connections are not taken any more.
    let fresh = reqwest::Client::new();
    assert!(
        fresh
            .get(format!("{}/healthz", stopping.address))
            .send()
            .await
            .is_err(),
        "a draining node accepted a new connection"
    );

    // The session changes during the drain: the long-poll answers it in full.
    let id = bzt_core::SessionId::parse(&created.id).unwrap();
    stopping
        .broker
        .cancel(&id, bzt_core::session::CancelledBy::Rp)
        .await
        .unwrap();
    let resp = tokio::time::timeout(std::time::Duration::from_secs(5), poll)
        .await
        .expect("the long-poll answers during the drain")
        .unwrap()
        .expect("the in-flight request is answered, not cut");
    assert_eq!(resp.status().as_u16(), 200);
    let view: Value = resp.json().await.unwrap();
    assert_eq!(view["status"], "cancelled", "{view}");
    // Then the node stops, cleanly, well before the drain time.
    tokio::time::timeout(std::time::Duration::from_secs(5), stopping.server)
        .await
        .expect("the node stops once nothing is in flight")
        .unwrap()
        .unwrap();
}
