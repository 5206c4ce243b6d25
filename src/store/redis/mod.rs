//! Records (sessions, conversations) in Redis (standalone or Cluster),
//! shared by every broker node that points at it, and the audit trail as a
//! stream (`audit.rs`). Layout, channels and durability: docs/redis.md.
//!
//! - A record is a hash `<prefix>:{<tag>:<id>}` (tag `s` for sessions, `c`
//!   for conversations) with fields `rev` and `json` (the serialized
//!   record), with a TTL of [`StoredRecord::kept_from`] plus 10 min
//!   retention plus a margin, renewed on every write. The hash tag puts a record's key and
//!   its channel `<prefix>:{<tag>:<id>}:ch` in one Cluster slot, so one
//!   script can write the one and publish on the other.
//! - `update` reads the record, runs the caller's change in Rust (all rules
//!   stay in bzt-core) and writes back with a Lua compare-and-set on `rev`;
//!   on conflict it reads again and retries. Exactly one node wins every
//!   race; the losers re-run the change on the winner's state.
//! - Due-time queues are sorted sets `<prefix>:{<queue>}` (member = record
//!   id, score = due time in Unix ms): `{due}` session expiries, `{rot}` QR
//!   rotations, `{cdue}` conversation deadlines. A claim re-scores the member
//!   to the end of its lease minus half a millisecond in one script, so a
//!   due time is handed to one node and a score ending in `.5` marks a
//!   lease. The schedule script replaces a lease and otherwise keeps the earlier
//!   due time (the rule of [`crate::store`]'s module doc). A queue is one
//!   key, in its own slot, apart from the records: a write records its new
//!   deadline in a second call after the compare-and-set. (A new record's
//!   first deadline is part of the insert script on one server; a Cluster
//!   records it in a call of its own first.) The one gap: a
//!   node that dies between the two leaves the previous due time, so the
//!   new deadline can come late (at most until the previous one, and every
//!   read in between applies due deadlines lazily anyway).
//! - Every call has a time limit ([`RedisSettings::timeout`]): when Redis is
//!   unreachable the store answers [`StoreError::Unavailable`] at once, and
//!   the connections reconnect by themselves.

mod audit;
mod claim_failures;
mod conn;
mod copies;
mod pubsub;
mod records;
mod webhooks;

pub use self::audit::RedisAuditLog;
pub use self::claim_failures::RedisFailedClaims;
pub use self::records::{RedisRecordSet, RECORD_POLL};
pub use self::webhooks::RedisWebhookQueue;

use self::conn::{connect, timed, Conn};
use self::copies::Copies;
use self::pubsub::{Subscriber, Subscriptions};
use super::memory::deadline_to_record;
use super::{
    Change, DueQueue, RecordId, RecordStore, StoreError, StoredRecord, Written, EXPIRY_LEASE,
};
use async_trait::async_trait;
use bzt_core::session::TERMINAL_RETENTION_S;
use bzt_core::Timestamp;
use redis::Script;
use std::collections::HashSet;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::sync::watch;

/// Kept beyond the protocol's retention, so a node whose clock runs a
/// little behind never finds a record gone early.
const TTL_MARGIN_MS: i64 = 60_000;
/// Compare-and-set attempts before `apply` gives up (a hot session with
/// this many writers at once is a bug or an attack).
const MAX_CAS_ATTEMPTS: u32 = 64;

/// How to reach Redis.
#[derive(Clone, Debug)]
pub struct RedisSettings {
    /// `redis://` URLs: the server, or seed nodes of a Cluster.
    pub urls: Vec<String>,
    /// Speak the Cluster protocol (slot routing, `MOVED`/`ASK`).
    pub cluster: bool,
    /// Prefix of every key and channel, so several brokers (or tests) can
    /// share one Redis. No braces: they would change the hash slot.
    pub key_prefix: String,
    /// Time limit of every Redis call.
    pub timeout: Duration,
    /// How often every node polls the shared expiry deadlines.
    pub expiry_poll: Duration,
}

