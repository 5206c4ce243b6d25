//! The audit trail's storage: an append-only JSON-lines file, fsync'd
//! before an append is acknowledged.
//!
//! One writer thread owns the file. Appends queue to it; it writes every
//! queued record, calls `fsync` once for the batch (group commit, so a busy
//! broker pays one disk flush per batch, not per record), then acknowledges
//! each append. Every `checkpoint_every` operations it also appends a
//! checkpoint signed with the broker's SM2 audit key. The record format and
//! the verification rules are in [`bzt_core::audit`].
//!
//! Queries scan the file. That is fine for the volumes of one platform's
//! audit period; an index is the next step when it is not.
//!
//! With several nodes (Redis mode) the trail is one Redis Stream instead,
//! same records, one chain for all nodes:
//! [`crate::store::redis::RedisAuditLog`].

use super::{AuditLog, AuditQuery, StoreError};
use bzt_core::audit::{checkpoint, Event, Operation, Record, RecordBody, GENESIS};
use bzt_core::Timestamp;
use sm2::dsa::SigningKey;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use tokio::sync::oneshot;

type Ack = oneshot::Sender<Result<u64, String>>;

struct Append {
    /// `None`: sign the chain head now if an operation is still unsigned
    /// (the time-bounded checkpoint, [`AuditLog::checkpoint_if_unsigned`]).
    op: Option<Operation>,
    time: Timestamp,
    ack: Ack,
}

#[async_trait::async_trait]
impl AuditLog for FileAuditLog {
    async fn append(&self, op: Operation, time: Timestamp) -> Result<u64, StoreError> {
        FileAuditLog::append(self, op, time).await
    }
    async fn query(&self, q: AuditQuery) -> Result<Vec<Record>, StoreError> {
        FileAuditLog::query(self, q).await
    }
    async fn checkpoint_if_unsigned(&self, time: Timestamp) -> Result<u64, StoreError> {
        self.send(None, time).await
    }
}

/// Handle to the audit file; cheap to clone.
#[derive(Clone)]
pub struct FileAuditLog {
    path: Arc<PathBuf>,
    writer: Arc<WriterHandle>,
}

