//! SM2 signatures with SM3 and the standard distinguishing ID, in the DER form used on the wire.
//!
//! Everything in bzt signs and verifies with the GM/T 0009 default distinguishing ID
//! [`SM2_DISTID`] (`1234567812345678`). OpenSSL 3.0 uses an *empty* ID unless told otherwise, so
//! its command lines need `-pkeyopt distid:1234567812345678` (see the shared INTEROP notes).

use der::Encode;
use sm2::dsa::signature::{Keypair, Signer};
use sm2::dsa::{DerSignature, Signature, SigningKey, VerifyingKey};
use sm2::{PublicKey, SecretKey};
use x509_cert::spki::{
    der::AnyRef, AlgorithmIdentifier, ObjectIdentifier, SignatureAlgorithmIdentifier,
};
use x509_cert::Certificate;

use crate::Error;

/// The SM2 distinguishing ID (the GM/T 0009 default) used for every signature in bzt.
pub const SM2_DISTID: &str = "1234567812345678";

/// OID of the signature algorithm "SM2 with SM3" (`1.2.156.10197.1.501`).
pub const OID_SM2_WITH_SM3: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.156.10197.1.501");

/// `id-ecPublicKey` (`1.2.840.10045.2.1`), the SubjectPublicKeyInfo algorithm of SM2 keys.
pub const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");

/// OID of the SM2 curve as written in a SubjectPublicKeyInfo's parameters (`1.2.156.10197.1.301`).
pub const OID_SM2_CURVE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.156.10197.1.301");

/// Builds the signing key for `secret` with [`SM2_DISTID`].
///
/// This computes the key's `Z` value, which is not free: build it once and keep it.
pub fn signing_key(secret: &SecretKey) -> Result<SigningKey, Error> {
    SigningKey::new(SM2_DISTID, secret).map_err(|_| Error::Key("unusable SM2 secret key".into()))
}

/// Builds the verifying key for `public` with [`SM2_DISTID`]; keep it per certificate.
pub fn verifying_key(public: PublicKey) -> Result<VerifyingKey, Error> {
    VerifyingKey::new(SM2_DISTID, public).map_err(|_| Error::Key("unusable SM2 public key".into()))
}

/// Signs `msg` (SM3 over `Z || msg`, ID [`SM2_DISTID`]) and returns the DER `SEQUENCE {r, s}`.
pub fn sign_der(key: &SigningKey, msg: &[u8]) -> Result<Vec<u8>, Error> {
    let sig: Signature = key
        .try_sign(msg)
        .map_err(|_| Error::Key("SM2 signing failed".into()))?;
    Ok(sig.to_der().to_vec())
}

/// Verifies a DER SM2 signature over `msg` with `key`.
pub fn verify_der(key: &VerifyingKey, msg: &[u8], der_sig: &[u8]) -> Result<(), Error> {
    use sm2::dsa::signature::Verifier;
    let sig = Signature::from_der(der_sig).map_err(|_| Error::BadSignature)?;
    key.verify(msg, &sig).map_err(|_| Error::BadSignature)
}

/// The SM2 public key of a certificate (its SubjectPublicKeyInfo must be an SM2 EC key:
/// `id-ecPublicKey` on the curve `1.2.156.10197.1.301`).
pub fn cert_public_key(cert: &Certificate) -> Result<PublicKey, Error> {
    let spki = cert.tbs_certificate().subject_public_key_info();
    if spki.algorithm.oid != OID_EC_PUBLIC_KEY {
        return Err(Error::Certificate(format!(
            "the certificate's public key algorithm {} is not id-ecPublicKey (SM2)",
            spki.algorithm.oid
        )));
    }
    let params_oid = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
    if params_oid != Some(OID_SM2_CURVE) {
        return Err(Error::Certificate(
            "the certificate's key is not an SM2 key".into(),
        ));
    }
    let bits = spki.subject_public_key.as_bytes().ok_or_else(|| {
        Error::Certificate("the certificate's public key bit string is not byte aligned".into())
    })?;
    PublicKey::from_sec1_bytes(bits)
        .map_err(|_| Error::Certificate("the certificate's SM2 public key is invalid".into()))
}

/// The verifying key (ID [`SM2_DISTID`]) for a certificate's SM2 public key.
pub fn cert_verifying_key(cert: &Certificate) -> Result<VerifyingKey, Error> {
    verifying_key(cert_public_key(cert)?)
}

/// Checks that `cert` carries an SM2-with-SM3 signature that `issuer`'s key verifies.
///
/// Only the signature is checked: no validity period, extensions or name chaining.
pub fn verify_cert_signature(cert: &Certificate, issuer: &VerifyingKey) -> Result<(), Error> {
    if cert.signature_algorithm().oid != OID_SM2_WITH_SM3 {
        return Err(Error::Certificate(
            "the certificate is not signed with SM2-with-SM3".into(),
        ));
    }
    let tbs = cert
        .tbs_certificate()
        .to_der()
        .map_err(|e| Error::Certificate(format!("cannot re-encode the TBS certificate: {e}")))?;
    let sig = cert.signature().as_bytes().ok_or(Error::BadSignature)?;
    verify_der(issuer, &tbs, sig)
}

/// Adapter that lets x509-cert's builder sign with SM2 and get DER signatures.
///
/// The builder encodes whatever signature type the signer yields into the certificate's
/// signature BIT STRING. `sm2::dsa::SigningKey` yields the raw 64-byte `r || s` form, which
/// OpenSSL (rightly) rejects; X.509 wants `SEQUENCE {r, s}`, i.e. [`DerSignature`].
pub struct DerSigner<'a>(pub &'a SigningKey);

impl Signer<DerSignature> for DerSigner<'_> {
    fn try_sign(&self, msg: &[u8]) -> Result<DerSignature, sm2::dsa::signature::Error> {
        let sig: Signature = self.0.try_sign(msg)?;
        Ok(sig.to_der())
    }
}

impl Keypair for DerSigner<'_> {
    type VerifyingKey = VerifyingKey;

    fn verifying_key(&self) -> VerifyingKey {
        self.0.verifying_key().clone()
    }
}

impl SignatureAlgorithmIdentifier for DerSigner<'_> {
    type Params = AnyRef<'static>;

    const SIGNATURE_ALGORITHM_IDENTIFIER: AlgorithmIdentifier<AnyRef<'static>> =
        AlgorithmIdentifier {
            oid: OID_SM2_WITH_SM3,
            parameters: None,
        };
}

/// True when `cert`'s public key is the public half of `key`.
pub fn key_matches_cert(key: &SigningKey, cert: &Certificate) -> bool {
    cert_public_key(cert).is_ok_and(|public| public == PublicKey::from(key.verifying_key()))
}