impl RedisSettings {
    pub const DEFAULT_PREFIX: &'static str = "bzt";
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);
    pub const DEFAULT_EXPIRY_POLL: Duration = Duration::from_millis(500);

    /// One server (or, with a comma-separated list, Cluster seed nodes).
    pub fn new(url: &str) -> Self {
        let urls: Vec<String> = url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect();
        Self {
            cluster: urls.len() > 1,
            urls,
            key_prefix: Self::DEFAULT_PREFIX.into(),
            timeout: Self::DEFAULT_TIMEOUT,
            expiry_poll: Self::DEFAULT_EXPIRY_POLL,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.urls.is_empty() {
            return Err("store.redis_url is empty".into());
        }
        if self.key_prefix.is_empty()
            || self.key_prefix.contains(['{', '}'])
            || self.key_prefix.chars().any(char::is_whitespace)
        {
            return Err(format!(
                "store.key_prefix {:?} must be non-empty, without braces or spaces",
                self.key_prefix
            ));
        }
        Ok(())
    }
}

/// Key and channel names (docs/redis.md, "Key layout").
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    prefix: String,
}

/// A record's channel is its key with this suffix ([`Keys::channel`]).
const CHANNEL_SUFFIX: &str = ":ch";

/// The record whose writes `channel` announces: [`Keys::channel`] undone.
fn record_of_channel(channel: &str) -> &str {
    channel.strip_suffix(CHANNEL_SUFFIX).unwrap_or(channel)
}

impl Keys {
    fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// A record of type `R`.
    fn record<R: StoredRecord>(&self, id: &R::Id) -> String {
        format!("{}:{{{}:{id}}}", self.prefix, R::TAG)
    }

    /// Where a record's writes are announced (same slot as the record).
    fn channel<R: StoredRecord>(&self, id: &R::Id) -> String {
        self.record::<R>(id) + CHANNEL_SUFFIX
    }

    /// A due-time queue.
    fn queue(&self, queue: DueQueue) -> String {
        format!("{}:{{{}}}", self.prefix, queue.0)
    }

    /// The audit stream; its head key shares the `{audit}` slot.
    fn audit(&self) -> String {
        format!("{}:{{audit}}", self.prefix)
    }

    fn audit_head(&self) -> String {
        format!("{}:{{audit}}:head", self.prefix)
    }

    /// Pending webhook deliveries by due time (their data appends `:d`).
    fn webhooks(&self) -> String {
        format!("{}:{{wh}}", self.prefix)
    }

    /// A shared record set (its version key appends `:v`).
    fn record_set(&self, name: &str) -> String {
        format!("{}:{{rs:{name}}}", self.prefix)
    }
}

/// Creates the record unless the key exists. KEYS: session.
/// ARGV: rev, json, ttl ms. Returns 1 if created, 0 if taken.
static INSERT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'rev', ARGV[1], 'json', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1",
    )
});

/// The rule of [`SCHEDULE`] for one id (`id`, due ms `at`) in queue `KEYS[q]`:
/// a lease (a score ending in `.5`) is replaced, otherwise the earlier due
/// time stays. Lua, shared by the scripts that schedule.
const SCHEDULE_ONE: &str = r"
local function schedule_one(q, id, at)
  local cur = redis.call('ZSCORE', KEYS[q], id)
  cur = cur and tonumber(cur)
  if not (cur and cur == math.floor(cur) and cur <= tonumber(at)) then
    redis.call('ZADD', KEYS[q], at, id)
  end
end";

/// [`INSERT`] and the record's first deadline in one step, for one Redis
/// server (a Cluster keeps a queue in another slot than the record, where
/// one script cannot reach both: there the deadline is a call of its own).
/// KEYS: record, queue. ARGV: rev, json, ttl ms, id, due ms. Returns 1 if
/// created, 0 if taken (and then the queue is left alone).
static INSERT_DUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{SCHEDULE_ONE}
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'rev', ARGV[1], 'json', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
schedule_one(2, ARGV[4], ARGV[5])
return 1"
    ))
});

