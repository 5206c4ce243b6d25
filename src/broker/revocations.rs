//! Revoked certificate serials: the configured list (replaced on SIGHUP)
//! and the run-time list of the admin API.
//!
//! The run-time list lives in a [`RecordSet`] (Redis in Redis mode, a file
//! in embedded mode), so it survives restarts and is shared by every node.
//! Each node keeps a copy for the certificate checks, which are synchronous
//! and must not wait on Redis: the node that writes updates its copy at
//! once, and every node re-reads the set when its version moves, which
//! [`Revocations::refresh`] looks for every [`RecordSet::poll_interval`]
//! (250 ms with Redis). If the store cannot be reached, the last copy stays
//! in force: a revocation is never lifted by an outage.

use crate::store::records::{RecordSet, Snapshot};
use crate::store::StoreError;
use bzt_core::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, RwLock};

/// One run-time revocation, as stored and as the admin API lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationRecord {
    /// Normalised hex serial (lowercase, no leading zeros).
    pub serial: String,
    pub revoked_at: Timestamp,
    /// Who asked, as the operator wrote it in `revoked_by`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Default)]
struct Runtime {
    version: u64,
    records: BTreeMap<String, RevocationRecord>,
}

pub struct Revocations {
    configured: RwLock<HashSet<String>>,
    runtime: RwLock<Runtime>,
    store: Arc<dyn RecordSet>,
}

/// The record set's name in the store.
pub const RECORD_SET: &str = "revocations";

impl Revocations {
    /// The configured list, and the run-time list as the store holds it now.
    pub async fn open(configured: &[String], store: Arc<dyn RecordSet>) -> anyhow::Result<Self> {
        let r = Self {
            configured: RwLock::default(),
            runtime: RwLock::default(),
            store,
        };
        r.replace_configured(configured)
            .map_err(anyhow::Error::msg)?;
        let snapshot = r
            .store
            .load()
            .await
            .map_err(|e| anyhow::anyhow!("cannot read the run-time revocations: {e}"))?;
        r.install(snapshot);
        Ok(r)
    }

    /// The normalised form of an operator's serial, or why it is not one.
    pub fn normalize(serial: &str) -> Result<String, String> {
        bzt_core::pki::normalize_serial(serial)
            .ok_or_else(|| format!("{serial:?} is not a hex serial"))
    }

    pub fn replace_configured(&self, serials: &[String]) -> Result<(), String> {
        let set = normalize_all(serials)?;
        *self.configured.write().unwrap_or_else(|p| p.into_inner()) = set;
        Ok(())
    }

    /// Stores a run-time revocation (replacing an earlier one of the same
    /// serial); `true` if the serial was not revoked at run time before.
    pub async fn add(&self, record: RevocationRecord) -> Result<bool, StoreError> {
        let json = serde_json::to_string(&record)
            .map_err(|e| StoreError::Corrupt(format!("revocation: {e}")))?;
        let new = self.store.put(&record.serial, &json).await?;
        self.write_runtime()
            .records
            .insert(record.serial.clone(), record);
        Ok(new)
    }

    /// Lifts a run-time revocation; the record lifted, `None` if there was none.
    pub async fn remove(&self, serial: &str) -> Result<Option<RevocationRecord>, StoreError> {
        let Some(old) = self.store.delete(serial).await? else {
            return Ok(None);
        };
        self.write_runtime().records.remove(serial);
        Ok(Some(parse_record(serial, &old).unwrap_or(
            RevocationRecord {
                serial: serial.to_owned(),
                revoked_at: Timestamp::from_unix_millis(0),
                revoked_by: None,
                reason: None,
            },
        )))
    }

    pub fn contains(&self, serial: &str) -> bool {
        self.configured
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(serial)
            || self
                .runtime
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .records
                .contains_key(serial)
    }

    /// (configured serials sorted, run-time records sorted by serial).
    pub fn list(&self) -> (Vec<String>, Vec<RevocationRecord>) {
        let mut c: Vec<_> = self
            .configured
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        c.sort();
        let r = self
            .runtime
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .records
            .values()
            .cloned()
            .collect();
        (c, r)
    }

