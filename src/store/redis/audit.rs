//! The audit trail in Redis: one chain for every node, as a Redis Stream.
//!
//! - Records are the file log's (format and rules: [`bzt_core::audit`]),
//!   each the field `record` of one entry of the stream `<prefix>:{audit}`.
//!   The stream is never trimmed.
//! - The chain head (last `seq`, `hash`, entry time, operations since the
//!   last checkpoint, checkpoint key) is the hash `<prefix>:{audit}:head`,
//!   in the stream's slot. Records are built and hashed here, in Rust, on
//!   the head as this node last saw it; one script checks that the head has
//!   not moved, adds the entries and moves the head, atomically. If another
//!   node appended first the script answers the current head and the batch
//!   is rebuilt on it. So `seq` and `prev` form one unbroken chain across
//!   nodes.
//! - Entry ids are `<ms>-<seq>`, where `ms` is the largest record time so
//!   far: increasing, and never earlier than the record's own time, so a
//!   `since` query starts its `XRANGE` at `since` and misses nothing even
//!   when node clocks differ.
//! - One writer task per node batches the appends queued meanwhile into one
//!   script call (group commit), as the file log batches its `fsync`s.
//! - Checkpoints are signed with the broker's audit key, which every node
//!   must share (`[audit] signing_key_file`): the head remembers the key of
//!   the chain and the script refuses another one, and a node with another
//!   key refuses to start.
//! - A node starts only on an intact tail: the entries since the last
//!   signed checkpoint, and that checkpoint's signature under this node's
//!   key (see [`check_tail`]), as the file log checks its own.
//! - An append counts once Redis acknowledged it. How durable that is
//!   depends on Redis's persistence (docs/redis.md, "The audit trail").

use super::conn::{connect, timed, Conn};
use super::{AbortOnDrop, Keys, RedisSettings, RedisStore};
use crate::store::file_audit::audit_unavailable;
use crate::store::StoreError;
use crate::store::{AuditLog, AuditQuery};
use bzt_core::audit::{checkpoint, Event, Operation, Record, RecordBody, GENESIS};
use bzt_core::Timestamp;
use redis::streams::StreamRangeReply;
use redis::Script;
use sm2::dsa::SigningKey;
use std::sync::LazyLock;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Appends queued on this node that go to Redis in one script call.
const MAX_BATCH: usize = 128;
/// Attempts before an append gives up because other nodes keep winning.
const MAX_ATTEMPTS: u32 = 64;
/// Entries per `XRANGE` page.
const PAGE: usize = 500;

/// KEYS: stream, head. ARGV: expected seq, expected hash, new seq, new
/// hash, new ms, new ops, checkpoint key, then (entry id, record) pairs.
/// Answers `{'1'}` when appended, `{'0', seq, hash, ms, ops}` (the current
/// head) when the head moved.
static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"
local h = redis.call('HMGET', KEYS[2], 'seq', 'hash', 'ms', 'ops', 'key')
if h[5] and h[5] ~= ARGV[7] then
  return redis.error_reply('BZTKEY the audit chain is signed by another key; every node needs the same [audit] signing_key_file')
end
if not h[1] then
  if redis.call('EXISTS', KEYS[1]) == 1 then
    return redis.error_reply('BZTHEAD the audit head key is missing but the stream exists')
  end
  h = {{'0', '{GENESIS}', '0', '0'}}
end
if h[1] ~= ARGV[1] or h[2] ~= ARGV[2] then
  return {{'0', h[1], h[2], h[3] or '0', h[4] or '0'}}
end
for i = 8, #ARGV, 2 do
  redis.call('XADD', KEYS[1], ARGV[i], 'record', ARGV[i + 1])
end
redis.call('HSET', KEYS[2], 'seq', ARGV[3], 'hash', ARGV[4], 'ms', ARGV[5], 'ops', ARGV[6], 'key', ARGV[7])
return {{'1'}}"
    ))
});

