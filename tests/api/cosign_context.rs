//! The broker's side of key splitting: `POST /v1/cosign/context`, which the
//! co-signing service calls (with its own credential, relaying the phone's
//! token) to learn the bytes it may co-sign; the opening window (开标时间) of
//! `decrypt` sessions; and the admin routes that drive the service's key
//! states, where revoking (注销) also makes the broker refuse the certificate.

use crate::conversation::{open, policy};
use crate::envelope_flows::{decrypt_body, one_time_key, recipient, seal_to};
use crate::helpers::*;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::routing::{get, post};
use axum::Json;
use bzt_core::Timestamp;
use bzt_phone::{DecryptOutcome, SessionStatus};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const COSIGNER_CREDENTIAL: &str = "test-cosigner-credential-0123456789";
const SERVICE_ADMIN_TOKEN: &str = "test-service-admin-token-0123456789";

async fn spawn_with_cosigner() -> TestApp {
    TestApp::spawn_with(|c| c.cosigner.credential = Some(COSIGNER_CREDENTIAL.into())).await
}

/// `POST /v1/cosign/context` as the co-signing service calls it.
async fn ask_context(app: &TestApp, credential: Option<&str>, body: &Value) -> reqwest::Response {
    let mut req = app.http.post(app.url("/v1/cosign/context")).json(body);
    if let Some(c) = credential {
        req = req.bearer_auth(c);
    }
    req.send().await.unwrap()
}

async fn context_ok(app: &TestApp, body: &Value) -> Value {
    let resp = ask_context(app, Some(COSIGNER_CREDENTIAL), body).await;
    let status = resp.status();
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "context answered {answer}");
    answer
}

fn session_context(id: &str, phone_token: &str) -> Value {
    json!({ "session": { "id": id, "phone_token": phone_token } })
}

#[tokio::test]
async fn the_service_gets_the_challenge_of_a_session_its_phone_has_scanned() {
    let app = spawn_with_cosigner().await;
    let created = app.create_login().await;
    let phone = app.phone("platform", "张三的手机");
    let claimed = phone.claim(&created).await;

    let context = context_ok(
        &app,
        &session_context(&created.id, claimed.phone_token.expose()),
    )
    .await;
    assert_eq!(context["kind"], "login");
    assert_eq!(unb64(context["tbs_b64"].as_str().unwrap()), claimed.tbs);
    assert_eq!(context["expires_at"], created.expires_at.as_str());
    assert!(context.get("opening").is_none(), "{context}");
    assert!(context.get("certificate_serial").is_none(), "{context}");

    // The RP's own bytes for `sign`, and the certificate it expects.
    let leaf = app.cas.leaf("platform", "李四");
    let created = app
        .create_session(json!({
            "kind": "sign",
            "display": { "title": "签署投标函" },
            "tbs_b64": b64("投标函：总价 1,000,000 元".as_bytes()),
            "expect_cert": { "serial": leaf.serial_hex },
        }))
        .await;
    let signer = app.phone_with(leaf, "李四的手机");
    let claimed = signer.claim(&created).await;
    let context = context_ok(
        &app,
        &session_context(&created.id, claimed.phone_token.expose()),
    )
    .await;
    assert_eq!(context["kind"], "sign");
    assert_eq!(
        unb64(context["tbs_b64"].as_str().unwrap()),
        "投标函：总价 1,000,000 元".as_bytes()
    );
    assert_eq!(context["certificate_serial"], signer.serial().as_str());
}

#[tokio::test]
async fn only_the_configured_service_credential_is_answered() {
    let app = spawn_with_cosigner().await;
    let created = app.create_login().await;
    let claimed = app.phone("platform", "张三的手机").claim(&created).await;
    let body = session_context(&created.id, claimed.phone_token.expose());

    assert_error(ask_context(&app, None, &body).await, 401, "unauthorized").await;
    let message = assert_error(
        ask_context(&app, Some("not-the-credential-0123456789"), &body).await,
        401,
        "unauthorized",
    )
    .await;
    assert!(message.contains("credential"), "{message}");
    // The phone's own token is not the service's credential.
    assert_error(
        ask_context(&app, Some(claimed.phone_token.expose()), &body).await,
        401,
        "unauthorized",
    )
    .await;

    // A broker without [cosigner] credential answers nobody.
    let bare = TestApp::spawn().await;
    let created = bare.create_login().await;
    let claimed = bare.phone("platform", "张三的手机").claim(&created).await;
    let message = assert_error(
        ask_context(
            &bare,
            Some(COSIGNER_CREDENTIAL),
            &session_context(&created.id, claimed.phone_token.expose()),
        )
        .await,
        403,
        "forbidden",
    )
    .await;
    assert!(message.contains("[cosigner] credential"), "{message}");
}

