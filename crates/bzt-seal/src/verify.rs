//! Reading and checking seals and seal signatures.
//!
//! The order is the C++ reference verifier's (see `../shared/SEALS.md` as copied into the
//! project's `docs/seals.md`): the signer's signature over `DER(TBS_Sign)`; the signer's
//! certificate in the seal's `certList`; the maker's signature over `DER(SES_SealInfo)` and the
//! maker's certificate (trusted, valid); `timeInfo` within the seal's and the signer
//! certificate's validity; `dataHash` against the data. The first failure is reported.

use crate::ses_time::SesTime;
use der::{Decode, Encode, Tagged};
use sm3::{Digest, Sm3};
use time::OffsetDateTime;
use x509_cert::Certificate;

use crate::asn1::{SeSeal, SesSignature};
use crate::error::{SealError, SealErrorKind};
use crate::make::{Picture, SealType};
use crate::{HEADER_ID, MAX_CLOCK_SKEW, OID_SM2_WITH_SM3, VERSION};

/// A seal read from DER, its format checked (not its signature: see [`verify_seal`]).
#[derive(Clone, Debug)]
pub struct Seal {
    der: Vec<u8>,
    asn1: SeSeal,
}

impl Seal {
    /// Reads a `SESeal`: DER, header `"ES"` version 4, SM2-with-SM3.
    pub fn from_der(der: &[u8]) -> Result<Self, SealError> {
        let asn1 = SeSeal::from_der(der).map_err(|e| SealError::malformed("SESeal", e))?;
        check_seal_format(&asn1)?;
        Ok(Self {
            der: der.to_vec(),
            asn1,
        })
    }

    /// The DER as read.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The structure.
    pub fn asn1(&self) -> &SeSeal {
        &self.asn1
    }

    /// 印章编码.
    pub fn es_id(&self) -> &str {
        self.asn1.e_seal_info.es_id.as_str()
    }

    /// The seal's name.
    pub fn name(&self) -> &str {
        &self.asn1.e_seal_info.property.name
    }

    /// The type number as written in the seal.
    pub fn seal_type_code(&self) -> u32 {
        self.asn1.e_seal_info.property.seal_type
    }

    /// The type, when it is one this project writes.
    pub fn seal_type(&self) -> Option<SealType> {
        SealType::from_code(self.seal_type_code())
    }

    /// The picture.
    pub fn picture(&self) -> Picture {
        let p = &self.asn1.e_seal_info.picture;
        Picture {
            picture_type: p.picture_type.as_str().to_owned(),
            data: p.data.as_bytes().to_vec(),
            width_mm: p.width,
            height_mm: p.height,
        }
    }

    /// Start of validity.
    pub fn valid_start(&self) -> OffsetDateTime {
        to_time(&self.asn1.e_seal_info.property.valid_start)
    }

    /// End of validity.
    pub fn valid_end(&self) -> OffsetDateTime {
        to_time(&self.asn1.e_seal_info.property.valid_end)
    }

    /// The maker's certificate, DER.
    pub fn maker_cert_der(&self) -> &[u8] {
        self.asn1.cert.as_bytes()
    }

    /// Whether the seal is bound to the certificate `cert_der` (by the certificate itself, or by
    /// its SM3 digest in a type-2 list).
    pub fn is_bound_to(&self, cert_der: &[u8]) -> Result<bool, SealError> {
        let property = &self.asn1.e_seal_info.property;
        let part = "SES_ESPropertyInfo.certList";
        if let Some(certs) = property
            .certificates()
            .map_err(|e| SealError::malformed(part, e))?
        {
            return Ok(certs.iter().any(|c| c == cert_der));
        }
        if let Some(digests) = property
            .digests()
            .map_err(|e| SealError::malformed(part, e))?
        {
            let sm3 = Sm3::digest(cert_der);
            for d in &digests {
                if !d.digest_type.as_str().eq_ignore_ascii_case("SM3") {
                    return Err(SealError::new(
                        SealErrorKind::Unsupported,
                        part,
                        format!(
                            "certificate digests of type {:?} are not supported (only SM3)",
                            d.digest_type.as_str()
                        ),
                    ));
                }
                if d.value.as_bytes() == sm3.as_slice() {
                    return Ok(true);
                }
            }
            return Ok(false);
        }
        Err(SealError::new(
            SealErrorKind::Unsupported,
            "SES_ESPropertyInfo.certListType",
            format!(
                "certListType {} is neither 1 (certificates) nor 2 (digests)",
                property.cert_list_type
            ),
        ))
    }
}

