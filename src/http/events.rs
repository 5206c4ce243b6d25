//! The browser's event stream, derived from session state.
//!
//! A socket never relays a queue of messages; it remembers what it has
//! already told its browser (`version`, QR `seq`) and, whenever the store
//! says the session changed, re-reads it and sends what is new. A missed or
//! coalesced wake-up therefore never loses an outcome, and a reconnecting
//! browser starts again from a snapshot. WebSocket and SSE share this.

use bzt_core::{Session, Status};
use bzt_wire::{BrowserFrame, DeviceView, QrFrame, ResultFrame, StatusFrame};

/// One event for the browser, with its SSE id (`<version>` or `<version>.<seq>`).
#[derive(Debug, Clone)]
pub struct BrowserEvent {
    pub kind: &'static str,
    pub id: String,
    pub data: BrowserFrame,
    /// The stream ends after this event: the result, or the snapshot of a
    /// session that has already ended.
    pub is_final: bool,
}

impl BrowserEvent {
    /// The frame as JSON text, as the WebSocket and SSE send it.
    pub fn json(&self) -> String {
        serde_json::to_string(&self.data).unwrap_or_default()
    }
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
            data: BrowserFrame::Snapshot {
                session: Box::new(session.snapshot_view(public_base_url)),
            },
            is_final: session.is_terminal(),
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
            // A fast phone can scan and finish between two wake-ups; the
            // browser still hears `scanned` (with the device, and the match
            // code) before the result. Scanning is always the transition
            // just before the terminal one, so its version is known.
            let scanned_version = match session.status {
                Status::Scanned => Some(session.version),
                s if s.is_terminal() && session.scanned_at.is_some() => Some(session.version - 1),
                _ => None,
            };
            if let Some(v) = scanned_version.filter(|v| *v > self.version) {
                let data = BrowserFrame::Status(StatusFrame {
                    status: Status::Scanned.as_str().to_owned(),
                    version: v,
                    device: session.device.as_ref().map(|d| DeviceView {
                        name: d.name.clone(),
                    }),
                    match_code: session.number_match.as_ref().map(|m| m.code.clone()),
                });
                out.push(BrowserEvent {
                    kind: "status",
                    id: v.to_string(),
                    data,
                    is_final: false,
                });
            }
            if session.status.is_terminal() {
                out.push(BrowserEvent {
                    kind: "result",
                    id: session.version.to_string(),
                    data: BrowserFrame::Result(ResultFrame {
                        status: session.status.as_str().to_owned(),
                        version: session.version,
                        result: session.result_view().flatten(),
                    }),
                    is_final: true,
                });
            }
            self.version = session.version;
        }
        if session.status == Status::Pending && session.claim.seq > self.qr_seq {
            out.push(BrowserEvent {
                kind: "qr",
                id: format!("{}.{}", session.version, session.claim.seq),
                data: BrowserFrame::Qr(QrFrame {
                    qr_text: session.qr_text(public_base_url),
                    version: session.version,
                    seq: session.claim.seq,
                }),
                is_final: false,
            });
            self.qr_seq = session.claim.seq;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bzt_core::session::{CancelledBy, Device, NewSession, NewSessionRequest, Op};
    use bzt_core::{Kind, Secret, SessionId, Timestamp};

    fn session() -> Session {
        let req = NewSessionRequest {
            kind: Some(Kind::Login),
            display: Some(bzt_core::session::DisplayText {
                title: "t".into(),
                detail: None,
            }),
            ..Default::default()
        };
        let spec = NewSession::validate(req, &["platform".into()]).unwrap();
        Session::create(
            SessionId::generate(),
            "demo",
            spec,
            Timestamp::from_unix_millis(0),
        )
        .0
    }

    #[test]
    fn a_scan_coalesced_with_the_result_is_still_told_first() {
        let mut s = session();
        let (_, mut cursor) = Cursor::snapshot(&s, "http://b");
        let now = Timestamp::from_unix_millis(1_000);
        let claim = Op::Claim {
            secret: s.claim.current.clone(),
            device: Device {
                id: "d".into(),
                name: "张三的手机".into(),
            },
            phone_token: Secret::generate().hash(),
            number_match: None,
        };
        s.apply(&claim, now).output.unwrap();
        s.apply(
            &Op::Cancel {
                by: CancelledBy::Rp,
            },
            now,
        )
        .output
        .unwrap();
        let events = cursor.advance(&s, "http://b");
        let kinds: Vec<_> = events.iter().map(|e| (e.kind, e.id.as_str())).collect();
        assert_eq!(kinds, [("status", "2"), ("result", "3")]);
        let BrowserFrame::Status(status) = &events[0].data else {
            panic!("a status frame first: {:?}", events[0].data);
        };
        assert_eq!(
            status.device.as_ref().map(|d| d.name.as_str()),
            Some("张三的手机")
        );
        assert!(cursor.advance(&s, "http://b").is_empty());
    }

    #[test]
    fn an_unscanned_session_that_ends_tells_only_the_result() {
        let mut s = session();
        let (_, mut cursor) = Cursor::snapshot(&s, "http://b");
        s.apply(&Op::Expire, Timestamp::from_unix_millis(10_000_000));
        let events = cursor.advance(&s, "http://b");
        let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["result"]);
    }
}
