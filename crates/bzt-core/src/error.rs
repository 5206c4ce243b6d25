//! The protocol's error codes and the domain errors that map onto them.

use serde::Serialize;
use std::fmt;

/// Stable error codes of PROTOCOL.md's "Errors" section. Clients branch on
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
}

impl ErrorCode {
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
            ErrorCode::BadSignature | ErrorCode::UntrustedCertificate => 422,
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
