//! The happy path of each kind, end to end: create → browser socket → claim →
//! approve, with the signature re-verified by OpenSSL.

use crate::helpers::*;
use bzt_phone::SessionStatus;
use serde_json::{json, Value};

/// Runs one approved session of `body`'s kind and returns (app, created, result).
async fn approved_session(body: Value) -> (TestApp, Created, Value) {
    let app = TestApp::spawn().await;
    let created = app.create_session(body.clone()).await;

    // The create answer.
    let raw = &created.raw;
    assert_eq!(raw["kind"], body["kind"]);
    assert_eq!(raw["status"], "pending");
    assert_eq!(raw["version"], 1);
    assert_eq!(raw["ttl_s"], 180);
    let id = &created.id;
    let ws_base = app.address.replacen("http://", "ws://", 1);
    assert_eq!(
        created.ws_url,
        format!("{ws_base}/v1/sessions/{id}/ws?t={}", created.browser_token)
    );
    assert_eq!(
        created.events_url,
        format!(
            "{}/v1/sessions/{id}/events?t={}",
            app.address, created.browser_token
        )
    );
    assert!(created
        .qr_text
        .starts_with(&format!("{}/q/{id}#", app.address)));
    assert_time_format(raw["created_at"].as_str().unwrap());
    assert_time_format(&created.expires_at);

    let mut browser = app.browser(&created).await;
    let snapshot = browser.next_event().await;
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
    assert_eq!(snapshot["session"]["status"], "pending");
    assert_eq!(snapshot["session"]["version"], 1);
    assert_eq!(snapshot["session"]["qr_text"], created.qr_text.as_str());

    let phone = app.phone("platform", "张三的手机");
    let claimed = phone.claim(&created).await;
    assert_eq!(claimed.session_id, *id);
    assert_eq!(claimed.app.id, APP_ID);
    assert_eq!(claimed.app.name, APP_NAME);
    assert_eq!(claimed.expires_at, created.expires_at);
    assert_eq!(claimed.accept, vec!["platform", "national"]);
    // The browser's socket came first, so the broker knows who is asking.
    let requester = claimed
        .requester
        .clone()
        .expect("requester from the socket");
    assert_eq!(requester.ip.as_deref(), Some("127.0.0.1"));

    // Approve at once: the browser must still see `scanned` before the result.
    let done = phone.approve(&claimed).await.unwrap();
    assert_eq!(done.id, *id);
    assert_eq!(done.status, SessionStatus::Approved.as_str());
    assert_eq!(done.version, 3);

    let status = browser.next_event().await;
    assert_eq!(
        status,
        json!({"type": "status", "status": "scanned", "version": 2, "device": {"name": "张三的手机"}})
    );
    let result = browser.next_event().await;
    assert_eq!(result["type"], "result", "{result}");
    assert_eq!(result["status"], "approved");
    assert_eq!(result["version"], 3);
    let close = browser.expect_close().await;
    assert_eq!(u16::from(close.code), 1000);

    // The RP reads exactly what the browser got.
    let view = app.get_session(id).await;
    assert_eq!(view["status"], "approved");
    assert_eq!(view["version"], 3);
    assert_eq!(view["device"], json!({"name": "张三的手机"}));
    assert_eq!(view["result"], result["result"]);
    for t in ["created_at", "expires_at", "scanned_at", "completed_at"] {
        assert_time_format(view[t].as_str().unwrap_or_else(|| panic!("{t}: {view}")));
    }

    let r = &view["result"];
    let cert = &r["certificate"];
    assert_eq!(cert["serial"], phone.serial().as_str());
    assert_eq!(cert["domain"], "platform");
    assert!(
        cert["subject"].as_str().unwrap().contains("CN=张三"),
        "{cert}"
    );
    assert!(
        cert["issuer"].as_str().unwrap().contains("测试平台根 CA"),
        "{cert}"
    );
    assert_eq!(
        bzt_devca::pem_certificate(cert["pem"].as_str().unwrap()).unwrap(),
        bzt_devca::pem_certificate(&phone.leaf.cert_pem).unwrap()
    );

    // The broker is a courier: re-verify independently with OpenSSL.
    let tbs = unb64(r["tbs_b64"].as_str().unwrap());
    let sig = unb64(r["signature_b64"].as_str().unwrap());
    assert_eq!(
        tbs, claimed.tbs,
        "the result's tbs is what the phone signed"
    );
    assert!(
        openssl_verifies(app.dir.path(), cert["pem"].as_str().unwrap(), &tbs, &sig),
        "OpenSSL does not verify the returned signature"
    );
    assert!(
        !openssl_verifies(
            app.dir.path(),
            cert["pem"].as_str().unwrap(),
            b"other bytes",
            &sig
        ),
        "the OpenSSL check must be able to fail"
    );
    (app, created, view)
}