/// Compare-and-set on `rev`, then announce the write. KEYS: session,
/// channel. ARGV: expected rev, new rev, json, ttl ms, publish command.
/// Returns 1 if written, 0 if `rev` moved on, -1 if the record is gone.
///
/// Two announcements: `<rev> <json>`, so that a woken node has the record
/// without reading it, then `<rev>` alone, for nodes of versions that
/// expect a bare number (they skip the first with a warning; see
/// docs/redis.md, "Push between nodes"). A current node takes the first and
/// finds nothing new in the second.
static CAS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cur = redis.call('HGET', KEYS[1], 'rev')
if not cur then return -1 end
if cur ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'rev', ARGV[2], 'json', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call(ARGV[5], KEYS[2], ARGV[2] .. ' ' .. ARGV[3])
redis.call(ARGV[5], KEYS[2], ARGV[2])
return 1",
    )
});

/// Deletes the record and tells other nodes (payload `0`). KEYS: session,
/// channel. ARGV: publish command.
static REMOVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = redis.call('DEL', KEYS[1])
if n == 1 then redis.call(ARGV[1], KEYS[2], '0') end
return n",
    )
});

/// Claims due ids by moving them to the end of a lease. KEYS: queue.
/// ARGV: now ms, lease score (ends in `.5`), max. Returns the claimed ids.
static CLAIM_DUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], 'XX', ARGV[2], id) end
return ids",
    )
});

/// Records or forgets due times. KEYS: queue. ARGV: pairs of id and due
/// ms, or `''` to forget. A lease (a score ending in `.5`) is replaced;
/// otherwise the earlier due time stays.
static SCHEDULE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{SCHEDULE_ONE}
for i = 1, #ARGV, 2 do
  local id, at = ARGV[i], ARGV[i + 1]
  if at == '' then
    redis.call('ZREM', KEYS[1], id)
  else
    schedule_one(1, id, at)
  end
end
return 1"
    ))
});

/// Aborts the subscriber task when the store goes away.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Records in Redis (see the module doc). One value serves as the node's
/// [`RecordStore`] of every record type: they share the connection, the
/// scripts and the subscriber.
pub struct RedisStore {
    /// Commands (a separate connection from the subscriber's, so a burst
    /// of messages never queues behind, or in front of, a command).
    conn: Conn,
    keys: Keys,
    /// This node's receivers, fed by the subscriber task.
    subs: Arc<Subscriptions>,
    /// Copies of records for `get_recent` (shared with the subscriber,
    /// which keeps the records that announcements carry).
    copies: Arc<Copies>,
    /// `SPUBLISH` if the server has sharded pub/sub (Redis ≥ 7), else `PUBLISH`.
    publish: &'static str,
    timeout: Duration,
    expiry_poll: Duration,
    _subscriber: AbortOnDrop,
}

