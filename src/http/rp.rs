//! Relying-party backend API: create, read (with long-poll), cancel.

use super::{bearer, browser, openapi, ApiJson, AppState, TokenQuery};
use crate::apps::App;
use crate::error::ApiError;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bzt_core::codec;
use bzt_core::session::{
    CancelledBy, ConversationPolicy, DisplayText, ExpectCert, NewSessionRequest, Opening,
    Requester, SealRequest,
};
use bzt_core::{Session, Timestamp};
use bzt_wire::{CreateSessionRequest, CreateSessionResponse, ErrorBody, SessionView};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// The app whose API key is presented.
pub fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Arc<App>, ApiError> {
    let key = bearer(headers).ok_or_else(|| {
        ApiError::unauthorized("send the app's API key as `Authorization: Bearer <api_key>`")
    })?;
    state
        .broker
        .apps()
        .by_api_key(key)
        .ok_or_else(|| ApiError::unauthorized("the API key is not valid"))
}

/// `seal`: ask for a GB/T 38540 seal signature over the RP's SM3 hash.
pub fn seal_request(seal: bzt_wire::SealInput) -> Result<SealRequest, ApiError> {
    Ok(SealRequest {
        data_hash: decode_b64("seal.data_hash_b64", Some(seal.data_hash_b64))?.unwrap_or_default(),
        property_info: seal.property_info,
    })
}

/// What the phone shows, as the domain has it.
pub fn display_text(d: bzt_wire::DisplayText) -> DisplayText {
    DisplayText {
        title: d.title,
        detail: d.detail,
    }
}

/// The wire's create request as the domain's: `_b64` fields decoded, times
/// parsed, conversation limits defaulted.
fn new_session_request(body: CreateSessionRequest) -> Result<NewSessionRequest, ApiError> {
    let opening = body
        .opening
        .map(|o| {
            let at = |field: &str, v: &str| {
                Timestamp::parse_rfc3339(v).ok_or_else(|| {
                    ApiError::invalid(format!(
                        "`opening.{field}` is not an RFC 3339 time (e.g. 2026-01-01T09:30:00.000Z)"
                    ))
                })
            };
            Ok::<_, ApiError>(Opening {
                not_before: at("not_before", &o.not_before)?,
                not_after: at("not_after", &o.not_after)?,
            })
        })
        .transpose()?;
    Ok(NewSessionRequest {
        kind: Some(body.kind),
        ttl_s: body.ttl_s,
        display: Some(display_text(body.display)),
        accept: body.accept,
        expect_cert: body.expect_cert.map(|e| ExpectCert {
            serial: e.serial,
            issuer: e.issuer,
        }),
        requester: body.requester.map(|r| Requester {
            ip: r.ip,
            user_agent: r.user_agent,
            origin: r.origin,
        }),
        tbs: decode_b64("tbs_b64", body.tbs_b64)?,
        conversation: body.conversation.map(|c| ConversationPolicy {
            max_requests: c
                .max_requests
                .unwrap_or_else(ConversationPolicy::default_max_requests),
            idle_s: c.idle_s.unwrap_or_else(ConversationPolicy::default_idle_s),
            max_s: c.max_s.unwrap_or_else(ConversationPolicy::default_max_s),
        }),
        envelope_header: decode_b64("envelope_header_b64", body.envelope_header_b64)?,
        reply_key: body.reply_key,
        opening,
        webhook_url: body.webhook_url,
        rotate_s: body.rotate_s,
        number_match: body.number_match,
        seal: body.seal.map(seal_request).transpose()?,
    })
}

/// Decodes a `_b64` field, naming it in the error.
pub fn decode_b64(field: &str, value: Option<String>) -> Result<Option<Vec<u8>>, ApiError> {
    value
        .map(|v| {
            codec::decode(&v).map_err(|_| {
                ApiError::invalid(format!(
                    "`{field}` is not valid base64 (standard alphabet, padded)"
                ))
            })
        })
        .transpose()
}