/// The chain head as the head key holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Head {
    seq: u64,
    hash: String,
    /// The `ms` part of the last entry id.
    ms: i64,
    /// Operations since the last checkpoint.
    ops: u64,
}

impl Head {
    fn genesis() -> Self {
        Self {
            seq: 0,
            hash: GENESIS.into(),
            ms: 0,
            ops: 0,
        }
    }

    fn parse(fields: &[String]) -> Option<Self> {
        match fields {
            [seq, hash, ms, ops] => Some(Self {
                seq: seq.parse().ok()?,
                hash: hash.clone(),
                ms: ms.parse().ok()?,
                ops: ops.parse().ok()?,
            }),
            _ => None,
        }
    }
}

type Ack = oneshot::Sender<Result<u64, String>>;

struct Append {
    /// `None`: a checkpoint if any operation is unsigned (see
    /// [`AuditLog::checkpoint_if_unsigned`]).
    op: Option<Operation>,
    time: Timestamp,
    ack: Ack,
}

/// The audit trail of every node sharing one Redis (see the module doc).
pub struct RedisAuditLog {
    /// Reads (queries, export); the writer task has its own clone.
    conn: Conn,
    keys: Keys,
    timeout: Duration,
    /// The writer task's queue; `None` for a read-only handle.
    queue: Option<mpsc::UnboundedSender<Append>>,
    _writer: Option<AbortOnDrop>,
}

impl RedisAuditLog {
    /// Connects and starts the writer (a node that also has a
    /// [`RedisStore`] uses [`RedisStore::audit_log`] instead, sharing its
    /// connection). Fails if Redis cannot be reached, or if the stream's
    /// checkpoints are signed by another key than `key`.
    pub async fn connect(
        settings: &RedisSettings,
        key: SigningKey,
        checkpoint_every: u64,
    ) -> anyhow::Result<Self> {
        Self::open_read_only(settings)
            .await?
            .start_writer(key, checkpoint_every)
            .await
    }

    /// A handle that only reads (`bzt audit`).
    pub async fn open_read_only(settings: &RedisSettings) -> anyhow::Result<Self> {
        use anyhow::Context;
        settings.validate().map_err(anyhow::Error::msg)?;
        let what = || format!("cannot connect to Redis at {}", settings.urls.join(","));
        let conn = tokio::time::timeout(settings.timeout * 4, connect(settings, None))
            .await
            .map_err(|_| anyhow::anyhow!("no answer"))
            .with_context(what)?
            .with_context(what)?;
        Ok(Self {
            conn,
            keys: Keys::new(&settings.key_prefix),
            timeout: settings.timeout,
            queue: None,
            _writer: None,
        })
    }

    async fn start_writer(
        mut self,
        key: SigningKey,
        checkpoint_every: u64,
    ) -> anyhow::Result<Self> {
        let public_key = hex::encode(key.verifying_key().to_sec1_bytes());
        // Pin the chain's key if nobody did yet, then compare.
        let pinned: Option<String> = timed(
            self.timeout,
            "audit key",
            redis::pipe()
                .cmd("HSETNX")
                .arg(self.keys.audit_head())
                .arg("key")
                .arg(&public_key)
                .ignore()
                .cmd("HGET")
                .arg(self.keys.audit_head())
                .arg("key")
                .query_async::<(Option<String>,)>(&mut self.conn.clone()),
        )
        .await
        .map(|(k,)| k)
        .map_err(|e| anyhow::anyhow!("audit stream {}: {e}", self.keys.audit()))?;
        if pinned.as_deref().is_some_and(|k| k != public_key) {
            anyhow::bail!(
                "the audit stream {} is signed with another key than this node's; \
                 every node must use the same [audit] signing_key_file",
                self.keys.audit()
            );
        }
        check_tail(&self.conn, &self.keys, self.timeout, &public_key).await?;
        warn_about_persistence(&self.conn, self.timeout).await;
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = Writer {
            conn: self.conn.clone(),
            keys: self.keys.clone(),
            timeout: self.timeout,
            public_key,
            key,
            checkpoint_every: checkpoint_every.max(1),
            head: None,
        };
        self.queue = Some(tx);
        self._writer = Some(AbortOnDrop(tokio::spawn(writer.run(rx))));
        Ok(self)
    }