#[tokio::test]
async fn no_context_without_the_phones_token_or_outside_the_scanned_state() {
    let app = spawn_with_cosigner().await;

    // Pending: no phone holds the session yet, so no token can be right.
    let pending = app.create_login().await;
    let stranger = "x".repeat(43);
    let resp = ask_context(
        &app,
        Some(COSIGNER_CREDENTIAL),
        &session_context(&pending.id, &stranger),
    )
    .await;
    assert_error(resp, 401, "unauthorized").await;

    // Scanned by one phone: another token is refused.
    let created = app.create_login().await;
    let phone = app.phone("platform", "张三的手机");
    let claimed = phone.claim(&created).await;
    let resp = ask_context(
        &app,
        Some(COSIGNER_CREDENTIAL),
        &session_context(&created.id, &stranger),
    )
    .await;
    assert_error(resp, 401, "unauthorized").await;

    // Unknown session.
    let resp = ask_context(
        &app,
        Some(COSIGNER_CREDENTIAL),
        &session_context("no-such-session", claimed.phone_token.expose()),
    )
    .await;
    assert_error(resp, 404, "not_found").await;

    // Approved: nothing more to sign for it.
    phone.approve(&claimed).await.unwrap();
    let body = session_context(&created.id, claimed.phone_token.expose());
    let resp = ask_context(&app, Some(COSIGNER_CREDENTIAL), &body).await;
    assert_error(resp, 409, "conflict").await;

    // Expired while scanned.
    let created = app.create_login().await;
    let claimed = phone.claim(&created).await;
    app.advance(Duration::from_secs(181));
    let body = session_context(&created.id, claimed.phone_token.expose());
    let resp = ask_context(&app, Some(COSIGNER_CREDENTIAL), &body).await;
    assert_error(resp, 410, "expired").await;

    // A body that names neither a session nor a conversation.
    let resp = ask_context(&app, Some(COSIGNER_CREDENTIAL), &json!({ "digest": "00" })).await;
    assert_error(resp, 400, "invalid_request").await;
}

#[tokio::test]
async fn a_conversation_request_has_a_context_only_while_it_is_pending() {
    let app = spawn_with_cosigner().await;
    let conv = open(&app, policy(10, 600, 7200)).await;
    let rid = conv.add(&app, "第2页：报价明细".as_bytes(), "第2页").await;
    let token = conv.grant.phone_token.as_str().to_owned();
    let body = |rid: &str, token: &str| json!({ "conversation": { "id": conv.id, "request_id": rid, "phone_token": token } });

    let context = context_ok(&app, &body(&rid, &token)).await;
    assert_eq!(context["kind"], "conversation");
    assert_eq!(
        unb64(context["tbs_b64"].as_str().unwrap()),
        "第2页：报价明细".as_bytes()
    );
    assert_eq!(context["certificate_serial"], conv.phone.serial().as_str());
    assert!(context["expires_at"].is_string());

    // The requester's token is not the phone's.
    let resp = ask_context(
        &app,
        Some(COSIGNER_CREDENTIAL),
        &body(&rid, &"y".repeat(43)),
    )
    .await;
    assert_error(resp, 401, "unauthorized").await;
    // A request id nobody asked for.
    let resp = ask_context(
        &app,
        Some(COSIGNER_CREDENTIAL),
        &body("00000000000000000000000000000000", &token),
    )
    .await;
    assert_error(resp, 404, "not_found").await;

    // Once answered, the bytes are never co-signed again.
    let mut phone = conv.phone_socket(&app).await;
    let request = phone.next_request().await.unwrap().unwrap();
    phone
        .approve(&request, &conv.phone.identity, false)
        .await
        .unwrap();
    let resp = ask_context(&app, Some(COSIGNER_CREDENTIAL), &body(&rid, &token)).await;
    assert_error(resp, 409, "conflict").await;
}

/// The hall's window as the API spells it, `from..until` seconds from the broker's now.
fn window(app: &TestApp, from_s: i64, until_s: i64) -> Value {
    let now: Timestamp = bzt::clock::Clock::now(&app.clock);
    json!({
        "not_before": now.plus_secs(from_s).to_rfc3339(),
        "not_after": now.plus_secs(until_s).to_rfc3339(),
    })
}

