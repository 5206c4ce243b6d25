//! Phone API: claim the QR, then complete (approve or reject).

use super::rp::decode_b64;
use super::{bearer, client_ip, openapi, ApiJson, AppState};
use crate::broker::Completion;
use crate::error::ApiError;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::HeaderMap;
use axum::Json;
use bzt_core::session::Device;
use bzt_core::{codec, Kind, Secret};
use bzt_wire::{
    AppView, ClaimRequest, ClaimResponse, ClaimedSession, CompleteRequest, CompleteResponse,
    ErrorBody, OpeningWindow, PhoneGrant, RequesterView, SealAsk,
};
use std::net::SocketAddr;

const MAX_DEVICE_FIELD: usize = 200;
const MAX_REASON: usize = 500;

/// Reads a claim body as the endpoint does (JSON, device fields, the QR
/// text's form): the id it names and the body. Public for the fuzz targets.
pub fn read_claim_body(bytes: &[u8]) -> Result<(bzt_core::SessionId, ClaimRequest), ApiError> {
    let body: ClaimRequest = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid(format!("invalid claim body: {e}")))?;
    let id = check_claim(&body)?;
    Ok((id, body))
}

/// The checks made before the broker is asked; the session id named.
fn check_claim(body: &ClaimRequest) -> Result<bzt_core::SessionId, ApiError> {
    {
        let d = &body.device;
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
        let (id, _) = crate::broker::parse_qr_text(&body.qr_text)?;
        Ok(id)
    }
}

/// The phone proves possession of the claim secret by sending the whole QR
/// text. One-time: the session moves to `scanned` and the answer carries the
/// phone token for `complete`. A wrong secret answers `404`, exactly as an
/// unknown session does; a superseded secret of a rotating QR code still works
/// for 3 s. Rate limited per client IP (`limits.claims_per_ip_per_minute`)
/// and per QR code (`limits.failed_claims_per_session_per_minute` failed
/// claims of one session id, then `429` until the minute is over).
#[utoipa::path(
    post,
    path = "/v1/claim",
    tag = "phone",
    operation_id = "claimSession",
    summary = "Claim the session of a scanned QR code.",
    request_body = ClaimRequest,
    responses(
        (status = 200, description = "Claimed.", body = ClaimResponse),
        (status = 400, response = openapi::BadRequest),
        (status = 404, response = openapi::NotFound),
        (status = 409, description = "`already_claimed`: another phone claimed it; `conflict`: the session is cancelled or otherwise terminal.", body = ErrorBody),
        (status = 410, response = openapi::Expired),
        (status = 413, response = openapi::PayloadTooLarge),
        (status = 429, response = openapi::RateLimited),
        (status = 503, response = openapi::Unavailable),
    ),
    security(())
)]
pub async fn claim(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ClaimRequest>,
) -> Result<Json<ClaimResponse>, ApiError> {
    state.limits.claim(client_ip(&state, &headers, peer))?;
    // Per session id (not per address: CGNAT puts a province behind a few):
    // a QR code's failed claims are limited, so its secret cannot be ground down.
    let id = check_claim(&body)?;
    state.limits.claim_of(&id)?;
    let device = Device {
        id: body.device.id,
        name: body.device.name,
    };
    let claimed = match state.broker.claim(&body.qr_text, device).await {
        Ok(c) => c,
        Err(e) => {
            if e.code == bzt_core::ErrorCode::NotFound {
                state.limits.claim_failed(&id).await;
            }
            return Err(e);
        }
    };
    let s = &claimed.session;
    let mut answer = ClaimResponse {
        session: ClaimedSession {
            id: s.id.to_string(),
            kind: s.kind.as_str().to_owned(),
            display: s.display.view(),
            app: AppView {
                id: claimed.app.id.clone(),
                name: claimed.app.name.clone(),
            },
            requester: s.requester.as_ref().map(|r| RequesterView {
                ip: r.ip.clone(),
                user_agent: r.user_agent.clone(),
                origin: r.origin.clone(),
            }),
            expires_at: s.expires_at.to_rfc3339(),
            accept: s.accept.clone(),
        },
        tbs_b64: codec::encode(&s.tbs),
        phone_token: claimed.phone_token.expose().to_owned(),
        match_choices: claimed.match_choices.map(|c| c.to_vec()),
        conversation_allowed: None,
        seal: None,
        envelope_header_b64: None,
        reply_key: None,
        opening: None,
    };
    match s.kind {
        Kind::Sign => {
            answer.conversation_allowed = Some(s.conversation_policy.is_some());
            answer.seal = s.seal.as_ref().map(|seal| SealAsk {
                data_hash_b64: codec::encode(&seal.data_hash),
                property_info: seal.property_info.clone(),
            });
        }
        Kind::Decrypt => {
            answer.envelope_header_b64 = s.envelope_header.as_deref().map(codec::encode);
            answer.reply_key = s.reply_key.clone();
            answer.opening = s.opening.as_ref().map(|o| OpeningWindow {
                not_before: o.not_before.to_rfc3339(),
                not_after: o.not_after.to_rfc3339(),
            });
        }
        _ => {}
    }
    Ok(Json(answer))
}

