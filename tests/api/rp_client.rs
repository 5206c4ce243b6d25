//! `bzt-rp-client` against a real broker: create, long-poll across a phone's claim, cancel, and
//! the protocol's error codes as typed errors.

use crate::helpers::*;
use bzt_rp_client::{is_terminal, CreateSession, Kind, RpClient};

#[tokio::test]
async fn the_rp_client_creates_waits_and_cancels() {
    let app = TestApp::spawn().await;
    let rp = RpClient::new(app.http.clone(), &app.address, API_KEY);

    let mut body = CreateSession::new(Kind::Login, "登录 示例交易平台");
    body.ttl_s = Some(120);
    let created = rp.create_session(&body).await.unwrap();
    assert_eq!(created.status, "pending");
    assert!(created.ws_url.starts_with("ws://"), "{}", created.ws_url);
    let view = rp.get_session(&created.id).await.unwrap();
    assert_eq!(
        (view.status.as_str(), view.version),
        ("pending", created.version)
    );
    assert!(!is_terminal(&view.status));

    // A phone claims while the RP long-polls on the version it has.
    let leaf = app.cas.leaf("platform", "张三");
    let phone = bzt_phone::Phone::new(app.http.clone());
    let qr = bzt_phone::QrText::parse(&created.qr_text).unwrap();
    let waiting = rp.wait_session(&created.id, Some(view.version), 10);
    let identity = identity_of(&leaf, "phone");
    let claim = phone.claim(&qr, &identity);
    let (changed, claimed) = tokio::join!(waiting, claim);
    claimed.unwrap();
    let changed = changed.unwrap();
    assert_eq!(changed.status, "scanned");
    assert!(changed.version > view.version);

    let cancelled = rp.cancel_session(&created.id).await.unwrap();
    assert_eq!(cancelled.status, "cancelled");
    assert!(is_terminal(&cancelled.status));
    let again = rp.cancel_session(&created.id).await.unwrap_err();
    assert_eq!(again.code(), Some("conflict"), "{again}");

    let stranger = RpClient::new(app.http.clone(), &app.address, "not-a-key");
    let e = stranger.get_session(&created.id).await.unwrap_err();
    assert_eq!(e.code(), Some("unauthorized"), "{e}");
}
