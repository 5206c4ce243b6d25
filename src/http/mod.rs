//! HTTP and WebSocket transport: routing, authentication, the error format.
//!
//! Handlers are thin: they parse and authenticate, call the [`Broker`], and
//! shape the answer. `rp` serves relying-party backends (API key), `browser`
//! the waiting page (browser token in `?t=`), `phone` the certificate app,
//! `ops` health, metrics and the admin API.

pub mod answers;
mod audit;
mod browser;
mod conversation;
mod cosign;
pub mod events;
pub mod limits;
pub mod openapi;
mod ops;
mod phone;
pub mod qr;
mod rp;
mod ws_frames;

// The body readers of the phone API, for the fuzz targets (crates/bzt-fuzz).
pub use phone::{read_claim_body, read_complete_body, PhoneAnswer};

use crate::broker::Broker;
use crate::error::ApiError;
use crate::http::limits::Limits;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bzt_core::secret::SecretHash;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// A session id from a path, parsed once here so the broker only sees typed
/// ids; one that is not an id answers `404`, as an unknown one does
/// (docs/protocol.md). Handlers parse it where they would look it up, so
/// authentication errors still come first.
pub fn session_id(raw: &str) -> Result<bzt_core::SessionId, ApiError> {
    bzt_core::SessionId::parse(raw).ok_or_else(|| bzt_core::session::unknown_session_error().into())
}

/// [`session_id`] for conversations.
pub fn conversation_id(raw: &str) -> Result<bzt_core::secret::ConversationId, ApiError> {
    bzt_core::secret::ConversationId::parse(raw)
        .ok_or_else(|| ApiError::not_found("no such conversation"))
}

/// Request bodies larger than this answer 413 (docs/protocol.md).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub broker: Arc<Broker>,
    pub limits: Arc<Limits>,
    pub admin_token: Option<SecretHash>,
    pub trust_forwarded_for: bool,
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// The co-signing service's credential for `POST /v1/cosign/context`;
    /// `None`: the endpoint refuses every call.
    pub cosigner_credential: Option<SecretHash>,
    /// The service's admin API, when `[cosigner] url` is configured.
    pub cosigner_admin: Option<Arc<crate::broker::cosigner::CosignerAdmin>>,
    /// Shutdown in progress: sockets close with 1012 (see [`crate::shutdown`]).
    pub drain: crate::shutdown::Drain,
}

/// Declares the broker's routes once and derives both [`ROUTES`] and the
/// router built by [`broker_routes`] from that one table, so the list can
/// never drift from what is served.
macro_rules! declare_routes {
    ($($method:ident $path:literal => $handler:expr;)*) => {
        /// Every route of the broker (not the development demo's `/demo`
        /// routes), as `(method, path)`: the method in lowercase, as OpenAPI
        /// spells its operations, the path in axum's `{param}` syntax, which
        /// is also OpenAPI's. Generated from the same table as the router;
        /// `tests/openapi.rs` checks it against the generated OpenAPI document
        /// (`#[utoipa::path]` on each handler), so a
        /// route added without documentation fails the tests.
        pub const ROUTES: &[(&str, &str)] = &[$((stringify!($method), $path)),*];

        /// The router of [`ROUTES`] (axum merges methods given for one path).
        fn broker_routes() -> Router<AppState> {
            Router::new()$(.route($path, axum::routing::$method($handler)))*
        }
    };
}