    /// The stream's name.
    pub fn stream(&self) -> String {
        self.keys.audit()
    }

    /// Every record as stored (one JSON line each), oldest first: what
    /// `bzt audit verify` checks and `bzt audit export` writes.
    pub async fn lines(&self) -> Result<Vec<String>, StoreError> {
        let mut lines = Vec::new();
        self.scan("-", |line| {
            lines.push(line);
            true
        })
        .await?;
        Ok(lines)
    }

    /// Matching operations, oldest first, at most `q.limit` (0: all).
    pub async fn matching(&self, q: &AuditQuery) -> Result<Vec<Record>, StoreError> {
        // Entry ids are never earlier than their record's time.
        let start = q
            .since
            .map_or_else(|| "-".to_owned(), |t| t.unix_millis().max(0).to_string());
        let mut out = Vec::new();
        self.scan(&start, |line| {
            if let Ok(r) = serde_json::from_str::<Record>(&line) {
                if q.matches(&r) {
                    out.push(r);
                }
            }
            q.limit == 0 || out.len() < q.limit
        })
        .await?;
        Ok(out)
    }

    /// Feeds every record from entry id `start` on to `each`, page by page,
    /// until it answers `false` or the stream ends.
    async fn scan(
        &self,
        start: &str,
        mut each: impl FnMut(String) -> bool,
    ) -> Result<(), StoreError> {
        let stream = self.keys.audit();
        let mut start = start.to_owned();
        loop {
            let page: StreamRangeReply = timed(
                self.timeout,
                "XRANGE",
                redis::cmd("XRANGE")
                    .arg(&stream)
                    .arg(&start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(PAGE)
                    .query_async(&mut self.conn.clone()),
            )
            .await?;
            for entry in &page.ids {
                let line: String = entry.get("record").ok_or_else(|| {
                    StoreError::Corrupt(format!("{stream} entry {} has no record", entry.id))
                })?;
                if !each(line) {
                    return Ok(());
                }
            }
            match page.ids.last() {
                Some(last) if page.ids.len() == PAGE => start = format!("({}", last.id),
                _ => return Ok(()),
            }
        }
    }
}

impl RedisStore {
    /// The audit trail on this store's Redis, sharing its connection (see
    /// [`RedisAuditLog::connect`]).
    pub async fn audit_log(
        &self,
        key: SigningKey,
        checkpoint_every: u64,
    ) -> anyhow::Result<RedisAuditLog> {
        RedisAuditLog {
            conn: self.conn.clone(),
            keys: self.keys.clone(),
            timeout: self.timeout,
            queue: None,
            _writer: None,
        }
        .start_writer(key, checkpoint_every)
        .await
    }
}

#[async_trait::async_trait]
impl AuditLog for RedisAuditLog {
    async fn append(&self, op: Operation, time: Timestamp) -> Result<u64, StoreError> {
        self.send(Some(op), time).await
    }

    async fn query(&self, q: AuditQuery) -> Result<Vec<Record>, StoreError> {
        Ok(self.matching(&q).await?)
    }

