//! Frames a socket cannot take, shared by the browser and conversation
//! sockets: binary frames (every message of the protocol is JSON text) and
//! frames over the socket's size limit.

use axum::extract::ws::{CloseFrame, Message, WebSocket};
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
    close_with(
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
    close_with(
        socket,
        CLOSE_UNSUPPORTED_DATA,
        "binary frames are not accepted; send JSON text frames".to_owned(),
    )
    .await
}

async fn close_with(socket: &mut WebSocket, code: u16, reason: String) -> Result<(), axum::Error> {
    socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await
}
