//! Who a file is sealed for: a certificate's serial, issuer and SM2 public key.

use bzt_core::pki::{issuer_string, normalize_serial, serial_hex};
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
/// The identity strings are computed by the broker's own functions
/// (`bzt_core::pki::serial_hex` and `issuer_string`), so a header names a certificate exactly
/// as the broker, the phone and `expect_cert` do:
/// - `serial`: lowercase hex without leading zeros or colons (`0` for a zero serial);
/// - `issuer`: RFC 4514, last RDN first (`CN=Bid CA,O=Example,C=CN`), as x509-cert's `Display`
///   for `Name` writes it except that organizationIdentifier (统一社会信用代码) is written as
///   text, as OpenSSL's `-nameopt RFC2253` does, rather than as `#<hex DER>`.
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
            serial: serial_hex(cert),
            issuer: issuer_string(cert),
            public_key,
        })
    }

    /// Builds a recipient from its parts (e.g. when the certificate was parsed elsewhere).
    /// `serial` is hex, normalised to lowercase without leading zeros or colons; `issuer` must
    /// be in the form described above.
    pub fn new(serial: &str, issuer: &str, public_key: PublicKey) -> Result<Self> {
        let serial = normalize_serial(serial)
            .ok_or_else(|| Error::BadCertificate(format!("serial {serial:?} is not hex")))?;
        Ok(Self {
            serial,
            issuer: issuer.to_owned(),
            public_key,
        })
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