/// What a completion body asks for, once read.
pub enum PhoneAnswer {
    Reject(String),
    Approve(Box<Completion>),
}

/// Reads a completion body as the endpoint does (JSON, field combinations,
/// base64). Public for the fuzz targets.
pub fn read_complete_body(bytes: &[u8]) -> Result<PhoneAnswer, ApiError> {
    let body: CompleteRequest = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid(format!("invalid completion body: {e}")))?;
    into_answer(body)
}

/// The checks of a completion body that need no session: field combinations, base64.
fn into_answer(body: CompleteRequest) -> Result<PhoneAnswer, ApiError> {
    {
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

/// Either an approval or a rejection (`reject`); a body with both answers
/// `400`. Checked in this order: the body parses (`400`); the phone token
/// (`401`); the state is `scanned` and not expired (`409`, `410`); with number
/// matching, `match_code` is present (`400`) and right (a wrong pick answers
/// `403` and moves the session to `rejected`, `match_failed`); kind extras
/// (`400`); the certificate chains to an accepted trust domain, is valid, not
/// revoked and matches `expect_cert` (`422 untrusted_certificate`); the SM2
/// signature (SM3, ID `1234567812345678`) over `tbs` verifies (`422
/// bad_signature`). Each `422` leaves the session `scanned`; the third moves
/// it to `failed` (`too_many_bad_completions`).
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/complete",
    tag = "phone",
    operation_id = "completeSession",
    summary = "Approve or reject a claimed session.",
    params(("id" = String, Path, description = "The session id.")),
    request_body = CompleteRequest,
    responses(
        (status = 200, description = "The session is now `approved` or `rejected`.", body = CompleteResponse),
        (status = 400, response = openapi::BadRequest),
        (status = 401, response = openapi::Unauthorized),
        (status = 403, description = "`forbidden`: the number picked does not match (the session is now `rejected`, `match_failed`); or, for a `decrypt` session with an `opening` window, the completion came before `not_before` or at or after `not_after` (the session stays `scanned`, not counted).", body = ErrorBody),
        (status = 404, response = openapi::NotFound),
        (status = 409, description = "`conflict`: the session is not `scanned` (already terminal).", body = ErrorBody),
        (status = 410, response = openapi::Expired),
        (status = 413, response = openapi::PayloadTooLarge),
        (status = 422, description = "`untrusted_certificate`, `bad_signature` or `seal_not_acceptable`; the third one moves the session to `failed`.", body = ErrorBody),
        (status = 503, response = openapi::Unavailable),
    ),
    security(("phoneToken" = []))
)]
pub async fn complete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CompleteRequest>,
) -> Result<Json<CompleteResponse>, ApiError> {
    let token = bearer(&headers)
        .and_then(Secret::from_presented)
        .ok_or_else(|| {
            ApiError::unauthorized("send the phone token as `Authorization: Bearer <phone_token>`")
        })?;

    let answer = into_answer(body)?;
    let id = super::session_id(&id)?;
    let completion = match answer {
        PhoneAnswer::Reject(reason) => {
            let session = state.broker.reject(&id, &token, reason).await?;
            return Ok(Json(CompleteResponse {
                id: session.id.to_string(),
                status: session.status.as_str().to_owned(),
                version: session.version,
                conversation: None,
            }));
        }
        PhoneAnswer::Approve(completion) => *completion,
    };
    let (session, conversation) = state.broker.complete(&id, &token, completion).await?;
    Ok(Json(CompleteResponse {
        id: session.id.to_string(),
        status: session.status.as_str().to_owned(),
        version: session.version,
        conversation: conversation.map(|c| PhoneGrant {
            id: c.grant.id.to_string(),
            phone_token: c.phone_token.expose().to_owned(),
            expires_at: c.grant.expires_at.to_rfc3339(),
        }),
    }))
}
