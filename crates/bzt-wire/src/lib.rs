//! The broker's wire messages (docs/protocol.md), typed once and shared by the
//! broker (which reads requests and writes answers with them) and its clients.
//!
//! - Requests are strict (`deny_unknown_fields`): an unknown field answers
//!   `400 invalid_request`, as the protocol says. An optional field sent as
//!   `null` is absent.
//! - Answers are lenient: a client reading them ignores fields it does not
//!   know, so a newer broker does not break an older client.
//!
//! Each type derives its OpenAPI schema ([`utoipa::ToSchema`]); the broker's
//! generated document (`GET /openapi.json`, committed as `docs/openapi.json`)
//! is built from them, so the document is the code.
//!
//! Field values are checked by the broker's domain rules (lengths, ranges,
//! which fields a kind needs), not here: this crate is the shape only, and
//! the schemas state the bounds those rules enforce.

pub mod conversation;
pub mod error;
pub mod session;

pub use conversation::{ConversationRequestAccepted, ConversationRequestInput};
pub use error::{ErrorBody, ErrorDetail};
pub use session::{
    ConversationPolicyInput, CreateSessionRequest, CreateSessionResponse, DisplayText,
    ExpectCertInput, Kind, OpeningInput, RequesterInput, SealInput,
};
