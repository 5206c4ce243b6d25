//! The certificate app's API: `POST /v1/claim` and
//! `POST /v1/sessions/{id}/complete` (docs/protocol.md "Phone API").

use crate::common::{OpeningWindow, SealAsk};
use crate::session::{DisplayView, Kind};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The phone as it describes itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimDevice {
    /// 1..200 characters, not blank.
    #[schema(min_length = 1, max_length = 200)]
    pub id: String,
    /// 1..200 characters, not blank; shown to the browser.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
}

/// `POST /v1/claim`: the scanned text proves the phone saw the QR code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    /// The scanned text, `<public_base_url>/q/<id>#<claim secret>`.
    pub qr_text: String,
    pub device: ClaimDevice,
}

/// The app (relying party) whose session it is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AppView {
    pub id: String,
    pub name: String,
}

/// The end user, from the create call's `requester`, else from the browser's
/// first socket, events or QR request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RequesterView {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub origin: Option<String>,
}

/// The claimed session, as the phone shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClaimedSession {
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub id: String,
    /// A [`Kind`]; read as text, so a kind added later does not break a client.
    #[schema(value_type = Kind)]
    pub kind: String,
    pub display: DisplayView,
    pub app: AppView,
    pub requester: Option<RequesterView>,
    #[schema(format = DateTime)]
    pub expires_at: String,
    /// The trust domains whose certificates may complete.
    pub accept: Vec<String>,
}

/// `200` to `POST /v1/claim`: what to show and sign, and the phone token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClaimResponse {
    pub session: ClaimedSession,
    /// The bytes to sign (the challenge text, or the RP's bytes for `sign`).
    #[schema(content_encoding = "base64")]
    pub tbs_b64: String,
    /// Bearer secret for `complete` (43 base64url characters).
    pub phone_token: String,
    /// With number matching only: three distinct two-digit codes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_items = 3, max_items = 3)]
    pub match_choices: Option<Vec<String>>,
    /// Kind `sign` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_allowed: Option<bool>,
    /// Kind `sign` created with `seal` only; `tbs_b64` then holds the same hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<SealAsk>,
    /// Kind `decrypt` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(content_encoding = "base64")]
    pub envelope_header_b64: Option<String>,
    /// Kind `decrypt` only (lowercase hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^04[0-9a-f]{128}$")]
    pub reply_key: Option<String>,
    /// Kind `decrypt` only, when the hall set an opening window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opening: Option<OpeningWindow>,
}

/// `POST /v1/sessions/{id}/complete`: an approval or a rejection (a body with
/// both answers `400`). Every field is optional on the wire: which ones a
/// session needs depends on its kind, and the broker names a missing one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteRequest {
    /// The signer's certificate, exactly one CERTIFICATE block. Required for an approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_pem: Option<String>,
    /// Intermediate certificates, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_pem: Option<Vec<String>>,
    /// DER SM2 signature over `tbs` (SM3, ID `1234567812345678`). Required, except for a seal session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(content_encoding = "base64")]
    pub signature_b64: Option<String>,
    /// Seal sessions only, and required there: the GB/T 38540 `SES_Signature`, DER.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(content_encoding = "base64")]
    pub seal_signature_b64: Option<String>,
    /// Kind `encrypt` only, and required there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_items = 1, max_items = 50)]
    pub recipients_pem: Option<Vec<String>>,
    /// Kind `decrypt` only, and required there (non-empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(content_encoding = "base64")]
    pub wrapped_key_b64: Option<String>,
    /// Kind `sign` only, when `conversation_allowed`: open a conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_conversation: Option<bool>,
    /// Required with number matching: the code the user picked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_code: Option<String>,
    /// Instead of an approval: the user declines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reject: Option<Rejection>,
}

/// The user declines; `reason` becomes `result.reason`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rejection {
    /// 1..500 characters after trimming.
    #[schema(min_length = 1, max_length = 500)]
    pub reason: String,
}

/// The phone's side of a conversation it opened; `phone_token` opens
/// `GET /v1/conversations/{id}/phone`.
// `Debug` does not show the token, so it stays out of logs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PhoneGrant {
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub id: String,
    pub phone_token: String,
    /// `max_s` after opening.
    #[schema(format = DateTime)]
    pub expires_at: String,
}

impl std::fmt::Debug for PhoneGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhoneGrant")
            .field("id", &self.id)
            .field("phone_token", &"…")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// `200` to `POST /v1/sessions/{id}/complete`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CompleteResponse {
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub id: String,
    /// `approved` or `rejected`.
    // Read as text, so a status added later does not break a client.
    #[schema(value_type = crate::session::Status)]
    pub status: String,
    #[schema(minimum = 3)]
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<PhoneGrant>,
}
