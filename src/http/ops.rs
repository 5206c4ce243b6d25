//! Health, readiness, metrics, and the admin API (revocations).

use super::{bearer, client_ip, header_str, ApiJson, AppState};
use crate::broker::revocations::{RevocationRecord, Revocations};
use crate::error::ApiError;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bzt_core::Secret;
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::SocketAddr;

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.drain.is_draining() {
        return ApiError::new(
            bzt_core::ErrorCode::Unavailable,
            "this node is shutting down; use another node",
        )
        .into_response();
    }
    match state.broker.store_ready().await {
        Ok(store) => Json(json!({ "status": "ready", "store": store })).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    crate::crl::record_metrics(state.broker.trust(), state.broker.now(), false);
    match &state.metrics {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => ApiError::not_found("metrics are not enabled").into_response(),
    }
}

pub(super) fn authorize_admin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let expected = state.admin_token.ok_or_else(|| {
        ApiError::forbidden("the admin API is disabled: set admin_token in the configuration")
    })?;
    let presented = bearer(headers)
        .and_then(Secret::from_presented)
        .ok_or_else(|| {
            ApiError::unauthorized("send the admin token as `Authorization: Bearer <admin_token>`")
        })?;
    if !expected.verify(&presented) {
        return Err(ApiError::unauthorized("the admin token is not valid"));
    }
    Ok(())
}

pub async fn list_revocations(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize_admin(&state, &headers)?;
    let (configured, runtime) = state.broker.revocations().list();
    let serials: Vec<&str> = runtime.iter().map(|r| r.serial.as_str()).collect();
    Ok(Json(json!({
        "configured": configured,
        "runtime": serials,
        "runtime_records": runtime,
    })))
}

/// Longest `revoked_by` and `reason` kept (they go into the audit trail).
const MAX_ACTOR_CHARS: usize = 128;
const MAX_REASON_CHARS: usize = 512;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeBody {
    serial: String,
    /// The operator who revokes (recorded in the audit trail).
    #[serde(default)]
    revoked_by: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

fn bounded_text(
    field: &str,
    value: Option<String>,
    max: usize,
) -> Result<Option<String>, ApiError> {
    let Some(v) = value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if v.chars().count() > max || v.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "`{field}` must be at most {max} characters, without control characters"
        )));
    }
    Ok(Some(v))
}

/// Revokes `record`'s certificate at run time, the audit trail first: a revocation nobody can
/// trace is not made.
pub(super) async fn audit_then_revoke(
    state: &AppState,
    headers: &HeaderMap,
    peer: SocketAddr,
    record: &RevocationRecord,
) -> Result<(), ApiError> {
    let ip = client_ip(state, headers, peer).to_string();
    let ua = header_str(headers, header::USER_AGENT);
    let audit = revocation_audit(record, "revoked", record.revoked_by.clone(), ip, ua);
    state
        .broker
        .audit()
        .append(audit, record.revoked_at)
        .await?;
    state.broker.revocations().add(record.clone()).await?;
    Ok(())
}

/// The audit record of an operator's revocation or its lifting.
pub(super) fn revocation_audit(
    record: &RevocationRecord,
    outcome: &str,
    actor: Option<String>,
    ip: String,
    user_agent: Option<String>,
) -> bzt_core::audit::Operation {
    bzt_core::audit::Operation {
        app: String::new(),
        kind: "revocation".into(),
        session_id: String::new(),
        conversation_id: None,
        request_id: None,
        cert_serial: record.serial.clone(),
        cert_issuer: String::new(),
        cert_subject: String::new(),
        tbs_sm3: String::new(),
        outcome: outcome.into(),
        reason: record.reason.clone(),
        auto_confirmed: None,
        device_name: String::new(),
        requester_ip: Some(ip),
        requester_user_agent: user_agent,
        actor,
        delegate: None,
    }
}

pub async fn add_revocation(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<RevokeBody>,
) -> Result<Response, ApiError> {
    authorize_admin(&state, &headers)?;
    let serial = Revocations::normalize(&body.serial).map_err(ApiError::invalid)?;
    let record = RevocationRecord {
        serial,
        revoked_at: state.broker.now(),
        revoked_by: bounded_text("revoked_by", body.revoked_by, MAX_ACTOR_CHARS)?,
        reason: bounded_text("reason", body.reason, MAX_REASON_CHARS)?,
    };
    audit_then_revoke(&state, &headers, peer, &record).await?;
    tracing::warn!(serial = %record.serial, by = ?record.revoked_by, "certificate revoked at run time");
    Ok((
        StatusCode::CREATED,
        Json(json!({ "serial": record.serial })),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiftQuery {
    /// The operator who lifts the revocation (recorded in the audit trail).
    #[serde(default)]
    by: Option<String>,
}

pub async fn remove_revocation(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(serial): Path<String>,
    Query(q): Query<LiftQuery>,
) -> Result<Json<Value>, ApiError> {
    authorize_admin(&state, &headers)?;
    let not_listed = || ApiError::not_found("that serial is not on the run-time revocation list");
    let serial = Revocations::normalize(&serial).map_err(|_| not_listed())?;
    let actor = bounded_text("by", q.by, MAX_ACTOR_CHARS)?;
    let removed = state
        .broker
        .revocations()
        .remove(&serial)
        .await?
        .ok_or_else(not_listed)?;
    let ip = client_ip(&state, &headers, peer).to_string();
    let ua = header_str(&headers, header::USER_AGENT);
    let audit = revocation_audit(&removed, "lifted", actor, ip, ua);
    if let Err(e) = state.broker.audit().append(audit, state.broker.now()).await {
        // Lifted already: put it back rather than leave an untraced change.
        let _ = state.broker.revocations().add(removed).await;
        return Err(e.into());
    }
    tracing::warn!(serial = %removed.serial, "run-time revocation lifted");
    Ok(Json(json!({ "serial": removed.serial })))
}