/// Checks a seal on its own: the maker's signature over `DER(SES_SealInfo)`, the maker's
/// certificate (one of `trusted_makers`, or issued by one, and valid at `at`), and the seal's
/// validity at `at`.
pub fn verify_seal(
    seal: &Seal,
    trusted_makers: &[Certificate],
    at: OffsetDateTime,
) -> Result<(), SealError> {
    verify_maker(seal, trusted_makers, at)?;
    seal_valid_at(seal, at)
}

/// A seal signature read from DER, its format checked (see [`verify_signature`]).
#[derive(Clone, Debug)]
pub struct SealSignature {
    der: Vec<u8>,
    asn1: SesSignature,
    seal: Seal,
}

impl SealSignature {
    /// Reads an `SES_Signature`: DER, version 4, SM2-with-SM3, a seal of the right format.
    pub fn from_der(der: &[u8]) -> Result<Self, SealError> {
        let asn1 =
            SesSignature::from_der(der).map_err(|e| SealError::malformed("SES_Signature", e))?;
        let tbs = &asn1.to_sign;
        if tbs.version != VERSION {
            return Err(SealError::new(
                SealErrorKind::Unsupported,
                "TBS_Sign.version",
                format!(
                    "version {} is not supported (only {VERSION}, GB/T 38540-2020)",
                    tbs.version
                ),
            ));
        }
        if asn1.signature_alg_id != OID_SM2_WITH_SM3 {
            return Err(SealError::new(
                SealErrorKind::Unsupported,
                "SES_Signature.signatureAlgID",
                format!(
                    "algorithm {} is not SM2 with SM3 ({OID_SM2_WITH_SM3})",
                    asn1.signature_alg_id
                ),
            ));
        }
        if let Some(ext) = &tbs.ext_datas {
            // ofdrw writes `[0] EXPLICIT`, the C++ verifier reads it untagged: accept both.
            let tag = ext.tag();
            let ok = tag == der::Tag::Sequence
                || matches!(tag, der::Tag::ContextSpecific { constructed: true, number } if number.value() == 0);
            if !ok {
                return Err(SealError::malformed(
                    "TBS_Sign.extDatas",
                    format!("unexpected tag {tag}"),
                ));
            }
        }
        check_seal_format(&tbs.eseal)?;
        let seal_der = tbs
            .eseal
            .to_der()
            .map_err(|e| SealError::malformed("SESeal", e))?;
        let seal = Seal {
            der: seal_der,
            asn1: tbs.eseal.clone(),
        };
        Ok(Self {
            der: der.to_vec(),
            asn1,
            seal,
        })
    }

    /// The DER as read.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The structure.
    pub fn asn1(&self) -> &SesSignature {
        &self.asn1
    }

    /// The embedded seal.
    pub fn seal(&self) -> &Seal {
        &self.seal
    }

    /// The signer's certificate, DER.
    pub fn signer_cert_der(&self) -> &[u8] {
        self.asn1.cert.as_bytes()
    }

    /// `DER(TBS_Sign)`: exactly the bytes the signer signed.
    pub fn signed_bytes(&self) -> Result<Vec<u8>, SealError> {
        self.asn1
            .to_sign
            .to_der()
            .map_err(|e| SealError::malformed("TBS_Sign", e))
    }

    /// The signer's SM2 signature (DER `SEQUENCE { r, s }`).
    pub fn signature(&self) -> &[u8] {
        self.asn1.signature.raw_bytes()
    }

    /// When the stamp was made.
    pub fn time_info(&self) -> OffsetDateTime {
        to_time(&self.asn1.to_sign.time_info)
    }

    /// `dataHash` as written.
    pub fn data_hash(&self) -> &[u8] {
        self.asn1.to_sign.data_hash.raw_bytes()
    }

