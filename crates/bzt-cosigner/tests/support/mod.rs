//! Test harness: a stand-in for the broker's `POST /v1/cosign/context`, a
//! co-signing service on a loopback port, and a recording proxy between
//! phone and service that keeps every byte both ways.

#![allow(dead_code)]

#[path = "../../../../tests/support/redis.rs"]
pub mod redis;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bzt_cosigner::config::{RelyingPartyConfig, StoreConfig, StoreKind};
use bzt_cosigner::wire::{BrokerContext, BrokerContextRequest, Context, Opening, SessionRef};
use bzt_cosigner::{Config, CosignerClient, Service};
use tokio::net::TcpListener;

/// The service's store on `redis`, its keys under `prefix`.
pub fn redis_store(redis: &redis::RedisServer, prefix: &str) -> StoreConfig {
    StoreConfig {
        kind: StoreKind::Redis,
        path: None,
        redis_url: Some(redis.url()),
        key_prefix: Some(prefix.into()),
    }
}

pub const BROKER_CREDENTIAL: &str = "broker-credential-for-the-cosigner";
pub const ENROLMENT_TOKEN: &str = "enrolment-token";
pub const ADMIN_TOKEN: &str = "admin-token";
pub const HALL_TOKEN: &str = "hall-token";
pub const MASTER_KEY: &str = "000102030405060708090a0b0c0d0e0f";

async fn listen() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// What the broker holds for one pending session: its phone token and context.
#[derive(Clone, Default)]
pub struct TestBroker {
    pub url: String,
    sessions: Arc<Mutex<HashMap<String, (String, BrokerContext)>>>,
    /// How long the broker takes to answer (to line up concurrent requests).
    delay: Arc<Mutex<std::time::Duration>>,
    /// Context requests received so far.
    pub asked: Arc<std::sync::atomic::AtomicUsize>,
}

impl TestBroker {
    pub async fn start() -> Self {
        let (listener, addr) = listen().await;
        let broker = Self {
            url: format!("http://{addr}"),
            ..Default::default()
        };
        let app = Router::new()
            .route("/v1/cosign/context", post(context))
            .with_state(broker.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        broker
    }

    /// A session the phone has scanned, with its challenge bytes.
    pub fn scanned(&self, kind: &str, tbs: &[u8], opening: Option<Opening>) -> Context {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let phone_token = uuid::Uuid::new_v4().simple().to_string();
        let context = BrokerContext {
            kind: kind.to_owned(),
            tbs_b64: B64.encode(tbs),
            expires_at: "2099-01-01T00:00:00.000Z".into(),
            certificate_serial: None,
            opening,
            seal: None,
        };
        self.sessions
            .lock()
            .unwrap()
            .insert(id.clone(), (phone_token.clone(), context));
        Context::Session(SessionRef {
            id,
            phone_token,
            delegate: None,
        })
    }

    pub fn answer_after(&self, delay: std::time::Duration) {
        *self.delay.lock().unwrap() = delay;
    }

    pub fn finish(&self, context: &Context) {
        if let Context::Session(s) = context {
            self.sessions.lock().unwrap().remove(&s.id);
        }
    }
}

async fn context(
    State(broker): State<TestBroker>,
    headers: HeaderMap,
    Json(request): Json<BrokerContextRequest>,
) -> Response {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    if auth != Some(&format!("Bearer {BROKER_CREDENTIAL}")) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(serde_json::json!({"error": {"code": "unauthorized", "message": "credential"}})),
        )
            .into_response();
    }
    broker
        .asked
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let delay = *broker.delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    let BrokerContextRequest::Session(s) = request else {
        return not_found();
    };
    match broker.sessions.lock().unwrap().get(&s.id) {
        Some((token, ctx)) if *token == s.phone_token => Json(ctx.clone()).into_response(),
        _ => not_found(),
    }
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({"error": {"code": "not_found", "message": "no such session"}})),
    )
        .into_response()
}

pub struct TestService {
    pub url: String,
    pub config: Config,
    pub service: Arc<Service>,
    _dir: Option<tempfile::TempDir>,
}

