//! The conversation socket against a scripted broker double: reconnects that lose an answer
//! or its ack, requests re-sent after a reconnect, `end`, refused upgrades.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bzt_phone::{
    ConversationError, ConversationSocket, Decision, EndedBy, Outcome, PhoneConversation, Reconnect,
};
use serde_json::{json, Value};

use crate::common::Fixture;

const TOKEN: &str = "cp-token-1";

/// What the double does wrong, once each.
#[derive(Clone, Copy, Debug, Default)]
struct Faults {
    /// Drop the connection on receiving the answer to this seq, before recording it.
    drop_before_recording: Option<u32>,
    /// Record the answer to this seq, then drop the connection before the ack.
    drop_before_ack: Option<u32>,
}

#[derive(Default)]
struct Shared {
    /// seq → (request id, tbs).
    requests: Vec<(String, Vec<u8>)>,
    /// request id → answers received and recorded (must end up 1 each).
    answers: HashMap<String, Vec<Value>>,
    faults: Faults,
    connections: u32,
    ended: Option<&'static str>,
}

type St = Arc<Mutex<Shared>>;

/// A broker double speaking the phone side of a conversation: sends every unanswered request on
/// each connect, acks each first answer (`conflict` after), ends by `limit` once all are
/// answered, and by `phone` on `end`.
async fn start(n: usize, faults: Faults) -> (String, St) {
    let shared = Arc::new(Mutex::new(Shared {
        requests: (1..=n)
            .map(|i| (format!("r{i}"), format!("第{i}页").into_bytes()))
            .collect(),
        faults,
        ..Default::default()
    }));
    let app = Router::new()
        .route("/v1/conversations/{id}/phone", get(upgrade))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), shared)
}

async fn upgrade(
    State(st): State<St>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    if id != "c1" || q.get("t").map(String::as_str) != Some(TOKEN) {
        let body = json!({"error": {"code": "unauthorized", "message": "bad token"}});
        return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    }
    ws.on_upgrade(move |socket| serve(socket, st))
}

fn text(v: Value) -> Message {
    Message::Text(v.to_string().into())
}

/// Frames to send now: unanswered requests (all of them, on a fresh connection) or `ended`.
fn pending_frames(st: &St) -> Vec<Message> {
    let s = st.lock().unwrap();
    if let Some(by) = s.ended {
        return vec![text(
            json!({"type": "ended", "by": by, "at": "2030-01-01T00:00:00.000Z"}),
        )];
    }
    s.requests
        .iter()
        .enumerate()
        .filter(|(_, (id, _))| !s.answers.contains_key(id))
        .map(|(i, (id, tbs))| {
            text(json!({
                "type": "sign_request", "request_id": id, "seq": i + 1,
                "display": {"title": format!("第{}页", i + 1)},
                "tbs_b64": STANDARD.encode(tbs), "expires_at": "2030-01-01T00:00:00.000Z",
            }))
        })
        .collect()
}

async fn serve(mut socket: WebSocket, st: St) {
    st.lock().unwrap().connections += 1;
    for frame in pending_frames(&st) {
        if socket.send(frame).await.is_err() {
            return;
        }
    }
    while let Some(Ok(msg)) = socket.recv().await {
        let Message::Text(t) = msg else { continue };
        let v: Value = serde_json::from_str(t.as_str()).unwrap();
        let reply = {
            let mut s = st.lock().unwrap();
            if v["type"] == "end" {
                s.ended = Some("phone");
                None
            } else {
                let rid = v["request_id"].as_str().unwrap().to_owned();
                let seq = s.requests.iter().position(|(id, _)| *id == rid).unwrap() as u32 + 1;
                if s.faults.drop_before_recording == Some(seq) {
                    s.faults.drop_before_recording = None;
                    return; // the answer is lost with the connection
                }
                if s.answers.contains_key(&rid) {
                    Some(json!({"type": "error", "request_id": rid,
                                "error": {"code": "conflict", "message": "already answered"}}))
                } else {
                    s.answers.insert(rid.clone(), vec![v.clone()]);
                    if s.faults.drop_before_ack == Some(seq) {
                        s.faults.drop_before_ack = None;
                        return; // recorded, but the ack is lost
                    }
                    let status = if v["type"] == "sign_reject" {
                        "rejected"
                    } else {
                        "approved"
                    };
                    if s.answers.len() == s.requests.len() {
                        s.ended = Some("limit");
                    }
                    Some(json!({"type": "ack", "request_id": rid, "status": status}))
                }
            }
        };
        if let Some(r) = reply {
            if socket.send(text(r)).await.is_err() {
                return;
            }
        }
        let ended = st.lock().unwrap().ended;
        if let Some(by) = ended {
            let frame = json!({"type": "ended", "by": by, "at": "2030-01-01T00:00:00.000Z"});
            let _ = socket.send(text(frame)).await;
            let _ = socket.send(Message::Close(None)).await;
            return;
        }
    }
}

fn grant() -> PhoneConversation {
    PhoneConversation {
        id: "c1".into(),
        phone_token: TOKEN.into(),
        expires_at: "2030-01-01T00:00:00.000Z".into(),
    }
}

