//! Browser API: WebSocket push, Server-Sent Events, QR images, the scan
//! landing page, and CORS for the app's allowed origins.
//!
//! Both push transports run the same loop: send a snapshot, then wait for the
//! store to say the session changed, re-read it, and send what is new (see
//! [`crate::http::events`]). The stream ends after the terminal `result`.

use super::ws_frames::{self, close, Wake};
use super::{answers, client_ip, header_str, AppState, TokenQuery};
use crate::apps::App;
use crate::error::ApiError;
use crate::http::events::{BrowserEvent, Cursor};
use crate::http::limits::SocketSlot;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use bzt_core::session::{CancelledBy, Requester};
use bzt_core::{ErrorCode, Session, SessionId, Status};
use bzt_wire::{BrowserFrame, ErrorDetail};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// docs/protocol.md: the server pings every 25 s.
pub const PING_INTERVAL: Duration = Duration::from_secs(25);

/// Read buffer of a browser socket. The library's default (128 KiB per
/// connection) dominated the memory of idle sockets in the load test; the
/// browser only ever sends `cancel` (and pongs), and a login page's socket
/// is the one a node holds by the hundred thousand, so every KiB here is
/// ~100 MiB there. Larger frames still arrive (the buffer grows). Writes
/// go out at once (write buffer 0): every frame is an event the other side
/// is waiting for.
pub const BROWSER_SOCKET_BUFFER: usize = 1024;

/// The largest frame or message a browser socket takes (a `cancel` is 17
/// bytes); a larger one is closed with 1009.
pub const BROWSER_MESSAGE_LIMIT: usize = 4096;

/// The session's app, if the request's `Origin` is allowed for it.
pub fn check_origin(
    state: &AppState,
    session: &Session,
    headers: &HeaderMap,
) -> Result<Arc<App>, ApiError> {
    check_app_origin(state, &session.app_id, headers)
}

/// The app, if the request's `Origin` is allowed for it (browser endpoints
/// of sessions and conversations alike).
pub fn check_app_origin(
    state: &AppState,
    app_id: &str,
    headers: &HeaderMap,
) -> Result<Arc<App>, ApiError> {
    let app = state
        .broker
        .apps()
        .by_id(app_id)
        .ok_or_else(ApiError::internal)?;
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if !app.origin_allowed(origin) {
        return Err(ApiError::forbidden(format!(
            "origin {} is not in the allowed_origins of app {}",
            origin.unwrap_or("?"),
            app.id
        )));
    }
    Ok(app)
}

/// Adds CORS headers when the request came from an allowed origin.
pub fn with_cors(mut resp: Response, app: &App, headers: &HeaderMap) -> Response {
    if let Some(origin) = headers.get(header::ORIGIN) {
        if app.origin_allowed(origin.to_str().ok()) {
            let h = resp.headers_mut();
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            h.insert(header::VARY, HeaderValue::from_static("Origin"));
        }
    }
    resp
}

/// CORS preflight for `DELETE /v1/sessions/<id>?t=` from the page.
#[utoipa::path(
    options,
    path = "/v1/sessions/{id}",
    tag = "browser",
    operation_id = "preflightSession",
    summary = "CORS preflight for the page's cancel.",
    description = "Always `204` with an empty body. When the session exists and `Origin` is allowed for its app, adds `Access-Control-Allow-Origin`, `Vary: Origin`, `Access-Control-Allow-Methods: GET, DELETE` and `Access-Control-Max-Age: 600`.",
    params(("id" = String, Path, description = "The session id.")),
    responses((status = 204, description = "Preflight answer.", headers(
        ("Access-Control-Allow-Origin" = String, description = "The request's `Origin`, when allowed."),
        ("Access-Control-Allow-Methods" = String, description = "`GET, DELETE`, when the origin is allowed."),
    ))),
    security(())
)]
pub async fn preflight(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Ok(id) = super::session_id(&id) else {
        return StatusCode::NO_CONTENT.into_response();
    };
    let Ok(session) = state.broker.load(&id).await else {
        return StatusCode::NO_CONTENT.into_response();
    };
    let Ok(app) = check_origin(&state, &session, &headers) else {
        return StatusCode::NO_CONTENT.into_response();
    };
    let mut resp = with_cors(StatusCode::NO_CONTENT.into_response(), &app, &headers);
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, DELETE"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    resp
}