    /// `propertyInfo` as written.
    pub fn property_info(&self) -> &str {
        self.asn1.to_sign.property_info.as_str()
    }
}

/// What a verified seal signature tells.
#[derive(Clone, Debug)]
pub struct VerifiedSignature {
    /// The signer's certificate, parsed.
    pub signer: Certificate,
    /// The maker's certificate, parsed.
    pub maker: Certificate,
    /// When the stamp was made.
    pub time_info: OffsetDateTime,
}

/// Checks a seal signature in the order of the module doc. `data_hash` is the SM3 the verifier
/// computed (or was given) for the protected data; `now` bounds `timeInfo` from above (plus
/// [`MAX_CLOCK_SKEW`]). Validity periods are checked at `timeInfo`, when the stamp was made.
pub fn verify_signature(
    sig: &SealSignature,
    trusted_makers: &[Certificate],
    data_hash: &[u8],
    now: OffsetDateTime,
) -> Result<VerifiedSignature, SealError> {
    // 1. The signer's signature over DER(TBS_Sign).
    let signer = Certificate::from_der(sig.signer_cert_der())
        .map_err(|e| SealError::malformed("SES_Signature.cert", e))?;
    let signer_key = bzt_crypto::sm2sig::cert_verifying_key(&signer).map_err(|e| {
        SealError::new(
            SealErrorKind::Unsupported,
            "SES_Signature.cert",
            e.to_string(),
        )
    })?;
    let signature = sig.asn1.signature.as_bytes().ok_or_else(|| {
        SealError::malformed("SES_Signature.signature", "the BIT STRING has unused bits")
    })?;
    bzt_crypto::sm2sig::verify_der(&signer_key, &sig.signed_bytes()?, signature).map_err(|_| {
        SealError::new(
            SealErrorKind::SignerSignature,
            "SES_Signature.signature",
            "the signer's SM2 signature over TBS_Sign does not verify (the signature or anything it covers was changed)",
        )
    })?;

    // 2. The seal is bound to the signer's certificate.
    if !sig.seal.is_bound_to(sig.signer_cert_der())? {
        return Err(SealError::new(
            SealErrorKind::NotBound,
            "SES_ESPropertyInfo.certList",
            "this seal was made for another certificate than the signer's",
        ));
    }

    // 3. The maker's signature and certificate, at the time of stamping.
    let time_info = sig.time_info();
    let maker = verify_maker(&sig.seal, trusted_makers, time_info)?;

    // 4. Times: the stamp within the seal's and the signer certificate's validity, not ahead of us.
    if time_info > now + MAX_CLOCK_SKEW {
        return Err(SealError::new(
            SealErrorKind::SealNotValid,
            "TBS_Sign.timeInfo",
            format!("the stamp is dated {time_info}, in the future"),
        ));
    }
    seal_valid_at(&sig.seal, time_info)?;
    let validity = signer.tbs_certificate().validity();
    let (from, until) = (
        x509_time(&validity.not_before),
        x509_time(&validity.not_after),
    );
    if time_info < from || time_info > until {
        return Err(SealError::new(
            SealErrorKind::SignerCertNotValid,
            "SES_Signature.cert",
            format!("the signer's certificate is valid from {from} until {until}, not at the stamp's time {time_info}"),
        ));
    }

    // 5. The data.
    let written = sig.asn1.to_sign.data_hash.as_bytes().unwrap_or_default();
    if written != data_hash {
        return Err(SealError::new(
            SealErrorKind::DataHash,
            "TBS_Sign.dataHash",
            "the signed hash is not the hash of this data",
        ));
    }
    Ok(VerifiedSignature {
        signer,
        maker,
        time_info,
    })
}

/// Header, version and algorithm of a seal.
fn check_seal_format(seal: &SeSeal) -> Result<(), SealError> {
    let header = &seal.e_seal_info.header;
    if header.id.as_str() != HEADER_ID {
        return Err(SealError::new(
            SealErrorKind::Malformed,
            "SES_Header.id",
            format!("{:?} is not \"{HEADER_ID}\"", header.id.as_str()),
        ));
    }
    if header.version != VERSION {
        return Err(SealError::new(
            SealErrorKind::Unsupported,
            "SES_Header.version",
            format!(
                "seal version {} is not supported (only {VERSION}, GB/T 38540-2020)",
                header.version
            ),
        ));
    }
    if seal.sign_alg_id != OID_SM2_WITH_SM3 {
        return Err(SealError::new(
            SealErrorKind::Unsupported,
            "SESeal.signAlgID",
            format!(
                "algorithm {} is not SM2 with SM3 ({OID_SM2_WITH_SM3})",
                seal.sign_alg_id
            ),
        ));
    }
    Ok(())
}

