//! Shared test fixtures: a development CA with a phone identity, OpenSSL, and a mock broker.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, Response};
use axum::routing::post;
use axum::{Json, Router};
use bzt_devca::{DevCa, IssuedCert, LeafSpec};
use bzt_phone::PhoneIdentity;
use serde_json::Value;

pub use bzt_openssl_cli::SM2_DISTID_OPT as DISTID_OPT;

/// A CA, one leaf written to `dir` as `phone.pem` / `phone.key.pem`, and its identity.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub ca: DevCa,
    pub leaf: IssuedCert,
    pub identity: PhoneIdentity,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::generate("测试根", "bzt 测试", "platform").unwrap();
        ca.save(dir.path()).unwrap();
        let leaf = ca
            .issue(&LeafSpec::new("张三", "示例建设有限公司").with_uscc("91350100M000100Y43"))
            .unwrap();
        leaf.write_files(dir.path(), "phone", None).unwrap();
        let identity = PhoneIdentity::from_pem(&leaf.cert_pem, &leaf.key_pem, None).unwrap();
        Self {
            dir,
            ca,
            leaf,
            identity,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

pub use bzt_openssl_cli::run as openssl;
pub use bzt_openssl_cli::verifies_with_certificate as openssl_verifies;

/// One request the mock broker received.
#[derive(Clone, Debug)]
pub struct Seen {
    /// `claim`, or the session id of a completion.
    pub target: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The JSON body.
    pub body: Value,
}

/// A canned answer: status, extra headers, body text.
#[derive(Clone, Debug)]
pub struct Canned {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Canned {
    pub fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            headers: vec![("content-type", "application/json".into())],
            body: body.to_string(),
        }
    }
}

#[derive(Clone)]
struct MockState {
    seen: Arc<Mutex<Vec<Seen>>>,
    claim: Canned,
    complete: Canned,
}

/// A broker double answering `POST /v1/claim` and `POST /v1/sessions/{id}/complete` with canned
/// answers, and recording what it was sent.
pub struct MockBroker {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl MockBroker {
    pub async fn start(claim: Canned, complete: Canned) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let state = MockState {
            seen: seen.clone(),
            claim,
            complete,
        };
        let app = Router::new()
            .route("/v1/claim", post(claim_handler))
            .route("/v1/sessions/{id}/complete", post(complete_handler))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, seen }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn answer(canned: &Canned) -> Response<Body> {
    let mut builder = Response::builder().status(canned.status);
    for (name, value) in &canned.headers {
        builder = builder.header(*name, value);
    }
    builder.body(Body::from(canned.body.clone())).unwrap()
}

fn record(state: &MockState, target: String, headers: &HeaderMap, body: Value) {
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    state.seen.lock().unwrap().push(Seen {
        target,
        authorization,
        body,
    });
}

async fn claim_handler(
    State(state): State<MockState>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response<Body> {
    record(&state, "claim".into(), &headers, body);
    answer(&state.claim)
}

async fn complete_handler(
    State(state): State<MockState>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response<Body> {
    record(&state, id, &headers, body);
    answer(&state.complete)
}
