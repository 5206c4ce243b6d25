//! What a seal is made of ([`SealSpec`]) and seal signatures prepared for any signer
//! ([`prepare_signature`]); making with a whole key is [`crate::maker`] (feature `maker`).

use der::asn1::{BitString, Ia5String, OctetString};
use der::{Decode, Encode};
use time::OffsetDateTime;

use crate::asn1::{SeSeal, SesSignature, TbsSign};
use crate::error::SealError;
use crate::ses_time::SesTime;
use crate::{OID_SM2_WITH_SM3, VERSION};

/// The seal types this project writes into `SES_ESPropertyInfo.type` (the standard leaves the
/// numbering to the issuer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SealType {
    /// 单位公章: bound to the company's certificate.
    Company,
    /// 个人私章 (or a handwritten signature): bound to a person's certificate.
    Personal,
}

impl SealType {
    /// The number written into the seal.
    pub fn code(self) -> u32 {
        match self {
            SealType::Company => 1,
            SealType::Personal => 2,
        }
    }

    /// The type for a number read from a seal, if it is one of ours.
    pub fn from_code(code: u32) -> Option<Self> {
        match code {
            1 => Some(SealType::Company),
            2 => Some(SealType::Personal),
            _ => None,
        }
    }

    /// Wire name (`company`, `personal`).
    pub fn as_str(self) -> &'static str {
        match self {
            SealType::Company => "company",
            SealType::Personal => "personal",
        }
    }
}

/// The picture of a seal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Picture {
    /// `"PNG"`, `"JPG"`, `"GIF"`, `"BMP"` or `"SVG"`.
    pub picture_type: String,
    /// The image file.
    pub data: Vec<u8>,
    /// Display size on the page, millimetres (a company seal is commonly 40 × 40).
    pub width_mm: u32,
    /// Display height, millimetres.
    pub height_mm: u32,
}

/// What the maker puts into a seal.
#[derive(Clone, Debug)]
pub struct SealSpec {
    /// The seal's unique code (印章编码); IA5 (ASCII) only.
    pub es_id: String,
    pub seal_type: SealType,
    /// The seal's name, usually the company or the person.
    pub name: String,
    /// DER of the certificates the seal is bound to (at least one).
    pub owner_certs: Vec<Vec<u8>>,
    pub created: OffsetDateTime,
    pub valid_start: OffsetDateTime,
    pub valid_end: OffsetDateTime,
    pub picture: Picture,
}

/// The picture types a seal may carry.
pub const PICTURE_TYPES: [&str; 5] = ["PNG", "JPG", "GIF", "BMP", "SVG"];

/// A seal signature waiting for its SM2 signature: for signers that do not hold the key in
/// one piece (a phone whose key is split with a co-signer signs [`PreparedSignature::signed_bytes`]
/// its own way, then calls [`PreparedSignature::finish`]).
#[derive(Clone, Debug)]
pub struct PreparedSignature {
    tbs: TbsSign,
    signed: Vec<u8>,
    cert: Vec<u8>,
}

impl PreparedSignature {
    /// `DER(TBS_Sign)`: what the signer's SM2 key must sign (SM3, ID `1234567812345678`).
    pub fn signed_bytes(&self) -> &[u8] {
        &self.signed
    }

    /// Wraps `signature_der` (DER `SEQUENCE { r, s }`) into the `SES_Signature`, DER.
    pub fn finish(self, signature_der: &[u8]) -> Result<Vec<u8>, SealError> {
        SesSignature {
            to_sign: self.tbs,
            cert: octets(&self.cert, "SES_Signature.cert")?,
            signature_alg_id: OID_SM2_WITH_SM3,
            signature: bits(signature_der, "SES_Signature.signature")?,
            time_stamp: None,
        }
        .to_der()
        .map_err(|e| SealError::input("SES_Signature", e.to_string()))
    }
}

/// Builds `TBS_Sign` for `data_hash` (32 bytes) and `property_info` at `at`, with the seal
/// embedded; refuses a seal that is not bound to `signer_cert_der`.
pub fn prepare_signature(
    seal_der: &[u8],
    signer_cert_der: &[u8],
    data_hash: &[u8],
    property_info: &str,
    at: OffsetDateTime,
) -> Result<PreparedSignature, SealError> {
    let seal = SeSeal::from_der(seal_der).map_err(|e| SealError::malformed("SESeal", e))?;
    if data_hash.len() != 32 {
        return Err(SealError::input(
            "TBS_Sign.dataHash",
            format!("an SM3 hash has 32 bytes, got {}", data_hash.len()),
        ));
    }
    let bound = seal
        .e_seal_info
        .property
        .certificates()
        .map_err(|e| SealError::malformed("SES_ESPropertyInfo.certList", e))?
        .is_some_and(|certs| certs.iter().any(|c| c == signer_cert_der));
    if !bound {
        return Err(SealError::new(
            crate::SealErrorKind::NotBound,
            "SES_ESPropertyInfo.certList",
            "this seal was made for another certificate",
        ));
    }
    let tbs = TbsSign {
        version: VERSION,
        eseal: seal,
        time_info: gtime(at, "TBS_Sign.timeInfo")?,
        data_hash: bits(data_hash, "TBS_Sign.dataHash")?,
        property_info: ia5(property_info, "TBS_Sign.propertyInfo")?,
        ext_datas: None,
    };
    let signed = tbs
        .to_der()
        .map_err(|e| SealError::input("TBS_Sign", e.to_string()))?;
    Ok(PreparedSignature {
        tbs,
        signed,
        cert: signer_cert_der.to_vec(),
    })
}

pub(crate) fn ia5(s: &str, part: &'static str) -> Result<Ia5String, SealError> {
    Ia5String::new(s).map_err(|_| SealError::input(part, format!("{s:?} is not IA5 (ASCII) text")))
}

pub(crate) fn octets(b: &[u8], part: &'static str) -> Result<OctetString, SealError> {
    OctetString::new(b.to_vec()).map_err(|e| SealError::input(part, e.to_string()))
}

pub(crate) fn bits(b: &[u8], part: &'static str) -> Result<BitString, SealError> {
    BitString::from_bytes(b).map_err(|e| SealError::input(part, e.to_string()))
}

/// GeneralizedTime to the second (DER writes no fraction of zero; ours are whole seconds).
pub(crate) fn gtime(t: OffsetDateTime, part: &'static str) -> Result<SesTime, SealError> {
    SesTime::from_offset(t)
        .ok_or_else(|| SealError::input(part, "the year must be within 0..=9999"))
}
