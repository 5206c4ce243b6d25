//! Signed webhooks with retry, against a tiny receiver on port 0.

use crate::helpers::*;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// One delivery as the receiver saw it.
struct Delivery {
    signature: Option<String>,
    content_type: Option<String>,
    body: Bytes,
    answered: StatusCode,
}

#[derive(Clone)]
struct Receiver {
    attempts: Arc<AtomicUsize>,
    tx: mpsc::UnboundedSender<Delivery>,
}

/// Answers 500 to the first attempt and 200 afterwards.
async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let n = r.attempts.fetch_add(1, Ordering::SeqCst);
    let answered = if n == 0 {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
    let _ = r.tx.send(Delivery {
        signature: header("bzt-signature"),
        content_type: header("content-type"),
        body,
        answered,
    });
    answered
}

async fn spawn_receiver() -> (String, mpsc::UnboundedReceiver<Delivery>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let state = Receiver {
        attempts: Arc::new(AtomicUsize::new(0)),
        tx,
    };
    let router = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, rx)
}

async fn next_delivery(rx: &mut mpsc::UnboundedReceiver<Delivery>) -> Delivery {
    tokio::time::timeout(EVENT_TIMEOUT, rx.recv())
        .await
        .expect("no webhook delivery arrived")
        .unwrap()
}

/// Checks `Bzt-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
fn signature_verifies(header: &str, secret: &str, body: &[u8]) -> bool {
    let (t, v1) = header
        .split_once(',')
        .unwrap_or_else(|| panic!("signature header {header:?}"));
    let t = t.strip_prefix("t=").expect("t= first");
    let v1 = v1.strip_prefix("v1=").expect("v1= second");
    let t_num: i64 = t.parse().expect("t is unix seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((t_num - now).abs() < 300, "t={t_num} is not now ({now})");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    v1 == hex::encode(mac.finalize().into_bytes())
}

#[tokio::test]
async fn a_terminal_transition_is_delivered_signed_and_retried() {
    let (url, mut rx) = spawn_receiver().await;
    let app = TestApp::spawn().await;
    let created = app
        .create_session(json!({"kind": "login", "display": {"title": "t"}, "webhook_url": url}))
        .await;
    let phone = app.phone("platform", "张三的手机");
    let claimed = phone.claim(&created).await;
    phone.approve(&claimed).await.unwrap();

    let first = next_delivery(&mut rx).await;
    assert_eq!(first.answered, StatusCode::INTERNAL_SERVER_ERROR);
    let second = next_delivery(&mut rx).await;
    assert_eq!(second.answered, StatusCode::OK);

    let view = app.get_session(&created.id).await;
    for d in [&first, &second] {
        assert_eq!(d.content_type.as_deref(), Some("application/json"));
        let body: Value = serde_json::from_slice(&d.body).unwrap();
        assert_eq!(body, view, "the webhook body is the session view");
        let header = d.signature.as_deref().expect("Bzt-Signature header");
        assert!(
            signature_verifies(header, WEBHOOK_SECRET, &d.body),
            "{header}"
        );
    }
    // A signature with another secret, or over other bytes, does not verify.
    let header = second.signature.unwrap();
    assert!(!signature_verifies(&header, "other-secret", &second.body));
    assert!(!signature_verifies(&header, WEBHOOK_SECRET, b"{}"));

    // Delivered: no further attempt.
    let more = tokio::time::timeout(std::time::Duration::from_millis(500), rx.recv()).await;
    assert!(more.is_err(), "a delivered webhook was sent again");
}

#[tokio::test]
async fn an_expiry_is_delivered_too() {
    let (url, mut rx) = spawn_receiver().await;
    let app = TestApp::spawn().await;
    let created = app
        .create_session(
            json!({"kind": "login", "display": {"title": "t"}, "ttl_s": 30, "webhook_url": url}),
        )
        .await;
    app.advance(std::time::Duration::from_secs(31));
    next_delivery(&mut rx).await;
    let delivered = next_delivery(&mut rx).await;
    let body: Value = serde_json::from_slice(&delivered.body).unwrap();
    assert_eq!(body["id"], created.id.as_str());
    assert_eq!(body["status"], "expired");
    assert_eq!(body["result"], Value::Null);
    let header = delivered.signature.as_deref().unwrap();
    assert!(signature_verifies(header, WEBHOOK_SECRET, &delivered.body));
}
