//! The browser's event stream, derived from session state.
//!
//! A socket never relays a queue of messages; it remembers what it has
//! already told its browser (`version`, QR `seq`) and, whenever the store
//! says the session changed, re-reads it and sends what is new. A missed or
//! coalesced wake-up therefore never loses an outcome, and a reconnecting
//! browser starts again from a snapshot. WebSocket and SSE share this.

use bzt_core::{Session, Status};
use serde_json::{json, Value};

/// One event for the browser, with its SSE id (`<version>` or `<version>.<seq>`).
#[derive(Debug, Clone)]
pub struct BrowserEvent {
    pub kind: &'static str,
    pub id: String,
    pub data: Value,
}

impl BrowserEvent {
    /// Whether the stream ends after this event.
    pub fn is_final(&self) -> bool {
        self.kind == "result"
            || (self.kind == "snapshot" && self.data["session"]["result"] != Value::Null)
            || (self.kind == "snapshot" && is_terminal_status(&self.data["session"]["status"]))
    }
}

fn is_terminal_status(v: &Value) -> bool {
    matches!(
        v.as_str(),
        Some("approved" | "rejected" | "expired" | "cancelled" | "failed")
    )
}

/// What one connection has told its browser so far.
#[derive(Debug, Clone, Copy)]
pub struct Cursor {
    version: u64,
    qr_seq: u32,
}

impl Cursor {
    /// The snapshot that opens every connection, and the cursor after it.
    pub fn snapshot(session: &Session, public_base_url: &str) -> (BrowserEvent, Cursor) {
        let event = BrowserEvent {
            kind: "snapshot",
            id: session.version.to_string(),
            data: json!({ "type": "snapshot", "session": session.snapshot_view(public_base_url) }),
        };
        (
            event,
            Cursor {
                version: session.version,
                qr_seq: session.claim.seq,
            },
        )
    }

    /// Events for what changed since this cursor, oldest first.
    pub fn advance(&mut self, session: &Session, public_base_url: &str) -> Vec<BrowserEvent> {
        let mut out = Vec::new();
        if session.version > self.version {
            if session.status == Status::Scanned {
                let mut data = json!({
                    "type": "status",
                    "status": "scanned",
                    "version": session.version,
                    "device": session.device.as_ref().map(|d| json!({ "name": d.name })),
                });
                if let Some(m) = &session.number_match {
                    data["match_code"] = json!(m.code);
                }
                out.push(BrowserEvent {
                    kind: "status",
                    id: session.version.to_string(),
                    data,
                });
            } else if session.status.is_terminal() {
                out.push(BrowserEvent {
                    kind: "result",
                    id: session.version.to_string(),
                    data: json!({
                        "type": "result",
                        "status": session.status,
                        "version": session.version,
                        "result": session.result_json(),
                    }),
                });
            }
            self.version = session.version;
        }
        if session.status == Status::Pending && session.claim.seq > self.qr_seq {
            out.push(BrowserEvent {
                kind: "qr",
                id: format!("{}.{}", session.version, session.claim.seq),
                data: json!({
                    "type": "qr",
                    "qr_text": session.qr_text(public_base_url),
                    "version": session.version,
                    "seq": session.claim.seq,
                }),
            });
            self.qr_seq = session.claim.seq;
        }
        out
    }
}
