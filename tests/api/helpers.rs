//! `TestApp`: a real broker on `127.0.0.1:0` with a manual clock, two trust
//! domains and two apps, plus request helpers that read like docs/protocol.md.

use bzt::clock::ManualClock;
use bzt::config::{AppConfig, Config, TrustDomainConfig};
use bzt::Application;
use bzt_devca::{DevCa, IssuedCert, LeafSpec};
use bzt_phone::{ApproveExtras, Claimed, CompleteAnswer, Phone, PhoneIdentity, QrText};
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The first app: a trading platform.
pub const APP_ID: &str = "demo";
pub const APP_NAME: &str = "示例交易平台";
pub const API_KEY: &str = "test-key-demo-0123456789abcdef";
pub const ORIGIN: &str = "https://bid.example.cn";
pub const WEBHOOK_SECRET: &str = "whsec-demo-0123456789";
/// The second app: an opening hall (another app's sessions, signatures, origins).
pub const OTHER_APP_ID: &str = "hall";
pub const OTHER_API_KEY: &str = "test-key-hall-0123456789abcdef";
pub const OTHER_ORIGIN: &str = "https://hall.example.cn";
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
/// The SM2 distinguishing ID, as OpenSSL needs to be told it.
pub use bzt_openssl_cli::SM2_DISTID_OPT as DISTID_OPT;

/// How long any single wait on the server may take before the test fails.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The development CAs of the two trust domains.
pub struct TestCas {
    pub platform: DevCa,
    pub national: DevCa,
}

impl TestCas {
    pub fn generate() -> Self {
        Self {
            platform: DevCa::generate("测试平台根 CA", "bzt 测试", "platform").unwrap(),
            national: DevCa::generate("测试全国互认根 CA", "bzt 测试", "national").unwrap(),
        }
    }

    pub fn ca(&self, domain: &str) -> &DevCa {
        match domain {
            "platform" => &self.platform,
            "national" => &self.national,
            other => panic!("no test CA for domain {other}"),
        }
    }

    /// A leaf of `domain`, valid now.
    pub fn leaf(&self, domain: &str, cn: &str) -> IssuedCert {
        self.ca(domain)
            .issue(&LeafSpec::new(cn, "示例建设有限公司"))
            .unwrap()
    }
}

/// A phone identity made from an issued certificate.
pub fn identity_of(leaf: &IssuedCert, device_name: &str) -> PhoneIdentity {
    PhoneIdentity::from_pem(&leaf.cert_pem, &leaf.key_pem, None)
        .unwrap()
        .with_device(format!("dev-{device_name}"), device_name)
}

pub struct TestApp {
    /// `http://127.0.0.1:<port>`, also the broker's `public_base_url`.
    pub address: String,
    pub clock: ManualClock,
    pub http: reqwest::Client,
    pub cas: Arc<TestCas>,
    /// Holds the CA files and anything a test writes; removed on drop.
    pub dir: tempfile::TempDir,
    /// The broker inside the server, to look at what it stores.
    broker: Arc<bzt::broker::Broker>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
    /// The serving task (awaited by [`TestApp::restarted`]).
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// The config every test starts from, with the CA files written to `dir`.
pub fn base_config(dir: &Path, cas: &TestCas) -> Config {
    let mut domains = Vec::new();
    for name in ["platform", "national"] {
        let file = dir.join(format!("{name}-root.pem"));
        std::fs::write(&file, cas.ca(name).cert_pem()).unwrap();
        domains.push(TrustDomainConfig {
            name: name.into(),
            ca_pem_files: vec![file],
            ..Default::default()
        });
    }
    let mut config = Config::defaults();
    config.listen = "127.0.0.1:0".into();
    // Each app its own data directory (audit log and key).
    config.data_dir = Some(dir.join("data"));
    config.public_base_url = None;
    config.trust_domains = domains;
    config.apps = vec![
        AppConfig {
            id: APP_ID.into(),
            name: APP_NAME.into(),
            api_key: Some(API_KEY.into()),
            api_key_sha256: None,
            allowed_origins: vec![ORIGIN.into()],
            webhook_secret: Some(WEBHOOK_SECRET.into()),
        },
        AppConfig {
            id: OTHER_APP_ID.into(),
            name: "开标大厅".into(),
            api_key: Some(OTHER_API_KEY.into()),
            api_key_sha256: None,
            allowed_origins: vec![OTHER_ORIGIN.into()],
            webhook_secret: Some("whsec-hall-0123456789".into()),
        },
    ];
    config.admin_token = Some(ADMIN_TOKEN.into());
    // Everything the broker keeps on disk (the audit trail) stays in the tempdir.
    config.data_dir = Some(dir.to_path_buf());
    config.webhooks.initial_backoff_ms = 20;
    config.webhooks.max_backoff_ms = 200;
    config.webhooks.timeout_ms = 2_000;
    // The tests' webhook receivers listen on loopback, which webhooks may
    // reach only when allowed (tests/api/webhook_targets.rs clears this).
    config.webhooks.allowed_private_networks = vec!["127.0.0.0/8".into()];
    config
}

/// A broker whose graceful shutdown began ([`TestApp::begin_shutdown`]).
pub struct Stopping {
    pub address: String,
    pub broker: Arc<bzt::broker::Broker>,
    pub server: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(configure: impl FnOnce(&mut Config)) -> Self {
        Self::spawn_with_cas(Arc::new(TestCas::generate()), configure).await
    }

