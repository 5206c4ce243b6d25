//! Creating a scan session: `POST /v1/sessions` (docs/protocol.md "RP backend API").

use crate::common::{CertificateInfo, Delegate, SealResult};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a session is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// 扫码登录.
    Login,
    /// Bind a certificate to an account.
    Bind,
    /// 扫码签章: sign `tbs_b64` (or a seal signature).
    Sign,
    /// 多证书加密: the phone picks the recipients of a bid file.
    Encrypt,
    /// 扫码解密: the phone unwraps a bid file's content key for the hall.
    Decrypt,
}

impl Kind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Login => "login",
            Kind::Bind => "bind",
            Kind::Sign => "sign",
            Kind::Encrypt => "encrypt",
            Kind::Decrypt => "decrypt",
        }
    }
}

/// What the phone shows the user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisplayText {
    /// At most 200 characters, no control characters.
    #[schema(min_length = 1, max_length = 200)]
    pub title: String,
    /// At most 200 characters, no control characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 200)]
    pub detail: Option<String>,
}

/// What the phone shows the user, as answers carry it (a view: fields added
/// later are ignored, unlike [`DisplayText`] in a request).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DisplayView {
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Only this certificate may complete the session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectCertInput {
    /// Hex serial, any case, colons allowed, at most 64 hex digits.
    #[schema(min_length = 1)]
    pub serial: String,
    /// RFC 4514 issuer name, compared ignoring case and spaces around `,` and `=`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
}

/// The end user, as the RP saw them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequesterInput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

/// Kind `sign` only: allows the phone to open a conversation (会话签章) with
/// these limits; an absent limit takes its default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConversationPolicyInput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000, default = 200)]
    pub max_requests: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 3600, default = 600)]
    pub idle_s: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 28800, default = 7200)]
    pub max_s: Option<u32>,
}

/// The opening window of a `decrypt` session (开标时间).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpeningInput {
    /// The opening time (RFC 3339); from it (included) the content key may be unwrapped.
    #[schema(format = DateTime)]
    pub not_before: String,
    /// The decryption deadline (RFC 3339, excluded).
    #[schema(format = DateTime)]
    pub not_after: String,
}

/// Kind `sign` only, instead of `tbs_b64`: ask for a GB/T 38540 seal
/// signature (扫码签章 with an electronic seal); see docs/seals.md.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SealInput {
    /// SM3 of the protected data, 32 bytes, standard base64.
    #[schema(content_encoding = "base64")]
    pub data_hash_b64: String,
    /// What is protected (printable ASCII; in OFD the path of `Signature.xml`).
    #[schema(min_length = 1, max_length = 512, pattern = "^[ -~]+$")]
    pub property_info: String,
}

/// `POST /v1/sessions`: what the RP backend asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSessionRequest {
    pub kind: Kind,
    /// Lifetime in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 30, maximum = 600, default = 180)]
    pub ttl_s: Option<u32>,
    pub display: DisplayText,
    /// Configured trust domains whose certificates may complete (default all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_items = 1)]
    pub accept: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_cert: Option<ExpectCertInput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<RequesterInput>,
    /// Kind `sign` only, and required there unless `seal` is given: the bytes
    /// to sign, 1 B..64 KiB decoded, standard base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(content_encoding = "base64")]
    pub tbs_b64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<SealInput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<ConversationPolicyInput>,
    /// Kind `decrypt` only, and required there: the envelope header's JSON
    /// bytes, standard base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(content_encoding = "base64")]
    pub envelope_header_b64: Option<String>,
    /// Kind `decrypt` only, and required there: SM2 public key, uncompressed
    /// point `04||X||Y` in hex (130 digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^04[0-9a-fA-F]{128}$")]
    pub reply_key: Option<String>,
    /// Kind `decrypt` only, optional: the opening window (开标时间).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opening: Option<OpeningInput>,
    /// Absolute `http(s)` URL; needs a `webhook_secret` configured for the app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = "uri", max_length = 2048)]
    pub webhook_url: Option<String>,
    /// Rotate the claim secret every `rotate_s` seconds while `pending`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 5, maximum = 60)]
    pub rotate_s: Option<u32>,
    /// Number matching on claim (recommended for `bind` and `decrypt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_match: Option<bool>,
}

impl CreateSessionRequest {
    /// A session of `kind` showing `title`, everything else the broker's default.
    pub fn new(kind: Kind, title: impl Into<String>) -> Self {
        Self {
            kind,
            ttl_s: None,
            display: DisplayText {
                title: title.into(),
                detail: None,
            },
            accept: None,
            expect_cert: None,
            requester: None,
            tbs_b64: None,
            seal: None,
            conversation: None,
            envelope_header_b64: None,
            reply_key: None,
            opening: None,
            webhook_url: None,
            rotate_s: None,
            number_match: None,
        }
    }
}

/// `201` to `POST /v1/sessions`: hand it to the page as is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreateSessionResponse {
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub id: String,
    /// A [`Kind`]; read as text, so a kind added later does not break a client.
    #[schema(value_type = Kind)]
    pub kind: String,
    /// Always `pending`.
    pub status: String,
    /// Always 1.
    pub version: u64,
    /// `<public_base_url>/q/<id>#<claim secret>`: the text to encode in the QR code.
    pub qr_text: String,
    /// The page's bearer secret (43 base64url characters).
    pub browser_token: String,
    /// `ws(s)://.../v1/sessions/<id>/ws?t=<browser_token>`
    #[schema(format = "uri")]
    pub ws_url: String,
    /// `http(s)://.../v1/sessions/<id>/events?t=<browser_token>`
    #[schema(format = "uri")]
    pub events_url: String,
    /// `http(s)://.../v1/sessions/<id>/qr.svg?t=<browser_token>`
    #[schema(format = "uri")]
    pub qr_svg_url: String,
    /// `http(s)://.../v1/sessions/<id>/qr.png?t=<browser_token>`
    #[schema(format = "uri")]
    pub qr_png_url: String,
    /// RFC 3339 UTC with milliseconds.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// RFC 3339 UTC with milliseconds.
    #[schema(format = DateTime)]
    pub expires_at: String,
    /// The effective lifetime in seconds.
    #[schema(minimum = 30, maximum = 600)]
    pub ttl_s: u64,
}

