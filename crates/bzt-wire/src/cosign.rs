//! Key splitting (密钥拆分, docs/key-splitting.md): the context endpoint the
//! co-signing service calls, and the operator's relay to the service's admin API.

use crate::common::{Delegate, OpeningWindow, SealAsk};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/cosign/context`: which session or conversation request the phone
/// says it is answering, with its token as proof.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum CosignContextRequest {
    Session(SessionContextAsk),
    Conversation(ConversationContextAsk),
}

/// A session the phone answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionContextAsk {
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub id: String,
    pub phone_token: String,
    /// The member whose granted share co-signs (企业证书授权); absent for the owner's own share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate: Option<Delegate>,
}

/// A conversation request the phone answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConversationContextAsk {
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub id: String,
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub request_id: String,
    pub phone_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate: Option<Delegate>,
}

/// `200` to `POST /v1/cosign/context`: the bytes the service may co-sign, and until when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CosignContext {
    /// The session's kind, or `conversation` for a conversation request.
    pub kind: String,
    /// Exactly the bytes the phone must sign.
    #[schema(content_encoding = "base64")]
    pub tbs_b64: String,
    #[schema(format = DateTime)]
    pub expires_at: String,
    /// The only certificate that may answer, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^(0|[1-9a-f][0-9a-f]*)$")]
    pub certificate_serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opening: Option<OpeningWindow>,
    /// A seal session or seal request: the `TBS_Sign` the phone co-signs must carry these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<SealAsk>,
}

/// `POST /v1/admin/cosigner/keys/{key_id}/{action}` (the body is optional).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyActionRequest {
    /// `revoke` only: the split certificate's serial (hex, any case, colons allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_serial: Option<String>,
}

/// The co-signing service's answer, relayed as it gave it (docs/key-splitting.md);
/// a `revoke` adds `revoked_serial`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(value_type = Object)]
pub struct ServiceAnswer(pub serde_json::Value);
