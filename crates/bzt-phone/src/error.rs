//! Errors: the broker's own answers ([`BrokerError`]) apart from everything else.

use std::time::Duration;

use crate::challenge::ChallengeError;
use crate::qr::QrError;

/// A non-2xx answer in the protocol's form `{"error": {"code", "message"}}`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the broker answered HTTP {status} {code}: {message}")]
pub struct BrokerError {
    /// The HTTP status.
    pub status: u16,
    /// The protocol's snake_case code (`already_claimed`, `expired`, `bad_signature`, ...).
    pub code: String,
    /// The broker's human text.
    pub message: String,
    /// The `Retry-After` header in seconds, sent with `rate_limited`.
    pub retry_after: Option<Duration>,
}

impl BrokerError {
    /// True when the broker's code is `code`.
    pub fn is(&self, code: &str) -> bool {
        self.code == code
    }
}

/// Everything a phone operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The broker refused, with a protocol error body.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The broker could not be reached or the connection broke.
    #[error("cannot talk to the broker: {0}")]
    Transport(#[from] reqwest::Error),
    /// The broker answered something the protocol does not allow (a success body that does not
    /// parse, or an error without the protocol's error body, e.g. a proxy's HTML page).
    #[error("unexpected answer from the broker (HTTP {status}): {detail}")]
    UnexpectedAnswer {
        /// The HTTP status.
        status: u16,
        /// What was wrong, with an excerpt of the body.
        detail: String,
    },
    /// The scanned text is not a bzt QR text.
    #[error(transparent)]
    Qr(#[from] QrError),
    /// The challenge is malformed or is not this session's: the phone will not sign it.
    #[error("refusing to sign: {0}")]
    Challenge(#[from] ChallengeError),
    /// The certificate or key could not be loaded or used (a missing or wrong PIN is
    /// `Crypto(bzt_crypto::Error::PinRequired)` / `Crypto(bzt_crypto::Error::WrongPin)`).
    #[error(transparent)]
    Crypto(#[from] bzt_crypto::Error),
    /// The identity's files do not fit together (unreadable file, key of another certificate).
    #[error("identity: {0}")]
    Identity(String),
    /// The completion asked for does not fit the session (e.g. no match code where one is
    /// required, recipients on a login); nothing was sent.
    #[error("cannot complete this session so: {0}")]
    Refused(String),
    /// The co-signing service of a split key refused or could not be reached (a wrong PIN is
    /// the service's `bad_pin_proof`; a locked, frozen or revoked key has its own code).
    #[error(transparent)]
    Cosigner(#[from] bzt_cosigner::client::ClientError),
}

impl Error {
    /// The broker's error, when this is one.
    pub fn broker(&self) -> Option<&BrokerError> {
        match self {
            Error::Broker(b) => Some(b),
            _ => None,
        }
    }
}