impl RedisStore {
    /// Connects (failing if Redis cannot be reached now) and starts the
    /// subscriber task; must run inside a Tokio runtime.
    pub async fn connect(settings: RedisSettings) -> anyhow::Result<Self> {
        use anyhow::Context;
        settings.validate().map_err(anyhow::Error::msg)?;
        let what = || format!("cannot connect to Redis at {}", settings.urls.join(","));
        let conn = tokio::time::timeout(settings.timeout * 4, connect(&settings, None))
            .await
            .map_err(|_| anyhow::anyhow!("no answer"))
            .with_context(what)?
            .with_context(what)?;
        let (push_tx, push_rx) = tokio::sync::mpsc::unbounded_channel();
        let sub_conn =
            tokio::time::timeout(settings.timeout * 4, connect(&settings, Some(push_tx)))
                .await
                .map_err(|_| anyhow::anyhow!("no answer"))
                .with_context(what)?
                .with_context(|| format!("{} (subscriber; Redis ≥ 6 is required)", what()))?;
        let keys = Keys::new(&settings.key_prefix);
        // Sharded pub/sub exists from Redis 7 on: ask by using it.
        let probe_channel = format!("{}:{{probe}}{CHANNEL_SUFFIX}", settings.key_prefix);
        let sharded = timed(
            settings.timeout,
            "SPUBLISH",
            redis::cmd("SPUBLISH")
                .arg(&probe_channel)
                .arg("")
                .query_async::<i64>(&mut conn.clone()),
        )
        .await
        .is_ok();
        let copies = Arc::new(Copies::new());
        let (subs, dirty_rx) = Subscriptions::new(copies.clone());
        let subscriber = Subscriber {
            subs: subs.clone(),
            conn: sub_conn,
            sharded,
            timeout: settings.timeout,
            subscribed: HashSet::new(),
            retry: Vec::new(),
        };
        let task = tokio::spawn(subscriber.run(push_rx, dirty_rx));
        tracing::info!(
            urls = %settings.urls.join(","),
            cluster = settings.cluster,
            sharded_pubsub = sharded,
            prefix = %settings.key_prefix,
            "redis store connected"
        );
        Ok(Self {
            conn,
            keys,
            subs,
            copies,
            publish: if sharded { "SPUBLISH" } else { "PUBLISH" },
            timeout: settings.timeout,
            expiry_poll: settings.expiry_poll,
            _subscriber: AbortOnDrop(task),
        })
    }

    /// Whether writes are announced with sharded pub/sub.
    pub fn sharded_pubsub(&self) -> bool {
        self.publish == "SPUBLISH"
    }

    /// Records (sessions, conversations) with receivers on this node (tests).
    pub fn local_subscriptions(&self) -> usize {
        self.subs.len()
    }

    // ---- one record: a hash of `rev` and `json`, and its channel ----------

    /// The record's `json` field, parsed; keeps a copy.
    async fn read_record<R: StoredRecord>(&self, key: &str) -> Result<Option<R>, StoreError> {
        let json: Option<String> = timed(
            self.timeout,
            "HGET",
            redis::cmd("HGET")
                .arg(key)
                .arg("json")
                .query_async(&mut self.conn.clone()),
        )
        .await?;
        let record = json
            .map(|j| {
                serde_json::from_str::<R>(&j)
                    .map_err(|e| StoreError::Corrupt(format!("{key}: {e}")))
            })
            .transpose()?;
        if let Some(r) = &record {
            self.copies.keep(key, r.rev(), r);
        }
        Ok(record)
    }

    /// Creates the record; `Duplicate` if the key exists. With `due`
    /// (queue, id, time), also records the record's first deadline, in the
    /// same script: only on one server ([`INSERT_DUE`]).
    async fn insert_record(
        &self,
        key: &str,
        rev: u64,
        json: String,
        ttl_ms: i64,
        due: Option<(String, &str, Timestamp)>,
    ) -> Result<(), StoreError> {
        let invocation = match &due {
            Some((queue, id, at)) => {
                let mut i = INSERT_DUE.key(key);
                i.key(queue).arg(rev).arg(json).arg(ttl_ms);
                i.arg(*id).arg(at.unix_millis());
                i
            }
            None => {
                let mut i = INSERT.key(key);
                i.arg(rev).arg(json).arg(ttl_ms);
                i
            }
        };
        let created: i64 = timed(
            self.timeout,
            "insert",
            invocation.invoke_async(&mut self.conn.clone()),
        )
        .await?;
        if created == 1 {
            Ok(())
        } else {
            Err(StoreError::Duplicate)
        }
    }