declare_routes! {
    post "/v1/sessions" => rp::create_session;
    get "/v1/sessions/{id}" => rp::get_session;
    delete "/v1/sessions/{id}" => rp::cancel_session;
    options "/v1/sessions/{id}" => browser::preflight;
    get "/v1/sessions/{id}/ws" => browser::websocket;
    get "/v1/sessions/{id}/events" => browser::events;
    get "/v1/sessions/{id}/qr.svg" => browser::qr_svg;
    get "/v1/sessions/{id}/qr.png" => browser::qr_png;
    post "/v1/claim" => phone::claim;
    post "/v1/sessions/{id}/complete" => phone::complete;
    get "/q/{id}" => browser::scan_landing_page;
    get "/healthz" => ops::healthz;
    get "/readyz" => ops::readyz;
    get "/metrics" => ops::metrics;
    get "/v1/admin/revocations" => ops::list_revocations;
    post "/v1/admin/revocations" => ops::add_revocation;
    delete "/v1/admin/revocations/{serial}" => ops::remove_revocation;
    get "/v1/admin/cosigner/keys/{key_id}" => cosign::admin_key;
    post "/v1/admin/cosigner/keys/{key_id}/{action}" => cosign::admin_action;
    get "/v1/admin/cosigner/grants" => cosign::admin_grants;
    post "/v1/admin/cosigner/grants/{grant_id}/reclaim" => cosign::admin_reclaim;
    post "/v1/cosign/context" => cosign::context;
    get "/v1/conversations/{id}" => conversation::get_conversation;
    delete "/v1/conversations/{id}" => conversation::end_conversation;
    post "/v1/conversations/{id}/requests" => conversation::create_request;
    get "/v1/conversations/{id}/requests/{rid}" => conversation::get_request;
    get "/v1/conversations/{id}/ws" => conversation::requester_socket;
    get "/v1/conversations/{id}/phone" => conversation::phone_socket;
    get "/v1/audit" => audit::list;
    get "/openapi.json" => openapi::serve;
}

/// The broker's routes. `extra` is merged in (the development demo).
pub fn router(state: AppState, extra: Option<Router<AppState>>) -> Router {
    let mut r = broker_routes();
    if let Some(extra) = extra {
        r = r.merge(extra);
    }
    r.fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                bzt_core::ErrorCode::MethodNotAllowed,
                "method not allowed on this endpoint",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(non_utf8_path_is_not_found))
        .layer(axum::middleware::map_response(protocol_error_body))
        .layer(axum::middleware::from_fn(log_request))
        .with_state(state)
}

/// The response header that names a request's id, for a person matching a
/// client's failure to the broker's log lines.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Every request runs in a `request` span with a fresh id (UUID v4), so each
/// log line written while it is served names it; the id is also answered in
/// `X-Request-Id`. One log line per request, with the path only: tokens
/// travel in `?t=` and must never reach a log. A client's own request id is
/// not taken: it would let anyone write text into the log.
async fn log_request(req: Request, next: axum::middleware::Next) -> Response {
    use tracing::Instrument;
    // A UUID v4 from the thread-local generator: `Uuid::new_v4` asks the
    // kernel (`getrandom`) on every request, a system call per request for
    // an id that needs no more than to be unique.
    let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let span = tracing::info_span!("request", id = %id, %method, %path);
    let started = std::time::Instant::now();
    let mut resp = next.run(req).instrument(span.clone()).await;
    let status = resp.status().as_u16();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| {
        if status >= 500 {
            tracing::warn!(status, ms, "request");
        } else {
            tracing::debug!(status, ms, "request");
        }
    });
    if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = bzt_wire::ErrorBody::new(self.code.as_str(), self.message);
        let mut resp = (status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }
}

/// Gives every error answer the protocol's body. Handlers answer through
/// [`ApiError`] already; this catches axum's own plain-text rejections (a
/// path segment that is not UTF-8, a malformed query string), so no non-2xx
/// answer escapes the `{"error": {"code", "message"}}` format.
/// Ids, serials and key ids are ASCII, so a path that is not UTF-8 once
/// percent-decoded names nothing the broker has: `404 not_found`, as for any
/// other unknown id (axum's `Path` would answer 400 before the handler runs).
async fn non_utf8_path_is_not_found(req: Request, next: axum::middleware::Next) -> Response {
    if percent_encoding::percent_decode_str(req.uri().path())
        .decode_utf8()
        .is_err()
    {
        return ApiError::not_found("no such resource: the path is not UTF-8 once percent-decoded")
            .into_response();
    }
    next.run(req).await
}