fn assert_time_format(t: &str) {
    // YYYY-MM-DDTHH:MM:SS.sssZ
    let b = t.as_bytes();
    let ok = b.len() == 24
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && b[23] == b'Z'
        && t.chars()
            .enumerate()
            .all(|(i, c)| [4, 7, 10, 13, 16, 19, 23].contains(&i) || c.is_ascii_digit());
    assert!(ok, "{t:?} is not YYYY-MM-DDTHH:MM:SS.sssZ");
}

/// The challenge text of docs/protocol.md, line by line.
fn assert_challenge(view: &Value, kind: &str, created: &Created) {
    let tbs = unb64(view["result"]["tbs_b64"].as_str().unwrap());
    let text = String::from_utf8(tbs).expect("the challenge is UTF-8");
    let lines: Vec<&str> = text.split('\n').collect();
    assert_eq!(lines.len(), 6, "{text:?}");
    assert_eq!(lines[0], "BZT-CHALLENGE-V1");
    assert_eq!(lines[1], format!("kind:{kind}"));
    assert_eq!(lines[2], format!("app:{APP_ID}"));
    assert_eq!(lines[3], format!("session:{}", created.id));
    let nonce = lines[4].strip_prefix("nonce:").expect("nonce line");
    assert_eq!(nonce.len(), 22, "16 bytes, base64url without padding");
    assert!(nonce
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    assert_eq!(lines[5], format!("expires:{}", created.expires_at));
    assert!(!text.contains('\r'));
}

#[tokio::test]
async fn login_happy_path() {
    let (_app, created, view) = approved_session(json!({
        "kind": "login",
        "display": {"title": "登录 示例交易平台", "detail": "投标人登录"},
    }))
    .await;
    assert_eq!(
        view["display"],
        json!({"title": "登录 示例交易平台", "detail": "投标人登录"})
    );
    assert_challenge(&view, "login", &created);
    let keys: Vec<&String> = view["result"].as_object().unwrap().keys().collect();
    assert_eq!(
        keys.len(),
        3,
        "login result: certificate, signature, tbs: {view}"
    );
}

/// At the default level (`info`) a session writes one line, when it ends,
/// naming its app, kind, final status and age (README, "Logging").
#[tokio::test]
async fn at_info_a_session_logs_one_line_when_it_ends() {
    let (logs, _guard) = LogBuffer::capture(tracing::Level::INFO);
    let (_app, created, _view) =
        approved_session(json!({"kind": "login", "display": {"title": "登录"}})).await;
    let text = logs.text();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(created.id.as_str()))
        .collect();
    assert_eq!(lines.len(), 1, "one line for the session:\n{text}");
    for part in [
        "session finished",
        &format!("app={APP_ID}"),
        "kind=\"login\"",
        "status=\"approved\"",
        "ms=",
    ] {
        assert!(lines[0].contains(part), "{part} in {}", lines[0]);
    }
}

#[tokio::test]
async fn bind_happy_path() {
    let (_app, created, view) = approved_session(json!({
        "kind": "bind",
        "display": {"title": "绑定证书到账户 zhangsan"},
    }))
    .await;
    assert_challenge(&view, "bind", &created);
}

#[tokio::test]
async fn sign_happy_path() {
    let tbs = "招标文件摘要 SM3=66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
        .as_bytes()
        .to_vec();
    let (_app, _created, view) = approved_session(json!({
        "kind": "sign",
        "display": {"title": "签章：投标函"},
        "tbs_b64": b64(&tbs),
    }))
    .await;
    assert_eq!(unb64(view["result"]["tbs_b64"].as_str().unwrap()), tbs);
    assert!(view["result"].get("conversation").is_none(), "{view}");
}

#[tokio::test]
async fn a_phone_can_reject() {
    let app = TestApp::spawn().await;
    let created = app.create_login().await;
    let mut browser = app.browser(&created).await;
    browser.next_event().await;
    let phone = app.phone("platform", "李四的手机");
    let claimed = phone.claim(&created).await;
    assert_eq!(browser.next_event().await["status"], "scanned");
    let done = phone
        .phone
        .reject(&claimed, "不是我本人操作")
        .await
        .unwrap();
    assert_eq!(done.status, SessionStatus::Rejected.as_str());
    let result = browser.next_event().await;
    assert_eq!(
        result,
        json!({"type": "result", "status": "rejected", "version": 3, "result": {"reason": "不是我本人操作"}})
    );
    assert_eq!(u16::from(browser.expect_close().await.code), 1000);
    let view = app.get_session(&created.id).await;
    assert_eq!(view["result"], result["result"]);
}

fn sorted_keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect();
    k.sort();
    k
}

