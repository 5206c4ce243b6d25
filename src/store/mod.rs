//! Where sessions live.
//!
//! The [`SessionStore`] contract, which every implementation must keep (the
//! conformance suite in `tests/store_conformance.rs` checks it):
//! - `apply` is atomic: it reads the session, runs [`Session::apply`] and, if
//!   the session changed, writes it back, with no other write in between.
//!   Two concurrent claims therefore have exactly one winner, on one node or
//!   many.
//! - After every write, every receiver returned by `subscribe` for that
//!   session is woken (with the new `rev`). A woken receiver re-reads the
//!   session, so a coalesced or missed wake-up never loses a state.
//! - Records are kept until `remove`; the broker removes a terminal session
//!   after its retention period. Dropping a record closes its receivers.
//! - Failures to reach the backing service are [`StoreError::Unavailable`]
//!   and answer 503; they never panic.
//!
//! Implementations: [`memory::MemoryStore`] (one node only, the embedded
//! default). A Redis implementation shares sessions between nodes.

pub mod memory;

use async_trait::async_trait;
use bzt_core::session::{Op, OpOutput};
use bzt_core::{DomainError, Session, SessionId, Timestamp};
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backing service cannot be reached or timed out.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A record could not be read back (corruption or version skew).
    #[error("store data error: {0}")]
    Corrupt(String),
    #[error("a session with this id already exists")]
    Duplicate,
}

/// The outcome of an atomic [`SessionStore::apply`].
#[derive(Debug)]
pub struct Update {
    /// The op's own answer (it may refuse; a refusal can still come with a
    /// change, as when a late claim expires the session).
    pub output: Result<OpOutput, DomainError>,
    /// The session as it is after the op.
    pub session: Session,
    /// Whether the op wrote anything.
    pub changed: bool,
    /// The status before the op, so callers can tell what transition happened.
    pub previous_status: bzt_core::Status,
}

#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Stores a new session. `Duplicate` if the id is taken.
    async fn insert(&self, session: &Session) -> Result<(), StoreError>;

    async fn get(&self, id: &SessionId) -> Result<Option<Session>, StoreError>;

    /// Atomically applies `op` at `now`; `None` if there is no such session.
    async fn apply(
        &self,
        id: &SessionId,
        op: &Op,
        now: Timestamp,
    ) -> Result<Option<Update>, StoreError>;

    /// A receiver woken after every write of the session (its value is the
    /// session's `rev`); `None` if there is no such session.
    async fn subscribe(&self, id: &SessionId) -> Result<Option<watch::Receiver<u64>>, StoreError>;

    /// Forgets a session (after its retention period).
    async fn remove(&self, id: &SessionId) -> Result<(), StoreError>;

    /// Is the backing service reachable? (`/readyz`)
    async fn ping(&self) -> Result<(), StoreError>;

    /// A short name for logs and metrics.
    fn kind(&self) -> &'static str;
}