/// How a browser request reads its session.
#[derive(Clone, Copy)]
enum BrowserRead {
    /// The current version: the answer is drawn from it (a QR image).
    Fresh,
    /// Perhaps this node's copy: a socket replaces it once subscribed unless
    /// it is still current (`still_current`).
    ForSocket,
}

/// Authenticates a browser request and records the requester on first sight.
async fn open_browser_request(
    state: &AppState,
    id: &str,
    q: &TokenQuery,
    headers: &HeaderMap,
    peer: SocketAddr,
    read: BrowserRead,
) -> Result<(Session, Arc<App>), ApiError> {
    let id = super::session_id(id)?;
    let token = q.t.as_deref();
    let session = match read {
        BrowserRead::Fresh => state.broker.session_for_browser(&id, token).await?,
        BrowserRead::ForSocket => state.broker.session_for_browser_socket(&id, token).await?,
    };
    let app = check_origin(state, &session, headers)?;
    // Header text reaches the phone: keep it displayable and bounded.
    use bzt_core::session::{MAX_ORIGIN_CHARS, MAX_USER_AGENT_CHARS};
    use bzt_core::text::displayable;
    let requester = Requester {
        ip: Some(client_ip(state, headers, peer).to_string()),
        user_agent: header_str(headers, header::USER_AGENT)
            .map(|ua| displayable(&ua, MAX_USER_AGENT_CHARS)),
        origin: header_str(headers, header::ORIGIN).map(|o| displayable(&o, MAX_ORIGIN_CHARS)),
    };
    let session = state.broker.note_requester(session, requester).await?;
    Ok((session, app))
}

/// Upgrades to a WebSocket (`ws_url` of the create answer). The token,
/// `Origin` and limits are checked before the upgrade, so refusals are
/// ordinary HTTP answers. Frames: see `x-websocket` and docs/protocol.md.
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}/ws",
    tag = "browser",
    operation_id = "sessionWebSocket",
    summary = "WebSocket push of the session's events.",
    description = "Server → browser JSON text frames (`BrowserFrame`): `snapshot` first on every (re)connect (a terminal session's snapshot carries `result`, then close `1000`); `status` when the phone claims; `qr` when a rotating QR code changes; `result` on the terminal transition, then close `1000`; `error` answering a browser frame that is not `{\"type\": \"cancel\"}` or a cancel that failed (the socket stays open). Browser → server: `BrowserMessage` (`cancel`). A binary frame gets an `invalid_request` error frame and close `1003`; a frame over 4096 bytes closes with `1009`. The server pings every 25 s; close `1011` when the session cannot be read; reconnect on anything but `1000`. Limits: `limits.sockets_per_ip_per_minute` connects per client IP and `limits.sockets_per_session` (default 8) browser connections per session (`429`).",
    params(("id" = String, Path, description = "The session id."), ("Upgrade" = String, Header, description = "`websocket`.")),
    responses(
        (status = 101, description = "Switching Protocols; frames as described."),
        (status = 429, response = answers::RateLimited),
        answers::UpgradeRefusals,
        answers::BrowserRefusals,
    ),
    security(("browserToken" = [])),
    extensions(("x-websocket" = json!({
        "server-messages": { "$ref": "#/components/schemas/BrowserFrame" },
        "client-messages": { "$ref": "#/components/schemas/BrowserMessage" },
        "close-codes": { "1000": "After the terminal `result` or a terminal snapshot.", "1003": "A binary frame.", "1009": "A frame over 4096 bytes.", "1011": "The session cannot be read (store unavailable, record purged); reconnect.", "1012": "Service restart; reconnect." }
    })))
)]
pub async fn websocket(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<TokenQuery>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    state
        .limits
        .socket_connect(client_ip(&state, &headers, peer))?;
    let (session, _app) =
        open_browser_request(&state, &id, &q, &headers, peer, BrowserRead::ForSocket).await?;
    let upgrade = upgrade.map_err(|e| {
        ApiError::invalid(format!("expected a WebSocket upgrade: {}", e.body_text()))
    })?;
    let slot = state.limits.socket_slot(&session.id)?;
    metrics::counter!("bzt_browser_connections_total", "transport" => "ws").increment(1);
    Ok(upgrade
        .max_message_size(BROWSER_MESSAGE_LIMIT)
        .max_frame_size(BROWSER_MESSAGE_LIMIT)
        .read_buffer_size(BROWSER_SOCKET_BUFFER)
        .write_buffer_size(0)
        .on_upgrade(move |socket| run_websocket(socket, state, Box::new(session), slot)))
}

