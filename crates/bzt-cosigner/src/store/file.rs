//! One JSON file (embedded mode, one node). Every change rewrites the file
//! through a temporary file and a rename, under one lock; the audit trail is
//! a JSON-lines file beside it. Used nonces live in memory.
//!
//! PIN attempts are counted in memory (one node: the lock makes the count
//! atomic) and reach the file only when they matter after a restart: an
//! attempt that turned out wrong ([`KeyStore::keep_failures`]), or the reset
//! of a count the file holds. A right proof after none wrong writes nothing;
//! each write is an `fsync`, and two per signature serialised every
//! co-signed login behind the disk (~210 logins/s, see loadtest/RESULTS.md).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{GrantEntry, KeyRecord, KeyState, KeyStore, StoreError};
use crate::wire::{AuditRecord, OpeningWindow, ReclaimRecord};

#[derive(Default, Serialize, Deserialize)]
struct Contents {
    #[serde(default)]
    keys: HashMap<String, KeyRecord>,
    #[serde(default)]
    failures: HashMap<String, u32>,
    #[serde(default)]
    openings: HashMap<String, OpeningWindow>,
    #[serde(default)]
    channel_key: Option<String>,
    #[serde(default)]
    grants: HashMap<String, GrantEntry>,
    #[serde(default)]
    reclaims: Vec<ReclaimRecord>,
    /// `failures` as the file holds it (the in-memory counts run ahead of it
    /// while attempts are being checked).
    #[serde(skip)]
    failures_on_disk: HashMap<String, u32>,
}

pub struct FileStore {
    path: PathBuf,
    audit_path: PathBuf,
    /// A std mutex: held only around file I/O, never across an `.await`.
    contents: Mutex<Contents>,
    used: Mutex<HashMap<String, Instant>>,
}

impl FileStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Unavailable(format!("{}: {e}", dir.display())))?;
        }
        let mut contents: Contents = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| StoreError::Corrupt(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Contents::default(),
            Err(e) => return Err(StoreError::Unavailable(format!("{}: {e}", path.display()))),
        };
        contents.failures_on_disk = contents.failures.clone();
        Ok(Self {
            path: path.to_path_buf(),
            audit_path: path.with_extension("audit.jsonl"),
            contents: Mutex::new(contents),
            used: Mutex::new(HashMap::new()),
        })
    }

    fn change<T>(
        &self,
        f: impl FnOnce(&mut Contents) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut contents = self
            .contents
            .lock()
            .map_err(|_| StoreError::Unavailable("poisoned lock".into()))?;
        let out = f(&mut contents)?;
        self.write(&mut contents)?;
        Ok(out)
    }

    /// Writes `contents` to the file (temporary file, `fsync`, rename).
    fn write(&self, contents: &mut Contents) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(&*contents)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let io =
            |e: std::io::Error| StoreError::Unavailable(format!("{}: {e}", self.path.display()));
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
        std::io::Write::write_all(&mut tmp, &bytes).map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(&self.path).map_err(|e| io(e.error))?;
        contents.failures_on_disk = contents.failures.clone();
        Ok(())
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Contents>, StoreError> {
        self.contents
            .lock()
            .map_err(|_| StoreError::Unavailable("poisoned lock".into()))
    }

    fn read<T>(&self, f: impl FnOnce(&Contents) -> T) -> Result<T, StoreError> {
        let contents = self
            .contents
            .lock()
            .map_err(|_| StoreError::Unavailable("poisoned lock".into()))?;
        Ok(f(&contents))
    }
}

#[async_trait]
impl KeyStore for FileStore {
    async fn create(&self, record: &KeyRecord) -> Result<(), StoreError> {
        self.change(|c| {
            if c.keys.contains_key(&record.key_id) {
                return Err(StoreError::Exists);
            }
            c.keys.insert(record.key_id.clone(), record.clone());
            Ok(())
        })
    }

    async fn get(&self, key_id: &str) -> Result<Option<KeyRecord>, StoreError> {
        self.read(|c| c.keys.get(key_id).cloned())
    }

    async fn put(&self, record: &KeyRecord) -> Result<(), StoreError> {
        self.change(|c| match c.keys.get(&record.key_id) {
            Some(old) if old.state == KeyState::Revoked => Err(StoreError::Revoked),
            _ => {
                c.keys.insert(record.key_id.clone(), record.clone());
                Ok(())
            }
        })
    }

    async fn add_failure(&self, key_id: &str) -> Result<u32, StoreError> {
        let mut contents = self.lock()?;
        let n = contents.failures.entry(key_id.to_owned()).or_insert(0);
        *n += 1;
        Ok(*n)
    }

    async fn keep_failures(&self, key_id: &str) -> Result<(), StoreError> {
        let mut contents = self.lock()?;
        if contents.failures.get(key_id) == contents.failures_on_disk.get(key_id) {
            return Ok(());
        }
        self.write(&mut contents)
    }

