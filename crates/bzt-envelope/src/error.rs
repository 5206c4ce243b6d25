//! The one error type of this crate.

use std::fmt::Write as _;

/// Everything that can go wrong while sealing, opening or inspecting an envelope.
///
/// Each variant says what a person can do about it: fix the input file, pick another key,
/// ask the sender to seal for them, and so on. Authentication failures never say more than
/// "this chunk did not authenticate": SM4-GCM cannot tell a flipped bit from a cut file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading the input or writing the output failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),

    /// The input does not start with the 4 bytes `BZE1`: it is not a sealed file at all
    /// (or an older/newer format this build does not know).
    #[error("not an envelope: the input does not start with \"BZE1\"")]
    NotAnEnvelope,

    /// The input ends before its header, or its body ends before the final chunk.
    #[error("the envelope is truncated: {0}")]
    Truncated(&'static str),

    /// The header is not the JSON this format prescribes (syntax, a missing field, a field
    /// out of range, bad base64, a limit exceeded).
    #[error("the envelope header is invalid: {0}")]
    BadHeader(String),

    /// The header's `v` is not 1. A newer tool sealed the file.
    #[error("envelope version {0} is not supported (this build reads version 1)")]
    UnsupportedVersion(u64),

    /// The header's `alg` is not `SM4-GCM-STREAM`.
    #[error("envelope algorithm {0:?} is not supported (this build reads \"SM4-GCM-STREAM\")")]
    UnsupportedAlgorithm(String),

    /// Chunk number `chunk` (0-based) did not authenticate: the file was altered, cut short,
    /// had its chunks reordered, has bytes appended, or was sealed under another content key.
    /// Nothing from this chunk on was released.
    #[error(
        "chunk {chunk} failed authentication: the envelope was altered, truncated, reordered, \
         has trailing bytes, or the content key is wrong"
    )]
    Corrupt {
        /// 0-based index of the first chunk that failed.
        chunk: u64,
    },

    /// The certificate given to open the file is not among its recipients.
    /// `recipients` lists `(serial, issuer)` of every certificate the file was sealed for.
    #[error("this certificate is not a recipient of the envelope; it was sealed for: {}", list(.recipients))]
    NotARecipient {
        /// `(serial, issuer)` of each recipient, in header order.
        recipients: Vec<(String, String)>,
    },

    /// The private key given does not belong to the certificate given.
    #[error(
        "the private key does not belong to the certificate (serial {serial}, issuer {issuer})"
    )]
    KeyMismatch {
        /// Serial of the certificate (lowercase hex).
        serial: String,
        /// Issuer of the certificate (RFC 4514).
        issuer: String,
    },

    /// The SM2-wrapped content key did not decrypt with the private key (wrong key, or the
    /// wrapped key is damaged), or did not yield 16 bytes.
    #[error("the wrapped content key could not be decrypted with this private key")]
    UnwrapFailed,

    /// A content key must be exactly 16 bytes.
    #[error("a content key is 16 bytes, got {0}")]
    BadContentKey(usize),

    /// A certificate did not parse, or does not carry an SM2 public key.
    #[error("bad certificate: {0}")]
    BadCertificate(String),

    /// The hall's `reply_key` is not hex of an uncompressed SM2 point `04||X||Y`.
    #[error("bad reply key: {0}")]
    BadReplyKey(String),

    /// Sealing needs at least one recipient.
    #[error("no recipients: an envelope needs at least one recipient certificate")]
    NoRecipients,

    /// Two different keys were given under the same serial and issuer.
    #[error("two different certificates share serial {serial} and issuer {issuer}")]
    DuplicateRecipient {
        /// Serial (lowercase hex).
        serial: String,
        /// Issuer (RFC 4514).
        issuer: String,
    },

    /// The chunk size is outside 1..=[`MAX_CHUNK`](crate::MAX_CHUNK).
    #[error("chunk size {0} is out of range (1..={max})", max = crate::MAX_CHUNK)]
    BadChunkSize(u64),

    /// The input needs more than 2^32 chunks at this chunk size; use a larger chunk.
    #[error("input too large: more than 2^32 chunks at this chunk size")]
    TooLarge,

    /// The system random generator failed, or SM2 encryption failed.
    #[error("SM2 encryption or the system random generator failed")]
    Crypto,
}

/// Crate-wide result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn list(recipients: &[(String, String)]) -> String {
    let mut out = String::new();
    for (i, (serial, issuer)) in recipients.iter().enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        let _ = write!(out, "serial {serial} issued by {issuer}");
    }
    out
}
