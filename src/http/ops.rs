//! Health, readiness, metrics, and the admin API (revocations).

use super::{bearer, ApiJson, AppState};
use crate::error::ApiError;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bzt_core::Secret;
use serde::Deserialize;
use serde_json::{json, Value};

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    match state.broker.store.ping().await {
        Ok(()) => {
            Json(json!({ "status": "ready", "store": state.broker.store.kind() })).into_response()
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

pub async fn metrics(State(state): State<AppState>) -> Response {
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
    let (configured, runtime) = state.broker.revocations.list();
    Ok(Json(
        json!({ "configured": configured, "runtime": runtime }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeBody {
    serial: String,
}

pub async fn add_revocation(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<RevokeBody>,
) -> Result<Response, ApiError> {
    authorize_admin(&state, &headers)?;
    let serial = state
        .broker
        .revocations
        .add(&body.serial)
        .map_err(ApiError::invalid)?;
    tracing::warn!(%serial, "certificate revoked at run time");
    Ok((StatusCode::CREATED, Json(json!({ "serial": serial }))).into_response())
}

pub async fn remove_revocation(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(serial): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize_admin(&state, &headers)?;
    let removed =
        state.broker.revocations.remove(&serial).ok_or_else(|| {
            ApiError::not_found("that serial is not on the run-time revocation list")
        })?;
    tracing::warn!(serial = %removed, "run-time revocation lifted");
    Ok(Json(json!({ "serial": removed })))
}
