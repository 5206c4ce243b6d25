//! Conversation API (会话签章): the requester's HTTP calls and socket, and
//! the phone's socket.
//!
//! Like the browser's session socket, both sockets derive what to send from
//! stored state after every change: the phone gets every pending request it
//! has not been sent on this connection (all of them after a reconnect, in
//! order); the requester gets every finished request it has not been told
//! about on this connection (all of them after a reconnect). Both get
//! `ended` and a close 1000 when the conversation ends.

use super::rp::{authenticate, decode_b64};
use super::ws_frames::{self, close, Wake};
use super::{answers, ApiJson, AppState, TokenQuery};
use crate::error::ApiError;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bzt_core::conversation::{Conversation, EndedBy};
use bzt_core::secret::{ConversationId, RequestId};
use bzt_wire::{
    Ack, ConversationRequestAccepted, ConversationRequestInput, ConversationRequestView,
    ConversationView, Ended, ErrorBody, ErrorDetail, FrameError, PhoneMessage, PhoneServerFrame,
    RequesterFrame,
};
use serde::Deserialize;
use std::collections::HashSet;
use std::time::Duration;

use super::browser::PING_INTERVAL;

/// Largest message a phone may send on its conversation socket: a seal answer embeds the seal
/// and its picture, so it gets the room a seal completion has (256 KiB) plus its JSON.
const PHONE_MESSAGE_LIMIT: usize = 320 * 1024;

/// Read buffer of a conversation socket: phones and requesters send a few
/// frames of a few hundred bytes (larger ones still arrive: the buffer
/// grows), and the library's 128 KiB default would dominate an idle
/// socket's memory (see [`super::browser::BROWSER_SOCKET_BUFFER`]).
const SOCKET_BUFFER: usize = 4 * 1024;

/// The requester's socket only receives; anything larger than this is closed with 1009.
const REQUESTER_MESSAGE_LIMIT: usize = 4096;

/// Answers the conversation view. What is due is applied first (request
/// TTLs, `idle_s`, `max_s`). Another app's conversation answers `404`; an
/// ended conversation stays readable for 10 minutes.
#[utoipa::path(
    get,
    path = "/v1/conversations/{id}",
    tag = "conversation",
    operation_id = "getConversation",
    summary = "Read a conversation (会话签章).",
    params(("id" = String, Path, description = "The conversation id (`conversation.id`).")),
    responses(
        (status = 200, description = "The conversation view.", body = ConversationView),
        answers::ConversationRefusals,
    ),
    security(("rpApiKey" = []))
)]
pub async fn get_conversation(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<ConversationView>, ApiError> {
    let app = authenticate(&state, &headers)?;
    let id = super::conversation_id(&id)?;
    let c = state.broker.conversation_for_app(&app.id, &id).await?;
    Ok(Json(c.view()))
}

#[utoipa::path(
    delete,
    path = "/v1/conversations/{id}",
    tag = "conversation",
    operation_id = "endConversation",
    summary = "End a conversation.",
    description = "Ends the conversation (`ended_by: requester`) and answers its view. Requests still pending become `expired` (reason `conversation_ended`); both sockets receive their last `request_result` frames, then `ended`, then a close `1000`. Authenticated with the API key, or with the requester token in `?t=`; when `t` is present it is used and the API key is ignored.",
    params(("id" = String, Path, description = "The conversation id (`conversation.id`).")),
    responses(
        (status = 200, description = "Ended; the conversation view.", body = ConversationView),
        (status = 410, response = answers::ConversationEnded),
        answers::ConversationRefusals,
    ),
    security(("rpApiKey" = []), ("requesterToken" = []))
)]
/// Ends the conversation: API key, or the requester token in `?t=`.
pub async fn end_conversation(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<TokenQuery>,
) -> Result<Json<ConversationView>, ApiError> {
    let id = super::conversation_id(&id)?;
    let c = match q.t.as_deref() {
        Some(t) => {
            state
                .broker
                .conversation_for_requester(&id, Some(t))
                .await?
        }
        None => {
            let app = authenticate(&state, &headers)?;
            state.broker.conversation_for_app(&app.id, &id).await?
        }
    };
    let ended = state
        .broker
        .end_conversation(&c.id, EndedBy::Requester)
        .await?;
    Ok(Json(ended.view()))
}

