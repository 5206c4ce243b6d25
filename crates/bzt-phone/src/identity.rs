//! The phone's certificate, its SM2 signing key, and the device it presents itself as.

use std::path::Path;

use sm2::dsa::SigningKey;
use sm2::SecretKey;
use sm3::{Digest, Sm3};
use x509_cert::der::{Encode, EncodePem};
use x509_cert::Certificate;

use crate::Error;

/// The device a phone claims sessions as (`device` in the claim body; the browser sees `name`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Device {
    /// A stable id of the app installation.
    pub id: String,
    /// A human name, shown to the user at the browser ("张三的手机").
    pub name: String,
}

/// A certificate holder: what a phone signs with.
///
/// The SM2 signing key is built once when the identity is made: building one computes the key's
/// `Z` value, which costs about as much as a signature. Clone the identity (or share it in an
/// `Arc`) rather than rebuilding it per operation.
#[derive(Clone)]
pub struct PhoneIdentity {
    /// The leaf certificate as clean PEM (one block), sent as `certificate_pem`.
    certificate_pem: String,
    /// The parsed leaf, for its serial, subject and public key.
    certificate: Certificate,
    /// Built once; see the type doc.
    signing_key: SigningKey,
    /// Intermediate certificates sent as `chain_pem` (may be empty).
    pub chain_pem: Vec<String>,
    /// The device presented in claims.
    pub device: Device,
}

impl std::fmt::Debug for PhoneIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhoneIdentity")
            .field("subject", &self.subject())
            .field("serial", &self.serial_hex())
            .field("chain_len", &self.chain_pem.len())
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl PhoneIdentity {
    /// Builds an identity from PEM text.
    ///
    /// `cert_pem` holds the leaf certificate first, then optionally its intermediates (they
    /// become [`PhoneIdentity::chain_pem`]); text around the blocks is ignored. `key_pem` is a
    /// PKCS#8 (`PRIVATE KEY`), SEC1 (`EC PRIVATE KEY`) or PIN-protected (`ENCRYPTED PRIVATE KEY`,
    /// as `bzt-devca` and `openssl pkcs8 -topk8 -v2 sm4-cbc` write) SM2 key; `pin` opens the last.
    /// The key must belong to the certificate. The device defaults to
    /// `{id: "bzt-phone-<16 hex digits of SM3(certificate)>", name: "bzt-phone"}`.
    pub fn from_pem(cert_pem: &str, key_pem: &str, pin: Option<&str>) -> Result<Self, Error> {
        let mut certs = bzt_crypto::pem_certificates(cert_pem)?.into_iter();
        let certificate = certs.next().ok_or_else(|| {
            Error::Identity("the certificate file has no CERTIFICATE block".into())
        })?;
        let to_pem = |c: &Certificate| {
            c.to_pem(x509_cert::der::pem::LineEnding::LF)
                .map_err(|e| Error::Identity(format!("cannot re-encode a certificate: {e}")))
        };
        let chain_pem = certs.map(|c| to_pem(&c)).collect::<Result<Vec<_>, _>>()?;
        let secret = bzt_crypto::key_from_pem(key_pem, pin)?;
        let signing_key = bzt_crypto::signing_key(&secret)?;
        if !bzt_crypto::sm2sig::key_matches_cert(&signing_key, &certificate) {
            return Err(Error::Identity(
                "the private key does not belong to the certificate".into(),
            ));
        }
        let der = certificate
            .to_der()
            .map_err(|e| Error::Identity(format!("cannot re-encode the certificate: {e}")))?;
        let device = Device {
            id: format!("bzt-phone-{}", hex::encode(&Sm3::digest(&der)[..8])),
            name: "bzt-phone".into(),
        };
        Ok(Self {
            certificate_pem: to_pem(&certificate)?,
            certificate,
            signing_key,
            chain_pem,
            device,
        })
    }

    /// [`PhoneIdentity::from_pem`] on the contents of two files.
    pub fn from_files(
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
        pin: Option<&str>,
    ) -> Result<Self, Error> {
        let read = |p: &Path| {
            std::fs::read_to_string(p)
                .map_err(|e| Error::Identity(format!("cannot read {}: {e}", p.display())))
        };
        Self::from_pem(&read(cert.as_ref())?, &read(key.as_ref())?, pin)
    }

    /// Replaces the device presented in claims.
    pub fn with_device(mut self, id: impl Into<String>, name: impl Into<String>) -> Self {
        self.device = Device {
            id: id.into(),
            name: name.into(),
        };
        self
    }

    /// Replaces the intermediate certificates sent with completions.
    pub fn with_chain(mut self, chain_pem: Vec<String>) -> Self {
        self.chain_pem = chain_pem;
        self
    }

    /// The leaf certificate, PEM.
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// The leaf certificate, parsed.
    pub fn certificate(&self) -> &Certificate {
        &self.certificate
    }

    /// The leaf's serial in the broker's form (lowercase hex, no leading zeros).
    pub fn serial_hex(&self) -> String {
        bzt_crypto::serial_hex(&self.certificate)
    }

    /// The leaf's subject, RFC 4514.
    pub fn subject(&self) -> String {
        self.certificate.tbs_certificate().subject().to_string()
    }

    /// The signing key (SM3, ID `1234567812345678`).
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing_key
    }

    /// The certificate's SM2 private key, for decryption: a `decrypt` session unwraps the bid
    /// file's content key with it ([`crate::envelope::decrypt_answer`]). A copy, wiped when
    /// dropped; keep it no longer than the operation needs.
    pub fn secret_key(&self) -> SecretKey {
        SecretKey::from(self.signing_key.as_nonzero_scalar())
    }

    /// Signs `tbs`: SM2 over SM3 with ID `1234567812345678`, DER `SEQUENCE {r, s}`.
    pub fn sign(&self, tbs: &[u8]) -> Result<Vec<u8>, Error> {
        Ok(bzt_crypto::sign_der(&self.signing_key, tbs)?)
    }
}

/// Signs `tbs` with `identity`'s key: SM2, SM3, ID `1234567812345678`, DER signature bytes.
///
/// This is the one place a completion's signature is made; when keys are split with the broker
/// (co-signing), this is what changes.
pub fn sign(identity: &PhoneIdentity, tbs: &[u8]) -> Result<Vec<u8>, Error> {
    identity.sign(tbs)
}
