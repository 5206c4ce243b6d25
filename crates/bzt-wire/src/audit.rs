//! `GET /v1/audit`: an app's audit records (证书使用记录, docs/protocol.md "Audit").
//!
//! The broker answers each record exactly as it is written in the hash-chained
//! log (so a reader can recompute `hash`); these types describe that line.

use crate::common::Delegate;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `200` to `GET /v1/audit`: the matching records, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditList {
    pub records: Vec<AuditRecord>,
}

/// One use of a certificate, as written to the audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditRecord {
    /// Position in the whole log (all apps, checkpoints included).
    #[schema(minimum = 1)]
    pub seq: u64,
    /// When the record was written (before the outcome was told to anyone).
    #[schema(format = DateTime)]
    pub time: String,
    /// SM3 of the previous record of the log.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub prev: String,
    /// Always `operation` in answers (checkpoints are not shown).
    #[serde(rename = "type")]
    pub record_type: String,
    /// The app whose session or conversation it was.
    pub app: String,
    /// `login`, `bind`, `sign`, `encrypt`, `decrypt`, `conversation_request` or `revocation`.
    pub kind: String,
    /// The session (for a conversation request, the session that opened the conversation).
    pub session_id: String,
    /// `conversation_request` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    /// `conversation_request` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The certificate used; empty when none was verified.
    #[schema(pattern = "^(|0|[1-9a-f][0-9a-f]*)$")]
    pub cert_serial: String,
    pub cert_issuer: String,
    pub cert_subject: String,
    /// Lowercase hex SM3 of the bytes signed, or offered for signing.
    #[schema(pattern = "^([0-9a-f]{64})?$")]
    pub tbs_sm3: String,
    /// `approved`, `rejected`, `failed`, `aborted`, `revoked` or `lifted`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `conversation_request` only: as the phone sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_confirmed: Option<bool>,
    /// The phone's device name from its claim.
    pub device_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester_user_agent: Option<String>,
    /// `revocation` only: who revoked or lifted, as the operator gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate: Option<Delegate>,
    /// SM3 of this record's JSON without `hash`.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub hash: String,
}