    /// With CAs made beforehand (e.g. to put a leaf's serial into the config).
    pub async fn spawn_with_cas(cas: Arc<TestCas>, configure: impl FnOnce(&mut Config)) -> Self {
        Self::spawn_in(tempfile::tempdir().unwrap(), cas, configure).await
    }

    /// Stops this broker and starts another on the same data directory and
    /// CAs, as a restarted process would (nothing in memory is kept).
    pub async fn restarted(self, configure: impl FnOnce(&mut Config)) -> Self {
        let TestApp {
            dir,
            cas,
            _shutdown,
            server,
            broker,
            ..
        } = self;
        drop(broker);
        let _ = _shutdown.send(());
        // The old broker must let go of its files (the audit log's lock).
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the old broker stops within 10 s")
            .expect("the old broker's task")
            .expect("the old broker stops cleanly");
        Self::spawn_in(dir, cas, configure).await
    }

    async fn spawn_in(
        dir: tempfile::TempDir,
        cas: Arc<TestCas>,
        configure: impl FnOnce(&mut Config),
    ) -> Self {
        let mut config = base_config(dir.path(), &cas);
        configure(&mut config);
        let clock = ManualClock::starting_now();
        let application = Application::build(&config, Arc::new(clock.clone()), None)
            .await
            .expect("the broker should start");
        let port = application.port();
        let broker = application.broker();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(application.run(async move {
            let _ = rx.await;
        }));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Self {
            address: format!("http://127.0.0.1:{port}"),
            clock,
            http,
            cas,
            dir,
            broker,
            _shutdown: tx,
            server,
        }
    }

    /// Starts the graceful shutdown, as SIGTERM does; answers the serving
    /// task (it ends when the drain is over) and what the test still needs.
    pub fn begin_shutdown(self) -> Stopping {
        let TestApp {
            address,
            dir,
            broker,
            _shutdown,
            server,
            ..
        } = self;
        let _ = _shutdown.send(());
        Stopping {
            address,
            broker,
            server,
            _dir: dir,
        }
    }

    /// The broker handle (its store, audit log, ...), for tests of what it keeps.
    pub fn broker(&self) -> Arc<bzt::broker::Broker> {
        self.broker.clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    // ---- RP backend -------------------------------------------------------

    /// `POST /v1/sessions` with the first app's key; the raw answer.
    pub async fn post_session(&self, body: &Value) -> reqwest::Response {
        self.post_session_as(API_KEY, body).await
    }

    pub async fn post_session_as(&self, api_key: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url("/v1/sessions"))
            .bearer_auth(api_key)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Creates a session (201 expected).
    pub async fn create_session(&self, body: Value) -> Created {
        self.create_session_as(API_KEY, body).await
    }

    pub async fn create_session_as(&self, api_key: &str, body: Value) -> Created {
        let resp = self.post_session_as(api_key, &body).await;
        let status = resp.status();
        let raw: Value = resp.json().await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "create answered {raw}");
        Created::from(raw)
    }

