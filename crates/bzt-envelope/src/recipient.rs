//! Who a file is sealed for: a certificate's serial, issuer and SM2 public key.

use bzt_crypto::names::{issuer_string, normalize_serial, serial_hex};
use sm2::PublicKey;
use x509_cert::Certificate;

use crate::error::{Error, Result};

/// A recipient certificate reduced to what the envelope needs: its identity as the header
/// names it, and the SM2 public key the content key is wrapped to.
///
/// The identity strings are computed by the workspace's one serial and name format
/// (`bzt_crypto::names::serial_hex` and `issuer_string`, which the broker uses too), so a header names a certificate exactly
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
        let cert = bzt_crypto::pem_certificate(pem).map_err(bad_certificate)?;
        Self::from_certificate(&cert)
    }

    /// Takes an already parsed certificate. Fails if it does not carry an SM2 public key
    /// (`id-ecPublicKey` on the SM2 curve `1.2.156.10197.1.301`).
    /// No chain, validity or revocation check is done here: that is the broker's job.
    pub fn from_certificate(cert: &Certificate) -> Result<Self> {
        let public_key = bzt_crypto::cert_public_key(cert).map_err(bad_certificate)?;
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

fn bad_certificate(e: bzt_crypto::Error) -> Error {
    Error::BadCertificate(match e {
        bzt_crypto::Error::Pem(m) | bzt_crypto::Error::Certificate(m) => m,
        other => other.to_string(),
    })
}
