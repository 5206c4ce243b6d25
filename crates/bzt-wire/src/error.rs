//! The body of every non-2xx answer.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The body of every non-2xx answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

impl ErrorBody {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
            },
        }
    }
}

/// A refusal: a stable code to branch on and a message for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable error code (`invalid_request`, `unauthorized`, `not_found`, ...); each has one
    /// HTTP status (docs/protocol.md "Errors").
    pub code: String,
    /// Human-readable; do not branch on it.
    pub message: String,
}
