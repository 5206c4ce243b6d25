//! The reasons the broker itself writes into a terminal outcome: `result.reason`
//! of a `rejected` or `failed` session, `reason` of a finished conversation
//! request (docs/protocol.md "Terminal reasons"). A phone's decline carries its
//! own free text instead. Clients translate these by name (the browser SDK's
//! `REASON_MESSAGES`, whose test reads [`ALL`] from this file), so they never
//! change meaning and a new one goes into [`ALL`].

/// The phone picked a number other than the page's (session `rejected`).
pub const MATCH_FAILED: &str = "match_failed";
/// The third completion refused with 422 (session `failed`).
pub const TOO_MANY_BAD_COMPLETIONS: &str = "too_many_bad_completions";
/// A conversation answer whose signature did not verify (request `rejected`).
pub const BAD_SIGNATURE: &str = "bad_signature";
/// The certificate that opened the conversation is no longer acceptable (request `rejected`).
pub const CERTIFICATE_NOT_ACCEPTABLE: &str = "certificate_not_acceptable";
/// The conversation ended before the phone answered (request `expired`).
pub const CONVERSATION_ENDED: &str = "conversation_ended";

/// Every reason of this module.
pub const ALL: [&str; 5] = [
    MATCH_FAILED,
    TOO_MANY_BAD_COMPLETIONS,
    BAD_SIGNATURE,
    CERTIFICATE_NOT_ACCEPTABLE,
    CONVERSATION_ENDED,
];
