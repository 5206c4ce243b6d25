//! The number-matching code in the RP's session view: a page that follows its session through
//! its own backend (the SDK's poll fallback) must be able to show the two digits too.

use crate::helpers::*;
use serde_json::json;

#[tokio::test]
async fn the_rp_view_carries_the_match_code_while_scanned() {
    let app = TestApp::spawn().await;
    let created = app
        .create_session(json!({"kind": "bind", "display": {"title": "t"}, "number_match": true}))
        .await;
    let mut browser = app.browser(&created).await;
    browser.next_event().await;
    let pending = app.get_session(&created.id).await;
    assert!(pending.get("match_code").is_none(), "{pending}");

    let phone = app.phone("platform", "张三的手机");
    let claimed = phone.claim(&created).await;
    let code = browser.next_event().await["match_code"]
        .as_str()
        .expect("the browser's scanned status carries match_code")
        .to_owned();

    // Plain GET and the long-poll that wakes on the claim both carry it.
    let scanned = app.get_session(&created.id).await;
    assert_eq!(scanned["status"], "scanned");
    assert_eq!(scanned["match_code"], code.as_str());
    let waited = app.get_session_raw(&created.id, "?wait=0&version=1").await;
    let waited: serde_json::Value = waited.json().await.unwrap();
    assert_eq!(waited["match_code"], code.as_str());

    phone.approve_picking(&claimed, code).await.unwrap();
    let approved = app.get_session(&created.id).await;
    assert_eq!(approved["status"], "approved");
    assert!(
        approved.get("match_code").is_none(),
        "the code is gone once terminal: {approved}"
    );
}

#[tokio::test]
async fn without_number_matching_the_rp_view_has_no_match_code() {
    let app = TestApp::spawn().await;
    let created = app.create_login().await;
    let phone = app.phone("platform", "p");
    phone.claim(&created).await;
    let scanned = app.get_session(&created.id).await;
    assert_eq!(scanned["status"], "scanned");
    assert!(scanned.get("match_code").is_none(), "{scanned}");
}
