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
//!   after its retention period. Dropping a record closes its receivers (on
//!   every node, for a shared store). A store may also forget a record by
//!   itself, but never before `max(expires_at, completed_at)` plus the
//!   protocol's 10-minute retention (Redis keys carry such a TTL, so a node
//!   that dies before its purge timer leaks nothing).
//! - Failures to reach the backing service are [`StoreError::Unavailable`]
//!   and answer 503, quickly (every backend call has a time limit); they
//!   never panic.
//!
//! Expiry deadlines, so that each session expires once although every node
//! runs timers:
//! - `insert` records the session's deadline (`expires_at`).
//! - `claim_due_expiries(now, max)` hands out sessions whose deadline is at
//!   or before `now`. A claim is a lease of [`EXPIRY_LEASE`]: no other caller,
//!   on any node, gets the same session during it. The claimer applies
//!   [`Op::Expire`] (a no-op for a session that already ended) and then calls
//!   `expiries_done`, which forgets the deadlines. A claimer that dies in
//!   between loses nothing: the lease runs out and another caller gets the
//!   session again. An expiry applied twice changes the session once anyway
//!   (`apply` is atomic), so the lease is an economy, not a safety net.
//! - `remove` forgets the deadline too.
//! - [`SessionStore::expiry_poll_interval`] tells the broker whether it must
//!   poll: `None` when the node that creates a session is the only one that
//!   can ever expire it (memory), so its local timer at `expires_at` is
//!   enough; `Some(period)` when sessions are shared, so every node also
//!   polls, which covers sessions whose creating node is gone.
//!
//! QR rotation deadlines work the same way (`schedule_rotation`,
//! `claim_due_rotations`, `rotations_done`), so a rotating QR keeps rotating
//! when the node that created the session dies; the memory store keeps none
//! (its one node's timers see every rotation).
//!
//! Implementations: [`memory::MemoryStore`] (one node only, the embedded
//! default) and [`redis::RedisStore`] (sessions shared by every node
//! pointing at the same Redis or Redis Cluster; see docs/redis.md). The
//! same split holds for conversations ([`conversation`]), and in Redis mode
//! the audit trail is a Redis stream ([`redis::RedisAuditLog`]).

pub mod file_audit;
pub mod memory;
pub mod records;
pub mod redis;
pub mod webhooks;

/// How long a claimed expiry is reserved for its claimer (see the module doc).
pub const EXPIRY_LEASE: std::time::Duration = std::time::Duration::from_secs(10);

use async_trait::async_trait;
use bzt_core::audit::Record;
use bzt_core::conversation::{ConvOp, ConvOutput, Conversation};
use bzt_core::secret::{ConversationId, RequestId};
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
    /// The audit log cannot take the record: the operation it records must
    /// not be performed either.
    #[error("audit log unavailable: {0}")]
    AuditUnavailable(String),
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

    /// As [`SessionStore::apply`], for a caller that has just read the
    /// session: a store that reads before writing may try its write on
    /// `current` first (a stale copy only costs a retry on a fresh read).
    async fn apply_on(
        &self,
        current: &Session,
        op: &Op,
        now: Timestamp,
    ) -> Result<Option<Update>, StoreError> {
        self.apply(&current.id, op, now).await
    }

    /// A receiver woken after every write of the session (its value is the
    /// session's `rev`); `None` if there is no such session.
    async fn subscribe(&self, id: &SessionId) -> Result<Option<watch::Receiver<u64>>, StoreError>;

    /// Forgets a session (after its retention period).
    async fn remove(&self, id: &SessionId) -> Result<(), StoreError>;

    /// Claims up to `max` sessions whose expiry deadline is at or before
    /// `now`, oldest first, each for [`EXPIRY_LEASE`] (see the module doc).
    async fn claim_due_expiries(
        &self,
        now: Timestamp,
        max: usize,
    ) -> Result<Vec<SessionId>, StoreError>;

    /// Forgets the deadlines of claimed sessions whose expiry was applied
    /// (or that no longer exist).
    async fn expiries_done(&self, ids: &[SessionId]) -> Result<(), StoreError>;

    /// How often every node should call `claim_due_expiries` besides its
    /// own timers; `None` if local timers see every deadline (one node).
    fn expiry_poll_interval(&self) -> Option<std::time::Duration>;

    /// Records when the session's next QR rotation is due, so that any node
    /// can rotate it (its creating node may be gone). A store whose sessions
    /// only one node sees keeps nothing: that node's timer is enough.
    async fn schedule_rotation(&self, _id: &SessionId, _at: Timestamp) -> Result<(), StoreError> {
        Ok(())
    }

    /// Claims up to `max` sessions whose rotation is due, each for
    /// [`EXPIRY_LEASE`], as `claim_due_expiries` does for expiries. The
    /// claimer rotates, then calls `schedule_rotation` with the next
    /// deadline, or `rotations_done` when there is none.
    async fn claim_due_rotations(
        &self,
        _now: Timestamp,
        _max: usize,
    ) -> Result<Vec<SessionId>, StoreError> {
        Ok(Vec::new())
    }

    /// Forgets the rotation deadlines of these sessions.
    async fn rotations_done(&self, _ids: &[SessionId]) -> Result<(), StoreError> {
        Ok(())
    }

    /// Is the backing service reachable? (`/readyz`)
    async fn ping(&self) -> Result<(), StoreError>;

    /// A short name for logs and metrics.
    fn kind(&self) -> &'static str;
}

