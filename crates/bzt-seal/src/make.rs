//! Making seals (the maker's side) and seal signatures (the owner's side).

use der::asn1::{Any, BitString, GeneralizedTime, Ia5String, OctetString};
use der::{Decode, Encode};
use sm2::dsa::SigningKey;
use time::OffsetDateTime;

use crate::asn1::{
    SeSeal, SesHeader, SesPictureInfo, SesPropertyInfo, SesSealInfo, SesSignature, TbsSign,
};
use crate::error::SealError;
use crate::{HEADER_ID, OID_SM2_WITH_SM3, VENDOR_ID, VERSION};

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

/// Makes a seal: builds `SES_SealInfo`, signs its DER with the maker's key and returns the DER of
/// `SESeal`. `maker_cert_der` must be the certificate of `maker_key`.
pub fn make_seal(
    spec: &SealSpec,
    maker_cert_der: &[u8],
    maker_key: &SigningKey,
) -> Result<Vec<u8>, SealError> {
    const PART: &str = "SES_SealInfo";
    if spec.owner_certs.is_empty() {
        return Err(SealError::input(
            PART,
            "a seal must be bound to at least one certificate",
        ));
    }
    if spec.name.trim().is_empty() {
        return Err(SealError::input(PART, "the seal's name must not be empty"));
    }
    if spec.valid_end <= spec.valid_start {
        return Err(SealError::input(PART, "validEnd must follow validStart"));
    }
    if !PICTURE_TYPES.contains(&spec.picture.picture_type.as_str()) {
        return Err(SealError::input(
            PART,
            format!("picture type must be one of {}", PICTURE_TYPES.join(", ")),
        ));
    }
    if spec.picture.width_mm == 0 || spec.picture.height_mm == 0 {
        return Err(SealError::input(
            PART,
            "the picture's size must not be zero",
        ));
    }
    let maker_cert = x509_cert::Certificate::from_der(maker_cert_der)
        .map_err(|e| SealError::input("SESeal.cert", format!("not a DER certificate: {e}")))?;
    if !bzt_devca::sm2sig::key_matches_cert(maker_key, &maker_cert) {
        return Err(SealError::input(
            "SESeal.cert",
            "the maker's key is not the key of the maker's certificate",
        ));
    }

    let certs: Vec<OctetString> = spec
        .owner_certs
        .iter()
        .map(|c| octets(c, PART))
        .collect::<Result<_, _>>()?;
    let info = SesSealInfo {
        header: SesHeader {
            id: ia5(HEADER_ID, PART)?,
            version: VERSION,
            vid: ia5(VENDOR_ID, PART)?,
        },
        es_id: ia5(&spec.es_id, "SES_SealInfo.esID")?,
        property: SesPropertyInfo {
            seal_type: spec.seal_type.code(),
            name: spec.name.clone(),
            cert_list_type: 1,
            cert_list: Any::encode_from(&certs)
                .map_err(|e| SealError::input(PART, e.to_string()))?,
            create_date: gtime(spec.created, "SES_ESPropertyInfo.createDate")?,
            valid_start: gtime(spec.valid_start, "SES_ESPropertyInfo.validStart")?,
            valid_end: gtime(spec.valid_end, "SES_ESPropertyInfo.validEnd")?,
        },
        picture: SesPictureInfo {
            picture_type: ia5(&spec.picture.picture_type, PART)?,
            data: octets(&spec.picture.data, PART)?,
            width: spec.picture.width_mm,
            height: spec.picture.height_mm,
        },
        ext_datas: None,
    };
    let signed = info
        .to_der()
        .map_err(|e| SealError::input(PART, e.to_string()))?;
    let signature = bzt_devca::sign_der(maker_key, &signed)
        .map_err(|e| SealError::input("SESeal.signedValue", e.to_string()))?;
    SeSeal {
        e_seal_info: info,
        cert: octets(maker_cert_der, "SESeal.cert")?,
        sign_alg_id: OID_SM2_WITH_SM3,
        signed_value: bits(&signature, "SESeal.signedValue")?,
    }
    .to_der()
    .map_err(|e| SealError::input("SESeal", e.to_string()))
}

/// Stamps: builds `TBS_Sign` over `data_hash` (the SM3 of the protected data, 32 bytes) with the
/// seal embedded, signs its DER with the owner's key and returns the DER of `SES_Signature`.
/// Checks that `signer_cert_der` is one the seal is bound to and the key matches it, so a phone
/// cannot make a signature that no verifier would accept.
pub fn sign_with_seal(
    seal_der: &[u8],
    signer_cert_der: &[u8],
    signer_key: &SigningKey,
    data_hash: &[u8],
    property_info: &str,
    at: OffsetDateTime,
) -> Result<Vec<u8>, SealError> {
    let prepared = prepare_signature(seal_der, signer_cert_der, data_hash, property_info, at)?;
    let signer_cert = x509_cert::Certificate::from_der(signer_cert_der).map_err(|e| {
        SealError::input("SES_Signature.cert", format!("not a DER certificate: {e}"))
    })?;
    if !bzt_devca::sm2sig::key_matches_cert(signer_key, &signer_cert) {
        return Err(SealError::input(
            "SES_Signature.cert",
            "the signing key is not the key of the signer's certificate",
        ));
    }
    let signature = bzt_devca::sign_der(signer_key, prepared.signed_bytes())
        .map_err(|e| SealError::input("SES_Signature.signature", e.to_string()))?;
    prepared.finish(&signature)
}

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

fn ia5(s: &str, part: &'static str) -> Result<Ia5String, SealError> {
    Ia5String::new(s).map_err(|_| SealError::input(part, format!("{s:?} is not IA5 (ASCII) text")))
}

fn octets(b: &[u8], part: &'static str) -> Result<OctetString, SealError> {
    OctetString::new(b.to_vec()).map_err(|e| SealError::input(part, e.to_string()))
}

fn bits(b: &[u8], part: &'static str) -> Result<BitString, SealError> {
    BitString::from_bytes(b).map_err(|e| SealError::input(part, e.to_string()))
}

/// GeneralizedTime to the second (DER allows no fraction of zero; `der` writes none).
pub(crate) fn gtime(t: OffsetDateTime, part: &'static str) -> Result<GeneralizedTime, SealError> {
    let secs = u64::try_from(t.unix_timestamp())
        .map_err(|_| SealError::input(part, "dates before 1970 are not supported"))?;
    GeneralizedTime::from_unix_duration(std::time::Duration::from_secs(secs))
        .map_err(|e| SealError::input(part, e.to_string()))
}
