//! Domain core of the `bzt` scan-session broker.
//!
//! This crate knows nothing of HTTP, WebSocket or Redis. It holds the
//! vocabulary of the wire contract (`docs/protocol.md`) and the rules that
//! every transport and every store must agree on:
//!
//! - [`time`]: millisecond UTC timestamps and their RFC 3339 wire form.
//! - [`secret`]: identifiers and bearer secrets (≥ 128 random bits, compared in
//!   constant time, redacted from `Debug`).
//! - [`session`]: the session record and its state machine
//!   (`pending → scanned → approved | rejected | expired | cancelled | failed`).
//!   Every transition is a method that takes `now` and either applies
//!   completely or not at all, so a store only has to make "read, apply, write"
//!   atomic.
//! - [`conversation`]: signing conversations (会话签章) and their requests.
//! - [`challenge`]: the `BZT-CHALLENGE-V1` bytes a phone signs for every kind
//!   except `sign`.
//! - [`pki`]: certificate parsing, chain checks against trust domains (cached by
//!   fingerprint), validity, revocation, `expect_cert`, and SM2 signature checks.
//! - [`crl`]: CRLs of the trust domains' CAs (SM2 signature, `nextUpdate`,
//!   listed serials), checked on every use of a certificate.
//! - [`audit`]: the tamper-evident audit record format and its verification.
//! - [`error`]: the protocol's stable error codes; [`reason`]: the broker's
//!   own terminal reasons.

pub mod audit;
pub mod challenge;
pub mod codec;
pub mod conversation;
pub mod crl;
pub mod error;
pub mod pki;
pub mod reason;
pub mod record;
pub mod secret;
pub mod session;
pub mod text;
pub mod time;

/// The variable-time SM2 verify, now in the crypto crate; re-exported for old paths.
pub use bzt_crypto::sm2verify;

pub use error::{DomainError, ErrorCode};
pub use secret::{Secret, SessionId};
pub use session::{Kind, Session, Status};
pub use time::Timestamp;