/// Queues a signing request for the phone and answers `202` at once; the
/// outcome arrives on the requester socket or by polling the request. It
/// expires 60 s after it was posted. The opening certificate is checked again
/// first: when it is no longer acceptable the conversation ends
/// (`ended_by: certificate`) and this answers `410`.
#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/requests",
    tag = "conversation",
    operation_id = "createConversationRequest",
    summary = "Ask the phone for one more signature.",
    params(("id" = String, Path, description = "The conversation id (`conversation.id`).")),
    request_body = ConversationRequestInput,
    responses(
        (status = 202, description = "Queued for the phone.", body = ConversationRequestAccepted),
        (status = 400, response = answers::BadRequest),
        (status = 409, description = "`conflict`: `max_requests` requests have been posted and some are still unanswered, or 32 requests already wait for the phone.", body = ErrorBody),
        (status = 410, response = answers::ConversationEnded),
        (status = 413, description = "`payload_too_large`: the body is over 256 KiB, or `tbs_b64` decodes to more than 64 KiB.", body = ErrorBody),
        answers::ConversationRefusals,
    ),
    security(("rpApiKey" = []))
)]
pub async fn create_request(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ConversationRequestInput>,
) -> Result<Response, ApiError> {
    let app = authenticate(&state, &headers)?;
    let tbs = decode_b64("tbs_b64", body.tbs_b64)?;
    let seal = body.seal.map(super::rp::seal_request).transpose()?;
    let id = super::conversation_id(&id)?;
    let r = state
        .broker
        .add_request(
            &app.id,
            &id,
            super::rp::display_text(body.display),
            tbs,
            seal,
        )
        .await?;
    let accepted = ConversationRequestAccepted {
        request_id: r.id.to_string(),
        expires_at: r.expires_at.to_rfc3339(),
    };
    Ok((StatusCode::ACCEPTED, Json(accepted)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitQuery {
    wait: Option<String>,
}

/// Answers the request's view. With `wait=N`, holds the answer up to `N`
/// seconds while the request is `pending`. A request past its TTL reads
/// `expired`, timer or not.
#[utoipa::path(
    get,
    path = "/v1/conversations/{id}/requests/{rid}",
    tag = "conversation",
    operation_id = "getConversationRequest",
    summary = "Read a signing request (optionally long-polling).",
    params(
        ("id" = String, Path, description = "The conversation id (`conversation.id`)."),
        ("rid" = String, Path, description = "The request id (`request_id` of the `202` answer)."),
        ("wait" = Option<u32>, Query, minimum = 0, maximum = 30, description = "Long-poll for at most this many seconds (a whole number, 0..30; otherwise `400`). Default 0."),
    ),
    responses(
        (status = 200, description = "The request view.", body = ConversationRequestView),
        (status = 400, response = answers::BadRequest),
        (status = 401, response = answers::Unauthorized),
        (status = 404, description = "`not_found`: no such conversation (or not this app's, or purged), or no such request in it.", body = ErrorBody),
        (status = 503, response = answers::Unavailable),
    ),
    security(("rpApiKey" = []))
)]
pub async fn get_request(
    State(state): State<AppState>,
    Path((id, rid)): Path<(String, String)>,
    headers: HeaderMap,
    query: Result<Query<WaitQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ConversationRequestView>, ApiError> {
    let app = authenticate(&state, &headers)?;
    let Query(q) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    let wait = super::rp::parse_wait(q.wait)?.unwrap_or(0);
    let id = super::conversation_id(&id)?;
    let r = state
        .broker
        .wait_request(&app.id, &id, &rid, Duration::from_secs(wait))
        .await?;
    Ok(Json(r.result_view()))
}

fn upgrade_or_400(
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<WebSocketUpgrade, ApiError> {
    upgrade
        .map_err(|e| ApiError::invalid(format!("expected a WebSocket upgrade: {}", e.body_text())))
}

async fn send_json(socket: &mut WebSocket, v: &impl serde::Serialize) -> Result<(), axum::Error> {
    let text = serde_json::to_string(v).unwrap_or_default();
    socket.send(Message::Text(text.into())).await
}

/// `ended` (the same on both sockets), once the conversation has ended.
fn ended(c: &Conversation) -> Option<Ended> {
    c.ended.map(|(by, at)| Ended {
        by: by.as_str().to_owned(),
        at: Some(at.to_rfc3339()),
    })
}

/// `error` (the same on both sockets).
fn frame_error(e: &ApiError, request_id: Option<&str>) -> FrameError {
    FrameError {
        error: ErrorDetail {
            code: e.code.as_str().to_owned(),
            message: e.message.clone(),
        },
        request_id: request_id.map(str::to_owned),
    }
}

// ---- Requester socket ------------------------------------------------------

/// The requester's socket: results of the conversation's requests.
#[utoipa::path(
    get,
    path = "/v1/conversations/{id}/ws",
    tag = "conversation",
    operation_id = "conversationRequesterSocket",
    summary = "The requester's WebSocket (results of the conversation's requests).",
    description = "Upgrades to a WebSocket, authenticated with the requester token in `?t=` (the phone token does not open it); checked before the upgrade. Server → requester (`RequesterFrame`): `request_result` once per finished request on each connection, in request order (deduplicate by `request_id`); `ended` when the conversation ends, after the last `request_result`, then close `1000`; `error` (`invalid_request`) answering any text frame: this socket only receives. The server pings every 25 s; frames over 4096 bytes close the socket; close `1011` when the conversation cannot be read; reconnect on anything but `1000`.",
    params(("id" = String, Path, description = "The conversation id (`conversation.id`)."), ("Upgrade" = String, Header, description = "`websocket`.")),
    responses(
        (status = 101, description = "Switching Protocols; frames as described."),
        (status = 403, response = answers::ForbiddenOrigin),
        answers::ConversationRefusals,
        answers::UpgradeRefusals,
    ),
    security(("requesterToken" = [])),
    extensions(("x-websocket" = json!({
        "server-messages": { "$ref": "#/components/schemas/RequesterFrame" },
        "close-codes": { "1000": "After `ended`.", "1011": "The conversation cannot be read (store unavailable, record purged); reconnect." }
    })))
)]
pub async fn requester_socket(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let id = super::conversation_id(&id)?;
    let c = state
        .broker
        .conversation_for_requester(&id, q.t.as_deref())
        .await?;
    // The requester's socket is opened by the bid tool's page: same origin rule as sessions.
    super::browser::check_app_origin(&state, &c.app_id, &headers)?;
    let upgrade = upgrade_or_400(upgrade)?;
    Ok(upgrade
        .max_message_size(REQUESTER_MESSAGE_LIMIT)
        .max_frame_size(REQUESTER_MESSAGE_LIMIT)
        .read_buffer_size(SOCKET_BUFFER)
        .write_buffer_size(0)
        .on_upgrade(move |mut socket| async move {
            let _open = state.drain.socket();
            let _ = requester_loop(&mut socket, &state, &c.id).await;
        }))
}

async fn requester_loop(
    socket: &mut WebSocket,
    state: &AppState,
    id: &ConversationId,
) -> Result<(), axum::Error> {
    let broker = &state.broker;
    let Ok(Some(mut changes)) = broker.watch_conversation(id).await else {
        return close(socket, 1011, "conversation unavailable").await;
    };
    let mut reported: HashSet<RequestId> = HashSet::new();
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
    loop {
        let seen = *changes.borrow_and_update();
        if let Ok(Some(c)) = broker.conversation_at(id, seen).await {
            for r in c.requests.iter().filter(|r| r.is_finished()) {
                if reported.insert(r.id.clone()) {
                    let frame = RequesterFrame::RequestResult(Box::new(r.result_view()));
                    send_json(socket, &frame).await?;
                }
            }
            if let Some(frame) = ended(&c).map(RequesterFrame::Ended) {
                send_json(socket, &frame).await?;
                return close(socket, 1000, "conversation ended").await;
            }
        }
        match ws_frames::next_wake(
            socket,
            &mut changes,
            &mut ping,
            &state.drain,
            REQUESTER_MESSAGE_LIMIT,
            "conversation removed",
        )
        .await
        {
            Wake::Changed | Wake::Idle => {}
            Wake::Text(_) => {
                let e = ApiError::invalid(
                    "this socket only receives; end the conversation with DELETE",
                );
                send_json(socket, &RequesterFrame::Error(frame_error(&e, None))).await?;
            }
            Wake::Done(result) => return result,
        }
    }
}

// ---- Phone socket ------------------------------------------------------------

/// The phone's socket: signing requests in, signatures out.
#[utoipa::path(
    get,
    path = "/v1/conversations/{id}/phone",
    tag = "conversation",
    operation_id = "conversationPhoneSocket",
    summary = "The phone's WebSocket (signing requests in, signatures out).",
    description = "Upgrades to a WebSocket, authenticated with the phone token of the complete answer's `conversation` in `?t=`. Server → phone (`PhoneServerFrame`): `sign_request` for every pending request in `seq` order (sent again after a reconnect: deduplicate by `request_id`); `ack` when an answer was accepted; `error` when an answer or frame was refused (codes `conflict`, `expired`, `not_found`, `bad_signature`, `untrusted_certificate`, `invalid_request`, `unavailable`), with `request_id` when the frame named one; `ended` when the conversation ends, then close `1000`. Phone → server (`PhoneMessage`): `sign_response`, `sign_reject` (at most 500 characters of `reason` are kept) or `end`. Each `sign_response` and `sign_reject` gets exactly one `ack` or `error`, and is written to the audit trail before it is acknowledged. Frames over 320 KiB close the socket.",
    params(("id" = String, Path, description = "The conversation id (`conversation.id`)."), ("Upgrade" = String, Header, description = "`websocket`.")),
    responses(
        (status = 101, description = "Switching Protocols; frames as described."),
        answers::ConversationRefusals,
        answers::UpgradeRefusals,
    ),
    security(("conversationPhoneToken" = [])),
    extensions(("x-websocket" = json!({
        "server-messages": { "$ref": "#/components/schemas/PhoneServerFrame" },
        "client-messages": { "$ref": "#/components/schemas/PhoneMessage" },
        "close-codes": { "1000": "After `ended`.", "1011": "The conversation cannot be read (store unavailable, record purged); reconnect." }
    })))
)]
pub async fn phone_socket(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<TokenQuery>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let id = super::conversation_id(&id)?;
    let c = state
        .broker
        .conversation_for_phone(&id, q.t.as_deref())
        .await?;
    let upgrade = upgrade_or_400(upgrade)?;
    Ok(upgrade
        // A response carries a DER signature, or a whole SES_Signature with its seal picture
        // (as large as a session completion may be); requests come the other way.
        .max_message_size(PHONE_MESSAGE_LIMIT)
        .max_frame_size(PHONE_MESSAGE_LIMIT)
        .read_buffer_size(SOCKET_BUFFER)
        .write_buffer_size(0)
        .on_upgrade(move |mut socket| async move {
            let gauge = metrics::gauge!("bzt_phone_sockets");
            gauge.increment(1.0);
            let _open = state.drain.socket();
            let _ = phone_loop(&mut socket, &state, &c.id).await;
            gauge.decrement(1.0);
        }))
}

