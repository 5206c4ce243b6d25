//! The waiting page's push channel: the frames of `GET /v1/sessions/{id}/ws`
//! and the events of `GET /v1/sessions/{id}/events` (the same JSON objects),
//! and the one frame the page may send (docs/protocol.md "Browser").

use crate::error::ErrorDetail;
use crate::session::{DeviceView, SessionResult, SessionView};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Server → browser, each with its `type`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BrowserFrame {
    /// First event of every connection. A terminal session's snapshot carries
    /// `result` and is the last event.
    Snapshot { session: Box<SessionView> },
    /// The phone claimed the session.
    Status(StatusFrame),
    /// A rotating QR code changed; redraw it (the version is unchanged).
    Qr(QrFrame),
    /// The terminal transition; the last event.
    Result(ResultFrame),
    /// WebSocket only: a browser frame was refused; the socket stays open.
    Error { error: ErrorDetail },
}

/// `status`: the phone claimed the session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StatusFrame {
    /// Always `scanned`.
    #[schema(value_type = crate::session::Status)]
    pub status: String,
    #[schema(minimum = 2)]
    pub version: u64,
    pub device: Option<DeviceView>,
    /// Number matching; show it large.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[0-9]{2}$")]
    pub match_code: Option<String>,
}

/// `qr`: the new QR text of a rotating code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QrFrame {
    pub qr_text: String,
    #[schema(minimum = 1)]
    pub version: u64,
    #[schema(minimum = 1)]
    pub seq: u32,
}

/// `result`: the terminal transition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ResultFrame {
    /// A terminal status.
    #[schema(value_type = crate::session::Status)]
    pub status: String,
    #[schema(minimum = 2)]
    pub version: u64,
    /// `null` for `expired` and `cancelled`.
    pub result: Option<SessionResult>,
}

/// Browser → server: `{"type": "cancel"}` cancels the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum BrowserMessage {
    Cancel,
}
