//! `GET /v1/audit`: an app reads the audit records of its own operations.

use super::rp::authenticate;
use super::{answers, AppState};
use crate::error::ApiError;
use crate::store::AuditQuery;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use bzt_core::audit::Record;
use bzt_core::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub const MAX_LIMIT: usize = 1000;

/// `200` to `GET /v1/audit`: the matching records, oldest first, each exactly
/// as written to the log (so `hash` can be recomputed).
// The records are the hash chain's own type: answered byte for byte as written,
// and their schema derived from what is stored and hashed, with no second
// description to drift.
#[derive(Serialize, ToSchema)]
pub struct AuditList {
    pub records: Vec<Record>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    serial: Option<String>,
    since: Option<String>,
    limit: Option<String>,
    /// Only operations by this member of a granted certificate (name or device id).
    delegate: Option<String>,
}

/// The app's own audit records (operations only, never checkpoints), oldest
/// first: one per completed session and per answered conversation request,
/// plus `aborted` records. Another app's records are never shown. To read
/// further, repeat with `since` set to the `time` of the last record received
/// and drop the records already seen. Each record is answered exactly as
/// written in the hash-chained log, so `hash` can be recomputed.
#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "audit",
    operation_id = "listAuditRecords",
    summary = "The audit trail of this app's certificate uses (证书使用记录).",
    params(
        ("serial" = Option<String>, Query, description = "Only this certificate (hex serial, any case, colons allowed; otherwise `400`)."),
        ("since" = Option<String>, Query, format = DateTime, description = "Only records whose `time` is at or after this RFC 3339 time (percent-encode `+`). Otherwise `400`."),
        ("delegate" = Option<String>, Query, description = "Only operations by this member of a granted company certificate (企业证书授权), by name or device id."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "At most this many records (1..1000, default 100; otherwise `400`)."),
    ),
    responses(
        (status = 200, description = "The matching records.", body = AuditList),
        (status = 400, response = answers::BadRequest),
        answers::RpRefusals,
    ),
    security(("rpApiKey" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AuditList>, ApiError> {
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
    Ok(Json(AuditList { records }))
}