pub fn config(broker: &TestBroker, dir: &std::path::Path) -> Config {
    Config {
        listen: "127.0.0.1:0".into(),
        node_name: None,
        store: StoreConfig {
            kind: StoreKind::File,
            path: Some(dir.join("keys.json")),
            redis_url: None,
            key_prefix: None,
        },
        master_key_hex: Some(MASTER_KEY.into()),
        master_key_file: None,
        data_dir: Some(dir.to_path_buf()),
        broker_url: broker.url.clone(),
        broker_credential: Some(BROKER_CREDENTIAL.into()),
        enrolment_token: Some(ENROLMENT_TOKEN.into()),
        admin_token: Some(ADMIN_TOKEN.into()),
        relying_parties: vec![RelyingPartyConfig {
            id: "hall".into(),
            token: HALL_TOKEN.into(),
        }],
        require_registered_opening: false,
        proof_window_s: 120,
        csr_window_s: 600,
        dev_mode: false,
    }
}

impl TestService {
    pub async fn start(broker: &TestBroker) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = config(broker, dir.path());
        let mut s = Self::start_with(config).await;
        s._dir = Some(dir);
        s
    }

    pub async fn start_with(config: Config) -> Self {
        Self::start_with_clock(config, Arc::new(bzt_cosigner::grants::SystemClock)).await
    }

    /// A service that judges grant end times by `clock`.
    pub async fn start_with_clock(
        config: Config,
        clock: Arc<dyn bzt_cosigner::grants::Clock>,
    ) -> Self {
        let (listener, addr) = listen().await;
        let context = Arc::new(
            bzt_cosigner::context::BrokerContextClient::new(
                &config.broker_url,
                config.broker_credential.clone(),
            )
            .unwrap(),
        );
        let service = Service::build_with_clock(config.clone(), context, clock)
            .await
            .unwrap();
        let run = service.clone();
        tokio::spawn(async move { bzt_cosigner::run(listener, run).await });
        Self {
            url: format!("http://{addr}"),
            config,
            service,
            _dir: None,
        }
    }

    pub async fn client(&self) -> CosignerClient {
        CosignerClient::discover(&self.url).await.unwrap()
    }
}

/// One exchange seen by the proxy.
#[derive(Clone, Debug)]
pub struct Exchange {
    pub method: String,
    pub path: String,
    pub request: Bytes,
    pub status: u16,
    pub response: Bytes,
}

/// A proxy that forwards to `upstream` and records every exchange.
#[derive(Clone)]
pub struct RecordingProxy {
    pub url: String,
    upstream: String,
    pub seen: Arc<Mutex<Vec<Exchange>>>,
}

impl RecordingProxy {
    pub async fn start(upstream: &str) -> Self {
        let (listener, addr) = listen().await;
        let proxy = Self {
            url: format!("http://{addr}"),
            upstream: upstream.to_owned(),
            seen: Default::default(),
        };
        let app = Router::new()
            .fallback(any(forward))
            .with_state(proxy.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        proxy
    }

    pub fn exchanges(&self) -> Vec<Exchange> {
        self.seen.lock().unwrap().clone()
    }

    /// An attacker's replay: the last recorded request whose path ends with `path_suffix`,
    /// posted again byte for byte to the service at `service_url`.
    pub async fn replay_last(&self, path_suffix: &str, service_url: &str) -> reqwest::Response {
        let captured = self
            .exchanges()
            .into_iter()
            .rfind(|e| e.path.ends_with(path_suffix))
            .unwrap_or_else(|| panic!("no request to …{path_suffix} went through the proxy"));
        reqwest::Client::new()
            .post(format!("{service_url}{}", captured.path))
            .header("content-type", "application/json")
            .body(captured.request)
            .send()
            .await
            .unwrap()
    }

    /// Every byte both ways, as one blob to search.
    pub fn all_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for e in self.exchanges() {
            out.extend_from_slice(e.path.as_bytes());
            out.extend_from_slice(&e.request);
            out.extend_from_slice(&e.response);
        }
        out
    }
}

async fn forward(
    State(proxy): State<RecordingProxy>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let client = reqwest::Client::new();
    let mut req = client
        .request(method.clone(), format!("{}{path}", proxy.upstream))
        .body(body.clone());
    for (name, value) in headers.iter() {
        if name == "authorization" || name == "content-type" {
            req = req.header(name, value);
        }
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap();
    proxy.seen.lock().unwrap().push(Exchange {
        method: method.to_string(),
        path,
        request: body,
        status,
        response: bytes.clone(),
    });
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(bytes))
        .unwrap()
}

/// The login challenge bytes of PROTOCOL.md for a fresh session.
pub fn challenge(kind: &str) -> Vec<u8> {
    format!(
        "BZT-CHALLENGE-V1\nkind:{kind}\napp:demo\nsession:{}\nnonce:AAAAAAAAAAAAAAAAAAAAAA\nexpires:2099-01-01T00:00:00.000Z",
        uuid::Uuid::new_v4().simple()
    )
    .into_bytes()
}
