//! In-process store: one node only, the embedded default.
//!
//! Each record sits in a [`DashMap`] entry next to the `watch` sender its
//! subscribers listen on. `update` runs the (synchronous, microsecond-long)
//! change while holding the entry's shard lock, which is what makes it
//! atomic; no lock is ever held across an `.await`.
//!
//! Due times sit in ordered sets beside the map. Only this node can handle
//! its records, and it sets a timer for each deadline it writes, so the
//! broker never needs to poll ([`RecordStore::poll_interval`] is `None`);
//! the queues serve the broker's sweeps, which its timers run.

use super::{Change, DueQueue, RecordStore, StoreError, StoredRecord, Written, EXPIRY_LEASE};
use async_trait::async_trait;
use bzt_core::Timestamp;
use dashmap::mapref::entry::Entry as MapEntry;
use dashmap::DashMap;
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use tokio::sync::watch;

struct Entry<R> {
    record: R,
    /// Wakes subscribers after every write; dropped with the entry, which
    /// closes their receivers.
    changes: watch::Sender<u64>,
}

/// Records of type `R` in this process.
pub struct MemoryStore<R: StoredRecord> {
    records: DashMap<R::Id, Entry<R>>,
    /// Due times by queue. A std mutex: held for a few set operations,
    /// never across an `.await`.
    queues: Mutex<HashMap<DueQueue, Queue<R::Id>>>,
}

impl<R: StoredRecord> Default for MemoryStore<R> {
    fn default() -> Self {
        Self {
            records: DashMap::new(),
            queues: Mutex::new(HashMap::new()),
        }
    }
}

/// An ordered set of `(due time, id)`, its reverse index, and which entries
/// are claims' leases.
struct Queue<Id> {
    by_time: BTreeSet<(Timestamp, Id)>,
    by_id: HashMap<Id, (Timestamp, bool)>,
}

impl<Id> Default for Queue<Id> {
    fn default() -> Self {
        Self {
            by_time: BTreeSet::new(),
            by_id: HashMap::new(),
        }
    }
}

impl<Id: Clone + Ord + std::hash::Hash> Queue<Id> {
    fn put(&mut self, id: &Id, at: Timestamp, lease: bool) {
        if let Some((old, _)) = self.by_id.insert(id.clone(), (at, lease)) {
            self.by_time.remove(&(old, id.clone()));
        }
        self.by_time.insert((at, id.clone()));
    }

    /// The module doc's rule: a lease is replaced, otherwise the earlier stays.
    fn schedule(&mut self, id: &Id, at: Timestamp) {
        match self.by_id.get(id) {
            Some(&(cur, false)) if cur <= at => {}
            _ => self.put(id, at, false),
        }
    }

    fn remove(&mut self, id: &Id) {
        if let Some((old, _)) = self.by_id.remove(id) {
            self.by_time.remove(&(old, id.clone()));
        }
    }
}

impl<R: StoredRecord> MemoryStore<R> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of records held (metrics).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn queues(&self) -> std::sync::MutexGuard<'_, HashMap<DueQueue, Queue<R::Id>>> {
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl<R: StoredRecord> RecordStore<R> for MemoryStore<R> {
    async fn insert(&self, record: &R) -> Result<(), StoreError> {
        match self.records.entry(record.id().clone()) {
            MapEntry::Occupied(_) => Err(StoreError::Duplicate),
            MapEntry::Vacant(v) => {
                if let Some(at) = record.next_deadline() {
                    self.queues()
                        .entry(R::DEADLINES)
                        .or_default()
                        .schedule(record.id(), at);
                }
                let (changes, _) = watch::channel(record.rev());
                v.insert(Entry {
                    record: record.clone(),
                    changes,
                });
                Ok(())
            }
        }
    }

    async fn get(&self, id: &R::Id) -> Result<Option<R>, StoreError> {
        Ok(self.records.get(id).map(|e| e.record.clone()))
    }

    async fn update_with(
        &self,
        id: &R::Id,
        _current: Option<&R>,
        _now: Timestamp,
        change: &mut Change<'_, R>,
    ) -> Result<Option<Written<R>>, StoreError> {
        let Some(mut entry) = self.records.get_mut(id) else {
            return Ok(None);
        };
        let (rev, deadline) = (entry.record.rev(), entry.record.next_deadline());
        change(&mut entry.record);
        let changed = entry.record.rev() != rev;
        if changed {
            entry.changes.send_replace(entry.record.rev());
            if let Some(at) = deadline_to_record(deadline, entry.record.next_deadline()) {
                self.queues()
                    .entry(R::DEADLINES)
                    .or_default()
                    .schedule(id, at);
            }
        }
        Ok(Some(Written {
            record: entry.record.clone(),
            changed,
        }))
    }

    async fn subscribe(&self, id: &R::Id) -> Result<Option<watch::Receiver<u64>>, StoreError> {
        Ok(self.records.get(id).map(|e| e.changes.subscribe()))
    }

    async fn remove(&self, id: &R::Id) -> Result<(), StoreError> {
        self.records.remove(id);
        let mut queues = self.queues();
        for queue in std::iter::once(&R::DEADLINES).chain(R::OTHER_QUEUES) {
            if let Some(q) = queues.get_mut(queue) {
                q.remove(id);
            }
        }
        Ok(())
    }

    async fn claim_due(
        &self,
        queue: DueQueue,
        now: Timestamp,
        max: usize,
    ) -> Result<Vec<R::Id>, StoreError> {
        let mut queues = self.queues();
        let Some(q) = queues.get_mut(&queue) else {
            return Ok(Vec::new());
        };
        let due: Vec<R::Id> = q
            .by_time
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(max)
            .map(|(_, id)| id.clone())
            .collect();
        let lease_until = now.plus_millis(EXPIRY_LEASE.as_millis() as i64);
        for id in &due {
            q.put(id, lease_until, true);
        }
        Ok(due)
    }

    async fn schedule(
        &self,
        queue: DueQueue,
        due: &[(R::Id, Option<Timestamp>)],
    ) -> Result<(), StoreError> {
        let mut queues = self.queues();
        let q = queues.entry(queue).or_default();
        for (id, at) in due {
            match at {
                Some(at) => q.schedule(id, *at),
                None => q.remove(id),
            }
        }
        Ok(())
    }

    fn poll_interval(&self) -> Option<std::time::Duration> {
        None
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

/// The deadline a write must record: the new one, when the write moved it;
/// nothing when it stayed or the record ended. See the module doc of
/// [`crate::store`].
pub(crate) fn deadline_to_record(
    before: Option<Timestamp>,
    after: Option<Timestamp>,
) -> Option<Timestamp> {
    after.filter(|a| before != Some(*a))
}