async fn run_websocket(
    mut socket: WebSocket,
    state: AppState,
    session: Box<Session>,
    _slot: SocketSlot,
) {
    let gauge = metrics::gauge!("bzt_browser_sockets", "transport" => "ws");
    gauge.increment(1.0);
    let _open = state.drain.socket();
    let id = session.id.clone();
    let _ = websocket_loop(&mut socket, &state, &id, session).await;
    gauge.decrement(1.0);
}

/// The session the request just read, if it is still the current one once
/// `changes` is subscribed: then the snapshot needs no second read (in
/// Redis, one round trip and a JSON parse fewer per browser). A write in
/// between moved the receiver's `rev` on, and the snapshot reads afresh.
fn still_current(
    known: Box<Session>,
    changes: &tokio::sync::watch::Receiver<u64>,
) -> Option<Box<Session>> {
    (*changes.borrow() == known.rev).then_some(known)
}

/// Returns when the session is finished, the browser left, or sending failed.
///
/// Most sockets spend their life parked in the `select!` below, so its
/// future is what an idle socket costs: the snapshot and the work done on a
/// change or a browser message are boxed and live only while they run.
async fn websocket_loop(
    socket: &mut WebSocket,
    state: &AppState,
    id: &SessionId,
    known: Box<Session>,
) -> Result<(), axum::Error> {
    let Ok(Some(mut changes)) = state.broker.watch_session(id).await else {
        return close(socket, 1011, "session unavailable").await;
    };
    let known = still_current(known, &changes);
    let Some(mut cursor) = Box::pin(send_snapshot(socket, state, id, known)).await? else {
        return Ok(());
    };
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
    loop {
        match ws_frames::next_wake(
            socket,
            &mut changes,
            &mut ping,
            &state.drain,
            BROWSER_MESSAGE_LIMIT,
            "session removed",
        )
        .await
        {
            Wake::Changed => {
                let woken_at = *changes.borrow_and_update();
                if Box::pin(send_changes(socket, state, id, woken_at, &mut cursor)).await? {
                    return Ok(());
                }
            }
            Wake::Text(text) => {
                Box::pin(handle_browser_message(socket, state, id, text.as_str())).await?
            }
            Wake::Idle => {}
            Wake::Done(result) => return result,
        }
    }
}

/// Sends the snapshot; the cursor for what follows, or `None` once the
/// socket is closed (the session was already finished or is gone).
async fn send_snapshot(
    socket: &mut WebSocket,
    state: &AppState,
    id: &SessionId,
    current: Option<Box<Session>>,
) -> Result<Option<Cursor>, axum::Error> {
    let session = match current {
        Some(s) => *s,
        None => match state.broker.load(id).await {
            Ok(s) => s,
            Err(_) => {
                close(socket, 1011, "session unavailable").await?;
                return Ok(None);
            }
        },
    };
    let (snapshot, cursor) = Cursor::snapshot(&session, state.broker.public_base_url());
    if send_event(socket, &snapshot).await? {
        close(socket, 1000, "session finished").await?;
        return Ok(None);
    }
    Ok(Some(cursor))
}

/// Re-reads the session after a change notification (of version
/// `woken_at`, which this node's copy may already hold) and sends what is
/// new; `true` once the socket is closed after the final event.
async fn send_changes(
    socket: &mut WebSocket,
    state: &AppState,
    id: &SessionId,
    woken_at: u64,
    cursor: &mut Cursor,
) -> Result<bool, axum::Error> {
    // A store hiccup leaves the socket open; the next change or a
    // reconnect's snapshot catches up.
    let Ok(session) = state.broker.load_recent(id, woken_at).await else {
        return Ok(false);
    };
    for event in cursor.advance(&session, state.broker.public_base_url()) {
        if send_event(socket, &event).await? {
            close(socket, 1000, "session finished").await?;
            return Ok(true);
        }
    }
    Ok(false)
}

