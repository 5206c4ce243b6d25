//! The one error type every API answer goes through.
//!
//! Domain refusals keep their code and message; store failures become
//! `unavailable` (the client may retry) or `internal`, and their detail goes
//! to the log, never to the client.

use crate::store::StoreError;
use bzt_core::{DomainError, ErrorCode};

#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// Seconds, for `rate_limited` and `unavailable`.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn rate_limited(retry_after_s: u64) -> Self {
        Self {
            code: ErrorCode::RateLimited,
            message: format!("too many requests; retry in {retry_after_s} s"),
            retry_after: Some(retry_after_s),
        }
    }

    pub fn internal() -> Self {
        Self::new(
            ErrorCode::Internal,
            "internal error; the broker logged the details",
        )
    }

    pub fn status(&self) -> u16 {
        self.code.http_status()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        Self::new(e.code, e.message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(detail) => {
                tracing::warn!(%detail, "store unavailable");
                Self {
                    code: ErrorCode::Unavailable,
                    message: "the session store is unreachable; retry shortly".into(),
                    retry_after: Some(1),
                }
            }
            StoreError::AuditUnavailable(detail) => {
                tracing::error!(%detail, "audit log unavailable");
                Self::new(
                    ErrorCode::Unavailable,
                    "the audit log cannot be written; the operation was not recorded and not performed",
                )
                .with_retry_after(1)
            }
            other => {
                tracing::error!(error = %other, "store error");
                Self::internal()
            }
        }
    }
}

impl ApiError {
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }
}
