//! Where records live: sessions and conversations (one contract,
//! [`RecordStore`]), the audit trail ([`AuditLog`]), shared record sets
//! ([`records`]), pending webhooks ([`webhooks`]) and the failed claims per
//! QR code ([`claim_failures`]).
//!
//! The [`RecordStore`] contract, which every implementation keeps for every
//! record type (the conformance suite in `tests/store_conformance.rs` runs it
//! for sessions and conversations against each backend):
//! - `update` is atomic: it reads the record, runs the caller's change (the
//!   domain's `apply` for an op; the store never sees the op) and, if the
//!   record's `rev` moved, writes it back, with no other write in between.
//!   Two concurrent claims therefore have exactly one winner, on one node or
//!   many. The change may run more than once (a shared store retries it on a
//!   fresh read after losing a race); only its last run counts.
//! - After every write, every receiver returned by `subscribe` for that
//!   record is woken (with the new `rev`), on every node. A woken receiver
//!   re-reads the record, so a coalesced or missed wake-up never loses a
//!   state.
//! - Records are kept until `remove`; the broker removes an ended record
//!   after its retention period. Dropping a record closes its receivers (on
//!   every node, for a shared store). A store may also forget a record by
//!   itself, but never before [`StoredRecord::kept_from`]
//!   (`max(expires_at, end)`) plus the protocol's 10-minute retention (Redis
//!   keys carry such a TTL, so a node that dies before its purge timer leaks
//!   nothing).
//! - Failures to reach the backing service are [`StoreError::Unavailable`]
//!   and answer 503, quickly (every backend call has a time limit); they
//!   never panic.
//!
//! Due times, so that each deadline is handled once although every node
//! runs timers. A store keeps queues of `(due time, id)`
//! ([`DueQueue`]): the record's own deadlines
//! ([`StoredRecord::DEADLINES`]: a session's expiry; a conversation's
//! request TTL, idle and maximum lifetime) and those the caller schedules
//! ([`StoredRecord::OTHER_QUEUES`]: a session's QR rotations).
//! - `insert` records the record's [`StoredRecord::next_deadline`]; a write
//!   that moves it records the new one (a session's never moves; a
//!   conversation's does with every request and answer). A write that ends
//!   the record records nothing: its old entry costs one handling that
//!   changes nothing, after which the handler forgets it (this keeps the
//!   end of a session, the hot path, at one write). So the recorded due
//!   time is never later than the true one, except while a claim holds it.
//! - `claim_due(queue, now, max)` hands out ids due at or before `now`,
//!   oldest first. A claim is a lease of [`EXPIRY_LEASE`]: no other caller,
//!   on any node, gets the same id during it.
//! - The claimer handles the record (a session's `Expire`, a conversation's
//!   `Tick`, a rotation) and then calls `schedule` with its next due time,
//!   or `None` to forget it (the record ended, or is gone). That ends the
//!   lease. `schedule` replaces a lease; otherwise it keeps the earlier of
//!   the recorded and the new due time, so a claimer that read before
//!   another node's write can never hide the writer's earlier deadline.
//! - A claimer that dies in between loses nothing: the lease runs out and
//!   another caller gets the id again. A deadline handled twice changes the
//!   record once anyway (`update` is atomic), so the lease is an economy,
//!   not a safety net.
//! - `remove` forgets the record's due times in every queue.
//! - [`RecordStore::poll_interval`] tells the broker whether it must poll:
//!   `None` when the node that writes a record is the only one that can
//!   ever handle it (memory), so its local timers are enough; `Some(period)`
//!   when records are shared, so every node also polls, which covers
//!   records whose timer was on a node that is gone.
//!
//! Implementations: [`memory::MemoryStore`] (one node only, the embedded
//! default) and [`redis::RedisStore`] (records shared by every node
//! pointing at the same Redis or Redis Cluster; see docs/redis.md). In
//! Redis mode the audit trail is a Redis stream ([`redis::RedisAuditLog`]).

pub mod claim_failures;
pub mod file_audit;
pub mod memory;
pub mod records;
pub mod redis;
pub mod webhooks;

/// How long a claimed due time is reserved for its claimer (see the module doc).
pub const EXPIRY_LEASE: std::time::Duration = std::time::Duration::from_secs(10);

use async_trait::async_trait;
use bzt_core::audit::Record;
pub use bzt_core::record::{DueQueue, RecordId, StoredRecord};
use bzt_core::Timestamp;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backing service cannot be reached or timed out.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A record could not be read back (corruption or version skew).
    #[error("store data error: {0}")]
    Corrupt(String),
    #[error("a record with this id already exists")]
    Duplicate,
    /// The audit log cannot take the record: the operation it records must
    /// not be performed either.
    #[error("audit log unavailable: {0}")]
    AuditUnavailable(String),
}

/// A change [`RecordStore::update_with`] runs on a record. (An alias, so
/// that `async_trait` leaves its argument's lifetime higher-ranked.)
pub type Change<'a, R> = dyn FnMut(&mut R) + Send + 'a;

/// What [`RecordStore::update_with`] wrote.
#[derive(Debug)]
pub struct Written<R> {
    /// The record as it is after the change.
    pub record: R,
    /// Whether the change moved its `rev` (and so was written).
    pub changed: bool,
}