fn fast(socket: ConversationSocket) -> ConversationSocket {
    socket
        .with_reconnect(Reconnect {
            attempts: 5,
            initial_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
        })
        .with_timeouts(Duration::from_secs(5), Duration::from_secs(5))
}

#[tokio::test]
async fn auto_confirm_survives_lost_answers_and_lost_acks() {
    let fx = Fixture::new();
    let faults = Faults {
        drop_before_recording: Some(2),
        drop_before_ack: Some(4),
    };
    let (base, st) = start(6, faults).await;
    let mut socket = fast(ConversationSocket::connect(&base, &grant()).await.unwrap());
    let mut seen = Vec::new();
    let summary = socket
        .run_auto_confirm(&fx.identity, |r, outcome| {
            seen.push((r.seq, outcome.clone()));
            ControlFlow::Continue(())
        })
        .await
        .unwrap();
    assert_eq!(summary.ended.by, EndedBy::Limit.as_str());
    assert_eq!(summary.reconnects, 2);
    let approved = Outcome::Approved {
        auto_confirmed: true,
    };
    assert_eq!(
        seen,
        vec![
            (1, approved.clone()),
            (2, approved.clone()),
            (3, approved.clone()),
            // Recorded before the connection dropped: the retry meets `conflict`.
            (4, Outcome::AnsweredBeforeReconnect),
            (5, approved.clone()),
            (6, approved),
        ],
        "each request handed out once, in order"
    );
    let s = st.lock().unwrap();
    assert_eq!(s.connections, 3);
    for (id, tbs) in &s.requests {
        let answers = &s.answers[id];
        assert_eq!(answers.len(), 1, "{id} answered once");
        let a = &answers[0];
        assert_eq!(a["type"], "sign_response");
        assert_eq!(a["auto_confirmed"], true);
        let sig = STANDARD
            .decode(a["signature_b64"].as_str().unwrap())
            .unwrap();
        bzt_devca::verify_der(
            &bzt_devca::cert_verifying_key(fx.identity.certificate()).unwrap(),
            tbs,
            &sig,
        )
        .unwrap_or_else(|_| panic!("the signature for {id} is over its own bytes"));
    }
}

#[tokio::test]
async fn decisions_reject_and_end() {
    let fx = Fixture::new();
    let (base, st) = start(5, Faults::default()).await;
    let mut socket = fast(ConversationSocket::connect(&base, &grant()).await.unwrap());
    let summary = socket
        .run(
            &fx.identity,
            |r| {
                let seq = r.seq;
                async move {
                    match seq {
                        1 => Decision::Approve {
                            auto_confirmed: false,
                        },
                        2 => Decision::Reject("金额不符".into()),
                        _ => Decision::End,
                    }
                }
            },
            |_, _| ControlFlow::Continue(()),
        )
        .await
        .unwrap();
    assert_eq!(summary.ended.by, EndedBy::Phone.as_str());
    assert_eq!((summary.approved, summary.rejected), (1, 1));
    let s = st.lock().unwrap();
    assert_eq!(s.answers["r1"][0]["auto_confirmed"], false);
    assert_eq!(
        s.answers["r2"][0],
        json!({"type": "sign_reject", "request_id": "r2", "reason": "金额不符"})
    );
    assert!(
        !s.answers.contains_key("r3"),
        "r3 was left to end with the conversation"
    );
}

#[tokio::test]
async fn on_answered_can_stop_after_n_and_a_reconnect_skips_what_was_handed_out() {
    let fx = Fixture::new();
    let (base, _st) = start(4, Faults::default()).await;
    let mut socket = fast(ConversationSocket::connect(&base, &grant()).await.unwrap());
    let first = socket.next_request().await.unwrap().unwrap();
    assert_eq!(first.request_id, "r1");
    // The double sends r1..r4 again on the new connection; r1 is not handed out twice.
    socket.reconnect().await.unwrap();
    let second = socket.next_request().await.unwrap().unwrap();
    assert_eq!(second.request_id, "r2");
    // A request handed out before the reconnect can still be answered.
    socket.approve(&first, &fx.identity, false).await.unwrap();
    let mut n = 0;
    let summary = socket
        .run_auto_confirm(&fx.identity, |_, _| {
            n += 1;
            if n == 1 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .await
        .unwrap();
    // r2 was handed out already and is the caller's; run answers r3, then stops with `end`.
    assert_eq!(summary.approved, 1);
    assert_eq!(summary.ended.by, EndedBy::Phone.as_str());
    assert_eq!(
        socket.ended().map(|e| e.by.as_str()),
        Some(EndedBy::Phone.as_str())
    );
    assert_eq!(socket.next_request().await.unwrap(), None);
}

#[tokio::test]
async fn a_refused_upgrade_is_the_brokers_error() {
    let (base, _st) = start(1, Faults::default()).await;
    let wrong = PhoneConversation {
        phone_token: "nope".into(),
        ..grant()
    };
    match ConversationSocket::connect(&base, &wrong).await {
        Err(ConversationError::Broker(b)) => {
            assert_eq!((b.status, b.code.as_str()), (401, "unauthorized"));
        }
        other => panic!("expected the broker's 401, got {other:?}"),
    }
    let err = ConversationSocket::connect("ftp://x", &grant())
        .await
        .unwrap_err();
    assert!(matches!(err, ConversationError::Url(_)), "{err:?}");
}
