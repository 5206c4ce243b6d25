//! The broker's check of a seal signature (扫码签章 with a GB/T 38540 electronic seal).
//!
//! A `sign` session created with `seal` is completed with an `SES_Signature` instead of a bare
//! SM2 signature. Its certificate has passed the trust-store check already (chain, validity,
//! revocation, `expect_cert`); here the signature itself is checked in the order of
//! `bzt_seal::verify`, against the session's hash and `property_info`, with the configured seal
//! makers, and for freshness. Refusals map onto two codes: `bad_signature` for a signature that
//! is wrong in itself, `seal_not_acceptable` for a seal this broker does not accept.

use bzt_core::session::{SealApproval, SealPicture, SealRequest};
use bzt_core::{DomainError, ErrorCode, Timestamp};
use bzt_seal::{SealErrorKind, SealSignature, MAX_CLOCK_SKEW};
use time::OffsetDateTime;
use x509_cert::Certificate;

/// A verified seal signature: what the approval records, and the SM2 signature inside it.
pub struct CheckedSealSignature {
    pub approval: SealApproval,
    /// The signer's SM2 signature over `DER(TBS_Sign)` (`result.signature_b64`).
    pub signature: Vec<u8>,
}

/// Checks `der` (an `SES_Signature`) for a session that asked for `wanted`, created at
/// `created_at`, signed by the certificate whose DER is `signer_der`.
pub fn check_seal_signature(
    der: &[u8],
    wanted: &SealRequest,
    signer_der: &[u8],
    makers: &[Certificate],
    created_at: Timestamp,
    now: Timestamp,
) -> Result<CheckedSealSignature, DomainError> {
    let bad = |m: String| DomainError::new(ErrorCode::BadSignature, m);
    let refused = |m: String| DomainError::new(ErrorCode::SealNotAcceptable, m);
    let sig = SealSignature::from_der(der).map_err(|e| bad(e.to_string()))?;
    if sig.signer_cert_der() != signer_der {
        return Err(bad(
            "SES_Signature.cert: the seal signature's certificate is not `certificate_pem`".into(),
        ));
    }
    let now_t = to_offset(now);
    let verified =
        bzt_seal::verify_signature(&sig, makers, &wanted.data_hash, now_t).map_err(|e| {
            let seal_problem = matches!(
                e.kind,
                SealErrorKind::NotBound
                    | SealErrorKind::MakerSignature
                    | SealErrorKind::UntrustedMaker
            ) || (e.kind == SealErrorKind::SealNotValid
                && e.part.starts_with("SES_ESPropertyInfo"));
            if seal_problem {
                refused(e.to_string())
            } else {
                bad(e.to_string())
            }
        })?;
    if sig.property_info() != wanted.property_info {
        return Err(bad(format!(
            "TBS_Sign.propertyInfo: {:?} is not the session's {:?}",
            sig.property_info(),
            wanted.property_info
        )));
    }
    // A stamp made before the session existed was not made for it.
    if verified.time_info < to_offset(created_at) - MAX_CLOCK_SKEW {
        return Err(bad(format!(
            "TBS_Sign.timeInfo: the stamp is dated {}, before this session was created",
            from_offset(verified.time_info)
        )));
    }
    // The seal must still be valid now, not only when the phone stamped.
    let seal = sig.seal();
    if now_t > seal.valid_end() {
        return Err(refused(format!(
            "SES_ESPropertyInfo.validEnd: the seal expired at {}",
            from_offset(seal.valid_end())
        )));
    }
    let picture = seal.picture();
    let approval = SealApproval {
        seal_signature: der.to_vec(),
        signed: sig.signed_bytes().map_err(|e| bad(e.to_string()))?,
        es_id: seal.es_id().to_owned(),
        name: seal.name().to_owned(),
        seal_type: seal
            .seal_type()
            .map(|t| t.as_str())
            .unwrap_or("other")
            .to_owned(),
        valid_start: from_offset(seal.valid_start()),
        valid_end: from_offset(seal.valid_end()),
        maker: bzt_core::pki::name_string(verified.maker.tbs_certificate().subject()),
        time_info: from_offset(verified.time_info),
        property_info: sig.property_info().to_owned(),
        picture: SealPicture {
            picture_type: picture.picture_type,
            data: picture.data,
            width_mm: picture.width_mm,
            height_mm: picture.height_mm,
        },
    };
    Ok(CheckedSealSignature {
        approval,
        signature: sig.signature().to_vec(),
    })
}

fn to_offset(t: Timestamp) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.unix_millis()) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn from_offset(t: OffsetDateTime) -> Timestamp {
    Timestamp::from_unix_millis((t.unix_timestamp_nanos() / 1_000_000) as i64)
}