#[tokio::test]
async fn a_decrypt_session_carries_its_opening_window_and_completes_only_inside_it() {
    let app = spawn_with_cosigner().await;
    let leaf = app.cas.leaf("platform", "李四");
    let header = seal_to(&app.dir.path().join("bid.bze"), b"bid", &[recipient(&leaf)]);
    let (_, reply_key) = one_time_key();
    let mut body = decrypt_body("开标解密：bid.bze", &header, &reply_key);

    // Checked at create: ordered, not over, decrypt only.
    body["opening"] = window(&app, 60, 30);
    let resp = app.post_session_as(OTHER_API_KEY, &body).await;
    assert_error(resp, 400, "invalid_request").await;
    body["opening"] = window(&app, -7200, -60);
    let message = assert_error(
        app.post_session_as(OTHER_API_KEY, &body).await,
        400,
        "invalid_request",
    )
    .await;
    assert!(message.contains("already passed"), "{message}");
    let mut login = login_body();
    login["opening"] = window(&app, 0, 60);
    let message = assert_error(app.post_session(&login).await, 400, "invalid_request").await;
    assert!(message.contains("opening"), "{message}");

    // Opens in a minute.
    let opening = window(&app, 60, 3600);
    body["opening"] = opening.clone();
    let created = app.create_session_as(OTHER_API_KEY, body).await;
    let phone = app.phone_with(leaf, "李四的手机");
    let claimed = phone.claim(&created).await;
    let shown = claimed
        .opening
        .clone()
        .expect("the phone is shown the window");
    assert_eq!(json!(shown), opening);
    assert!(
        claimed.describe_zh().contains("开标时间："),
        "{}",
        claimed.describe_zh()
    );
    let phone_token = claimed.phone_token.expose();
    let context = context_ok(&app, &session_context(&created.id, phone_token)).await;
    assert_eq!(context["kind"], "decrypt");
    assert_eq!(
        context["opening"], opening,
        "the service is told the window"
    );

    // Before the opening time the broker takes no re-wrapped key, and it
    // does not count against the phone: the session stays scanned.
    let mut early = phone.completion_over(&claimed.tbs);
    early["wrapped_key_b64"] = json!(b64(&[0u8; 120]));
    for _ in 0..3 {
        let resp = app.complete_raw(&created.id, phone_token, &early).await;
        let message = assert_error(resp, 403, "forbidden").await;
        assert!(message.contains("opening time"), "{message}");
    }
    let view: Value = app
        .rp_get_as(OTHER_API_KEY, &format!("/v1/sessions/{}", created.id))
        .await;
    assert_eq!(view["status"], "scanned", "{view}");

    // Inside the window the phone's decryption completes.
    app.advance(Duration::from_secs(61));
    match phone
        .phone
        .approve_decrypt(&claimed, &phone.identity, None)
        .await
        .unwrap()
    {
        DecryptOutcome::Approved(answer) => {
            assert_eq!(answer.status, SessionStatus::Approved.as_str())
        }
        DecryptOutcome::Rejected { refusal, .. } => panic!("refused: {refusal:?}"),
    }
}

#[tokio::test]
async fn after_the_decryption_deadline_the_broker_refuses_the_key() {
    let app = spawn_with_cosigner().await;
    let leaf = app.cas.leaf("platform", "李四");
    let header = seal_to(&app.dir.path().join("bid.bze"), b"bid", &[recipient(&leaf)]);
    let (_, reply_key) = one_time_key();
    let mut body = decrypt_body("开标解密：bid.bze", &header, &reply_key);
    body["ttl_s"] = json!(600);
    body["opening"] = window(&app, -60, 120);
    let created = app.create_session_as(OTHER_API_KEY, body).await;
    let phone = app.phone_with(leaf, "李四的手机");
    let claimed = phone.claim(&created).await;
    app.advance(Duration::from_secs(121));
    let mut late = phone.completion_over(&claimed.tbs);
    late["wrapped_key_b64"] = json!(b64(&[0u8; 120]));
    let resp = app
        .complete_raw(&created.id, claimed.phone_token.expose(), &late)
        .await;
    let message = assert_error(resp, 403, "forbidden").await;
    assert!(message.contains("deadline"), "{message}");
}

/// What a stand-in for the co-signing service's admin API saw.
#[derive(Clone, Default)]
struct SeenByService(Arc<Mutex<Vec<ServiceCall>>>);

/// `("<key_id>/<action>", Authorization header)`.
type ServiceCall = (String, Option<String>);

