//! Phone API: claim the QR, then complete (approve or reject).

use super::rp::decode_b64;
use super::{bearer, client_ip, ApiJson, AppState};
use crate::broker::Completion;
use crate::error::ApiError;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::HeaderMap;
use axum::Json;
use bzt_core::session::Device;
use bzt_core::{codec, Kind, Secret};
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::SocketAddr;

const MAX_DEVICE_FIELD: usize = 200;
const MAX_REASON: usize = 500;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimBody {
    qr_text: String,
    device: Device,
}

/// Reads a claim body as the endpoint does (JSON, device fields, the QR
/// text's form): the id it names and the body. Public for the fuzz targets.
pub fn read_claim_body(bytes: &[u8]) -> Result<(bzt_core::SessionId, ClaimBody), ApiError> {
    let body: ClaimBody = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid(format!("invalid claim body: {e}")))?;
    let id = body.check()?;
    Ok((id, body))
}

impl ClaimBody {
    /// The checks made before the broker is asked; the session id named.
    fn check(&self) -> Result<bzt_core::SessionId, ApiError> {
        let d = &self.device;
        if d.id.trim().is_empty() || d.name.trim().is_empty() {
            return Err(ApiError::invalid(
                "`device.id` and `device.name` must not be empty",
            ));
        }
        if d.id.chars().count() > MAX_DEVICE_FIELD || d.name.chars().count() > MAX_DEVICE_FIELD {
            return Err(ApiError::invalid(format!(
                "`device.id` and `device.name` hold at most {MAX_DEVICE_FIELD} characters"
            )));
        }
        use bzt_core::text::{check_display_text, Lines};
        check_display_text("device.id", &d.id, Lines::One)?;
        check_display_text("device.name", &d.name, Lines::One)?;
        let (id, _) = crate::broker::parse_qr_text(&self.qr_text)?;
        Ok(id)
    }
}

pub async fn claim(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ClaimBody>,
) -> Result<Json<Value>, ApiError> {
    state.limits.claim(client_ip(&state, &headers, peer))?;
    // Per session id (not per address: CGNAT puts a province behind a few):
    // a QR code's failed claims are limited, so its secret cannot be ground down.
    let id = body.check()?;
    state.limits.claim_of(&id)?;
    let claimed = match state.broker.claim(&body.qr_text, body.device).await {
        Ok(c) => c,
        Err(e) => {
            if e.code == bzt_core::ErrorCode::NotFound {
                state.limits.claim_failed(&id).await;
            }
            return Err(e);
        }
    };
    let s = &claimed.session;
    let mut answer = json!({
        "session": {
            "id": s.id,
            "kind": s.kind,
            "display": s.display,
            "app": { "id": claimed.app.id, "name": claimed.app.name },
            "requester": s.requester,
            "expires_at": s.expires_at,
            "accept": s.accept,
        },
        "tbs_b64": codec::encode(&s.tbs),
        "phone_token": claimed.phone_token.expose(),
    });
    if let Some(choices) = claimed.match_choices {
        answer["match_choices"] = json!(choices);
    }
    match s.kind {
        Kind::Sign => {
            answer["conversation_allowed"] = json!(s.conversation_policy.is_some());
            if let Some(seal) = &s.seal {
                answer["seal"] = json!({
                    "data_hash_b64": codec::encode(&seal.data_hash),
                    "property_info": seal.property_info,
                });
            }
        }
        Kind::Decrypt => {
            answer["envelope_header_b64"] = json!(s.envelope_header.as_deref().map(codec::encode));
            answer["reply_key"] = json!(s.reply_key);
            if let Some(opening) = &s.opening {
                answer["opening"] = json!(opening);
            }
        }
        _ => {}
    }
    Ok(Json(answer))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompleteBody {
    certificate_pem: Option<String>,
    chain_pem: Option<Vec<String>>,
    signature_b64: Option<String>,
    seal_signature_b64: Option<String>,
    recipients_pem: Option<Vec<String>>,
    wrapped_key_b64: Option<String>,
    open_conversation: Option<bool>,
    match_code: Option<String>,
    reject: Option<RejectBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RejectBody {
    reason: String,
}

/// What a completion body asks for, once read.
pub enum PhoneAnswer {
    Reject(String),
    Approve(Box<Completion>),
}

/// Reads a completion body as the endpoint does (JSON, field combinations,
/// base64). Public for the fuzz targets.
pub fn read_complete_body(bytes: &[u8]) -> Result<PhoneAnswer, ApiError> {
    let body: CompleteBody = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid(format!("invalid completion body: {e}")))?;
    body.into_answer()
}

impl CompleteBody {
    fn into_answer(self) -> Result<PhoneAnswer, ApiError> {
        let body = self;
        if let Some(reject) = body.reject {
            let approving = body.certificate_pem.is_some()
                || body.signature_b64.is_some()
                || body.seal_signature_b64.is_some()
                || body.recipients_pem.is_some()
                || body.wrapped_key_b64.is_some()
                || body.open_conversation.is_some();
            if approving {
                return Err(ApiError::invalid(
                    "send either `reject` or an approval, not both",
                ));
            }
            let reason = reject.reason.trim().to_owned();
            if reason.is_empty() || reason.chars().count() > MAX_REASON {
                return Err(ApiError::invalid(format!(
                    "`reject.reason` must hold 1..{MAX_REASON} characters"
                )));
            }
            return Ok(PhoneAnswer::Reject(reason));
        }
        let certificate_pem = body
            .certificate_pem
            .ok_or_else(|| ApiError::invalid("`certificate_pem` is required (or send `reject`)"))?;
        let signature = decode_b64("signature_b64", body.signature_b64)?;
        let seal_signature = decode_b64("seal_signature_b64", body.seal_signature_b64)?;
        if signature.is_none() && seal_signature.is_none() {
            return Err(ApiError::invalid(
                "`signature_b64` is required (`seal_signature_b64` for a seal session)",
            ));
        }
        Ok(PhoneAnswer::Approve(Box::new(Completion {
            certificate_pem,
            chain_pem: body.chain_pem.unwrap_or_default(),
            signature: signature.unwrap_or_default(),
            seal_signature,
            recipients_pem: body.recipients_pem,
            wrapped_key: decode_b64("wrapped_key_b64", body.wrapped_key_b64)?,
            open_conversation: body.open_conversation.unwrap_or(false),
            match_code: body.match_code,
        })))
    }
}

pub async fn complete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CompleteBody>,
) -> Result<Json<Value>, ApiError> {
    let token = bearer(&headers)
        .and_then(Secret::from_presented)
        .ok_or_else(|| {
            ApiError::unauthorized("send the phone token as `Authorization: Bearer <phone_token>`")
        })?;

    let answer = body.into_answer()?;
    let id = super::session_id(&id)?;
    let completion = match answer {
        PhoneAnswer::Reject(reason) => {
            let session = state.broker.reject(&id, &token, reason).await?;
            return Ok(Json(
                json!({ "id": session.id, "status": session.status, "version": session.version }),
            ));
        }
        PhoneAnswer::Approve(completion) => *completion,
    };
    let (session, conversation) = state.broker.complete(&id, &token, completion).await?;
    let mut answer =
        json!({ "id": session.id, "status": session.status, "version": session.version });
    if let Some(c) = conversation {
        answer["conversation"] = json!({
            "id": c.grant.id,
            "phone_token": c.phone_token.expose(),
            "expires_at": c.grant.expires_at,
        });
    }
    Ok(Json(answer))
}
