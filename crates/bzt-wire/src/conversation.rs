//! Conversations (会话签章): `POST /v1/conversations/<cid>/requests`
//! (docs/protocol.md "Conversations").

use crate::session::{DisplayText, SealInput};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/conversations/<cid>/requests`: one more signature asked of the
/// phone. `tbs_b64` or `seal`, not both.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConversationRequestInput {
    /// The bytes to sign, 1 B..64 KiB decoded, standard base64. Required
    /// unless `seal` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(content_encoding = "base64")]
    pub tbs_b64: Option<String>,
    /// Instead of `tbs_b64`: a seal signature over this hash (a seal on one more page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<SealInput>,
    pub display: DisplayText,
}

/// `202` to `POST /v1/conversations/<cid>/requests`: queued for the phone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConversationRequestAccepted {
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub request_id: String,
    /// 60 s after the request was posted (RFC 3339 UTC with milliseconds);
    /// unanswered by then, it becomes `expired`.
    #[schema(format = DateTime)]
    pub expires_at: String,
}