/// A stand-in for the service's admin API (the real service is tested end to
/// end in tests/split_key.rs): answers like the service and records each call.
async fn fake_service_admin() -> (String, SeenByService) {
    async fn action(
        State(seen): State<SeenByService>,
        headers: HeaderMap,
        Path((key_id, action)): Path<(String, String)>,
    ) -> (AxumStatus, Json<Value>) {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        seen.0
            .lock()
            .unwrap()
            .push((format!("{key_id}/{action}"), auth.clone()));
        if auth.as_deref() != Some(&format!("Bearer {SERVICE_ADMIN_TOKEN}")) {
            return (
                AxumStatus::UNAUTHORIZED,
                Json(json!({"error": {"code": "unauthorized", "message": "bad admin token"}})),
            );
        }
        if key_id == "missing" {
            return (
                AxumStatus::NOT_FOUND,
                Json(json!({"error": {"code": "not_found", "message": "no such key"}})),
            );
        }
        let state = match action.as_str() {
            "freeze" => "frozen",
            "revoke" => "revoked",
            _ => "active",
        };
        (
            AxumStatus::OK,
            Json(json!({ "key_id": key_id, "state": state })),
        )
    }
    async fn key(Path(key_id): Path<String>) -> Json<Value> {
        Json(json!({ "key_id": key_id, "state": "active" }))
    }
    let seen = SeenByService::default();
    let router = axum::Router::new()
        .route("/v1/admin/keys/{key_id}/{action}", post(action))
        .route("/v1/admin/keys/{key_id}", get(key))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, seen)
}

async fn admin_post(app: &TestApp, path: &str, body: Option<Value>) -> reqwest::Response {
    let mut req = app.http.post(app.url(path)).bearer_auth(ADMIN_TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn the_admin_api_drives_the_service_and_revoking_makes_the_broker_refuse_the_certificate() {
    let (url, seen) = fake_service_admin().await;
    let app = TestApp::spawn_with(|c| {
        c.cosigner.url = Some(url.clone());
        c.cosigner.admin_token = Some(SERVICE_ADMIN_TOKEN.into());
    })
    .await;

    // Only with the broker's admin token.
    let resp = app
        .http
        .post(app.url("/v1/admin/cosigner/keys/k1/freeze"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "unauthorized").await;
    assert!(
        seen.0.lock().unwrap().is_empty(),
        "nothing reached the service"
    );

    let resp = admin_post(&app, "/v1/admin/cosigner/keys/k1/freeze", None).await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["state"], "frozen");
    let resp = admin_post(&app, "/v1/admin/cosigner/keys/k1/unfreeze", None).await;
    assert_eq!(resp.json::<Value>().await.unwrap()["state"], "active");
    let resp = admin_post(&app, "/v1/admin/cosigner/keys/k1/unlock", None).await;
    assert_eq!(resp.status(), 200);
    assert_error(
        admin_post(&app, "/v1/admin/cosigner/keys/k1/explode", None).await,
        404,
        "not_found",
    )
    .await;
    assert_error(
        admin_post(&app, "/v1/admin/cosigner/keys/missing/freeze", None).await,
        404,
        "not_found",
    )
    .await;

    // 注销: the broker refuses the certificate from now on.
    let phone = app.phone("platform", "张三的手机");
    let resp = admin_post(
        &app,
        "/v1/admin/cosigner/keys/k1/revoke",
        Some(json!({ "certificate_serial": phone.serial() })),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["state"], "revoked");
    assert_eq!(answer["revoked_serial"], phone.serial().as_str());
    let calls: Vec<String> = seen.0.lock().unwrap().iter().map(|c| c.0.clone()).collect();
    assert_eq!(
        calls,
        [
            "k1/freeze",
            "k1/unfreeze",
            "k1/unlock",
            "missing/freeze",
            "k1/revoke"
        ]
    );
    assert!(seen
        .0
        .lock()
        .unwrap()
        .iter()
        .all(|c| c.1.as_deref() == Some(&format!("Bearer {SERVICE_ADMIN_TOKEN}"))));

    let created = app.create_login().await;
    let claimed = phone.claim(&created).await;
    let err = broker_error(phone.approve(&claimed).await.unwrap_err());
    assert_eq!(err.code, "untrusted_certificate");
    assert!(err.message.contains("revoked"), "{}", err.message);
}

#[tokio::test]
async fn the_admin_routes_say_what_is_missing_from_the_configuration() {
    let app = TestApp::spawn().await;
    let message = assert_error(
        admin_post(&app, "/v1/admin/cosigner/keys/k1/freeze", None).await,
        403,
        "forbidden",
    )
    .await;
    assert!(message.contains("[cosigner] url"), "{message}");

    // A service that cannot be reached is 503, not a hang or a 500.
    let app = TestApp::spawn_with(|c| {
        c.cosigner.url = Some("http://127.0.0.1:9".into());
        c.cosigner.admin_token = Some(SERVICE_ADMIN_TOKEN.into());
    })
    .await;
    assert_error(
        admin_post(&app, "/v1/admin/cosigner/keys/k1/freeze", None).await,
        503,
        "unavailable",
    )
    .await;
}