/// The writer thread. Dropping the last handle closes the queue and joins
/// the thread, which releases the file lock: a broker rebuilt in the same
/// process (tests, restarts) can reopen the log at once.
struct WriterHandle {
    tx: Option<mpsc::Sender<Append>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for WriterHandle {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl FileAuditLog {
    /// Opens (or creates) the log, recovering its sequence and head from the
    /// last line, and starts the writer thread.
    pub fn open(path: &Path, key: SigningKey, checkpoint_every: u64) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        // Two writers would interleave two chains: refuse a log another
        // broker (or another node sharing a directory) already writes.
        file.try_lock().map_err(|_| {
            anyhow::anyhow!(
                "audit log {} is in use by another broker process; give each node its own [audit] path",
                path.display()
            )
        })?;
        drop_torn_tail(&file, path)?;
        let key_hex = hex::encode(key.verifying_key().to_sec1_bytes());
        let (seq, head, since_checkpoint) = recover(path, &key_hex)?;
        let (tx, rx) = mpsc::channel::<Append>();
        let writer = Writer {
            file,
            seq,
            head,
            since_checkpoint,
            checkpoint_every: checkpoint_every.max(1),
            key,
            broken: None,
        };
        let thread = std::thread::Builder::new()
            .name("bzt-audit".into())
            .spawn(move || writer.run(rx))?;
        Ok(Self {
            path: Arc::new(path.to_owned()),
            writer: Arc::new(WriterHandle {
                tx: Some(tx),
                thread: Some(thread),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends an operation; returns its sequence number once it is on disk.
    pub async fn append(&self, op: Operation, time: Timestamp) -> Result<u64, StoreError> {
        self.send(Some(op), time).await
    }

    async fn send(&self, op: Option<Operation>, time: Timestamp) -> Result<u64, StoreError> {
        let (ack, done) = oneshot::channel();
        let tx = self
            .writer
            .tx
            .as_ref()
            .ok_or_else(|| audit_unavailable("the audit writer stopped"))?;
        tx.send(Append { op, time, ack })
            .map_err(|_| audit_unavailable("the audit writer stopped"))?;
        match done.await {
            Ok(Ok(seq)) => Ok(seq),
            Ok(Err(e)) => Err(audit_unavailable(&e)),
            Err(_) => Err(audit_unavailable("the audit writer stopped")),
        }
    }

    /// Matching operations, oldest first, at most `limit`.
    pub async fn query(&self, q: AuditQuery) -> Result<Vec<Record>, StoreError> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || read_matching(&path, &q))
            .await
            .map_err(|_| StoreError::Corrupt("the audit query task failed".into()))?
            .map_err(|e| StoreError::Corrupt(format!("audit query failed: {e}")))
    }
}

pub(crate) fn audit_unavailable(detail: &str) -> StoreError {
    StoreError::AuditUnavailable(detail.to_owned())
}

/// Reads a whole log file's records (for queries and `bzt audit`).
pub fn read_matching(path: &Path, q: &AuditQuery) -> std::io::Result<Vec<Record>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    // Split on bytes: one damaged line (even one that is not UTF-8) must not
    // hide the others; `bzt audit verify` names it.
    for line in BufReader::new(file).split(b'\n') {
        let line = line?;
        let Ok(record) = serde_json::from_slice::<Record>(&line) else {
            continue;
        };
        if q.matches(&record) {
            out.push(record);
            if q.limit > 0 && out.len() >= q.limit {
                break;
            }
        }
    }
    Ok(out)
}

/// Drops a torn last line: an append cut short by a crash. Every append
/// ends with a newline and is acknowledged only once it is on disk, so a
/// last line without one is a record nobody was told about (and whose
/// operation did not happen). Left in place, it would stop every start.
fn drop_torn_tail(file: &File, path: &Path) -> anyhow::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let len = file.metadata()?.len();
    let mut reader = File::open(path)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut keep = len;
    while keep > 0 {
        let start = keep.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(keep - start) as usize];
        reader.seek(SeekFrom::Start(start))?;
        reader.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|b| *b == b'\n') {
            keep = start + i as u64 + 1;
            break;
        }
        keep = start;
    }
    if keep < len {
        tracing::warn!(
            path = %path.display(),
            bytes = len - keep,
            "dropping the torn last line of the audit log (an append interrupted before it was acknowledged)"
        );
        file.set_len(keep)?;
        file.sync_data()?;
    }
    Ok(())
}

/// (last seq, last hash, operations since the last checkpoint) of an existing log.
///
/// The broker appends only to an intact chain: every line must parse, follow
/// its predecessor (`seq`, `prev`) and match its own `hash`, and the last
/// checkpoint must be this broker's signature (`public_key`, the key it signs
/// with now) over the head before it. Otherwise the start fails naming the
/// file and the line: appending on top of a broken tail would bury the break
/// under fresh, valid-looking records. (`bzt audit verify` checks every
/// checkpoint; this start-up check is linear hashing plus one signature.)
fn recover(path: &Path, key_hex: &str) -> anyhow::Result<(u64, String, u64)> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, GENESIS.into(), 0)),
        Err(e) => return Err(e.into()),
    };
    let refuse = |line: usize, seq: Option<u64>, why: String| {
        let at = match seq {
            Some(seq) => format!("line {line} (record seq {seq})"),
            None => format!("line {line}"),
        };
        anyhow::anyhow!(
            "audit log {} is broken at {at}: {why}; the broker does not append to a broken chain. \
             Run `bzt audit verify --file {}` to see the damage, then restore the log from a copy, \
             or move it aside (keep it as evidence) so that the broker starts a new log",
            path.display(),
            path.display()
        )
    };
    let mut seq = 0;
    let mut head = GENESIS.to_owned();
    let mut since_checkpoint = 0;
    // The last checkpoint: its line, seq, the head it signs, and itself.
    let mut last_checkpoint: Option<(usize, u64, String, bzt_core::audit::Checkpoint)> = None;
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line_no = i + 1;
        let line = line.map_err(|e| refuse(line_no, None, format!("unreadable ({e})")))?;
        let record: Record = serde_json::from_str(&line)
            .map_err(|e| refuse(line_no, None, format!("not a record ({e})")))?;
        let at = Some(record.body.seq);
        if record.body.seq != seq + 1 {
            return Err(refuse(
                line_no,
                at,
                format!(
                    "expected seq {} (a record was removed or reordered)",
                    seq + 1
                ),
            ));
        }
        if record.body.prev != head {
            return Err(refuse(
                line_no,
                at,
                "its prev hash does not match the record before it".into(),
            ));
        }
        if record.body.digest() != record.hash {
            return Err(refuse(
                line_no,
                at,
                "its content does not match its hash (the record was edited)".into(),
            ));
        }
        match record.body.event {
            Event::Checkpoint(cp) => {
                since_checkpoint = 0;
                last_checkpoint = Some((line_no, record.body.seq, head.clone(), cp));
            }
            Event::Operation(_) => since_checkpoint += 1,
        }
        seq = record.body.seq;
        head = record.hash;
    }
    if let Some((line_no, cp_seq, signed_head, cp)) = last_checkpoint {
        if !cp.public_key.eq_ignore_ascii_case(key_hex) {
            return Err(refuse(
                line_no,
                Some(cp_seq),
                "the last checkpoint is signed by another key than this broker's audit key".into(),
            ));
        }
        if !bzt_core::audit::checkpoint_verifies(&cp, cp_seq, &signed_head) {
            return Err(refuse(
                line_no,
                Some(cp_seq),
                "the last checkpoint's signature does not verify".into(),
            ));
        }
    }
    Ok((seq, head, since_checkpoint))
}