    /// Writes the record if its `rev` is still `expected` and announces it
    /// through Redis (the caller announces it here).
    async fn cas_record(
        &self,
        key: &str,
        channel: &str,
        expected: u64,
        rev: u64,
        json: String,
        ttl_ms: i64,
    ) -> Result<Cas, StoreError> {
        let written: i64 = timed(
            self.timeout,
            "compare-and-set",
            CAS.key(key)
                .key(channel)
                .arg(expected)
                .arg(rev)
                .arg(json)
                .arg(ttl_ms)
                .arg(self.publish)
                .invoke_async(&mut self.conn.clone()),
        )
        .await?;
        Ok(match written {
            1 => Cas::Written,
            -1 => Cas::Gone,
            _ => {
                metrics::counter!("bzt_store_cas_conflicts_total").increment(1);
                Cas::Conflict
            }
        })
    }

    /// A receiver of the record's changes, once Redis confirmed the channel
    /// subscription; `None` if there is no such record.
    async fn subscribe_record(
        &self,
        key: &str,
        channel: &str,
    ) -> Result<Option<watch::Receiver<u64>>, StoreError> {
        let (mut rx, mut active) = self.subs.register(channel);
        // Wait until Redis confirmed the channel subscription, and only then
        // read `rev`: a write before the read is in it, a write after it is
        // announced to `rx`. (Read first, and a write landing between the
        // read and the subscription would be missed for good.)
        match tokio::time::timeout(self.timeout * 2, active.wait_for(|a| *a)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return Ok(None), // removed meanwhile
            Err(_) => {
                return Err(StoreError::Unavailable(format!(
                    "redis: subscription to {channel} not confirmed"
                )))
            }
        }
        let rev: Option<u64> = timed(
            self.timeout,
            "HGET",
            redis::cmd("HGET")
                .arg(key)
                .arg("rev")
                .query_async(&mut self.conn.clone()),
        )
        .await?;
        let Some(rev) = rev else {
            return Ok(None);
        };
        self.subs.notify(channel, rev);
        rx.borrow_and_update();
        Ok(Some(rx))
    }

    /// Deletes the record and closes its receivers on every node.
    async fn remove_record(&self, key: &str, channel: &str) -> Result<(), StoreError> {
        timed(
            self.timeout,
            "remove",
            REMOVE
                .key(key)
                .key(channel)
                .arg(self.publish)
                .invoke_async::<i64>(&mut self.conn.clone()),
        )
        .await?;
        self.subs.forget(channel);
        self.copies.forget(key);
        Ok(())
    }

