//! Health, readiness and the operator's revocation API (docs/protocol.md "Operations").

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `200` to `GET /healthz`: `{"status": "ok"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
}

/// `200` to `GET /readyz`: `{"status": "ready", "store": "memory" | "redis"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Ready {
    pub status: String,
    /// `memory` or `redis`.
    pub store: String,
}

/// `POST /v1/admin/revocations`: revoke a serial at run time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// Hex serial, any case, colons allowed, at most 64 hex digits.
    #[schema(min_length = 1)]
    pub serial: String,
    /// Who revokes (an operator's name), recorded in the audit trail. No control characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 128)]
    pub revoked_by: Option<String>,
    /// Why, recorded in the audit trail and the run-time list. No control characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 512)]
    pub reason: Option<String>,
}

/// One run-time revocation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RevocationRecordView {
    #[schema(pattern = "^(0|[1-9a-f][0-9a-f]*)$")]
    pub serial: String,
    #[schema(format = DateTime)]
    pub revoked_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `200` to `GET /v1/admin/revocations`: the configured list (re-read on
/// SIGHUP) and the run-time list (shared by every node), each sorted by serial.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RevocationList {
    pub configured: Vec<String>,
    pub runtime: Vec<String>,
    pub runtime_records: Vec<RevocationRecordView>,
}
