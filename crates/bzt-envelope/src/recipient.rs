//! Who a file is sealed for: a certificate's serial, issuer and SM2 public key.

use sm2::PublicKey;
use x509_cert::der::{asn1::ObjectIdentifier, DecodePem};
use x509_cert::Certificate;

use crate::error::{Error, Result};

/// `id-ecPublicKey`, the SPKI algorithm of SM2 certificates.
const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// The SM2 curve (`sm2p256v1`), the SPKI parameter of SM2 certificates.
const SM2_CURVE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.156.10197.1.301");

const PEM_BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const PEM_END: &str = "-----END CERTIFICATE-----";

/// A recipient certificate reduced to what the envelope needs: its identity as the header
/// names it, and the SM2 public key the content key is wrapped to.
///
/// The identity strings are computed exactly as the broker computes them, so a phone can match
/// its own certificate against a header's entries:
/// - `serial`: the certificate's serial number as lowercase hex without leading zeros or
///   colons (`0` for a zero serial), taken from the DER INTEGER's bytes;
/// - `issuer`: the issuer Name as an RFC 4514 string, produced by x509-cert's `Display` for
///   `Name` (last RDN first, e.g. `CN=Bid CA,O=Example,C=CN`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    /// Lowercase hex serial, no leading zeros: the header's `serial`.
    serial: String,
    /// RFC 4514 issuer: the header's `issuer`.
    issuer: String,
    /// The certificate's SM2 key, which the content key is wrapped to.
    public_key: PublicKey,
}

impl Recipient {
    /// Reads a certificate from PEM text holding exactly one `CERTIFICATE` block; text around
    /// the block is ignored (RFC 7468).
    pub fn from_pem(pem: &str) -> Result<Self> {
        let block = single_certificate_block(pem)?;
        let cert = Certificate::from_pem(block.as_bytes())
            .map_err(|e| Error::BadCertificate(format!("does not parse: {e}")))?;
        Self::from_certificate(&cert)
    }

    /// Takes an already parsed certificate. Fails if it does not carry an SM2 public key.
    /// No chain, validity or revocation check is done here: that is the broker's job.
    pub fn from_certificate(cert: &Certificate) -> Result<Self> {
        let tbs = cert.tbs_certificate();
        let spki = tbs.subject_public_key_info();
        if spki.algorithm.oid != ID_EC_PUBLIC_KEY {
            return Err(Error::BadCertificate(format!(
                "public key algorithm {} is not id-ecPublicKey (SM2)",
                spki.algorithm.oid
            )));
        }
        if let Some(params) = &spki.algorithm.parameters {
            let curve = params.decode_as::<ObjectIdentifier>().ok();
            if curve != Some(SM2_CURVE) {
                return Err(Error::BadCertificate(
                    "public key is not on the SM2 curve (1.2.156.10197.1.301)".into(),
                ));
            }
        }
        let public_key = PublicKey::from_sec1_bytes(spki.subject_public_key.raw_bytes())
            .map_err(|_| Error::BadCertificate("public key is not a valid SM2 point".into()))?;
        Ok(Self {
            serial: serial_hex(tbs.serial_number().as_bytes()),
            issuer: tbs.issuer().to_string(),
            public_key,
        })
    }

    /// Builds a recipient from its parts (e.g. for tests or when the certificate was parsed
    /// elsewhere). `serial` is normalised to lowercase hex without leading zeros.
    pub fn new(serial: &str, issuer: &str, public_key: PublicKey) -> Self {
        Self {
            serial: normalize_serial(serial),
            issuer: issuer.to_owned(),
            public_key,
        }
    }

    /// Serial number, lowercase hex without leading zeros.
    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// Issuer, RFC 4514 string.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// SM2 public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }
}

/// Lowercase hex of big-endian bytes without leading zeros (`"0"` when all are zero).
fn serial_hex(bytes: &[u8]) -> String {
    normalize_serial(&hex::encode(bytes))
}

/// Lowercases hex and strips leading zeros; serials are compared in this form.
pub(crate) fn normalize_serial(serial: &str) -> String {
    let lower = serial.trim().to_ascii_lowercase();
    let stripped = lower.trim_start_matches('0');
    if stripped.is_empty() {
        "0".to_owned()
    } else {
        stripped.to_owned()
    }
}

fn single_certificate_block(pem: &str) -> Result<&str> {
    let begins = pem.matches(PEM_BEGIN).count();
    if begins != 1 {
        return Err(Error::BadCertificate(format!(
            "expected exactly one CERTIFICATE PEM block, found {begins}"
        )));
    }
    let start = pem.find(PEM_BEGIN).unwrap_or(0);
    let end = pem[start..]
        .find(PEM_END)
        .map(|i| start + i + PEM_END.len())
        .ok_or_else(|| Error::BadCertificate("PEM block has no END line".into()))?;
    Ok(&pem[start..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_is_lowercase_without_leading_zeros() {
        assert_eq!(serial_hex(&[0x00, 0x8A, 0x01]), "8a01");
        assert_eq!(serial_hex(&[0x01]), "1");
        assert_eq!(serial_hex(&[0x00]), "0");
        assert_eq!(normalize_serial("00AB"), "ab");
    }

    #[test]
    fn pem_block_count_is_checked() {
        let one = format!("junk\n{PEM_BEGIN}\nAAAA\n{PEM_END}\ntrailer");
        assert_eq!(
            single_certificate_block(&one).unwrap(),
            format!("{PEM_BEGIN}\nAAAA\n{PEM_END}")
        );
        assert!(single_certificate_block("no pem here").is_err());
        let two = format!("{one}\n{one}");
        assert!(single_certificate_block(&two).is_err());
        assert!(single_certificate_block(PEM_BEGIN).is_err());
    }
}