struct Writer {
    file: File,
    seq: u64,
    head: String,
    since_checkpoint: u64,
    checkpoint_every: u64,
    key: SigningKey,
    /// Set when a failed batch could not be taken back: the end of the file
    /// is unknown, so nothing more is appended until a restart.
    broken: Option<String>,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Append>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            batch.extend(rx.try_iter().take(1023));
            let result = self.write_batch(&batch);
            for (append, seq) in batch.into_iter().zip(result.iter().cloned()) {
                let _ = append.ack.send(seq);
            }
        }
    }

    /// Writes the batch and fsyncs once; one result per append.
    fn write_batch(&mut self, batch: &[Append]) -> Vec<Result<u64, String>> {
        if let Some(why) = &self.broken {
            return batch.iter().map(|_| Err(why.clone())).collect();
        }
        let (seq0, head0, since0) = (self.seq, self.head.clone(), self.since_checkpoint);
        let len0 = self.file.metadata().map(|m| m.len());
        let mut text = String::new();
        let mut seqs = Vec::with_capacity(batch.len());
        for a in batch {
            let Some(op) = &a.op else {
                // A timed checkpoint: only if something is unsigned.
                if self.since_checkpoint > 0 {
                    let c = checkpoint(self.seq + 1, a.time, &self.head, &self.key).seal();
                    self.seq = c.body.seq;
                    self.head = c.hash.clone();
                    text.push_str(&c.to_line());
                    text.push('\n');
                    self.since_checkpoint = 0;
                }
                seqs.push(self.seq);
                continue;
            };
            let r = self.next(a.time, Event::Operation(op.clone()));
            text.push_str(&r.to_line());
            text.push('\n');
            seqs.push(r.body.seq);
            self.since_checkpoint += 1;
            if self.since_checkpoint >= self.checkpoint_every {
                let c = checkpoint(self.seq + 1, a.time, &self.head, &self.key).seal();
                self.seq = c.body.seq;
                self.head = c.hash.clone();
                text.push_str(&c.to_line());
                text.push('\n');
                self.since_checkpoint = 0;
            }
        }
        let written = self
            .file
            .write_all(text.as_bytes())
            .and_then(|_| self.file.sync_data());
        match written {
            Ok(()) => seqs.into_iter().map(Ok).collect(),
            Err(e) => {
                // Nothing of the batch counts: take back whatever reached
                // the file, so the next batch continues the chain right
                // after the last acknowledged record (left there, the
                // unacknowledged records would be chained twice).
                (self.seq, self.head, self.since_checkpoint) = (seq0, head0, since0);
                let mut msg = format!("audit write failed: {e}");
                let undone = len0
                    .and_then(|len| self.file.set_len(len))
                    .and_then(|()| self.file.sync_data());
                if let Err(u) = undone {
                    msg = format!(
                        "{msg}; taking the partial write back failed too ({u}): no more appends until a restart"
                    );
                    self.broken = Some(msg.clone());
                }
                batch.iter().map(|_| Err(msg.clone())).collect()
            }
        }
    }

    fn next(&mut self, time: Timestamp, event: Event) -> Record {
        self.seq += 1;
        let r = RecordBody {
            seq: self.seq,
            time,
            prev: self.head.clone(),
            event,
        }
        .seal();
        self.head = r.hash.clone();
        r
    }
}

