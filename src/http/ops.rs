//! Health, readiness, metrics, and the admin API (revocations).

use super::{bearer, client_ip, header_str, openapi, ApiJson, AppState};
use crate::broker::revocations::{RevocationRecord, Revocations};
use crate::error::ApiError;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bzt_core::Secret;
use bzt_wire::{
    ErrorBody, Health, Ready, RevocationList, RevocationRecordView, RevokeRequest, SerialAnswer,
};
use serde::Deserialize;
use std::net::SocketAddr;

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "ops",
    operation_id = "healthz",
    summary = "Liveness.",
    responses((status = 200, description = "The process is up: `{\"status\": \"ok\"}`.", body = Health)),
    security(())
)]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

#[utoipa::path(
    get,
    path = "/readyz",
    tag = "ops",
    operation_id = "readyz",
    summary = "Readiness (the session store is reachable, the node is not shutting down).",
    responses(
        (status = 200, description = "Ready.", body = Ready),
        (status = 503, response = openapi::Unavailable),
    ),
    security(())
)]
pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.drain.is_draining() {
        return ApiError::new(
            bzt_core::ErrorCode::Unavailable,
            "this node is shutting down; use another node",
        )
        .into_response();
    }
    match state.broker.store_ready().await {
        Ok(store) => Json(Ready {
            status: "ready".into(),
            store: store.to_string(),
        })
        .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "ops",
    operation_id = "metrics",
    summary = "Prometheus metrics.",
    responses(
        (status = 200, description = "Prometheus text exposition format.", content_type = "text/plain", body = String),
        (status = 404, description = "`not_found`: the metrics recorder is not installed in this process.", body = ErrorBody),
    ),
    security(())
)]
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

#[utoipa::path(
    get,
    path = "/v1/admin/revocations",
    tag = "admin",
    operation_id = "listRevocations",
    summary = "List revoked serials.",
    responses(
        (status = 200, description = "The configured list (re-read on SIGHUP) and the run-time list (kept in the store, shared by every node), each sorted by serial.", body = RevocationList),
        openapi::AdminRefusals,
    ),
    security(("adminToken" = []))
)]
pub async fn list_revocations(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<RevocationList>, ApiError> {
    authorize_admin(&state, &headers)?;
    let (configured, runtime) = state.broker.revocations().list();
    Ok(Json(RevocationList {
        configured,
        runtime: runtime.iter().map(|r| r.serial.clone()).collect(),
        runtime_records: runtime
            .into_iter()
            .map(|r| RevocationRecordView {
                serial: r.serial,
                revoked_at: r.revoked_at.to_rfc3339(),
                revoked_by: r.revoked_by,
                reason: r.reason,
            })
            .collect(),
    }))
}

/// Longest `revoked_by` and `reason` kept (they go into the audit trail).
const MAX_ACTOR_CHARS: usize = 128;
const MAX_REASON_CHARS: usize = 512;

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

/// Recorded in the audit trail (`kind: revocation`, `outcome: revoked`,
/// `actor` = `revoked_by`), then stored: it takes effect at once on this
/// node, within one second on every other node, and survives restarts.
#[utoipa::path(
    post,
    path = "/v1/admin/revocations",
    tag = "admin",
    operation_id = "addRevocation",
    summary = "Revoke a serial at run time.",
    request_body = RevokeRequest,
    responses(
        (status = 201, description = "Revoked; the normalised serial.", body = SerialAnswer),
        (status = 400, response = openapi::BadRequest),
        (status = 413, response = openapi::PayloadTooLarge),
        (status = 503, response = openapi::Unavailable),
        openapi::AdminRefusals,
    ),
    security(("adminToken" = []))
)]
pub async fn add_revocation(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<RevokeRequest>,
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
        Json(SerialAnswer {
            serial: record.serial,
        }),
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

/// Only the run-time list can be changed here; configured serials stay
/// revoked. The lifting is recorded in the audit trail (`outcome: lifted`,
/// `actor` = `by`).
#[utoipa::path(
    delete,
    path = "/v1/admin/revocations/{serial}",
    tag = "admin",
    operation_id = "removeRevocation",
    summary = "Lift a run-time revocation.",
    params(
        ("serial" = String, Path, description = "Hex serial, any case, colons allowed."),
        ("by" = Option<String>, Query, max_length = 128, description = "Who lifts the revocation, recorded in the audit trail."),
    ),
    responses(
        (status = 200, description = "Lifted; the normalised serial.", body = SerialAnswer),
        (status = 400, response = openapi::BadRequest),
        (status = 404, description = "`not_found`: the serial is not on the run-time list (or is not hex).", body = ErrorBody),
        (status = 503, response = openapi::Unavailable),
        openapi::AdminRefusals,
    ),
    security(("adminToken" = []))
)]
pub async fn remove_revocation(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(serial): Path<String>,
    Query(q): Query<LiftQuery>,
) -> Result<Json<SerialAnswer>, ApiError> {
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
    Ok(Json(SerialAnswer {
        serial: removed.serial,
    }))
}