#[tokio::test]
async fn claim_and_complete_answers_have_the_protocol_shape() {
    let app = TestApp::spawn().await;
    let tbs = b"bytes to sign".to_vec();
    let created = app
        .create_session(json!({
            "kind": "sign",
            "display": {"title": "签章", "detail": "d"},
            "tbs_b64": b64(&tbs),
            "conversation": {"max_requests": 10},
        }))
        .await;
    let mut created_keys = sorted_keys(&created.raw);
    created_keys.retain(|k| k != "qr_seq");
    assert_eq!(
        created_keys,
        [
            "browser_token",
            "created_at",
            "events_url",
            "expires_at",
            "id",
            "kind",
            "qr_png_url",
            "qr_svg_url",
            "qr_text",
            "status",
            "ttl_s",
            "version",
            "ws_url"
        ]
    );

    let resp = app
        .claim_raw(
            &json!({"qr_text": created.qr_text, "device": {"id": "d1", "name": "张三的手机"}}),
        )
        .await;
    assert_eq!(resp.status().as_u16(), 200);
    let claim: Value = resp.json().await.unwrap();
    assert_eq!(
        sorted_keys(&claim),
        ["conversation_allowed", "phone_token", "session", "tbs_b64"]
    );
    assert_eq!(claim["conversation_allowed"], true);
    assert_eq!(unb64(claim["tbs_b64"].as_str().unwrap()), tbs);
    let s = &claim["session"];
    assert_eq!(
        sorted_keys(s),
        [
            "accept",
            "app",
            "display",
            "expires_at",
            "id",
            "kind",
            "requester"
        ]
    );
    assert_eq!(s["id"], created.id.as_str());
    assert_eq!(s["kind"], "sign");
    assert_eq!(s["display"], json!({"title": "签章", "detail": "d"}));
    assert_eq!(s["app"], json!({"id": APP_ID, "name": APP_NAME}));
    assert_eq!(s["expires_at"], created.expires_at.as_str());
    assert_eq!(s["accept"], json!(["platform", "national"]));
    assert_eq!(s["requester"], Value::Null);

    let phone = app.phone("platform", "p");
    let token = claim["phone_token"].as_str().unwrap();
    let resp = app
        .complete_raw(&created.id, token, &phone.completion_over(&tbs))
        .await;
    assert_eq!(resp.status().as_u16(), 200);
    let done: Value = resp.json().await.unwrap();
    assert_eq!(
        done,
        json!({"id": created.id, "status": "approved", "version": 3})
    );

    let view = app.get_session(&created.id).await;
    assert_eq!(
        sorted_keys(&view),
        [
            "completed_at",
            "created_at",
            "device",
            "display",
            "expires_at",
            "id",
            "kind",
            "result",
            "scanned_at",
            "status",
            "version"
        ]
    );
    assert_eq!(
        sorted_keys(&view["result"]["certificate"]),
        [
            "domain",
            "issuer",
            "not_after",
            "not_before",
            "pem",
            "serial",
            "subject"
        ]
    );
    // An approved session is final: no second completion, no second claim.
    let resp = app
        .complete_raw(&created.id, token, &phone.completion_over(&tbs))
        .await;
    assert_error(resp, 409, "conflict").await;
    let resp = app
        .claim_raw(&json!({"qr_text": created.qr_text, "device": {"id": "d2", "name": "x"}}))
        .await;
    assert_error(resp, 409, "conflict").await;
    assert_eq!(app.get_session(&created.id).await, view);
}

#[tokio::test]
async fn names_are_rfc_4514_as_openssl_prints_them() {
    let app = TestApp::spawn().await;
    let leaf = app
        .cas
        .platform
        .issue(
            &bzt_devca::LeafSpec::new("张三, \"小\"", "示例+建设").with_uscc("91350100M000100Y43"),
        )
        .unwrap();
    let phone = app.phone_with(leaf, "p");
    let created = app.create_login().await;
    let claimed = phone.claim(&created).await;
    phone.approve(&claimed).await.unwrap();
    let cert = app.get_session(&created.id).await["result"]["certificate"].clone();

    std::fs::write(app.dir.path().join("leaf.pem"), &phone.leaf.cert_pem).unwrap();
    let out = openssl_ok(
        app.dir.path(),
        &[
            "x509",
            "-in",
            "leaf.pem",
            "-noout",
            "-subject",
            "-issuer",
            "-serial",
            "-nameopt",
            "RFC2253,-esc_msb",
        ],
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .to_owned()
    };
    assert_eq!(cert["subject"], field("subject").as_str());
    assert_eq!(cert["issuer"], field("issuer").as_str());
    assert_eq!(
        cert["serial"],
        field("serial").to_lowercase().trim_start_matches('0')
    );
}
