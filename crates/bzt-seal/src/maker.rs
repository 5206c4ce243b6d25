//! Making seals (the maker's side) and seal signatures (the owner's side) with a whole SM2
//! private key in this process: the development seal maker and the CLI. Behind the `maker`
//! feature so that a verifier does not carry it.

use der::asn1::{Any, OctetString};
use der::{Decode, Encode};
use sm2::dsa::SigningKey;
use time::OffsetDateTime;

use crate::asn1::{SeSeal, SesHeader, SesPictureInfo, SesPropertyInfo, SesSealInfo};
use crate::error::SealError;
use crate::make::{bits, gtime, ia5, octets, prepare_signature, SealSpec, PICTURE_TYPES};
use crate::{HEADER_ID, OID_SM2_WITH_SM3, VENDOR_ID, VERSION};

/// Makes a seal: builds `SES_SealInfo`, signs its DER with the maker's key and returns the DER of
/// `SESeal`. `maker_cert_der` must be the certificate of `maker_key`.
///
/// Behind the `maker` feature: a verifier (the broker's check, a phone) never holds a maker's key.
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
    if !bzt_crypto::sm2sig::key_matches_cert(maker_key, &maker_cert) {
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
    let signature = bzt_crypto::sm2sig::sign_der(maker_key, &signed)
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
///
/// Behind the `maker` feature (a whole private key in this process); a phone uses
/// [`prepare_signature`] and signs the bytes its own way.
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
    if !bzt_crypto::sm2sig::key_matches_cert(signer_key, &signer_cert) {
        return Err(SealError::input(
            "SES_Signature.cert",
            "the signing key is not the key of the signer's certificate",
        ));
    }
    let signature = bzt_crypto::sm2sig::sign_der(signer_key, prepared.signed_bytes())
        .map_err(|e| SealError::input("SES_Signature.signature", e.to_string()))?;
    prepared.finish(&signature)
}