    async fn failures(&self, key_id: &str) -> Result<u32, StoreError> {
        self.read(|c| c.failures.get(key_id).copied().unwrap_or(0))
    }

    async fn reset_failures(&self, key_id: &str) -> Result<(), StoreError> {
        let mut contents = self.lock()?;
        contents.failures.remove(key_id);
        if contents.failures_on_disk.contains_key(key_id) {
            self.write(&mut contents)?;
        }
        Ok(())
    }

    async fn use_once(&self, token: &str, ttl_s: u64) -> Result<bool, StoreError> {
        let mut used = self
            .used
            .lock()
            .map_err(|_| StoreError::Unavailable("poisoned lock".into()))?;
        let now = Instant::now();
        used.retain(|_, until| *until > now);
        if used.contains_key(token) {
            return Ok(false);
        }
        used.insert(token.to_owned(), now + Duration::from_secs(ttl_s));
        Ok(true)
    }

    async fn append_audit(&self, record: &AuditRecord) -> Result<(), StoreError> {
        let mut line =
            serde_json::to_vec(record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        line.push(b'\n');
        // Under the contents lock so lines from concurrent requests never interleave.
        let _guard = self
            .contents
            .lock()
            .map_err(|_| StoreError::Unavailable("poisoned lock".into()))?;
        let io = |e: std::io::Error| {
            StoreError::Unavailable(format!("{}: {e}", self.audit_path.display()))
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.audit_path)
            .map_err(io)?;
        std::io::Write::write_all(&mut file, &line).map_err(io)
    }

    async fn audit(&self, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let text = match std::fs::read_to_string(&self.audit_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::Unavailable(e.to_string())),
        };
        let records: Result<Vec<AuditRecord>, _> = text.lines().map(serde_json::from_str).collect();
        let records = records.map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let skip = records.len().saturating_sub(limit);
        Ok(records.into_iter().skip(skip).collect())
    }

    async fn channel_key(&self, candidate: &str) -> Result<String, StoreError> {
        if let Some(k) = self.read(|c| c.channel_key.clone())? {
            return Ok(k);
        }
        self.change(|c| {
            Ok(c.channel_key
                .get_or_insert_with(|| candidate.to_owned())
                .clone())
        })
    }

    async fn put_opening(&self, window: &OpeningWindow) -> Result<(), StoreError> {
        self.change(|c| {
            c.openings
                .insert(window.envelope_sm3.clone(), window.clone());
            Ok(())
        })
    }

    async fn opening(&self, envelope_sm3: &str) -> Result<Option<OpeningWindow>, StoreError> {
        self.read(|c| c.openings.get(envelope_sm3).cloned())
    }

    async fn create_grant(&self, entry: &GrantEntry) -> Result<(), StoreError> {
        self.change(|c| {
            let id = &entry.grant.grant_id;
            if c.grants.contains_key(id) || c.keys.contains_key(id) {
                return Err(StoreError::Exists);
            }
            c.grants.insert(id.clone(), entry.clone());
            Ok(())
        })
    }

    async fn get_grant(&self, grant_id: &str) -> Result<Option<GrantEntry>, StoreError> {
        self.read(|c| c.grants.get(grant_id).cloned())
    }

    async fn put_grant(&self, entry: &GrantEntry) -> Result<(), StoreError> {
        self.change(|c| match c.grants.get(&entry.grant.grant_id) {
            Some(old) if old.is_reclaimed() => Err(StoreError::Revoked),
            _ => {
                c.grants.insert(entry.grant.grant_id.clone(), entry.clone());
                Ok(())
            }
        })
    }

    async fn grants(&self) -> Result<Vec<GrantEntry>, StoreError> {
        self.read(|c| {
            let mut all: Vec<GrantEntry> = c.grants.values().cloned().collect();
            all.sort_by(|a, b| a.grant.start.cmp(&b.grant.start));
            all
        })
    }

    async fn reclaim_grant(
        &self,
        entry: &GrantEntry,
        member_key: &KeyRecord,
        record: &ReclaimRecord,
        expected_end: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.change(|c| {
            let Some(old) = c.grants.get(&entry.grant.grant_id) else {
                return Ok(false);
            };
            if old.is_reclaimed() || expected_end.is_some_and(|end| old.grant.end != end) {
                return Ok(false);
            }
            c.grants.insert(entry.grant.grant_id.clone(), entry.clone());
            c.keys.insert(member_key.key_id.clone(), member_key.clone());
            c.reclaims.push(record.clone());
            Ok(true)
        })
    }

    async fn reclaims(&self) -> Result<Vec<ReclaimRecord>, StoreError> {
        self.read(|c| c.reclaims.clone())
    }

    fn forgets_nonces_on_restart(&self) -> bool {
        true
    }
}