/// Filters of `GET /v1/audit` and `bzt audit`.
#[derive(Debug, Default, Clone)]
pub struct AuditQuery {
    pub app: Option<String>,
    pub serial: Option<String>,
    pub since: Option<Timestamp>,
    /// A member of 企业证书授权: its name or its device id.
    pub delegate: Option<String>,
    pub limit: usize,
}

impl AuditQuery {
    pub(crate) fn matches(&self, r: &Record) -> bool {
        let Some(op) = r.operation() else {
            return false;
        };
        self.app.as_ref().is_none_or(|a| *a == op.app)
            && self.serial.as_ref().is_none_or(|s| *s == op.cert_serial)
            && self.since.is_none_or(|t| r.body.time >= t)
            && self.delegate.as_ref().is_none_or(|who| {
                op.delegate
                    .as_ref()
                    .is_some_and(|d| d.name == *who || d.device == *who)
            })
    }
}

/// Where audit records go. Appends are durable when they return: callers
/// append *before* reporting the outcome they record.
#[async_trait::async_trait]
pub trait AuditLog: Send + Sync + 'static {
    /// Appends an operation; returns its sequence number once it is durable.
    async fn append(
        &self,
        op: bzt_core::audit::Operation,
        time: Timestamp,
    ) -> Result<u64, StoreError>;
    /// Matching operations, oldest first, at most `limit` (0: no limit).
    async fn query(&self, q: AuditQuery) -> Result<Vec<Record>, StoreError>;
    /// Appends a signed checkpoint at `time` if any operation was appended
    /// since the last one (the broker calls this every
    /// `[audit] checkpoint_interval_s`, so truncating the log's end cannot
    /// go unnoticed for longer). Returns the chain's last `seq`.
    async fn checkpoint_if_unsigned(&self, time: Timestamp) -> Result<u64, StoreError>;
}

/// The outcome of an atomic [`ConversationStore::apply_conversation`].
#[derive(Debug)]
pub struct ConvUpdate {
    pub output: Result<ConvOutput, DomainError>,
    pub conversation: Conversation,
    pub changed: bool,
    /// Requests that reached a final status in this op.
    pub finished: Vec<RequestId>,
    /// Whether this op ended the conversation.
    pub ended_now: bool,
}

/// Where conversations (会话签章) live.
///
/// The contract mirrors [`SessionStore`] (the conformance suite in
/// `tests/store_conformance.rs` checks it): `apply_conversation` is atomic
/// (read, [`Conversation::apply`], write back if changed) on one node or
/// many, every write wakes the receivers of `subscribe_conversation` on
/// every node, removing a conversation closes them, and failures to reach a
/// backing service are [`StoreError::Unavailable`]. A store may forget a
/// conversation by itself, but never before `max(expires_at, ended_at)`
/// plus the protocol's 10-minute retention.
///
/// Deadlines (request TTL, idle, max lifetime). Every op applies what is
/// due first, and the node that writes a conversation sets a local timer at
/// its next deadline, which sends [`ConvOp::Tick`]. That is enough on one
/// node. With a shared store the node holding the timer may die, and then
/// nobody would tell the sockets on other nodes that a request expired or
/// the conversation went idle. So a shared store also keeps every open
/// conversation's next deadline where every node can see it, handed out
/// like session expiries:
/// - every write records the written conversation's next deadline (an
///   ended conversation has none);
/// - `claim_due_conversations(now, max)` hands out conversations whose
///   deadline passed, each leased for [`EXPIRY_LEASE`] to one caller;
/// - the caller applies `Tick` and then calls `conversation_ticked` with
///   the result, which records its next deadline (or forgets it) and ends
///   the lease. A caller that dies in between loses nothing: the lease runs
///   out and another node gets the conversation.
///
/// [`ConversationStore::conversation_poll_interval`] says whether nodes must
/// poll; the defaults (no poll, nothing to claim) are right for one node.
#[async_trait]
pub trait ConversationStore: Send + Sync + 'static {
    async fn insert_conversation(&self, c: &Conversation) -> Result<(), StoreError>;
    async fn get_conversation(
        &self,
        id: &ConversationId,
    ) -> Result<Option<Conversation>, StoreError>;
    async fn apply_conversation(
        &self,
        id: &ConversationId,
        op: &ConvOp,
        now: Timestamp,
    ) -> Result<Option<ConvUpdate>, StoreError>;
    async fn subscribe_conversation(
        &self,
        id: &ConversationId,
    ) -> Result<Option<watch::Receiver<u64>>, StoreError>;
    /// Forgets a conversation (after its retention period), and its deadline.
    async fn remove_conversation(&self, id: &ConversationId) -> Result<(), StoreError>;

    /// Claims up to `max` conversations whose next deadline is at or before
    /// `now`, each for [`super::EXPIRY_LEASE`] (see the module doc).
    async fn claim_due_conversations(
        &self,
        _now: Timestamp,
        _max: usize,
    ) -> Result<Vec<ConversationId>, StoreError> {
        Ok(Vec::new())
    }

    /// A claimed conversation was ticked and now is `c`: record its next
    /// deadline (none once ended), ending the claim's lease.
    async fn conversation_ticked(&self, _c: &Conversation) -> Result<(), StoreError> {
        Ok(())
    }

    /// How often every node should call `claim_due_conversations`; `None`
    /// if the local timers see every deadline (one node).
    fn conversation_poll_interval(&self) -> Option<std::time::Duration> {
        None
    }
}