/// Where a session is: `pending` → `scanned` → one terminal state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Scanned,
    Approved,
    Rejected,
    Expired,
    Cancelled,
    Failed,
}

impl Status {
    /// Whether the session can no longer change.
    pub fn is_terminal(self) -> bool {
        !matches!(self, Status::Pending | Status::Scanned)
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Scanned => "scanned",
            Status::Approved => "approved",
            Status::Rejected => "rejected",
            Status::Expired => "expired",
            Status::Cancelled => "cancelled",
            Status::Failed => "failed",
        }
    }
}

/// The phone that claimed the session (its id is not shown).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeviceView {
    pub name: String,
}

/// `result.conversation`: the requester's side of a conversation the phone opened.
/// `token` opens `GET /v1/conversations/{id}/ws` and ends it with `DELETE ...?t=`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RequesterGrant {
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub id: String,
    pub token: String,
    /// `max_s` after opening.
    #[schema(format = DateTime)]
    pub expires_at: String,
}

/// `result` of an `approved` session. Re-verify `signature_b64` over `tbs_b64`
/// with the certificate's key yourself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApprovedResult {
    pub certificate: CertificateInfo,
    /// DER SM2 signature (SM3, ID `1234567812345678`).
    #[schema(content_encoding = "base64")]
    pub signature_b64: String,
    /// Exactly the bytes that were signed (the challenge text, the RP's bytes,
    /// or `DER(TBS_Sign)` for a seal signature).
    #[schema(content_encoding = "base64")]
    pub tbs_b64: String,
    /// Seal sessions only: the `SES_Signature`, DER, as the phone sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(content_encoding = "base64")]
    pub seal_signature_b64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<SealResult>,
    /// Kind `encrypt` only: the recipient certificates the phone picked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_items = 1, max_items = 50)]
    pub recipients: Option<Vec<CertificateInfo>>,
    /// Kind `decrypt` only: the content key SM2-encrypted to `reply_key` (GM/T 0009 DER).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(content_encoding = "base64")]
    pub wrapped_key_b64: Option<String>,
    /// A member signed with a company certificate granted to it (企业证书授权).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate: Option<Delegate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<RequesterGrant>,
}

/// `result` of a `rejected` session (the phone's reason, or `match_failed`)
/// or of a `failed` one (`too_many_bad_completions`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReasonResult {
    pub reason: String,
}

/// The outcome, identical for the RP, the browser and webhooks; `null` for
/// `expired` and `cancelled`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum SessionResult {
    Approved(Box<ApprovedResult>),
    Reason(ReasonResult),
}

/// The session as the RP sees it (`GET`, `DELETE`, webhooks). The browser's
/// snapshot adds `qr_text` and `qr_seq` while `pending`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SessionView {
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub id: String,
    #[schema(value_type = Kind)]
    pub kind: String,
    #[schema(value_type = Status)]
    pub status: String,
    /// Starts at 1; each status change adds 1 (a QR rotation does not).
    #[schema(minimum = 1)]
    pub version: u64,
    pub display: DisplayView,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub expires_at: String,
    /// Present once claimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub scanned_at: Option<String>,
    /// Present once terminal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub completed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceView>,
    /// Absent while not terminal; `null` for `expired` and `cancelled`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present_or_null"
    )]
    #[schema(value_type = Option<SessionResult>)]
    pub result: Option<Option<SessionResult>>,
    /// Number matching: the two digits the phone must pick, only while `scanned`
    /// (never in webhooks). Show it large.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[0-9]{2}$")]
    pub match_code: Option<String>,
    /// Browser snapshot only, while `pending`: the current QR text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qr_text: Option<String>,
    /// Browser snapshot only, while `pending`: the rotation counter of `qr_text`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qr_seq: Option<u32>,
}

/// A field that is absent (`None`) differs from one sent as `null` (`Some(None)`).
fn present_or_null<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_with_an_unknown_field_is_refused() {
        let e = serde_json::from_str::<CreateSessionRequest>(
            r#"{"kind":"login","display":{"title":"t"},"colour":"red"}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
    }

    #[test]
    fn a_null_optional_field_is_absent() {
        let r: CreateSessionRequest =
            serde_json::from_str(r#"{"kind":"sign","display":{"title":"t"},"tbs_b64":null}"#)
                .unwrap();
        assert_eq!(r, CreateSessionRequest::new(Kind::Sign, "t"));
    }

    #[test]
    fn an_answer_with_a_newer_field_is_read() {
        let v = serde_json::json!({
            "id": "a", "kind": "login", "status": "pending", "version": 1,
            "qr_text": "q", "browser_token": "b", "ws_url": "w", "events_url": "e",
            "qr_svg_url": "s", "qr_png_url": "p", "created_at": "c", "expires_at": "x",
            "ttl_s": 180, "added_later": true
        });
        let r: CreateSessionResponse = serde_json::from_value(v).unwrap();
        assert_eq!(r.ttl_s, 180);
    }
}