/// Creates a `pending` session with `version` 1 and answers the QR text, the
/// browser token (handed out only here: pass it to the page) and the browser
/// URLs. Kind-specific fields are refused (`400`) for the other kinds. Rate
/// limited per app (`limits.creates_per_app_per_second`).
#[utoipa::path(
    post,
    path = "/v1/sessions",
    tag = "rp",
    operation_id = "createSession",
    summary = "Create a scan session.",
    request_body = CreateSessionRequest,
    responses(
        (status = 201, description = "Created.", body = CreateSessionResponse),
        (status = 400, response = openapi::BadRequest),
        (status = 413, description = "`payload_too_large`: the body is over 256 KiB, or `tbs_b64` decodes to more than 64 KiB.", body = ErrorBody),
        (status = 429, response = openapi::RateLimited),
        openapi::RpRefusals,
    ),
    security(("rpApiKey" = []))
)]
pub async fn create_session(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateSessionRequest>,
) -> Result<Response, ApiError> {
    let app = authenticate(&state, &headers)?;
    state.limits.create(&app.id)?;
    let req = new_session_request(body)?;
    let (session, browser_token) = state.broker.create_session(&app, req).await?;
    let base = &state.broker.public_base_url();
    let ws_base = base
        .replacen("https://", "wss://", 1)
        .replacen("http://", "ws://", 1);
    let t = browser_token.expose();
    let id = &session.id;
    let answer = CreateSessionResponse {
        id: id.to_string(),
        kind: session.kind.as_str().to_owned(),
        status: session.status.as_str().to_owned(),
        version: session.version,
        qr_text: session.qr_text(base),
        browser_token: t.to_owned(),
        ws_url: format!("{ws_base}/v1/sessions/{id}/ws?t={t}"),
        events_url: format!("{base}/v1/sessions/{id}/events?t={t}"),
        qr_svg_url: format!("{base}/v1/sessions/{id}/qr.svg?t={t}"),
        qr_png_url: format!("{base}/v1/sessions/{id}/qr.png?t={t}"),
        created_at: session.created_at.to_rfc3339(),
        expires_at: session.expires_at.to_rfc3339(),
        ttl_s: (session.created_at.millis_until(session.expires_at) / 1000) as u64,
    };
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetQuery {
    wait: Option<String>,
    version: Option<String>,
}

/// Answers the session view. With `wait`, holds the answer up to `wait`
/// seconds while the session's version equals `version` (without `version`:
/// the version seen when the request arrived) and answers at once when it
/// differs or the session is terminal. Another app's session answers `404`,
/// as an unknown one does. While a session with `number_match` is `scanned`,
/// the view carries `match_code`.
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}",
    tag = "rp",
    operation_id = "getSession",
    summary = "Read a session (optionally long-polling).",
    params(
        ("id" = String, Path, description = "The session id."),
        ("wait" = Option<u32>, Query, minimum = 0, maximum = 30, description = "Long-poll for at most this many seconds (a whole number, 0..30; otherwise `400`)."),
        ("version" = Option<u64>, Query, minimum = 0, description = "The version the caller already knows; meaningful with `wait`."),
    ),
    responses(
        (status = 200, description = "The session view.", body = SessionView),
        (status = 400, response = openapi::BadRequest),
        (status = 404, response = openapi::NotFound),
        openapi::RpRefusals,
    ),
    security(("rpApiKey" = []))
)]
pub async fn get_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<GetQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<SessionView>, ApiError> {
    let app = authenticate(&state, &headers)?;
    let Query(q) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    let wait = parse_wait(q.wait)?;
    let version = q
        .version
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| ApiError::invalid("`version` must be a whole number"))
        })
        .transpose()?;
    let id = super::session_id(&id)?;
    let session = match wait {
        Some(w) => {
            state
                .broker
                .wait_session(&app, &id, version, Duration::from_secs(w))
                .await?
        }
        None => state.broker.session_for_app(&app, &id).await?,
    };
    Ok(Json(session.rp_view()))
}

/// A long-poll's `?wait=N`: whole seconds, at most [`crate::broker::MAX_WAIT_S`].
pub fn parse_wait(wait: Option<String>) -> Result<Option<u64>, ApiError> {
    wait.map(|w| {
        w.parse::<u64>()
            .ok()
            .filter(|w| *w <= crate::broker::MAX_WAIT_S)
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "`wait` must be a whole number of seconds, at most {}",
                    crate::broker::MAX_WAIT_S
                ))
            })
    })
    .transpose()
}

/// Cancels with the API key (server to server, no CORS) or with the browser
/// token in `?t=` (from the page: `Origin` is checked and CORS answered);
/// when `t` is present it is used and the API key is ignored. Moves a
/// `pending` or `scanned` session to `cancelled` and answers the session view.
#[utoipa::path(
    delete,
    path = "/v1/sessions/{id}",
    tag = "rp",
    operation_id = "cancelSession",
    summary = "Cancel a session.",
    params(("id" = String, Path, description = "The session id.")),
    responses(
        (status = 200, description = "Cancelled; the session view (`result` is `null`).", body = SessionView),
        (status = 403, response = openapi::ForbiddenOrigin),
        (status = 404, response = openapi::NotFound),
        (status = 409, description = "`conflict`: the session is already terminal.", body = ErrorBody),
        openapi::RpRefusals,
    ),
    security(("rpApiKey" = []), ("browserToken" = []))
)]
pub async fn cancel_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<TokenQuery>,
) -> Result<Response, ApiError> {
    if q.t.is_some() {
        let id = super::session_id(&id)?;
        let session = state
            .broker
            .session_for_browser(&id, q.t.as_deref())
            .await?;
        let app = browser::check_origin(&state, &session, &headers)?;
        let cancelled = state
            .broker
            .cancel(&session.id, CancelledBy::Browser)
            .await
            .map_err(|e| browser::with_cors(e.into_response(), &app, &headers));
        return match cancelled {
            Ok(s) => Ok(browser::with_cors(
                Json(s.view()).into_response(),
                &app,
                &headers,
            )),
            Err(resp) => Ok(resp),
        };
    }
    let app = authenticate(&state, &headers)?;
    let id = super::session_id(&id)?;
    let session: Session = state.broker.session_for_app(&app, &id).await?;
    let cancelled = state.broker.cancel(&session.id, CancelledBy::Rp).await?;
    Ok(Json(cancelled.rp_view()).into_response())
}