async fn phone_loop(
    socket: &mut WebSocket,
    state: &AppState,
    id: &ConversationId,
) -> Result<(), axum::Error> {
    let broker = &state.broker;
    let Ok(Some(mut changes)) = broker.watch_conversation(id).await else {
        return close(socket, 1011, "conversation unavailable").await;
    };
    // Highest request seq sent on this connection; a reconnect starts at 0,
    // so pending requests are sent again (the phone dedupes by request_id,
    // and the broker accepts one answer per request).
    let mut sent_seq = 0u32;
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
    loop {
        let seen = *changes.borrow_and_update();
        if let Ok(Some(c)) = broker.conversation_at(id, seen).await {
            if let Some(frame) = ended(&c).map(PhoneServerFrame::Ended) {
                send_json(socket, &frame).await?;
                return close(socket, 1000, "conversation ended").await;
            }
            let already = sent_seq;
            for r in c
                .requests
                .iter()
                .filter(|r| !r.is_finished() && r.seq > already)
            {
                send_json(socket, &PhoneServerFrame::SignRequest(r.phone_frame())).await?;
                sent_seq = r.seq;
            }
        }
        match ws_frames::next_wake(
            socket,
            &mut changes,
            &mut ping,
            &state.drain,
            PHONE_MESSAGE_LIMIT,
            "conversation removed",
        )
        .await
        {
            Wake::Changed | Wake::Idle => {}
            Wake::Text(text) => handle_phone_message(socket, state, id, text.as_str()).await?,
            Wake::Done(result) => return result,
        }
    }
}