/// The maker's signature over `DER(SES_SealInfo)`, then the maker's certificate: one of the
/// trusted makers or issued (signed) by one, and valid at `at`.
fn verify_maker(
    seal: &Seal,
    trusted: &[Certificate],
    at: OffsetDateTime,
) -> Result<Certificate, SealError> {
    let maker = Certificate::from_der(seal.maker_cert_der())
        .map_err(|e| SealError::malformed("SESeal.cert", e))?;
    let key = bzt_crypto::sm2sig::cert_verifying_key(&maker)
        .map_err(|e| SealError::new(SealErrorKind::Unsupported, "SESeal.cert", e.to_string()))?;
    let info = seal
        .asn1
        .e_seal_info
        .to_der()
        .map_err(|e| SealError::malformed("SES_SealInfo", e))?;
    let signed_value = seal.asn1.signed_value.as_bytes().ok_or_else(|| {
        SealError::malformed("SESeal.signedValue", "the BIT STRING has unused bits")
    })?;
    bzt_crypto::sm2sig::verify_der(&key, &info, signed_value).map_err(|_| {
        SealError::new(
            SealErrorKind::MakerSignature,
            "SESeal.signedValue",
            "the maker's SM2 signature over SES_SealInfo does not verify (the seal was changed after it was made)",
        )
    })?;

    let maker_der = seal.maker_cert_der();
    let subject = maker.tbs_certificate().subject().to_string();
    let trusted_by = trusted.iter().find(|t| {
        t.to_der().is_ok_and(|d| d == maker_der)
            || (t.tbs_certificate().subject() == maker.tbs_certificate().issuer()
                && bzt_crypto::sm2sig::cert_verifying_key(t)
                    .is_ok_and(|k| bzt_crypto::sm2sig::verify_cert_signature(&maker, &k).is_ok()))
    });
    let Some(trusted_by) = trusted_by else {
        return Err(SealError::new(
            SealErrorKind::UntrustedMaker,
            "SESeal.cert",
            format!("the seal maker \"{subject}\" is not a trusted seal maker"),
        ));
    };
    for (which, cert) in [
        ("the seal maker's certificate", &maker),
        ("the trusted maker's certificate", trusted_by),
    ] {
        let v = cert.tbs_certificate().validity();
        let (from, until) = (x509_time(&v.not_before), x509_time(&v.not_after));
        if at < from || at > until {
            return Err(SealError::new(
                SealErrorKind::UntrustedMaker,
                "SESeal.cert",
                format!("{which} \"{subject}\" is valid from {from} until {until}, not at {at}"),
            ));
        }
    }
    Ok(maker)
}

fn seal_valid_at(seal: &Seal, at: OffsetDateTime) -> Result<(), SealError> {
    if at < seal.valid_start() {
        return Err(SealError::new(
            SealErrorKind::SealNotValid,
            "SES_ESPropertyInfo.validStart",
            format!("the seal is not valid before {}", seal.valid_start()),
        ));
    }
    if at > seal.valid_end() {
        return Err(SealError::new(
            SealErrorKind::SealNotValid,
            "SES_ESPropertyInfo.validEnd",
            format!("the seal expired at {}", seal.valid_end()),
        ));
    }
    Ok(())
}

fn to_time(t: &SesTime) -> OffsetDateTime {
    t.to_offset()
}

fn x509_time(t: &x509_cert::time::Time) -> OffsetDateTime {
    unix_to_time(t.to_unix_duration())
}

fn unix_to_time(d: std::time::Duration) -> OffsetDateTime {
    // Times `der` decodes are within 1970..=9999, which OffsetDateTime holds.
    i64::try_from(d.as_secs())
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}
