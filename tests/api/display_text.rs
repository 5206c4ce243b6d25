//! Issue 13: text the phone shows (titles, details, device names) may not
//! carry control characters, bidi overrides or invisible formatting. Each is
//! refused with `400 invalid_request` naming the field, before anything is
//! stored or forwarded.

use crate::helpers::*;
use serde_json::json;

#[tokio::test]
async fn titles_and_details_with_controls_bidi_or_invisible_characters_are_refused() {
    let app = TestApp::spawn().await;
    for (display, field, char_code) in [
        (json!({"title": "登录\u{1b}[2J"}), "display.title", "U+001B"),
        (
            json!({"title": "退回\u{202E}100"}),
            "display.title",
            "U+202E",
        ),
        (json!({"title": "签章\u{2067}x"}), "display.title", "U+2067"),
        (json!({"title": "登\u{200B}录"}), "display.title", "U+200B"),
        (
            json!({"title": "登录", "detail": "金额\u{2028}1000"}),
            "display.detail",
            "U+2028",
        ),
        (
            json!({"title": "登录", "detail": "\u{FEFF}说明"}),
            "display.detail",
            "U+FEFF",
        ),
    ] {
        let answer = app
            .post_session(&json!({"kind": "login", "display": display}))
            .await;
        let message = assert_error(answer, 400, "invalid_request").await;
        assert!(message.contains(&format!("`{field}`")), "{message}");
        assert!(message.contains(char_code), "{message}");
    }

    // Ordinary text, and line breaks in the detail, still pass.
    let created = app
        .create_session(json!({"kind": "login",
            "display": {"title": "登录 示例交易平台 (第1标段)", "detail": "项目: 办公楼\n金额: ¥1,000"}}))
        .await;
    assert_eq!(app.status_of(&created.id).await, "pending");
}

#[tokio::test]
async fn device_names_with_bidi_or_invisible_characters_are_refused_at_claim() {
    let app = TestApp::spawn().await;
    let created = app.create_login().await;
    let qr_text = created.qr_text.clone();
    for (device, field) in [
        (
            json!({"id": "dev-1", "name": "张三的\u{202E}手机"}),
            "device.name",
        ),
        (json!({"id": "dev-1", "name": "手机\u{7}"}), "device.name"),
        (json!({"id": "dev\u{200D}1", "name": "手机"}), "device.id"),
    ] {
        let answer = app
            .claim_raw(&json!({"qr_text": qr_text, "device": device}))
            .await;
        let message = assert_error(answer, 400, "invalid_request").await;
        assert!(message.contains(&format!("`{field}`")), "{message}");
    }
    // The refused claims left the session unclaimed: an honest phone claims it.
    let phone = app.phone("platform", "张三的手机");
    let claimed = phone.claim(&created).await;
    assert_eq!(claimed.session_id, created.id);
}