/// Acts on one phone frame; answers `ack` or `error` on the socket.
async fn handle_phone_message(
    socket: &mut WebSocket,
    state: &AppState,
    id: &ConversationId,
    text: &str,
) -> Result<(), axum::Error> {
    let broker = &state.broker;
    let message: PhoneMessage = match serde_json::from_str(text) {
        Ok(m) => m,
        Err(e) => {
            let err = ApiError::invalid(format!(
                "unknown or malformed message ({e}); send sign_response, sign_reject or end"
            ));
            return send_json(socket, &PhoneServerFrame::Error(frame_error(&err, None))).await;
        }
    };
    let Ok(Some(c)) = broker.conversation_now(id).await else {
        let err = ApiError::new(
            bzt_core::ErrorCode::Unavailable,
            "the conversation cannot be read; retry",
        );
        return send_json(socket, &PhoneServerFrame::Error(frame_error(&err, None))).await;
    };
    let (request_id, result) = match message {
        PhoneMessage::SignResponse {
            request_id,
            signature_b64,
            seal_signature_b64,
            auto_confirmed,
        } => {
            let decoded = decode_b64("signature_b64", signature_b64)
                .and_then(|sig| Ok((sig, decode_b64("seal_signature_b64", seal_signature_b64)?)));
            let result = match decoded {
                Ok((sig, seal_sig)) => broker
                    .respond(&c, &request_id, sig, seal_sig, auto_confirmed)
                    .await
                    .map(|_| "approved"),
                Err(e) => Err(e),
            };
            (Some(request_id), result)
        }
        PhoneMessage::SignReject { request_id, reason } => {
            let reason: String = reason.chars().take(500).collect();
            let result = broker
                .decline(&c, &request_id, reason)
                .await
                .map(|_| "rejected");
            (Some(request_id), result)
        }
        PhoneMessage::End => {
            // The `ended` frame follows through the change notification.
            return match broker.end_conversation(&c.id, EndedBy::Phone).await {
                Ok(_) => Ok(()),
                Err(e) => send_json(socket, &PhoneServerFrame::Error(frame_error(&e, None))).await,
            };
        }
    };
    match result {
        Ok(status) => {
            send_json(
                socket,
                &PhoneServerFrame::Ack(Ack {
                    request_id: request_id.unwrap_or_default(),
                    status: status.to_owned(),
                }),
            )
            .await
        }
        Err(e) => {
            send_json(
                socket,
                &PhoneServerFrame::Error(frame_error(&e, request_id.as_deref())),
            )
            .await
        }
    }
}