    async fn checkpoint_if_unsigned(&self, time: Timestamp) -> Result<u64, StoreError> {
        self.send(None, time).await
    }
}

impl RedisAuditLog {
    async fn send(&self, op: Option<Operation>, time: Timestamp) -> Result<u64, StoreError> {
        let stopped = || audit_unavailable("the audit writer stopped");
        let queue = self.queue.as_ref().ok_or_else(stopped)?;
        let (ack, done) = oneshot::channel();
        queue
            .send(Append { op, time, ack })
            .map_err(|_| stopped())?;
        match done.await {
            Ok(Ok(seq)) => Ok(seq),
            Ok(Err(e)) => Err(audit_unavailable(&e)),
            Err(_) => Err(stopped()),
        }
    }
}

/// Logs what Redis's persistence settings mean for the audit trail. Best
/// effort: managed Redis often disables `CONFIG`.
async fn warn_about_persistence(conn: &Conn, timeout: Duration) {
    let answer: Result<Vec<String>, _> = timed(
        timeout,
        "CONFIG GET",
        redis::cmd("CONFIG")
            .arg("GET")
            .arg("append*")
            .query_async(&mut conn.clone()),
    )
    .await;
    let Ok(pairs) = answer else {
        tracing::info!("cannot read Redis's persistence settings (CONFIG GET); see docs/redis.md on the audit trail");
        return;
    };
    let get = |name: &str| {
        pairs
            .chunks(2)
            .find(|p| p[0] == name)
            .and_then(|p| p.get(1))
            .map(String::as_str)
    };
    match (get("appendonly"), get("appendfsync")) {
        (Some("yes"), Some("always")) => {}
        (Some("yes"), fsync) => tracing::warn!(
            appendfsync = fsync.unwrap_or("?"),
            "Redis fsyncs its AOF once a second: a Redis crash can lose the last second of audit records; set appendfsync always (docs/redis.md)"
        ),
        _ => tracing::warn!(
            "Redis runs without AOF: a Redis restart loses the audit trail; set appendonly yes and appendfsync always (docs/redis.md)"
        ),
    }
}

/// Checks the chain's tail before this node appends to it, as the file log
/// does at open: walking back from the head, each entry must parse, match
/// its own hash, carry the `seq` and hash the entry after it expects, until
/// the last checkpoint, whose signature must verify under `public_key` (the
/// key this node signs with). Appending on a broken tail would bury the
/// break under fresh, valid-looking records. Bounded: the head counts the
/// operations since that checkpoint, so the walk reads that many entries
/// and one more (`bzt audit verify` checks the whole stream). Entries other
/// nodes append meanwhile are past the head read here and are not read.
async fn check_tail(
    conn: &Conn,
    keys: &Keys,
    timeout: Duration,
    public_key: &str,
) -> anyhow::Result<()> {
    let stream = keys.audit();
    let unreachable = |e: StoreError| anyhow::anyhow!("audit stream {stream}: {e}");
    let refuse = |at: &str, seq: Option<u64>, why: &str| {
        let at = match seq {
            Some(seq) => format!("entry {at} (record seq {seq})"),
            None => format!("entry {at}"),
        };
        anyhow::anyhow!(
            "the audit stream {stream} is broken at {at}: {why}; the broker does not append \
             to a broken chain. Run `bzt audit verify --redis <url>` to see the damage, then \
             restore the stream from a copy, or rename it and its head key `{}` (keep them as \
             evidence) so that the nodes start a new chain",
            keys.audit_head()
        )
    };
    type HeadFields = (Option<u64>, Option<String>, Option<i64>, Option<u64>);
    let (fields, stream_exists): (HeadFields, bool) = timed(
        timeout,
        "audit head",
        redis::pipe()
            .cmd("HMGET")
            .arg(keys.audit_head())
            .arg(&["seq", "hash", "ms", "ops"])
            .cmd("EXISTS")
            .arg(&stream)
            .query_async(&mut conn.clone()),
    )
    .await
    .map_err(unreachable)?;
    let head = match (fields, stream_exists) {
        ((Some(seq), Some(hash), Some(ms), Some(ops)), _) => Head { seq, hash, ms, ops },
        ((None, None, None, None), false) => return Ok(()),
        _ => {
            return Err(refuse(
                "head",
                None,
                "the head key is missing or incomplete while the stream exists",
            ))
        }
    };
    let mut expected_seq = head.seq;
    let mut expected_hash = head.hash.clone();
    let mut end = format!("{}-{}", head.ms, head.seq);
    let mut read: u64 = 0;
    loop {
        if expected_seq == 0 {
            // Walked back to the start without a checkpoint: an unsigned
            // young chain, which must begin at the genesis hash.
            if expected_hash != GENESIS {
                return Err(refuse(
                    "1",
                    Some(1),
                    "the first record does not follow the genesis hash",
                ));
            }
            return Ok(());
        }
        let wanted = (head.ops + 1 - read).min(PAGE as u64);
        let page: StreamRangeReply = timed(
            timeout,
            "XREVRANGE",
            redis::cmd("XREVRANGE")
                .arg(&stream)
                .arg(&end)
                .arg("-")
                .arg("COUNT")
                .arg(wanted)
                .query_async(&mut conn.clone()),
        )
        .await
        .map_err(unreachable)?;
        if page.ids.is_empty() {
            return Err(refuse(
                &end,
                Some(expected_seq),
                &format!("the head names seq {expected_seq} but the stream ends before it (records were removed)"),
            ));
        }
        for entry in &page.ids {
            read += 1;
            let id = entry.id.as_str();
            let line: String = entry.get("record").unwrap_or_default();
            let record: Record = serde_json::from_str(&line).map_err(|e| {
                // Name the seq the damaged entry claims, if it still does.
                let claimed = serde_json::from_str::<serde_json::Value>(&line)
                    .ok()
                    .and_then(|v| v.get("seq").and_then(serde_json::Value::as_u64));
                refuse(id, claimed, &format!("not a record ({e})"))
            })?;
            let seq = Some(record.body.seq);
            if record.body.seq != expected_seq {
                return Err(refuse(
                    id,
                    seq,
                    &format!("expected seq {expected_seq} (a record was removed or reordered)"),
                ));
            }
            if record.hash != expected_hash {
                return Err(refuse(
                    id,
                    seq,
                    "its hash is not the one the record after it (or the head) chains to",
                ));
            }
            if record.body.digest() != record.hash {
                return Err(refuse(
                    id,
                    seq,
                    "its content does not match its hash (the record was edited)",
                ));
            }
            if let Event::Checkpoint(cp) = &record.body.event {
                if !cp.public_key.eq_ignore_ascii_case(public_key) {
                    return Err(refuse(
                        id,
                        seq,
                        "the last checkpoint is signed by another key than this broker's audit key",
                    ));
                }
                if !bzt_core::audit::checkpoint_verifies(cp, record.body.seq, &record.body.prev) {
                    return Err(refuse(
                        id,
                        seq,
                        "the last checkpoint's signature does not verify",
                    ));
                }
                return Ok(());
            }
            if read > head.ops {
                return Err(refuse(
                    id,
                    seq,
                    &format!(
                        "the head counts {} operations since the last checkpoint, but this record is not one",
                        head.ops
                    ),
                ));
            }
            expected_seq = record.body.seq - 1;
            expected_hash = record.body.prev.clone();
            if expected_seq == 0 {
                break;
            }
            match id_before(id) {
                Some(before) => end = before,
                None => {
                    return Err(refuse(
                        id,
                        seq,
                        &format!("no entry can come before it, but seq {expected_seq} should"),
                    ))
                }
            }
        }
    }
}

/// The largest stream id below `id` (`<ms>-<n>`): the inclusive end of the
/// next `XREVRANGE` page (exclusive ranges need Redis 6.2).
fn id_before(id: &str) -> Option<String> {
    let (ms, n) = id.split_once('-')?;
    let (ms, n): (u64, u64) = (ms.parse().ok()?, n.parse().ok()?);
    match (ms, n) {
        (_, 1..) => Some(format!("{ms}-{}", n - 1)),
        (1.., 0) => Some(format!("{}-{}", ms - 1, u64::MAX)),
        (0, 0) => None,
    }
}

/// The task that appends for this node.
struct Writer {
    conn: Conn,
    keys: Keys,
    timeout: Duration,
    /// The audit key's public half, SEC1 hex (pinned in the head).
    public_key: String,
    key: SigningKey,
    checkpoint_every: u64,
    /// The head as of this node's last append; `None` once unsure.
    head: Option<Head>,
}

/// A batch's records, built on one head.
struct Built {
    /// (entry id, record line), checkpoints included.
    entries: Vec<(String, String)>,
    /// The operations' sequence numbers, one per append.
    seqs: Vec<u64>,
    /// The head after them.
    head: Head,
}

impl Writer {
    async fn run(mut self, mut queue: mpsc::UnboundedReceiver<Append>) {
        while let Some(first) = queue.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(a) => batch.push(a),
                    Err(_) => break,
                }
            }
            let results = self.write(&batch).await;
            for (append, result) in batch.into_iter().zip(results) {
                let _ = append.ack.send(result);
            }
        }
    }

    /// Appends the batch; one result per append.
    async fn write(&mut self, batch: &[Append]) -> Vec<Result<u64, String>> {
        let failed = |e: String| -> Vec<Result<u64, String>> {
            batch.iter().map(|_| Err(e.clone())).collect()
        };
        let mut retried = false;
        for attempt in 0..MAX_ATTEMPTS {
            let head = match self.head.clone() {
                Some(h) => h,
                None => match self.read_head().await {
                    Ok(h) => h,
                    Err(e) => return failed(e.to_string()),
                },
            };
            let built = self.build(&head, batch);
            match self.try_append(&head, &built).await {
                Ok(None) => {
                    self.head = Some(built.head);
                    return built.seqs.into_iter().map(Ok).collect();
                }
                Ok(Some(current)) => {
                    if current.seq < head.seq {
                        tracing::error!(
                            was = head.seq,
                            now = current.seq,
                            stream = %self.keys.audit(),
                            "the audit chain in Redis went back: Redis lost data (restarted without persistence?)"
                        );
                    }
                    metrics::counter!("bzt_audit_append_conflicts_total").increment(1);
                    self.head = Some(current);
                    // The answer carries the head as it is now, so the retry
                    // is built on fresh state: go again at once. A growing
                    // sleep here starved the losers (the winner, never
                    // sleeping, kept winning: appends waited ~1 s at 500
                    // flows/s on 3 nodes); a little jitter only breaks ties.
                    if attempt >= 8 {
                        let us = rand::random::<u64>() % 1000;
                        tokio::time::sleep(Duration::from_micros(us)).await;
                    }
                }
                Err(e) => {
                    self.head = None;
                    // A failed call may still have run: look.
                    match self.landed(&built).await {
                        Some(true) => {
                            self.head = Some(built.head);
                            return built.seqs.into_iter().map(Ok).collect();
                        }
                        // Surely not written, and Redis answers again (the
                        // first call after a reconnection fails): once more.
                        Some(false) if !retried => retried = true,
                        _ => return failed(e.to_string()),
                    }
                }
            }
        }
        failed(format!(
            "audit: {MAX_ATTEMPTS} appends in a row lost to other nodes"
        ))
    }

    /// Chains the batch onto `head`, with a signed checkpoint every
    /// `checkpoint_every` operations (counted across nodes).
    fn build(&self, head: &Head, batch: &[Append]) -> Built {
        let mut h = head.clone();
        let mut entries = Vec::with_capacity(batch.len() + 1);
        let mut seqs = Vec::with_capacity(batch.len());
        let mut push = |h: &mut Head, r: Record| {
            h.seq = r.body.seq;
            h.ms = h.ms.max(r.body.time.unix_millis());
            h.hash = r.hash.clone();
            entries.push((format!("{}-{}", h.ms, h.seq), r.to_line()));
        };
        for a in batch {
            let Some(op) = &a.op else {
                if h.ops > 0 {
                    let c = checkpoint(h.seq + 1, a.time, &h.hash, &self.key).seal();
                    push(&mut h, c);
                    h.ops = 0;
                }
                seqs.push(h.seq);
                continue;
            };
            let r = RecordBody {
                seq: h.seq + 1,
                time: a.time,
                prev: h.hash.clone(),
                event: Event::Operation(op.clone()),
            }
            .seal();
            push(&mut h, r);
            seqs.push(h.seq);
            h.ops += 1;
            if h.ops >= self.checkpoint_every {
                let c = checkpoint(h.seq + 1, a.time, &h.hash, &self.key).seal();
                push(&mut h, c);
                h.ops = 0;
            }
        }
        Built {
            entries,
            seqs,
            head: h,
        }
    }

    /// `Ok(None)`: appended; `Ok(Some(head))`: the head had moved to `head`.
    async fn try_append(&self, head: &Head, built: &Built) -> Result<Option<Head>, StoreError> {
        let mut call = APPEND.key(self.keys.audit());
        call.key(self.keys.audit_head())
            .arg(head.seq)
            .arg(&head.hash)
            .arg(built.head.seq)
            .arg(&built.head.hash)
            .arg(built.head.ms)
            .arg(built.head.ops)
            .arg(&self.public_key);
        for (id, line) in &built.entries {
            call.arg(id).arg(line);
        }
        let answer: Vec<String> = timed(
            self.timeout,
            "audit append",
            call.invoke_async(&mut self.conn.clone()),
        )
        .await?;
        match answer.split_first() {
            Some((ok, _)) if ok == "1" => Ok(None),
            Some((_, current)) => Head::parse(current)
                .map(Some)
                .ok_or_else(|| StoreError::Corrupt(format!("audit head: {current:?}"))),
            None => Err(StoreError::Corrupt("audit append: empty answer".into())),
        }
    }

    async fn read_head(&self) -> Result<Head, StoreError> {
        let fields: (Option<u64>, Option<String>, Option<i64>, Option<u64>) = timed(
            self.timeout,
            "audit head",
            redis::cmd("HMGET")
                .arg(self.keys.audit_head())
                .arg(&["seq", "hash", "ms", "ops"])
                .query_async(&mut self.conn.clone()),
        )
        .await?;
        Ok(match fields {
            (Some(seq), Some(hash), Some(ms), Some(ops)) => Head { seq, hash, ms, ops },
            _ => Head::genesis(),
        })
    }

    /// Whether the batch is in the stream after all (the call failed, but
    /// Redis may have run it before the answer was lost); `None` if Redis
    /// cannot say.
    async fn landed(&self, built: &Built) -> Option<bool> {
        let (id, line) = built.entries.first()?;
        let found: StreamRangeReply = timed(
            self.timeout,
            "XRANGE",
            redis::cmd("XRANGE")
                .arg(self.keys.audit())
                .arg(id)
                .arg(id)
                .query_async(&mut self.conn.clone()),
        )
        .await
        .ok()?;
        let stored = found.ids.first().and_then(|e| e.get::<String>("record"));
        Some(stored.as_ref() == Some(line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_before_an_entry_id_is_the_largest_smaller_one() {
        assert_eq!(id_before("17-3").as_deref(), Some("17-2"));
        assert_eq!(
            id_before("17-0").as_deref(),
            Some("16-18446744073709551615")
        );
        assert_eq!(id_before("0-0"), None);
        assert_eq!(id_before("x-1"), None);
    }

    #[test]
    fn a_head_parses_from_the_scripts_answer() {
        let h = Head::parse(&["3".into(), "ab".into(), "17".into(), "2".into()]).unwrap();
        assert_eq!((h.seq, h.hash.as_str(), h.ms, h.ops), (3, "ab", 17, 2));
        assert!(Head::parse(&["x".into()]).is_none());
    }
}