/// Loads an existing audit signing key (for `bzt audit verify --key`).
pub fn load_existing_key(path: &Path) -> anyhow::Result<SigningKey> {
    use anyhow::Context;
    let pem =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let secret = bzt_crypto::key_from_pem(&pem, None)
        .with_context(|| format!("{} is not an SM2 key", path.display()))?;
    SigningKey::new(bzt_crypto::SM2_DISTID, &secret).map_err(|e| anyhow::anyhow!("audit key: {e}"))
}

/// Loads the broker's audit signing key, creating it on first use.
pub fn load_or_create_key(path: &Path) -> anyhow::Result<SigningKey> {
    use sm2::elliptic_curve::Generate;
    if path.exists() {
        return load_existing_key(path);
    }
    let secret = sm2::SecretKey::try_generate()
        .map_err(|e| anyhow::anyhow!("no randomness for a key: {e}"))?;
    let pem = bzt_crypto::key_to_pem(&secret)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    crate::config::write_private(path, &pem)?;
    SigningKey::new(bzt_crypto::SM2_DISTID, &secret).map_err(|e| anyhow::anyhow!("audit key: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(n: u32) -> Operation {
        Operation {
            app: if n.is_multiple_of(2) {
                "a".into()
            } else {
                "b".into()
            },
            kind: "login".into(),
            session_id: format!("s{n}"),
            conversation_id: None,
            request_id: None,
            cert_serial: format!("{n:x}"),
            cert_issuer: "CN=CA".into(),
            cert_subject: "CN=x".into(),
            tbs_sm3: String::new(),
            outcome: "approved".into(),
            reason: None,
            auto_confirmed: None,
            device_name: "d".into(),
            requester_ip: None,
            requester_user_agent: None,
            actor: None,
            delegate: None,
        }
    }

    #[tokio::test]
    async fn appends_survive_reopening_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let key = load_or_create_key(&dir.path().join("audit-key.pem")).unwrap();
        let log = FileAuditLog::open(&path, key.clone(), 4).unwrap();
        for n in 1..=6 {
            log.append(op(n), Timestamp::from_unix_millis(i64::from(n) * 1000))
                .await
                .unwrap();
        }
        drop(log);
        // Reopen: the chain continues from the last record.
        let log = FileAuditLog::open(&path, key, 4).unwrap();
        let seq = log
            .append(op(7), Timestamp::from_unix_millis(7000))
            .await
            .unwrap();
        assert_eq!(seq, 8, "six operations and one checkpoint before it");
        let text = std::fs::read_to_string(&path).unwrap();
        let v = bzt_core::audit::verify_lines(text.lines(), None).unwrap();
        assert_eq!((v.records, v.checkpoints, v.unsigned_tail), (8, 1, 3));

        let q = AuditQuery {
            app: Some("a".into()),
            since: Some(Timestamp::from_unix_millis(3000)),
            ..Default::default()
        };
        let found = log.query(q).await.unwrap();
        let ids: Vec<_> = found
            .iter()
            .filter_map(|r| r.operation())
            .map(|o| o.session_id.clone())
            .collect();
        assert_eq!(ids, ["s4", "s6"]);
        let q = AuditQuery {
            serial: Some("7".into()),
            ..Default::default()
        };
        assert_eq!(log.query(q).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_torn_last_line_is_dropped_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let key = load_or_create_key(&dir.path().join("audit-key.pem")).unwrap();
        let log = FileAuditLog::open(&path, key.clone(), 2).unwrap();
        for n in 1..=3 {
            log.append(op(n), Timestamp::from_unix_millis(1000))
                .await
                .unwrap();
        }
        drop(log);
        // A crash in the middle of the next append.
        let intact = std::fs::read_to_string(&path).unwrap();
        let next = intact.lines().next().unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&next.as_bytes()[..next.len() / 2]).unwrap();
        drop(f);

        let log = FileAuditLog::open(&path, key, 2).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), intact);
        let seq = log
            .append(op(4), Timestamp::from_unix_millis(2000))
            .await
            .unwrap();
        assert_eq!(seq, 5, "three operations and one checkpoint before it");
        let text = std::fs::read_to_string(&path).unwrap();
        let v = bzt_core::audit::verify_lines(text.lines(), None).unwrap();
        assert_eq!((v.records, v.checkpoints), (6, 2));
        // Lines that do not parse (or are not UTF-8) do not hide the others from queries.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"\xff\xfe not a record\n").unwrap();
        drop(f);
        assert_eq!(
            read_matching(&path, &AuditQuery::default()).unwrap().len(),
            4
        );
    }

    /// Seven operations and two checkpoints (every 3), closed; the log's lines.
    async fn closed_log(path: &Path, key: &SigningKey) -> Vec<String> {
        let log = FileAuditLog::open(path, key.clone(), 3).unwrap();
        for n in 1..=7 {
            log.append(op(n), Timestamp::from_unix_millis(i64::from(n) * 1000))
                .await
                .unwrap();
        }
        drop(log);
        let text = std::fs::read_to_string(path).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    fn write_lines(path: &Path, lines: &[String]) {
        std::fs::write(
            path,
            lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
        )
        .unwrap();
    }

    fn refusal(path: &Path, key: &SigningKey) -> String {
        match FileAuditLog::open(path, key.clone(), 3) {
            Ok(_) => panic!("the broker started on a broken audit log"),
            Err(e) => e.to_string(),
        }
    }

    #[tokio::test]
    async fn a_broken_tail_stops_the_start_naming_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let key = load_or_create_key(&dir.path().join("audit-key.pem")).unwrap();
        let intact = closed_log(&path, &key).await;
        assert_eq!(intact.len(), 9, "seven operations, two checkpoints");
        let file = path.display().to_string();

        // The last operation, after the last checkpoint, edited (its hash no longer matches).
        let mut edited = intact.clone();
        edited[8] = edited[8].replace("\"s7\"", "\"s9\"");
        assert_ne!(edited, intact);
        write_lines(&path, &edited);
        let e = refusal(&path, &key);
        assert!(
            e.contains(&file) && e.contains("line 9 (record seq 9)"),
            "{e}"
        );
        assert!(e.contains("edited"), "{e}");

        // A record in the middle removed.
        let mut removed = intact.clone();
        removed.remove(5);
        write_lines(&path, &removed);
        let e = refusal(&path, &key);
        assert!(
            e.contains("line 6 (record seq 7)") && e.contains("expected seq 6"),
            "{e}"
        );

        // The tail rewritten consistently (hashes recomputed) and re-signed by
        // another key: only the checkpoint's key gives it away.
        let other = load_or_create_key(&dir.path().join("other-key.pem")).unwrap();
        let mut forged: Vec<String> = intact[..4].to_vec();
        let last: Record = serde_json::from_str(&forged[3]).unwrap();
        let mut head = last.hash;
        for n in 5..=7u64 {
            let body = if n == 7 {
                checkpoint(n, Timestamp::from_unix_millis(9000), &head, &other)
            } else {
                RecordBody {
                    seq: n,
                    time: Timestamp::from_unix_millis(9000),
                    prev: head.clone(),
                    event: Event::Operation(op(40 + n as u32)),
                }
            };
            let record = body.seal();
            head = record.hash.clone();
            forged.push(record.to_line());
        }
        write_lines(&path, &forged);
        assert!(bzt_core::audit::verify_lines(forged.iter().map(String::as_str), None).is_err());
        let e = refusal(&path, &key);
        assert!(
            e.contains("line 7 (record seq 7)") && e.contains("another key"),
            "{e}"
        );

        // Put back, the log opens and its chain continues.
        write_lines(&path, &intact);
        let log = FileAuditLog::open(&path, key, 3).unwrap();
        let seq = log
            .append(op(8), Timestamp::from_unix_millis(8000))
            .await
            .unwrap();
        assert_eq!(seq, 10, "the chain continues after seq 9");
    }
}
