//! One error type whose message always starts with the part of the structure that failed.

/// Why a seal or a seal signature was refused. Callers branch on the kind; people read
/// `"<part>: <message>"`, where the part is named as in GB/T 38540 (`TBS_Sign.dataHash`, …).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{part}: {message}")]
pub struct SealError {
    /// What went wrong, for callers.
    pub kind: SealErrorKind,
    /// The failing part, named as in the standard.
    pub part: &'static str,
    /// What a person can act on.
    pub message: String,
}

/// The checks a seal or a seal signature can fail, in the order they are made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SealErrorKind {
    /// Not DER of the expected structure.
    Malformed,
    /// Well-formed, but a version, algorithm or picture this crate does not handle.
    Unsupported,
    /// The signer's SM2 signature over `DER(TBS_Sign)` does not verify.
    SignerSignature,
    /// The signer's certificate is not one the seal is bound to.
    NotBound,
    /// The maker's SM2 signature over `DER(SES_SealInfo)` does not verify.
    MakerSignature,
    /// The maker's certificate is not a trusted seal maker (or not valid).
    UntrustedMaker,
    /// The seal is outside its validity period at the time of use.
    SealNotValid,
    /// The signer's certificate is outside its validity at the time of stamping.
    SignerCertNotValid,
    /// `dataHash` is not the hash of the data.
    DataHash,
    /// Bad input to making a seal or a signature (a caller error).
    Input,
}

impl SealError {
    pub(crate) fn new(kind: SealErrorKind, part: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            part,
            message: message.into(),
        }
    }

    pub(crate) fn malformed(part: &'static str, e: impl std::fmt::Display) -> Self {
        Self::new(
            SealErrorKind::Malformed,
            part,
            format!("malformed DER: {e}"),
        )
    }

    pub(crate) fn input(part: &'static str, message: impl Into<String>) -> Self {
        Self::new(SealErrorKind::Input, part, message)
    }
}