async fn protocol_error_body(resp: Response) -> Response {
    use bzt_core::ErrorCode;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let code = match status.as_u16() {
        401 => ErrorCode::Unauthorized,
        403 => ErrorCode::Forbidden,
        404 => ErrorCode::NotFound,
        405 => ErrorCode::MethodNotAllowed,
        409 => ErrorCode::Conflict,
        410 => ErrorCode::Expired,
        413 => ErrorCode::PayloadTooLarge,
        429 => ErrorCode::RateLimited,
        503 => ErrorCode::Unavailable,
        s if s >= 500 => return ApiError::internal().into_response(),
        _ => ErrorCode::InvalidRequest,
    };
    let text = axum::body::to_bytes(resp.into_body(), 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_owned()
    } else {
        text
    };
    ApiError::new(code, message).into_response()
}

/// `Json` whose rejections speak the protocol's error format: 413 for a body
/// over the limit, 400 `invalid_request` (with serde's message, which names
/// unknown or missing fields) for everything else.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    axum::Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(r: JsonRejection) -> ApiError {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            bzt_core::ErrorCode::PayloadTooLarge,
            format!("request body is larger than {} KiB", MAX_BODY_BYTES / 1024),
        );
    }
    match r {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::invalid("send the body as JSON with `Content-Type: application/json`")
        }
        JsonRejection::JsonSyntaxError(e) => {
            ApiError::invalid(format!("malformed JSON: {}", e.body_text()))
        }
        JsonRejection::JsonDataError(e) => {
            ApiError::invalid(format!("invalid request body: {}", e.body_text()))
        }
        other => ApiError::invalid(other.body_text()),
    }
}

/// `Authorization: Bearer <token>`.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The client's address: the socket peer, or the first `X-Forwarded-For`
/// hop when the operator says a trusted proxy sets it.
pub fn client_ip(state: &AppState, headers: &HeaderMap, peer: SocketAddr) -> IpAddr {
    if state.trust_forwarded_for {
        if let Some(ip) = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse().ok())
        {
            return ip;
        }
    }
    peer.ip()
}

pub fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Query parameters every browser endpoint takes.
#[derive(serde::Deserialize, Default)]
pub struct TokenQuery {
    pub t: Option<String>,
}

#[cfg(test)]
mod request_id_tests {
    use super::*;
    use std::sync::Mutex;

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::ErrorKind::Other)?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn each_request_has_an_id_in_its_log_lines_and_its_answer() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        let app: Router = Router::new()
            .route(
                "/inside",
                axum::routing::get(|| async {
                    tracing::info!("handler ran");
                    "ok"
                }),
            )
            .layer(axum::middleware::from_fn(log_request));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // The server runs on this thread's runtime, so its spans reach the
        // subscriber set for this thread.
        tokio::spawn(async move { axum::serve(listener, app).await });
        let http = reqwest::Client::new();
        let mut ids = Vec::new();
        for _ in 0..2 {
            let resp = http
                .get(format!("http://{addr}/inside?t=secret-token"))
                // A client's own id is not taken (it would put its text into the log).
                .header(REQUEST_ID_HEADER, "client-chosen-id")
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            let id = resp.headers()[REQUEST_ID_HEADER]
                .to_str()
                .unwrap()
                .to_owned();
            assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
            ids.push(id);
        }
        assert_ne!(ids[0], ids[1], "every request gets its own id");

        let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        for id in &ids {
            let lines: Vec<&str> = log.lines().filter(|l| l.contains(id.as_str())).collect();
            assert!(
                lines.iter().any(|l| l.contains("handler ran")),
                "the handler's line names request {id}:\n{log}"
            );
            assert!(
                lines.iter().any(|l| l.contains("status=200")),
                "the request line names request {id}:\n{log}"
            );
        }
        assert!(!log.contains("secret-token"), "no query string in the log");
        assert!(
            !log.contains("client-chosen-id"),
            "the client's id is not logged"
        );
    }
}
