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
