//! The GB/T 38540-2020 (v4) structures exactly as they travel, one Rust type per ASN.1 type.
//!
//! Field order and types follow the standard as read from ofdrw's `ofdrw-gm` (v4 package) and an
//! independent C++ verifier; where they disagree (`TBS_Sign.extDatas` tagged `[0] EXPLICIT` or
//! not) this module writes neither form and [`TbsSign::ext_datas`] accepts both. Everything here is
//! plain data with `der` derives: making and checking live in [`crate::make`] and
//! [`crate::verify`].

use der::asn1::{Any, BitString, Ia5String, ObjectIdentifier, OctetString};
use der::Sequence;

use crate::ses_time::SesTime;

/// `SES_Header ::= SEQUENCE { id IA5String, version INTEGER, vid IA5String }`.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct SesHeader {
    /// Always `"ES"`: tells a seal from other DER.
    pub id: Ia5String,
    /// 4 for GB/T 38540-2020; 2 was GM/T 0031, whose signed range differs.
    pub version: u32,
    /// The vendor id of the software that made the seal.
    pub vid: Ia5String,
}

/// `SES_ESPropertyInfo`: what the seal is and whom it belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct SesPropertyInfo {
    /// Seal type, defined by the issuer (here 1 company seal, 2 personal seal).
    pub seal_type: u32,
    /// The seal's name (`UTF8String`), e.g. 示例建设有限公司.
    pub name: String,
    /// 1: `cert_list` holds certificates; 2: certificate digests.
    pub cert_list_type: u32,
    /// A CHOICE whose two arms are both `SEQUENCE OF`, so only `cert_list_type` tells them
    /// apart: kept as raw DER and read by [`SesPropertyInfo::certificates`].
    pub cert_list: Any,
    /// When the seal was made.
    pub create_date: SesTime,
    /// Start of the seal's validity.
    pub valid_start: SesTime,
    /// End of the seal's validity.
    pub valid_end: SesTime,
}

/// One entry of a type-2 certificate list: `SEQUENCE { type PrintableString, value OCTET STRING }`.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct CertDigest {
    /// The digest algorithm's name as the issuer writes it (e.g. `"SM3"`).
    pub digest_type: der::asn1::PrintableString,
    /// The digest of the certificate's DER.
    pub value: OctetString,
}

/// `SES_ESPictrueInfo` (sic in the standard): the picture stamped on the page.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct SesPictureInfo {
    /// `"PNG"`, `"JPG"`, `"GIF"`, `"BMP"`, `"SVG"`, …
    pub picture_type: Ia5String,
    /// The image file's bytes.
    pub data: OctetString,
    /// Display width in millimetres.
    pub width: u32,
    /// Display height in millimetres.
    pub height: u32,
}

/// `ExtData ::= SEQUENCE { extnID OID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING }`.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct ExtData {
    /// What the extension is.
    pub extn_id: ObjectIdentifier,
    /// A verifier that does not know a critical extension must refuse the seal.
    #[asn1(default = "Default::default")]
    pub critical: bool,
    /// The extension's value.
    pub extn_value: OctetString,
}

/// `SES_SealInfo`: the part of the seal the maker signs.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct SesSealInfo {
    /// Format and vendor.
    pub header: SesHeader,
    /// The seal's unique code (印章编码).
    pub es_id: Ia5String,
    /// Type, name, bound certificates, dates.
    pub property: SesPropertyInfo,
    /// The picture.
    pub picture: SesPictureInfo,
    /// Vendor extensions; never written here.
    #[asn1(optional = "true")]
    pub ext_datas: Option<Vec<ExtData>>,
}

/// `SESeal`: the electronic seal (电子印章), made once by the seal maker (制章者).
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct SeSeal {
    /// What the maker signed.
    pub e_seal_info: SesSealInfo,
    /// The maker's certificate, DER.
    pub cert: OctetString,
    /// SM2 with SM3 (`1.2.156.10197.1.501`).
    pub sign_alg_id: ObjectIdentifier,
    /// The maker's SM2 signature (DER `SEQUENCE { r, s }`) over `DER(e_seal_info)`.
    pub signed_value: BitString,
}

/// `TBS_Sign`: what the signer signs at each stamping.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct TbsSign {
    /// 4.
    pub version: u32,
    /// The whole seal, embedded.
    pub eseal: SeSeal,
    /// When the stamp was made (the signer's clock).
    pub time_info: SesTime,
    /// SM3 of the protected data.
    pub data_hash: BitString,
    /// Names what is protected (in OFD: the path of `Signature.xml`).
    pub property_info: Ia5String,
    /// Extensions, `[0] EXPLICIT SEQUENCE OF ExtData` (ofdrw) or an untagged `SEQUENCE OF`
    /// (the C++ verifier): either form is read, as raw DER, and never written.
    #[asn1(optional = "true")]
    pub ext_datas: Option<Any>,
}

/// `SES_Signature`: the electronic signature with a seal (电子签章).
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct SesSignature {
    /// What the signer signed.
    pub to_sign: TbsSign,
    /// The signer's certificate, DER.
    pub cert: OctetString,
    /// SM2 with SM3.
    pub signature_alg_id: ObjectIdentifier,
    /// The signer's SM2 signature (DER `SEQUENCE { r, s }`) over `DER(to_sign)`.
    pub signature: BitString,
    /// An RFC 3161 time-stamp token over `signature`; read, never written.
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub time_stamp: Option<BitString>,
}

impl SesPropertyInfo {
    /// The certificates (DER) of a type-1 list; `None` for a digest list.
    pub fn certificates(&self) -> Result<Option<Vec<Vec<u8>>>, der::Error> {
        if self.cert_list_type != 1 {
            return Ok(None);
        }
        let certs: Vec<OctetString> = self.cert_list.decode_as()?;
        Ok(Some(
            certs.into_iter().map(|c| c.as_bytes().to_vec()).collect(),
        ))
    }

    /// The digests of a type-2 list; `None` for a certificate list.
    pub fn digests(&self) -> Result<Option<Vec<CertDigest>>, der::Error> {
        if self.cert_list_type != 2 {
            return Ok(None);
        }
        Ok(Some(self.cert_list.decode_as()?))
    }
}