/// The browser may send `{"type": "cancel"}`; anything else gets an error frame.
async fn handle_browser_message(
    socket: &mut WebSocket,
    state: &AppState,
    id: &SessionId,
    text: &str,
) -> Result<(), axum::Error> {
    let parsed: Option<serde_json::Value> = serde_json::from_str(text).ok();
    let error = match parsed
        .as_ref()
        .and_then(|v| v.get("type"))
        .and_then(|t| t.as_str())
    {
        Some("cancel") => match state.broker.cancel(id, CancelledBy::Browser).await {
            // The result event follows through the change notification.
            Ok(_) => return Ok(()),
            Err(e) => e,
        },
        _ => ApiError::invalid("unknown message; the browser may send {\"type\": \"cancel\"}"),
    };
    let frame = BrowserFrame::Error {
        error: ErrorDetail {
            code: error.code.as_str().to_owned(),
            message: error.message,
        },
    };
    let text = serde_json::to_string(&frame).unwrap_or_default();
    socket.send(Message::Text(text.into())).await
}

/// Sends one event; `true` if it ends the stream.
async fn send_event(socket: &mut WebSocket, event: &BrowserEvent) -> Result<bool, axum::Error> {
    socket.send(Message::Text(event.json().into())).await?;
    Ok(event.is_final)
}

/// The same events as the WebSocket, for networks that block it.
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}/events",
    tag = "browser",
    operation_id = "sessionEvents",
    summary = "Server-Sent Events push of the session's events.",
    description = "Each event is `event: <snapshot|status|qr|result>`, `id: <version>` (`<version>.<seq>` for `qr`) and `data: <the same JSON object the WebSocket sends, with its type>` (`BrowserFrame`). `Last-Event-ID` is ignored: every connection starts with a snapshot. A comment line is sent every 25 s. The stream ends after `result` or a terminal snapshot. Answers `Cache-Control: no-store` and `X-Accel-Buffering: no`. Same limits as the WebSocket.",
    params(("id" = String, Path, description = "The session id.")),
    responses(
        (status = 200, description = "The event stream.", content_type = "text/event-stream", body = String),
        (status = 429, response = answers::RateLimited),
        answers::BrowserRefusals,
    ),
    security(("browserToken" = [])),
    extensions(("x-sse-events" = json!({ "$ref": "#/components/schemas/BrowserFrame" })))
)]
pub async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<TokenQuery>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state
        .limits
        .socket_connect(client_ip(&state, &headers, peer))?;
    let (session, app) =
        open_browser_request(&state, &id, &q, &headers, peer, BrowserRead::ForSocket).await?;
    let slot = state.limits.socket_slot(&session.id)?;
    metrics::counter!("bzt_browser_connections_total", "transport" => "sse").increment(1);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(8);
    tokio::spawn(run_sse(tx, state, Box::new(session), slot));
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let sse = Sse::new(stream).keep_alive(KeepAlive::new().interval(PING_INTERVAL));
    let mut resp = with_cors(sse.into_response(), &app, &headers);
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Ask proxies such as nginx not to buffer the stream.
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

async fn run_sse(
    tx: tokio::sync::mpsc::Sender<Result<Event, Infallible>>,
    state: AppState,
    known: Box<Session>,
    _slot: SocketSlot,
) {
    let id = known.id.clone();
    let gauge = metrics::gauge!("bzt_browser_sockets", "transport" => "sse");
    gauge.increment(1.0);
    let broker = &state.broker;
    let base = &broker.public_base_url();
    let to_sse = |e: &BrowserEvent| {
        Ok(Event::default()
            .event(e.kind)
            .id(e.id.clone())
            .data(e.json()))
    };
    'stream: {
        let Ok(Some(mut changes)) = broker.watch_session(&id).await else {
            break 'stream;
        };
        let session = match still_current(known, &changes) {
            Some(s) => *s,
            None => match broker.load(&id).await {
                Ok(s) => s,
                Err(_) => break 'stream,
            },
        };
        let (snapshot, mut cursor) = Cursor::snapshot(&session, base);
        if tx.send(to_sse(&snapshot)).await.is_err() || snapshot.is_final {
            break 'stream;
        }
        loop {
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() { break 'stream; }
                    let woken_at = *changes.borrow_and_update();
                    let Ok(session) = broker.load_recent(&id, woken_at).await else { continue };
                    for event in cursor.advance(&session, base) {
                        if tx.send(to_sse(&event)).await.is_err() || event.is_final {
                            break 'stream;
                        }
                    }
                }
                _ = tx.closed() => break 'stream,
                // The client's EventSource reconnects (to another node).
                _ = state.drain.started() => break 'stream,
            }
        }
    }
    gauge.decrement(1.0);
}