    /// A `login` session with default settings.
    pub async fn create_login(&self) -> Created {
        self.create_session(login_body()).await
    }

    /// `GET /v1/sessions/<id>` with the first app's key (200 expected).
    pub async fn get_session(&self, id: &str) -> Value {
        let resp = self.get_session_raw(id, "").await;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(status, StatusCode::OK, "GET answered {body}");
        body
    }

    /// `GET <path>` of the RP API with `api_key`, answered as JSON (any status).
    pub async fn rp_get_as(&self, api_key: &str, path: &str) -> Value {
        self.http
            .get(self.url(path))
            .bearer_auth(api_key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// 会话签章, the requester's step: `POST /v1/conversations/<id>/requests` with `body`, which
    /// the broker accepts (202); returns the new request's id.
    pub async fn send_conversation_request(&self, conversation_id: &str, body: Value) -> String {
        let resp = self
            .http
            .post(self.url(&format!("/v1/conversations/{conversation_id}/requests")))
            .bearer_auth(API_KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        resp.json::<Value>().await.unwrap()["request_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The requester fetches one conversation request's result with the first app's key.
    pub async fn conversation_request_result(
        &self,
        conversation_id: &str,
        request_id: &str,
    ) -> Value {
        self.rp_get_as(
            API_KEY,
            &format!("/v1/conversations/{conversation_id}/requests/{request_id}"),
        )
        .await
    }

    /// `GET /v1/sessions/<id><query>` with the first app's key.
    pub async fn get_session_raw(&self, id: &str, query: &str) -> reqwest::Response {
        self.http
            .get(self.url(&format!("/v1/sessions/{id}{query}")))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap()
    }

    /// Long-polls until the session's version is no longer `version` (10 s at most).
    pub async fn await_change(&self, id: &str, version: u64) -> Value {
        let resp = self
            .get_session_raw(id, &format!("?wait=10&version={version}"))
            .await;
        assert_eq!(resp.status(), StatusCode::OK);
        let view: Value = resp.json().await.unwrap();
        assert_ne!(view["version"], version, "nothing changed: {view}");
        view
    }

    pub async fn status_of(&self, id: &str) -> String {
        self.get_session(id).await["status"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// `DELETE /v1/sessions/<id>` with the first app's key.
    pub async fn cancel_session(&self, id: &str) -> reqwest::Response {
        self.http
            .delete(self.url(&format!("/v1/sessions/{id}")))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap()
    }

    // ---- Browser ----------------------------------------------------------

    /// Opens the session's WebSocket (no `Origin`, like a non-browser client).
    pub async fn browser(&self, created: &Created) -> Browser {
        Browser::connect(&created.ws_url, None)
            .await
            .unwrap_or_else(|e| panic!("WebSocket refused: {e}"))
    }

    // ---- Phone ------------------------------------------------------------

    /// A phone holding a fresh certificate of `domain`.
    pub fn phone(&self, domain: &str, device_name: &str) -> TestPhone {
        let leaf = self.cas.leaf(domain, "张三");
        self.phone_with(leaf, device_name)
    }

    pub fn phone_with(&self, leaf: IssuedCert, device_name: &str) -> TestPhone {
        TestPhone {
            phone: Phone::new(self.http.clone()),
            identity: identity_of(&leaf, device_name),
            leaf,
        }
    }

    /// `POST /v1/claim` with a raw body.
    pub async fn claim_raw(&self, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url("/v1/claim"))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// `POST /v1/sessions/<id>/complete` with a raw body and token.
    pub async fn complete_raw(
        &self,
        id: &str,
        phone_token: &str,
        body: &Value,
    ) -> reqwest::Response {
        self.http
            .post(self.url(&format!("/v1/sessions/{id}/complete")))
            .bearer_auth(phone_token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    // ---- Time ----------------------------------------------------------------

    /// Moves the broker's clock; timers due by then fire.
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }
}

/// The create answer.
#[derive(Clone, Debug)]
pub struct Created {
    pub id: String,
    pub qr_text: String,
    pub browser_token: String,
    pub ws_url: String,
    pub events_url: String,
    pub qr_svg_url: String,
    pub qr_png_url: String,
    pub expires_at: String,
    pub raw: Value,
}

impl From<Value> for Created {
    fn from(raw: Value) -> Self {
        let s = |k: &str| {
            raw[k]
                .as_str()
                .unwrap_or_else(|| panic!("create answer lacks {k}: {raw}"))
                .to_owned()
        };
        Self {
            id: s("id"),
            qr_text: s("qr_text"),
            browser_token: s("browser_token"),
            ws_url: s("ws_url"),
            events_url: s("events_url"),
            qr_svg_url: s("qr_svg_url"),
            qr_png_url: s("qr_png_url"),
            expires_at: s("expires_at"),
            raw,
        }
    }
}

impl Created {
    pub fn qr(&self) -> QrText {
        QrText::parse(&self.qr_text).unwrap()
    }
}

pub fn login_body() -> Value {
    json!({ "kind": "login", "display": { "title": "登录 示例交易平台" } })
}

/// [`login_body`] as the typed relying-party client sends it.
pub fn rp_login() -> bzt_rp_client::CreateSession {
    bzt_rp_client::CreateSession::new(bzt_rp_client::Kind::Login, "登录 示例交易平台")
}

/// A phone: the reference client library plus its certificate.
pub struct TestPhone {
    pub phone: Phone,
    pub identity: PhoneIdentity,
    pub leaf: IssuedCert,
}

impl TestPhone {
    pub async fn claim(&self, created: &Created) -> Claimed {
        self.phone
            .claim(&created.qr(), &self.identity)
            .await
            .unwrap_or_else(|e| panic!("claim failed: {e}"))
    }

    pub async fn approve(&self, claimed: &Claimed) -> Result<CompleteAnswer, bzt_phone::Error> {
        self.phone
            .approve(claimed, &self.identity, ApproveExtras::default())
            .await
    }

    /// Number matching: approves `claimed` with the two digits the user picked.
    pub async fn approve_picking(
        &self,
        claimed: &Claimed,
        match_code: String,
    ) -> Result<CompleteAnswer, bzt_phone::Error> {
        let extras = ApproveExtras {
            match_code: Some(match_code),
            ..Default::default()
        };
        self.phone.approve(claimed, &self.identity, extras).await
    }

    /// 会话签章, the phone's first step: approves `claimed` and asks to open a conversation.
    pub async fn approve_opening_conversation(
        &self,
        claimed: &Claimed,
    ) -> Result<CompleteAnswer, bzt_phone::Error> {
        let extras = ApproveExtras {
            open_conversation: true,
            ..Default::default()
        };
        self.phone.approve(claimed, &self.identity, extras).await
    }

    /// A completion with this phone's certificate and a signature over `tbs`
    /// (which need not be the session's).
    pub fn completion_over(&self, tbs: &[u8]) -> Value {
        json!({
            "certificate_pem": self.identity.certificate_pem(),
            "signature_b64": b64(&bzt_phone::sign(&self.identity, tbs).unwrap()),
        })
    }

    pub fn serial(&self) -> String {
        self.identity.serial_hex()
    }
}

/// What a broker error looks like to a test.
pub fn broker_error(e: bzt_phone::Error) -> bzt_phone::BrokerError {
    match e {
        bzt_phone::Error::Broker(b) => b,
        other => panic!("expected a broker error, got {other:?}"),
    }
}

pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn unb64(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap_or_else(|e| panic!("{s:?} is not base64: {e}"))
}

/// Asserts the answer is `status` with a body of exactly
/// `{"error": {"code": <code>, "message": <non-empty string>}}`; returns the message.
pub async fn assert_error(resp: reqwest::Response, status: u16, code: &str) -> String {
    let got = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    assert_eq!(
        got, status,
        "expected HTTP {status} {code}, got {got}: {text}"
    );
    assert_error_body(&text, code)
}

pub fn assert_error_body(text: &str, code: &str) -> String {
    let body: Value = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {text}"));
    let outer = body.as_object().expect("error body is an object");
    assert_eq!(
        outer.keys().collect::<Vec<_>>(),
        vec!["error"],
        "error body has other members: {text}"
    );
    let inner = body["error"].as_object().expect("`error` is an object");
    let mut keys: Vec<&String> = inner.keys().collect();
    keys.sort();
    assert_eq!(keys, vec!["code", "message"], "error body: {text}");
    assert_eq!(body["error"]["code"], code, "error body: {text}");
    let message = body["error"]["message"]
        .as_str()
        .expect("message is a string");
    assert!(!message.is_empty(), "empty error message: {text}");
    message.to_owned()
}

// ---- WebSocket --------------------------------------------------------------

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The browser's WebSocket.
pub struct Browser {
    pub ws: Ws,
}

impl Browser {
    /// Connects, optionally with an `Origin` header.
    pub async fn connect(
        ws_url: &str,
        origin: Option<&str>,
    ) -> Result<Self, tokio_tungstenite::tungstenite::Error> {
        let mut request = ws_url.into_client_request()?;
        if let Some(o) = origin {
            request.headers_mut().insert("origin", o.parse().unwrap());
        }
        let (ws, _) =
            tokio::time::timeout(EVENT_TIMEOUT, tokio_tungstenite::connect_async(request))
                .await
                .expect("WebSocket connect timed out")?;
        Ok(Self { ws })
    }

    /// The next frame that is not a ping or pong.
    async fn next_frame(&mut self) -> Option<Message> {
        loop {
            let msg = tokio::time::timeout(EVENT_TIMEOUT, self.ws.next())
                .await
                .expect("timed out waiting for the broker on the WebSocket");
            match msg {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(m)) => return Some(m),
                Some(Err(e)) => panic!("WebSocket error: {e}"),
                None => return None,
            }
        }
    }

    /// The next JSON event; fails on close or timeout.
    pub async fn next_event(&mut self) -> Value {
        match self.next_frame().await {
            Some(Message::Text(t)) => serde_json::from_str(t.as_str())
                .unwrap_or_else(|e| panic!("event is not JSON ({e}): {t}")),
            other => panic!("expected an event, got {other:?}"),
        }
    }

    /// Expects the server's close frame next; returns it.
    pub async fn expect_close(&mut self) -> CloseFrame {
        match self.next_frame().await {
            Some(Message::Close(Some(frame))) => frame,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }

    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .unwrap();
    }
}

/// The HTTP status of a refused WebSocket handshake, with its body.
pub fn ws_refusal(e: tokio_tungstenite::tungstenite::Error) -> (u16, String) {
    match e {
        tokio_tungstenite::tungstenite::Error::Http(resp) => {
            let status = resp.status().as_u16();
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            (status, body)
        }
        other => panic!("expected an HTTP refusal of the WebSocket, got {other:?}"),
    }
}

// ---- OpenSSL ------------------------------------------------------------------

pub use bzt_openssl_cli::run_ok as openssl_ok;

/// Verifies a DER SM2 signature over `tbs` with the certificate `cert_pem`,
/// independently of the broker: `openssl pkeyutl -verify ... distid:1234567812345678`.
pub fn openssl_verifies(dir: &Path, cert_pem: &str, tbs: &[u8], sig: &[u8]) -> bool {
    std::fs::write(dir.join("verify-cert.pem"), cert_pem).unwrap();
    bzt_openssl_cli::verifies_with_certificate(dir, "verify-cert.pem", tbs, sig)
}

/// A `tracing` writer into memory, to read what the broker logged.
#[derive(Clone, Default)]
pub struct LogBuffer(Arc<std::sync::Mutex<Vec<u8>>>);

impl LogBuffer {
    /// Captures this thread's events up to `level` (plain text) until the
    /// guard drops. Under the default current-thread test runtime the
    /// broker's tasks run on this thread, so their events are captured too.
    pub fn capture(level: tracing::Level) -> (Self, tracing::subscriber::DefaultGuard) {
        let logs = Self::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_ansi(false)
            .with_writer(logs.clone())
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
