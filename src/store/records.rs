//! Small shared record sets: a map of keyed JSON records with one version
//! number that moves on every change, so every node can keep a copy and
//! notice cheaply (one read of the version) that it must reload.
//!
//! Run-time revocations live in one today (`crate::broker::revocations`); anything
//! else a node must see within a second of another node writing it (the
//! co-signing service's records, say) can live in another, under its own
//! name.
//!
//! The contract (checked by `tests/store_conformance.rs` on every backend):
//! - `put` inserts or replaces a record and returns whether it was new;
//!   `delete` returns the record it removed. Each change, and only a change,
//!   moves `version` forward.
//! - `load` answers the records and the version they belong to, read at one
//!   instant (a reader that sees version `v` later reloads at most once).
//! - What is written survives a restart of the node: Redis keeps it like the
//!   sessions (docs/redis.md), the file backend writes the file (atomically,
//!   by renaming a complete copy) before it answers.

use super::StoreError;
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The records and the version they belong to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub version: u64,
    /// Key → JSON value, sorted by key.
    pub records: BTreeMap<String, String>,
}

#[async_trait]
pub trait RecordSet: Send + Sync + 'static {
    /// Inserts or replaces the record under `key`; `true` if it is new.
    async fn put(&self, key: &str, json: &str) -> Result<bool, StoreError>;
    /// Removes the record under `key`, answering it; `None` if there was none.
    async fn delete(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// The current version (0 for a set never written).
    async fn version(&self) -> Result<u64, StoreError>;
    /// Every record, with the version it belongs to.
    async fn load(&self) -> Result<Snapshot, StoreError>;
    /// How often other nodes' changes must be looked for; `None` when this
    /// node is the only writer (memory and file backends).
    fn poll_interval(&self) -> Option<std::time::Duration>;
}

/// A record set in this process only (tests, and brokers without a data directory).
#[derive(Default)]
pub struct MemoryRecordSet {
    inner: Mutex<Snapshot>,
}

impl MemoryRecordSet {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Snapshot) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[async_trait]
impl RecordSet for MemoryRecordSet {
    async fn put(&self, key: &str, json: &str) -> Result<bool, StoreError> {
        Ok(self.with(|s| put_in(s, key, json)))
    }

    async fn delete(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.with(|s| delete_in(s, key)))
    }

    async fn version(&self) -> Result<u64, StoreError> {
        Ok(self.with(|s| s.version))
    }

    async fn load(&self) -> Result<Snapshot, StoreError> {
        Ok(self.with(|s| s.clone()))
    }

    fn poll_interval(&self) -> Option<std::time::Duration> {
        None
    }
}

fn put_in(s: &mut Snapshot, key: &str, json: &str) -> bool {
    let new = s.records.insert(key.to_owned(), json.to_owned()).is_none();
    s.version += 1;
    new
}

fn delete_in(s: &mut Snapshot, key: &str) -> Option<String> {
    let old = s.records.remove(key);
    if old.is_some() {
        s.version += 1;
    }
    old
}

/// The file's layout: `{"version": n, "records": {key: value}}`, values
/// stored as JSON values (not strings) so the file reads well.
#[derive(serde::Serialize, serde::Deserialize)]
struct FileLayout {
    version: u64,
    records: BTreeMap<String, serde_json::Value>,
}

/// A record set kept in one JSON file (the embedded broker's store): read
/// at start, rewritten whole on every change. Changes are rare (an operator
/// revoking a certificate), so rewriting is cheaper than a journal's care.
pub struct FileRecordSet {
    path: PathBuf,
    inner: Mutex<Snapshot>,
}

impl FileRecordSet {
    /// Opens `path`, or starts empty if it does not exist yet. A file that
    /// exists but cannot be read is an error: starting empty would silently
    /// lift every revocation in it.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let snapshot = match std::fs::read(path) {
            Ok(bytes) => {
                let f: FileLayout = serde_json::from_slice(&bytes).with_context(|| {
                    format!("{} is not a record file this broker wrote", path.display())
                })?;
                Snapshot {
                    version: f.version,
                    records: f
                        .records
                        .into_iter()
                        .map(|(k, v)| (k, v.to_string()))
                        .collect(),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Snapshot::default(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        Ok(Self {
            path: path.to_owned(),
            inner: Mutex::new(snapshot),
        })
    }

    /// Applies `change` to a copy, writes the copy, and keeps it only if the
    /// write succeeded: what a caller was told is always what is on disk.
    fn change<T>(&self, change: impl FnOnce(&mut Snapshot) -> T) -> Result<T, StoreError> {
        let mut current = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = current.clone();
        let out = change(&mut next);
        if next.version != current.version {
            write_atomically(&self.path, &next)
                .map_err(|e| StoreError::Unavailable(format!("{}: {e}", self.path.display())))?;
            *current = next;
        }
        Ok(out)
    }
}

fn write_atomically(path: &Path, s: &Snapshot) -> std::io::Result<()> {
    use std::io::Write;
    let layout = FileLayout {
        version: s.version,
        records: s
            .records
            .iter()
            .map(|(k, v)| {
                let value = serde_json::from_str(v).unwrap_or(serde_json::Value::String(v.clone()));
                (k.clone(), value)
            })
            .collect(),
    };
    let bytes = serde_json::to_vec_pretty(&layout).map_err(std::io::Error::other)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[async_trait]
impl RecordSet for FileRecordSet {
    async fn put(&self, key: &str, json: &str) -> Result<bool, StoreError> {
        self.change(|s| put_in(s, key, json))
    }

    async fn delete(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.change(|s| delete_in(s, key))
    }

    async fn version(&self) -> Result<u64, StoreError> {
        Ok(self.inner.lock().unwrap_or_else(|p| p.into_inner()).version)
    }

    async fn load(&self) -> Result<Snapshot, StoreError> {
        Ok(self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    fn poll_interval(&self) -> Option<std::time::Duration> {
        None
    }
}
