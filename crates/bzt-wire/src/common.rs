//! Shapes several areas share: certificates, seals, delegates, the opening window.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A certificate as the broker describes it (a session's result, a recipient).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CertificateInfo {
    /// The certificate, PEM.
    pub pem: String,
    /// Lowercase hex without leading zeros or colons.
    #[schema(pattern = "^(0|[1-9a-f][0-9a-f]*)$")]
    pub serial: String,
    /// RFC 4514 string.
    pub subject: String,
    /// RFC 4514 string.
    pub issuer: String,
    #[schema(format = DateTime)]
    pub not_before: String,
    #[schema(format = DateTime)]
    pub not_after: String,
    /// The trust domain it chained to.
    pub domain: String,
}

/// A member using a company certificate granted to it (企业证书授权, docs/key-splitting.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Delegate {
    pub name: String,
    /// The member's phone (its device id).
    pub device: String,
}

/// The opening window of a `decrypt` session (开标时间), as answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OpeningWindow {
    /// The opening time; from it (included) the content key may be unwrapped.
    #[schema(format = DateTime)]
    pub not_before: String,
    /// The decryption deadline (excluded).
    #[schema(format = DateTime)]
    pub not_after: String,
}

/// A seal signature asked for: what the phone's `SES_Signature` must protect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SealAsk {
    /// SM3 of the protected data, standard base64.
    #[schema(content_encoding = "base64")]
    pub data_hash_b64: String,
    pub property_info: String,
}

/// The picture of a seal, to stamp on the page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SealPicture {
    /// PNG, JPG, GIF, BMP or SVG.
    #[serde(rename = "type")]
    pub picture_type: String,
    #[schema(content_encoding = "base64")]
    pub data_b64: String,
    pub width_mm: u32,
    pub height_mm: u32,
}

/// The verified seal of a seal signature, with its picture to stamp on the page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SealResult {
    /// The seal's code (esID).
    pub es_id: String,
    pub name: String,
    /// `company`, `personal` or `other`.
    #[serde(rename = "type")]
    pub seal_type: String,
    #[schema(format = DateTime)]
    pub valid_start: String,
    #[schema(format = DateTime)]
    pub valid_end: String,
    /// Subject of the seal maker's certificate (RFC 4514).
    pub maker: String,
    #[schema(format = DateTime)]
    pub time_info: String,
    pub property_info: String,
    #[schema(content_encoding = "base64")]
    pub data_hash_b64: String,
    pub picture: SealPicture,
}

/// `{"serial"}`: a normalised serial (lowercase hex without leading zeros or colons).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SerialAnswer {
    #[schema(pattern = "^(0|[1-9a-f][0-9a-f]*)$")]
    pub serial: String,
}