/// The outcome of an atomic `update` (on `dyn RecordStore`).
#[derive(Debug)]
pub struct Updated<R, T> {
    /// What the change answered (from its last run).
    pub output: T,
    /// The record as it is after the change.
    pub record: R,
    /// Whether the change wrote anything.
    pub changed: bool,
}

/// Where records of one type live (see the module doc for the contract).
#[async_trait]
pub trait RecordStore<R: StoredRecord>: Send + Sync + 'static {
    /// Stores a new record. `Duplicate` if the id is taken.
    async fn insert(&self, record: &R) -> Result<(), StoreError>;

    async fn get(&self, id: &R::Id) -> Result<Option<R>, StoreError>;

    /// The record, perhaps as a node-local copy that is not the latest
    /// version, but never one older than `at_least` (a `rev` the caller was
    /// told of: a woken receiver asks for the one it was woken with, and
    /// gets what a read at that moment would have answered). For callers
    /// that check only what never changes on it, or start an `update_on`
    /// from it (which re-checks on a fresh read); the default reads.
    async fn get_recent(&self, id: &R::Id, at_least: u64) -> Result<Option<R>, StoreError> {
        let _ = at_least;
        self.get(id).await
    }

    /// Atomically runs `change` on the record at `now` and writes it back
    /// if its `rev` moved; `None` if there is no such record. A caller that
    /// has a copy of the record (read, or from `get_recent`) passes it as
    /// `current`: a store that reads before writing may try its write on it
    /// first. The copy may be stale: a write from it that conflicts is
    /// retried on a fresh read, and a change that writes nothing on it runs
    /// again on a fresh read, so no answer rests on a stale copy. Callers
    /// use `update` and `update_on` (on `dyn RecordStore`), which carry the
    /// change's answer out.
    async fn update_with(
        &self,
        id: &R::Id,
        current: Option<&R>,
        now: Timestamp,
        change: &mut Change<'_, R>,
    ) -> Result<Option<Written<R>>, StoreError>;

    /// A receiver woken after every write of the record (its value is the
    /// record's `rev`); `None` if there is no such record.
    async fn subscribe(&self, id: &R::Id) -> Result<Option<watch::Receiver<u64>>, StoreError>;

    /// Forgets a record (after its retention period) and its due times.
    async fn remove(&self, id: &R::Id) -> Result<(), StoreError>;

    /// Claims up to `max` ids of `queue` due at or before `now`, oldest
    /// first, each for [`EXPIRY_LEASE`] (see the module doc).
    async fn claim_due(
        &self,
        queue: DueQueue,
        now: Timestamp,
        max: usize,
    ) -> Result<Vec<R::Id>, StoreError>;

    /// Records each id's next due time in `queue`, or forgets it (`None`);
    /// replaces a claim's lease, otherwise keeps the earlier due time.
    async fn schedule(
        &self,
        queue: DueQueue,
        due: &[(R::Id, Option<Timestamp>)],
    ) -> Result<(), StoreError>;

    /// How often every node should call `claim_due` besides its own
    /// timers; `None` if local timers see every due time (one node).
    fn poll_interval(&self) -> Option<std::time::Duration>;

    /// Is the backing service reachable? (`/readyz`)
    async fn ping(&self) -> Result<(), StoreError>;

    /// A short name for logs and metrics.
    fn kind(&self) -> &'static str;
}

impl<R: StoredRecord> dyn RecordStore<R> {
    /// Atomically applies `change` (see [`RecordStore::update_with`]) and
    /// answers what it returned with the record as written.
    pub async fn update<T: Send>(
        &self,
        id: &R::Id,
        now: Timestamp,
        change: impl FnMut(&mut R) -> T + Send,
    ) -> Result<Option<Updated<R, T>>, StoreError> {
        self.update_from(id, None, now, change).await
    }

    /// `update` for a caller that has a copy of the record (see `update_with`).
    pub async fn update_on<T: Send>(
        &self,
        current: &R,
        now: Timestamp,
        change: impl FnMut(&mut R) -> T + Send,
    ) -> Result<Option<Updated<R, T>>, StoreError> {
        self.update_from(current.id(), Some(current), now, change)
            .await
    }

    async fn update_from<T: Send>(
        &self,
        id: &R::Id,
        current: Option<&R>,
        now: Timestamp,
        mut change: impl FnMut(&mut R) -> T + Send,
    ) -> Result<Option<Updated<R, T>>, StoreError> {
        let mut output = None;
        let written = self
            .update_with(id, current, now, &mut |r: &mut R| output = Some(change(r)))
            .await?;
        Ok(written.and_then(|w| {
            // `change` ran at least once whenever there was a record.
            output.map(|output| Updated {
                output,
                record: w.record,
                changed: w.changed,
            })
        }))
    }

    /// A claimed record was handled and now is `records`: records each one's
    /// next deadline (none once it ended), ending the claims' leases.
    pub async fn deadlines_handled(&self, records: &[R]) -> Result<(), StoreError> {
        let due: Vec<_> = records
            .iter()
            .map(|r| (r.id().clone(), r.next_deadline()))
            .collect();
        self.schedule(R::DEADLINES, &due).await
    }
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
