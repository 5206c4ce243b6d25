//! What the browser and conversation sockets do alike: the frames a socket
//! cannot take (binary frames, since every message of the protocol is JSON
//! text, and frames over the socket's size limit), and the wait of a push
//! loop (pings, drain on shutdown, the peer leaving).

use crate::shutdown::{Drain, CLOSE_SERVICE_RESTART};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use tokio::sync::watch;
use tokio::time::Interval;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};

/// RFC 6455 7.4.1: the endpoint received a type of data it cannot accept.
pub const CLOSE_UNSUPPORTED_DATA: u16 = 1003;
/// RFC 6455 7.4.1: a message too big to process.
pub const CLOSE_MESSAGE_TOO_BIG: u16 = 1009;

/// Whether a receive error is a frame or message over the configured limit.
/// The socket is still writable then, so it can be told why it is closed;
/// the library itself closes without a close frame.
pub fn is_too_big(error: &axum::Error) -> bool {
    std::error::Error::source(error)
        .and_then(|inner| inner.downcast_ref::<WsError>())
        .is_some_and(|e| matches!(e, WsError::Capacity(CapacityError::MessageTooLong { .. })))
}

/// Closes with 1009, naming the limit.
pub async fn close_too_big(socket: &mut WebSocket, limit: usize) -> Result<(), axum::Error> {
    close(
        socket,
        CLOSE_MESSAGE_TOO_BIG,
        format!("message too big: this socket takes at most {limit} bytes"),
    )
    .await
}

/// Answers a binary frame: an `invalid_request` error frame that says what
/// the socket takes, then close 1003 (a client that sends binary is not
/// speaking this protocol, and more of the same would not help it).
pub async fn refuse_binary(socket: &mut WebSocket) -> Result<(), axum::Error> {
    // The browser's `error` frame; the conversation sockets' `error` without a
    // `request_id` is the same JSON.
    let frame = bzt_wire::BrowserFrame::Error {
        error: bzt_wire::ErrorDetail {
            code: bzt_core::ErrorCode::InvalidRequest.as_str().to_owned(),
            message: "binary frames are not accepted; send JSON text frames".to_owned(),
        },
    };
    let text = serde_json::to_string(&frame).unwrap_or_default();
    socket.send(Message::Text(text.into())).await?;
    close(
        socket,
        CLOSE_UNSUPPORTED_DATA,
        "binary frames are not accepted; send JSON text frames".to_owned(),
    )
    .await
}

/// Sends a close frame with its code and reason.
pub async fn close(
    socket: &mut WebSocket,
    code: u16,
    reason: impl Into<Utf8Bytes>,
) -> Result<(), axum::Error> {
    socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await
}

/// Why a push loop's wait ended, once what every push socket handles alike
/// has been handled.
pub enum Wake {
    /// The record changed: re-read it and push what is new.
    Changed,
    /// Nothing for the loop to do (a ping went out, a pong came in).
    Idle,
    /// A text frame from the peer, for the loop to answer.
    Text(Utf8Bytes),
    /// The socket is done (closed by either side, or sending failed).
    Done(Result<(), axum::Error>),
}

/// Waits for the next thing a push socket must act on. Pings on `ping`;
/// closes 1011 with `removed` when the record is gone, 1012 when the node
/// drains, 1003 on a binary frame, 1009 on a frame over `limit`.
pub async fn next_wake(
    socket: &mut WebSocket,
    changes: &mut watch::Receiver<u64>,
    ping: &mut Interval,
    drain: &Drain,
    limit: usize,
    removed: &'static str,
) -> Wake {
    tokio::select! {
        changed = changes.changed() => match changed {
            Ok(()) => Wake::Changed,
            Err(_) => Wake::Done(close(socket, 1011, removed).await),
        },
        _ = ping.tick() => match socket.send(Message::Ping(Vec::new().into())).await {
            Ok(()) => Wake::Idle,
            Err(e) => Wake::Done(Err(e)),
        },
        _ = drain.started() => {
            Wake::Done(close(socket, CLOSE_SERVICE_RESTART, "service restart: reconnect").await)
        }
        incoming = socket.recv() => match incoming {
            Some(Ok(Message::Text(text))) => Wake::Text(text),
            Some(Ok(Message::Binary(_))) => Wake::Done(refuse_binary(socket).await),
            Some(Err(e)) if is_too_big(&e) => Wake::Done(close_too_big(socket, limit).await),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => Wake::Done(Ok(())),
            Some(Ok(_)) => Wake::Idle,
        },
    }
}
