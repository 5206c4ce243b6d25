//! The one error type the service answers with: `{"error": {"code", "message"}}`.
//! Codes are stable; docs/key-splitting.md lists them.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::store::StoreError;
use crate::wire::{ErrorBody, ErrorDetail};

#[derive(Debug, Clone)]
pub struct ServiceError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ServiceError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn not_requested(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "not_requested", message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the service logged the details",
        )
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(detail) => {
                tracing::error!(%detail, "key store unavailable");
                Self::unavailable("the key store is unavailable; retry")
            }
            StoreError::Revoked => Self::new(
                StatusCode::GONE,
                "revoked",
                "this key is revoked (注销) and can never be used again",
            ),
            StoreError::Exists => {
                Self::new(StatusCode::CONFLICT, "conflict", "that key exists already")
            }
            StoreError::Corrupt(detail) => {
                tracing::error!(%detail, "key store corrupt");
                Self::internal()
            }
        }
    }
}

impl IntoResponse for ServiceError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}