/// The QR image may be drawn only while the session waits for a scan.
fn drawable(session: &Session) -> Result<(), ApiError> {
    match session.status {
        Status::Pending => Ok(()),
        Status::Expired => Err(ApiError::new(
            ErrorCode::Expired,
            "the session has expired; ask for a new QR code",
        )),
        s => Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "the session is {}; its QR code can no longer be scanned",
                s.as_str()
            ),
        )),
    }
}

fn image_response(content_type: &'static str, body: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// The current QR code drawn by `render` as `content_type`. Once the page is
/// known to be allowed, its answer carries CORS whether it is the image or an
/// error the page should be able to read (410, 409).
async fn qr_image(
    state: &AppState,
    id: &str,
    q: &TokenQuery,
    headers: &HeaderMap,
    peer: SocketAddr,
    content_type: &'static str,
    render: fn(&str) -> Result<Vec<u8>, ApiError>,
) -> Result<Response, ApiError> {
    let (session, app) =
        open_browser_request(state, id, q, headers, peer, BrowserRead::Fresh).await?;
    let answer = drawable(&session)
        .and_then(|()| render(&session.qr_text(state.broker.public_base_url())))
        .map(|image| image_response(content_type, image));
    Ok(with_cors(
        answer.unwrap_or_else(IntoResponse::into_response),
        &app,
        headers,
    ))
}

#[utoipa::path(
    get,
    path = "/v1/sessions/{id}/qr.svg",
    tag = "browser",
    operation_id = "sessionQrSvg",
    summary = "The current QR code as SVG.",
    description = "Renders the current `qr_text` (error-correction level M, with quiet zone), only while the session is `pending`. Answers `Cache-Control: no-store`; refetch it after a `qr` event of a rotating code.",
    params(("id" = String, Path, description = "The session id.")),
    responses(
        (status = 200, description = "The QR code.", content_type = "image/svg+xml", body = String),
        (status = 409, response = answers::QrConflict),
        (status = 410, response = answers::Expired),
        answers::BrowserRefusals,
    ),
    security(("browserToken" = []))
)]
pub async fn qr_svg(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<TokenQuery>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    qr_image(&state, &id, &q, &headers, peer, "image/svg+xml", |text| {
        crate::http::qr::svg(text).map(String::into_bytes)
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/sessions/{id}/qr.png",
    tag = "browser",
    operation_id = "sessionQrPng",
    summary = "The current QR code as PNG (8-bit grey).",
    description = "Renders the current `qr_text` (error-correction level M, with quiet zone), only while the session is `pending`. Answers `Cache-Control: no-store`; refetch it after a `qr` event of a rotating code.",
    params(("id" = String, Path, description = "The session id.")),
    responses(
        (status = 200, description = "The QR code.", content_type = "image/png", body = String),
        (status = 409, response = answers::QrConflict),
        (status = 410, response = answers::Expired),
        answers::BrowserRefusals,
    ),
    security(("browserToken" = []))
)]
pub async fn qr_png(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<TokenQuery>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    qr_image(
        &state,
        &id,
        &q,
        &headers,
        peer,
        "image/png",
        crate::http::qr::png,
    )
    .await
}

/// What a generic QR scanner opens: tell the user to use the certificate app.
/// The claim secret after `#` never reaches the server.
#[utoipa::path(
    get,
    path = "/q/{id}",
    tag = "phone",
    operation_id = "scanLandingPage",
    summary = "What a generic QR scanner opens.",
    description = "A static zh-CN page telling the user to scan with the certificate app; the id is not looked up.",
    params(("id" = String, Path, description = "The session id.")),
    responses((status = 200, description = "The page.", content_type = "text/html", body = String)),
    security(())
)]
pub async fn scan_landing_page(Path(_id): Path<String>) -> Html<&'static str> {
    Html(include_str!("scan_landing.html"))
}