    /// Pauses before the next compare-and-set attempt when many writers
    /// collide, so their retries spread out.
    async fn back_off(attempt: u32) {
        if attempt >= 3 {
            let ms = rand::random::<u64>() % (2 * u64::from(attempt.min(20)));
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }
}

/// What a compare-and-set did.
enum Cas {
    Written,
    /// Another writer was first: read again and retry.
    Conflict,
    /// The record no longer exists.
    Gone,
}

/// Milliseconds a record must live from `now`: until `end` (its deadline
/// or end, whichever is later), plus the protocol's retention, plus a margin.
fn ttl_until(end: Timestamp, now: Timestamp) -> i64 {
    (now.millis_until(end) + TERMINAL_RETENTION_S * 1000 + TTL_MARGIN_MS).max(TTL_MARGIN_MS)
}

fn to_json<T: serde::Serialize>(
    record: &T,
    what: &dyn std::fmt::Display,
) -> Result<String, StoreError> {
    serde_json::to_string(record).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

#[async_trait]
impl<R: StoredRecord> RecordStore<R> for RedisStore {
    async fn insert(&self, record: &R) -> Result<(), StoreError> {
        let id = record.id();
        let json = to_json(record, id)?;
        let mut due = None;
        if let Some(at) = record.next_deadline() {
            if self.conn.is_cluster() {
                // The deadline first, so a record never exists without one
                // (a sweep forgets a due time whose record is missing). For
                // a duplicate id this may record an early deadline for the
                // existing record: that costs one handling that changes
                // nothing.
                RecordStore::<R>::schedule(self, R::DEADLINES, &[(id.clone(), Some(at))]).await?;
            } else {
                due = Some((self.keys.queue(R::DEADLINES), id.as_str(), at));
            }
        }
        let key = self.keys.record::<R>(id);
        self.insert_record(
            &key,
            record.rev(),
            json,
            ttl_until(record.kept_from(), record.created_at()),
            due,
        )
        .await?;
        self.copies.keep(&key, record.rev(), record);
        Ok(())
    }

    async fn get(&self, id: &R::Id) -> Result<Option<R>, StoreError> {
        self.read_record(&self.keys.record::<R>(id)).await
    }

    /// From this node's copy when it has reached `at_least`: one round trip
    /// and one parse fewer (see `copies.rs`).
    async fn get_recent(&self, id: &R::Id, at_least: u64) -> Result<Option<R>, StoreError> {
        let key = self.keys.record::<R>(id);
        match self.copies.get::<R>(&key, at_least) {
            Some(copy) => Ok(Some(copy)),
            None => self.read_record(&key).await,
        }
    }

    /// Read, change in Rust, compare-and-set; the first attempt may start
    /// from the caller's copy instead of a read (one round trip fewer). The
    /// copy may be stale: a write from it conflicts and is retried on a
    /// read, and a change that writes nothing on it runs again on a read,
    /// so that no refusal rests on a stale copy.
    async fn update_with(
        &self,
        id: &R::Id,
        mut current: Option<&R>,
        now: Timestamp,
        change: &mut Change<'_, R>,
    ) -> Result<Option<Written<R>>, StoreError> {
        let (key, channel) = (self.keys.record::<R>(id), self.keys.channel::<R>(id));
        for attempt in 0..MAX_CAS_ATTEMPTS {
            let from_copy = current.is_some();
            let mut record = match current.take() {
                Some(r) => r.clone(),
                None => match self.read_record::<R>(&key).await? {
                    Some(r) => r,
                    None => return Ok(None),
                },
            };
            let (expected, deadline) = (record.rev(), record.next_deadline());
            change(&mut record);
            if record.rev() == expected {
                if from_copy {
                    continue;
                }
                return Ok(Some(Written {
                    record,
                    changed: false,
                }));
            }
            let json = to_json(&record, id)?;
            let ttl = ttl_until(record.kept_from(), now);
            match self
                .cas_record(&key, &channel, expected, record.rev(), json, ttl)
                .await?
            {
                Cas::Written => {
                    self.copies.keep(&key, record.rev(), &record);
                    self.subs.notify(&channel, record.rev());
                    // After the write, never before: see the module doc. The
                    // write happened, so a failure here is only logged: it is
                    // the module doc's gap (this node's timer still holds the
                    // deadline).
                    if let Some(at) = deadline_to_record(deadline, record.next_deadline()) {
                        let due = [(id.clone(), Some(at))];
                        if let Err(e) = RecordStore::<R>::schedule(self, R::DEADLINES, &due).await {
                            tracing::warn!(kind = R::KIND, id = %id, error = %e, "could not record the next deadline");
                        }
                    }
                    return Ok(Some(Written {
                        record,
                        changed: true,
                    }));
                }
                Cas::Gone => return Ok(None),
                Cas::Conflict => Self::back_off(attempt).await,
            }
        }
        Err(StoreError::Unavailable(format!(
            "{} {id}: {MAX_CAS_ATTEMPTS} compare-and-set conflicts in a row",
            R::KIND
        )))
    }

    async fn subscribe(&self, id: &R::Id) -> Result<Option<watch::Receiver<u64>>, StoreError> {
        self.subscribe_record(&self.keys.record::<R>(id), &self.keys.channel::<R>(id))
            .await
    }

    async fn remove(&self, id: &R::Id) -> Result<(), StoreError> {
        self.remove_record(&self.keys.record::<R>(id), &self.keys.channel::<R>(id))
            .await?;
        let forget = [(id.clone(), None)];
        for queue in std::iter::once(R::DEADLINES).chain(R::OTHER_QUEUES.iter().copied()) {
            RecordStore::<R>::schedule(self, queue, &forget).await?;
        }
        Ok(())
    }

    async fn claim_due(
        &self,
        queue: DueQueue,
        now: Timestamp,
        max: usize,
    ) -> Result<Vec<R::Id>, StoreError> {
        let lease_until = now.plus_millis(EXPIRY_LEASE.as_millis() as i64);
        let ids: Vec<String> = timed(
            self.timeout,
            "claim due",
            CLAIM_DUE
                .key(self.keys.queue(queue))
                .arg(now.unix_millis())
                // Half a millisecond before the lease ends: the `.5` marks
                // a lease (see the module doc).
                .arg(format!("{}.5", lease_until.unix_millis() - 1))
                .arg(max)
                .invoke_async(&mut self.conn.clone()),
        )
        .await?;
        Ok(ids.iter().filter_map(|s| R::Id::parse(s)).collect())
    }

    async fn schedule(
        &self,
        queue: DueQueue,
        due: &[(R::Id, Option<Timestamp>)],
    ) -> Result<(), StoreError> {
        if due.is_empty() {
            return Ok(());
        }
        let mut invocation = SCHEDULE.key(self.keys.queue(queue));
        for (id, at) in due {
            invocation
                .arg(id.as_str())
                .arg(at.map(|t| t.unix_millis().to_string()).unwrap_or_default());
        }
        timed(
            self.timeout,
            "schedule",
            invocation.invoke_async::<i64>(&mut self.conn.clone()),
        )
        .await
        .map(|_| ())
    }

    fn poll_interval(&self) -> Option<Duration> {
        Some(self.expiry_poll)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        timed(
            self.timeout,
            "PING",
            redis::cmd("PING").exec_async(&mut self.conn.clone()),
        )
        .await
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bzt_core::conversation::Conversation;
    use bzt_core::secret::ConversationId;
    use bzt_core::{Session, SessionId};

    #[test]
    fn keys_share_a_hash_tag_and_parse_back() {
        let k = Keys::new("bzt");
        let id = SessionId::parse("abc_DEF-1").unwrap();
        assert_eq!(k.record::<Session>(&id), "bzt:{s:abc_DEF-1}");
        assert_eq!(k.channel::<Session>(&id), "bzt:{s:abc_DEF-1}:ch");
        assert_eq!(k.queue(Session::DEADLINES), "bzt:{due}");
        assert_eq!(k.queue(bzt_core::record::SESSION_ROTATIONS), "bzt:{rot}");
        let c = ConversationId::parse("xyz_1").unwrap();
        assert_eq!(k.record::<Conversation>(&c), "bzt:{c:xyz_1}");
        assert_eq!(k.channel::<Conversation>(&c), "bzt:{c:xyz_1}:ch");
        assert_eq!(
            record_of_channel(&k.channel::<Conversation>(&c)),
            k.record::<Conversation>(&c)
        );
        assert_eq!(k.queue(Conversation::DEADLINES), "bzt:{cdue}");
        assert_eq!(k.audit(), "bzt:{audit}");
        assert_eq!(k.audit_head(), "bzt:{audit}:head");
        assert_eq!(k.record_set("revocations"), "bzt:{rs:revocations}");
    }

    #[test]
    fn settings_pick_cluster_from_several_urls_and_check_the_prefix() {
        let s = RedisSettings::new("redis://a:7000, redis://b:7001");
        assert!(s.cluster);
        assert_eq!(s.urls.len(), 2);
        assert!(!RedisSettings::new("redis://a:6379").cluster);
        let mut bad = RedisSettings::new("redis://a");
        bad.key_prefix = "x{y}".into();
        assert!(bad.validate().is_err());
    }
}