    /// Re-reads the run-time list if another node changed it; `true` if it did.
    pub async fn refresh(&self) -> Result<bool, StoreError> {
        let seen = self
            .runtime
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .version;
        if self.store.version().await? == seen {
            return Ok(false);
        }
        let snapshot = self.store.load().await?;
        self.install(snapshot);
        Ok(true)
    }

    /// How often [`Revocations::refresh`] must run; `None` with one node.
    pub fn poll_interval(&self) -> Option<std::time::Duration> {
        self.store.poll_interval()
    }

    fn install(&self, snapshot: Snapshot) {
        let records = snapshot
            .records
            .iter()
            .map(|(serial, json)| {
                let r = parse_record(serial, json);
                if r.is_none() {
                    // Kept as revoked all the same: unreadable is no reason to accept.
                    tracing::error!(%serial, "unreadable run-time revocation record; serial still refused");
                }
                (
                    serial.clone(),
                    r.unwrap_or_else(|| RevocationRecord {
                        serial: serial.clone(),
                        revoked_at: Timestamp::from_unix_millis(0),
                        revoked_by: None,
                        reason: None,
                    }),
                )
            })
            .collect();
        *self.write_runtime() = Runtime {
            version: snapshot.version,
            records,
        };
    }

    fn write_runtime(&self) -> std::sync::RwLockWriteGuard<'_, Runtime> {
        self.runtime.write().unwrap_or_else(|p| p.into_inner())
    }
}

fn parse_record(serial: &str, json: &str) -> Option<RevocationRecord> {
    serde_json::from_str::<RevocationRecord>(json)
        .ok()
        .filter(|r| r.serial == serial)
}

fn normalize_all(serials: &[String]) -> Result<HashSet<String>, String> {
    serials
        .iter()
        .map(|s| {
            bzt_core::pki::normalize_serial(s)
                .ok_or_else(|| format!("revocation.serials: {s:?} is not a hex serial"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::MemoryRecordSet;

    fn record(serial: &str) -> RevocationRecord {
        RevocationRecord {
            serial: serial.into(),
            revoked_at: Timestamp::from_unix_millis(1),
            revoked_by: Some("值班员".into()),
            reason: None,
        }
    }

    #[tokio::test]
    async fn revocations_normalise_serials() {
        let r = Revocations::open(&["00AB".into()], Arc::new(MemoryRecordSet::new()))
            .await
            .unwrap();
        assert!(r.contains("ab"));
        assert_eq!(
            Revocations::normalize("0x1").unwrap_err(),
            "\"0x1\" is not a hex serial"
        );
        assert!(r.add(record("cd")).await.unwrap());
        assert!(r.contains("cd"));
        assert_eq!(
            r.remove("cd").await.unwrap().map(|r| r.serial).as_deref(),
            Some("cd")
        );
        assert!(!r.contains("cd"));
        assert!(
            Revocations::open(&["zz".into()], Arc::new(MemoryRecordSet::new()))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn another_writer_is_seen_after_a_refresh() {
        let shared: Arc<dyn RecordSet> = Arc::new(MemoryRecordSet::new());
        let node1 = Revocations::open(&[], shared.clone()).await.unwrap();
        let node2 = Revocations::open(&[], shared).await.unwrap();
        node1.add(record("1f")).await.unwrap();
        assert!(!node2.contains("1f"), "not before it looked");
        assert!(node2.refresh().await.unwrap());
        assert!(node2.contains("1f"));
        assert!(!node2.refresh().await.unwrap(), "nothing new");
        node2.remove("1f").await.unwrap();
        node1.refresh().await.unwrap();
        assert!(!node1.contains("1f"));
    }

    #[tokio::test]
    async fn an_unreadable_record_still_refuses_its_serial() {
        let shared: Arc<dyn RecordSet> = Arc::new(MemoryRecordSet::new());
        shared.put("ee", "not json").await.unwrap();
        let r = Revocations::open(&[], shared).await.unwrap();
        assert!(r.contains("ee"));
    }
}
