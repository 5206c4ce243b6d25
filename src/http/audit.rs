//! `GET /v1/audit`: an app reads the audit records of its own operations.

use super::rp::authenticate;
use super::AppState;
use crate::error::ApiError;
use crate::store::AuditQuery;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use bzt_core::Timestamp;
use serde::Deserialize;
use serde_json::{json, Value};

pub const MAX_LIMIT: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    serial: Option<String>,
    since: Option<String>,
    limit: Option<String>,
    /// Only operations by this member of a granted certificate (name or device id).
    delegate: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let app = authenticate(&state, &headers)?;
    let Query(p) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    let serial = p
        .serial
        .map(|s| {
            bzt_core::pki::normalize_serial(&s)
                .ok_or_else(|| ApiError::invalid("`serial` must be a hex serial number"))
        })
        .transpose()?;
    let since = p
        .since
        .map(|s| {
            Timestamp::parse_rfc3339(&s)
                .ok_or_else(|| ApiError::invalid("`since` must be an RFC 3339 time"))
        })
        .transpose()?;
    let limit = match p.limit {
        None => 100,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| ApiError::invalid(format!("`limit` must be 1..{MAX_LIMIT}")))?,
    };
    let records = state
        .broker
        .audit()
        .query(AuditQuery {
            app: Some(app.id.clone()),
            serial,
            since,
            delegate: p.delegate.filter(|d| !d.is_empty()),
            limit,
        })
        .await?;
    Ok(Json(json!({ "records": records })))
}
