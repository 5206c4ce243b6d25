//! The protocol's error codes and the domain errors that map onto them.

use serde::Serialize;
use std::fmt;

/// Stable error codes of docs/protocol.md's "Errors" section. Clients branch on
/// these strings, so they never change meaning; the HTTP status is fixed per
/// code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    AlreadyClaimed,
    Conflict,
    Expired,
    PayloadTooLarge,
    BadSignature,
    UntrustedCertificate,
    RateLimited,
    Internal,
    Unavailable,
    /// A seal signature whose seal the broker does not accept: made for another certificate,
    /// outside its validity, or made by a maker that is not trusted (an addition to PROTOCOL.md).
    SealNotAcceptable,
}

impl ErrorCode {
    /// Every code (a test keeps this list whole).
    pub const ALL: [ErrorCode; 15] = [
        ErrorCode::InvalidRequest,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::AlreadyClaimed,
        ErrorCode::Conflict,
        ErrorCode::Expired,
        ErrorCode::PayloadTooLarge,
        ErrorCode::BadSignature,
        ErrorCode::UntrustedCertificate,
        ErrorCode::RateLimited,
        ErrorCode::Internal,
        ErrorCode::Unavailable,
        ErrorCode::SealNotAcceptable,
    ];

    /// The code a client received as `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::AlreadyClaimed | ErrorCode::Conflict => 409,
            ErrorCode::Expired => 410,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::BadSignature
            | ErrorCode::UntrustedCertificate
            | ErrorCode::SealNotAcceptable => 422,
            ErrorCode::RateLimited => 429,
            ErrorCode::Internal => 500,
            ErrorCode::Unavailable => 503,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::AlreadyClaimed => "already_claimed",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Expired => "expired",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::BadSignature => "bad_signature",
            ErrorCode::UntrustedCertificate => "untrusted_certificate",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Internal => "internal",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::SealNotAcceptable => "seal_not_acceptable",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal by the domain: a code and a message a person can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainError {
    pub code: ErrorCode,
    pub message: String,
}

impl DomainError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Expired, message)
    }
    pub fn untrusted(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::UntrustedCertificate, message)
    }
    pub fn bad_signature(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadSignature, message)
    }
}

impl fmt::Display for DomainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for DomainError {}

#[cfg(test)]
mod all_codes {
    use super::ErrorCode;

    #[test]
    fn all_lists_every_code_once_and_parse_reads_back() {
        for (i, c) in ErrorCode::ALL.into_iter().enumerate() {
            // A new variant fails to compile here until it has a place in ALL.
            let at = match c {
                ErrorCode::InvalidRequest => 0,
                ErrorCode::Unauthorized => 1,
                ErrorCode::Forbidden => 2,
                ErrorCode::NotFound => 3,
                ErrorCode::MethodNotAllowed => 4,
                ErrorCode::AlreadyClaimed => 5,
                ErrorCode::Conflict => 6,
                ErrorCode::Expired => 7,
                ErrorCode::PayloadTooLarge => 8,
                ErrorCode::BadSignature => 9,
                ErrorCode::UntrustedCertificate => 10,
                ErrorCode::RateLimited => 11,
                ErrorCode::Internal => 12,
                ErrorCode::Unavailable => 13,
                ErrorCode::SealNotAcceptable => 14,
            };
            assert_eq!(at, i, "{c:?}");
            assert_eq!(ErrorCode::parse(c.as_str()), Some(c));
        }
        assert_eq!(ErrorCode::parse("no_such_code"), None);
    }
}
