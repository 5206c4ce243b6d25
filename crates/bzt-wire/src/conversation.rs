//! Conversations (会话签章): `POST /v1/conversations/<cid>/requests`
//! (docs/protocol.md "Conversations").

use crate::common::{Delegate, SealAsk, SealResult};
use crate::error::ErrorDetail;
use crate::session::{DisplayText, DisplayView, SealInput};
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

/// Where a signing request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    Pending,
    Approved,
    Rejected,
    Expired,
}

impl RequestStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestStatus::Pending => "pending",
            RequestStatus::Approved => "approved",
            RequestStatus::Rejected => "rejected",
            RequestStatus::Expired => "expired",
        }
    }
}

/// A signing request as the requester sees it (`GET .../requests/{rid}`, and
/// with `type: request_result` on the requester's socket).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConversationRequestView {
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub request_id: String,
    #[schema(value_type = RequestStatus)]
    pub status: String,
    #[schema(format = DateTime)]
    pub expires_at: String,
    /// `approved` only: DER SM2 over the request's bytes; re-verify it yourself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(content_encoding = "base64")]
    pub signature_b64: Option<String>,
    /// An approved seal request only: `DER(TBS_Sign)`, the bytes `signature_b64` signs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(content_encoding = "base64")]
    pub tbs_b64: Option<String>,
    /// An approved seal request only; the `SES_Signature`, DER.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(content_encoding = "base64")]
    pub seal_signature_b64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<SealResult>,
    /// `approved` and `rejected` only: `true` when the phone signed without a tap (自动确认).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_confirmed: Option<bool>,
    /// `rejected`: the phone's reason, `bad_signature` or `certificate_not_acceptable`;
    /// `expired`: `conversation_ended` when the conversation's end expired it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the request finished; absent while `pending`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub completed_at: Option<String>,
    /// Once finished, when a member answered with a granted company certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate: Option<Delegate>,
}

/// Why a conversation ended: `phone` (sent `end`), `requester` (`DELETE`),
/// `idle` (`idle_s` without a new request), `limit` (`max_s` passed, or
/// `max_requests` all answered), `certificate` (the opening certificate was
/// revoked or is past its validity).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EndedBy {
    Phone,
    Requester,
    Idle,
    Limit,
    /// The opening certificate was revoked or expired (an addition to contract v1, docs/protocol.md).
    Certificate,
}

impl EndedBy {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EndedBy::Phone => "phone",
            EndedBy::Requester => "requester",
            EndedBy::Idle => "idle",
            EndedBy::Limit => "limit",
            EndedBy::Certificate => "certificate",
        }
    }
}

/// The certificate that opened a conversation; every signature must verify with its key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConversationCertificate {
    #[schema(pattern = "^(0|[1-9a-f][0-9a-f]*)$")]
    pub serial: String,
    pub subject: String,
    pub issuer: String,
}

/// `open` or `ended`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConversationStatus {
    Open,
    Ended,
}

/// A conversation as the requester sees it (`GET`/`DELETE /v1/conversations/{id}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConversationView {
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub id: String,
    /// The `sign` session that opened it.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub session_id: String,
    #[schema(value_type = ConversationStatus)]
    pub status: String,
    #[schema(format = DateTime)]
    pub opened_at: String,
    /// `max_s` after opening: the conversation ends then at the latest.
    #[schema(format = DateTime)]
    pub expires_at: String,
    pub certificate: ConversationCertificate,
    #[schema(minimum = 1)]
    pub max_requests: u32,
    /// How many requests were posted.
    pub requests: u32,
    /// Once ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<EndedBy>)]
    pub ended_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub ended_at: Option<String>,
}

/// Server → requester on `GET /v1/conversations/{id}/ws`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RequesterFrame {
    /// A finished request (once per connection; deduplicate by `request_id`).
    RequestResult(Box<ConversationRequestView>),
    /// The conversation ended; the last frame before the close `1000`.
    Ended(Ended),
    /// A text frame was refused (this socket only receives).
    Error(FrameError),
}

/// `ended`: who ended the conversation, and when.
// Read leniently (plain comment: kept out of the OpenAPI text): `by` is text,
// so a cause added later does not break a client, and the contract's frame
// (`{"type": "ended", "by": ...}`) may come without `at`; the broker always
// sends it, hence `required` in the schema.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Ended {
    #[schema(value_type = EndedBy)]
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(required = true, value_type = String, format = DateTime)]
    pub at: Option<String>,
}

/// `error`: a frame was refused; `request_id` when the frame named one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FrameError {
    pub error: ErrorDetail,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Server → phone on `GET /v1/conversations/{id}/phone`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PhoneServerFrame {
    /// A request to sign, in `seq` order (sent again after a reconnect while pending).
    SignRequest(SignRequestFrame),
    /// An answer was accepted.
    Ack(Ack),
    /// An answer or frame was refused.
    Error(FrameError),
    /// The conversation ended; the server then closes with `1000`.
    Ended(Ended),
}

/// `sign_request`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SignRequestFrame {
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub request_id: String,
    /// The request's 1-based position in the conversation.
    #[schema(minimum = 1)]
    pub seq: u32,
    pub display: DisplayView,
    /// The bytes to sign (for a seal request, the hash of `seal`).
    #[schema(content_encoding = "base64")]
    pub tbs_b64: String,
    /// A seal request only; answer with `seal_signature_b64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<SealAsk>,
    /// The answer must arrive before this.
    #[schema(format = DateTime)]
    pub expires_at: String,
}

/// `ack`: an answer was accepted (`approved` or `rejected`).
// `status` is read as text, so a status added later does not break a client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Ack {
    pub request_id: String,
    #[schema(value_type = RequestStatus)]
    pub status: String,
}

/// Phone → server on its conversation socket. Each `sign_response` and
/// `sign_reject` gets exactly one `ack` or `error`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PhoneMessage {
    /// The signature for a request (`seal_signature_b64` for a seal request).
    SignResponse {
        request_id: String,
        /// DER SM2 signature over the request's bytes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(content_encoding = "base64")]
        signature_b64: Option<String>,
        /// A seal request's answer: the `SES_Signature`, DER.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(content_encoding = "base64")]
        seal_signature_b64: Option<String>,
        /// `true` when the phone signed without a tap (自动确认); recorded as sent.
        #[serde(default)]
        auto_confirmed: bool,
    },
    /// The user declines a request; at most 500 characters of `reason` are kept.
    SignReject { request_id: String, reason: String },
    /// Ends the conversation (`ended_by: phone`).
    End,
}
