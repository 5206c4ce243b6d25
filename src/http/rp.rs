//! Relying-party backend API: create, read (with long-poll), cancel.

use super::{bearer, browser, ApiJson, AppState, TokenQuery};
use crate::apps::App;
use crate::error::ApiError;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bzt_core::codec;
use bzt_core::session::{
    CancelledBy, ConversationPolicy, DisplayText, ExpectCert, NewSessionRequest, Opening, Requester,
};
use bzt_core::{Kind, Session};
use serde::Deserialize;
use serde_json::json;
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    kind: Kind,
    ttl_s: Option<u32>,
    display: DisplayText,
    accept: Option<Vec<String>>,
    expect_cert: Option<ExpectCertBody>,
    requester: Option<Requester>,
    tbs_b64: Option<String>,
    conversation: Option<ConversationPolicy>,
    envelope_header_b64: Option<String>,
    reply_key: Option<String>,
    opening: Option<Opening>,
    webhook_url: Option<String>,
    rotate_s: Option<u32>,
    number_match: Option<bool>,
    seal: Option<SealBody>,
}

/// `seal`: ask for a GB/T 38540 seal signature over the RP's SM3 hash.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealBody {
    data_hash_b64: String,
    property_info: String,
}

impl SealBody {
    pub fn into_request(self) -> Result<bzt_core::session::SealRequest, ApiError> {
        Ok(bzt_core::session::SealRequest {
            data_hash: decode_b64("seal.data_hash_b64", Some(self.data_hash_b64))?
                .unwrap_or_default(),
            property_info: self.property_info,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectCertBody {
    serial: String,
    issuer: Option<String>,
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

pub async fn create_session(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<Response, ApiError> {
    let app = authenticate(&state, &headers)?;
    state.limits.create(&app.id)?;
    let req = NewSessionRequest {
        kind: Some(body.kind),
        ttl_s: body.ttl_s,
        display: Some(body.display),
        accept: body.accept,
        expect_cert: body.expect_cert.map(|e| ExpectCert {
            serial: e.serial,
            issuer: e.issuer,
        }),
        requester: body.requester,
        tbs: decode_b64("tbs_b64", body.tbs_b64)?,
        conversation: body.conversation,
        envelope_header: decode_b64("envelope_header_b64", body.envelope_header_b64)?,
        reply_key: body.reply_key,
        opening: body.opening,
        webhook_url: body.webhook_url,
        rotate_s: body.rotate_s,
        number_match: body.number_match,
        seal: body.seal.map(SealBody::into_request).transpose()?,
    };
    let (session, browser_token) = state.broker.create_session(&app, req).await?;
    let base = &state.broker.public_base_url();
    let ws_base = base
        .replacen("https://", "wss://", 1)
        .replacen("http://", "ws://", 1);
    let t = browser_token.expose();
    let id = &session.id;
    let answer = json!({
        "id": id,
        "kind": session.kind,
        "status": session.status,
        "version": session.version,
        "qr_text": session.qr_text(base),
        "browser_token": t,
        "ws_url": format!("{ws_base}/v1/sessions/{id}/ws?t={t}"),
        "events_url": format!("{base}/v1/sessions/{id}/events?t={t}"),
        "qr_svg_url": format!("{base}/v1/sessions/{id}/qr.svg?t={t}"),
        "qr_png_url": format!("{base}/v1/sessions/{id}/qr.png?t={t}"),
        "created_at": session.created_at,
        "expires_at": session.expires_at,
        "ttl_s": session.created_at.millis_until(session.expires_at) / 1000,
    });
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetQuery {
    wait: Option<String>,
    version: Option<String>,
}

pub async fn get_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<GetQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
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
/// token in `?t=` (from the page, with CORS for allowed origins).
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
