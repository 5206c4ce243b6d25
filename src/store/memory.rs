//! In-process store: one node only, the embedded default.
//!
//! Each session sits in a [`DashMap`] entry next to the `watch` sender its
//! subscribers listen on. `apply` runs the (synchronous, microsecond-long)
//! state machine while holding the entry's shard lock, which is what makes
//! it atomic; no lock is ever held across an `.await`.

use super::{SessionStore, StoreError, Update};
use async_trait::async_trait;
use bzt_core::session::Op;
use bzt_core::{Session, SessionId, Timestamp};
use dashmap::mapref::entry::Entry as MapEntry;
use dashmap::DashMap;
use tokio::sync::watch;

struct Entry {
    session: Session,
    /// Wakes subscribers after every write; dropped with the entry, which
    /// closes their receivers.
    changes: watch::Sender<u64>,
}

#[derive(Default)]
pub struct MemoryStore {
    sessions: DashMap<SessionId, Entry>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of sessions held (metrics).
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn insert(&self, session: &Session) -> Result<(), StoreError> {
        match self.sessions.entry(session.id.clone()) {
            MapEntry::Occupied(_) => Err(StoreError::Duplicate),
            MapEntry::Vacant(v) => {
                let (changes, _) = watch::channel(session.rev);
                v.insert(Entry {
                    session: session.clone(),
                    changes,
                });
                Ok(())
            }
        }
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        Ok(self.sessions.get(id).map(|e| e.session.clone()))
    }

    async fn apply(
        &self,
        id: &SessionId,
        op: &Op,
        now: Timestamp,
    ) -> Result<Option<Update>, StoreError> {
        let Some(mut entry) = self.sessions.get_mut(id) else {
            return Ok(None);
        };
        let previous_status = entry.session.status;
        let applied = entry.session.apply(op, now);
        if applied.changed {
            entry.changes.send_replace(entry.session.rev);
        }
        Ok(Some(Update {
            output: applied.output,
            session: entry.session.clone(),
            changed: applied.changed,
            previous_status,
        }))
    }

    async fn subscribe(&self, id: &SessionId) -> Result<Option<watch::Receiver<u64>>, StoreError> {
        Ok(self.sessions.get(id).map(|e| e.changes.subscribe()))
    }

    async fn remove(&self, id: &SessionId) -> Result<(), StoreError> {
        self.sessions.remove(id);
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}
