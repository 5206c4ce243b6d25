//! Cryptography shared by every party of `bzt`: the broker, the phone, the
//! co-signing service, the envelope and the development CA.
//!
//! This crate is the bottom of the workspace: it imports no other `bzt-*`
//! crate, and every concern it holds has exactly one home here.
//!
//! # Modules
//! - [`sm2sig`]: the one SM2 distinguishing ID ([`SM2_DISTID`]), SM2-with-SM3 signing and
//!   verifying in the wire's DER form, certificate public keys.
//! - [`sm2verify`]: the variable-time verify the broker runs per completion, with a key's `Z`
//!   value kept ([`KeptKey`]).
//! - [`wrap`]: SM2 public-key encryption of short keys (the envelope's content key), GM/T 0009 DER.
//! - [`pem`]: the one PEM reader (blocks with text around them) and writer.
//! - [`names`]: the one serial format ([`serial_hex`]), RFC 4514 names as the protocol shows
//!   them, subject names and the 统一社会信用代码 (USCC).
//! - [`keyfile`]: plain and PIN-protected PKCS#8 SM2 key files (OpenSSL reads them).
//! - [`sm2_field`], [`sm2_point`], [`sm2_verify`]: the hand-written variable-time SM2
//!   arithmetic behind [`sm2verify`] (field, curve, verify equation, per-key tables), for public
//!   data only.
//! - [`two_party`]: two-party SM2 (密钥拆分): key generation with proofs of
//!   knowledge, co-signing, blinded co-decryption, the phone's PIN-masked
//!   share and PIN proof, and the channel encryption between phone and
//!   co-signing service.

// One line per module, sorted, so that branches adding modules merge cleanly.
pub mod keyfile;
pub mod names;
pub mod pem;
#[cfg(test)]
mod sm2_crosscheck;
pub mod sm2_field;
pub mod sm2_point;
pub mod sm2_verify;
pub mod sm2sig;
pub mod sm2verify;
pub mod two_party;
pub mod wrap;

pub use keyfile::{is_encrypted_key_pem, key_from_pem, key_to_encrypted_pem, key_to_pem};
pub use names::{
    issuer_string, name_string, normalize_serial, serial_hex, subject_string, uscc_check_char,
    validate_uscc,
};
pub use pem::{pem_certificate, pem_certificates};
pub use sm2sig::{
    cert_public_key, cert_verifying_key, sign_der, signing_key, verify_cert_signature, verify_der,
    SM2_DISTID,
};
pub use sm2verify::KeptKey;

/// Re-exported so users need not pin matching versions themselves.
pub use sm2;
pub use x509_cert;

/// Lowercase hex SM3 of `bytes` (audit records, challenge envelope lines).
pub fn sm3_hex(bytes: &[u8]) -> String {
    use sm3::Digest as _;
    hex::encode(sm3::Sm3::digest(bytes))
}

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: std::path::PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Text that should hold PEM blocks does not.
    #[error("PEM: {0}")]
    Pem(String),
    /// A key could not be made, read, written or used.
    #[error("key: {0}")]
    Key(String),
    /// The key file is PIN-protected and no PIN was given.
    #[error("the key file is PIN-protected: a PIN is required")]
    PinRequired,
    /// The PIN does not open the key file (or the file is damaged: the two look alike).
    #[error("wrong PIN (or a damaged key file)")]
    WrongPin,
    /// A certificate could not be built, parsed or used.
    #[error("certificate: {0}")]
    Certificate(String),
    /// A name, USCC, validity or other input is not acceptable.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// An SM2 signature does not verify (or is not a DER `SEQUENCE {r, s}`).
    #[error("the SM2 signature does not verify")]
    BadSignature,
    /// SM2 decryption failed: wrong key, damaged ciphertext or C3 mismatch (the three look alike).
    #[error("the SM2 ciphertext does not decrypt with this key")]
    DecryptFailed,
    /// The operating system's random generator failed.
    #[error("the system random generator failed")]
    Random,
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod layering {
    /// The bottom of the workspace: no `bzt-*` dependency may creep in.
    #[test]
    fn depends_on_no_other_crate_of_the_workspace() {
        let manifest = include_str!("../Cargo.toml");
        let workspace_deps: Vec<&str> = manifest
            .lines()
            .filter(|l| l.trim_start().starts_with("bzt-") || l.contains("path ="))
            .collect();
        assert!(workspace_deps.is_empty(), "{workspace_deps:?}");
    }
}
