//! In-process store: one node only, the embedded default.
//!
//! Each session sits in a [`DashMap`] entry next to the `watch` sender its
//! subscribers listen on. `apply` runs the (synchronous, microsecond-long)
//! state machine while holding the entry's shard lock, which is what makes
//! it atomic; no lock is ever held across an `.await`.
//!
//! Expiry deadlines sit in an ordered set beside the map. Only this node can
//! expire its sessions, and it schedules a timer for each one it creates, so
//! the broker never needs to poll ([`SessionStore::expiry_poll_interval`] is
//! `None`).

use super::{ConvUpdate, ConversationStore, SessionStore, StoreError, Update, EXPIRY_LEASE};
use async_trait::async_trait;
use bzt_core::conversation::{ConvOp, Conversation};
use bzt_core::secret::ConversationId;
use bzt_core::session::Op;
use bzt_core::{Session, SessionId, Timestamp};
use dashmap::mapref::entry::Entry as MapEntry;
use dashmap::DashMap;
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
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
    /// Expiry deadlines (or claim leases), for `claim_due_expiries`. A std
    /// mutex: held for a few set operations, never across an `.await`.
    deadlines: Mutex<Deadlines>,
}

/// An ordered set of `(deadline, id)` and its reverse index.
#[derive(Default)]
struct Deadlines {
    by_time: BTreeSet<(Timestamp, SessionId)>,
    by_id: HashMap<SessionId, Timestamp>,
}

impl Deadlines {
    fn set(&mut self, id: &SessionId, at: Timestamp) {
        if let Some(old) = self.by_id.insert(id.clone(), at) {
            self.by_time.remove(&(old, id.clone()));
        }
        self.by_time.insert((at, id.clone()));
    }

    fn remove(&mut self, id: &SessionId) {
        if let Some(old) = self.by_id.remove(id) {
            self.by_time.remove(&(old, id.clone()));
        }
    }
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

    fn deadlines(&self) -> std::sync::MutexGuard<'_, Deadlines> {
        self.deadlines.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn insert(&self, session: &Session) -> Result<(), StoreError> {
        match self.sessions.entry(session.id.clone()) {
            MapEntry::Occupied(_) => Err(StoreError::Duplicate),
            MapEntry::Vacant(v) => {
                self.deadlines().set(&session.id, session.expires_at);
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
        self.deadlines().remove(id);
        Ok(())
    }

    async fn claim_due_expiries(
        &self,
        now: Timestamp,
        max: usize,
    ) -> Result<Vec<SessionId>, StoreError> {
        let mut d = self.deadlines();
        let due: Vec<SessionId> = d
            .by_time
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(max)
            .map(|(_, id)| id.clone())
            .collect();
        let lease_until = now.plus_millis(EXPIRY_LEASE.as_millis() as i64);
        for id in &due {
            d.set(id, lease_until);
        }
        Ok(due)
    }

    async fn expiries_done(&self, ids: &[SessionId]) -> Result<(), StoreError> {
        let mut d = self.deadlines();
        for id in ids {
            d.remove(id);
        }
        Ok(())
    }

    fn expiry_poll_interval(&self) -> Option<std::time::Duration> {
        None
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

struct ConversationEntry {
    conversation: Conversation,
    changes: watch::Sender<u64>,
}

/// In-process conversations: one node only, the embedded default. The
/// shard lock of the entry makes `apply_conversation` atomic. The node's
/// own timers see every deadline, so it keeps no shared deadlines.
#[derive(Default)]
pub struct MemoryConversationStore {
    conversations: DashMap<ConversationId, ConversationEntry>,
}

impl MemoryConversationStore {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl ConversationStore for MemoryConversationStore {
    async fn insert_conversation(&self, c: &Conversation) -> Result<(), StoreError> {
        match self.conversations.entry(c.id.clone()) {
            MapEntry::Occupied(_) => Err(StoreError::Duplicate),
            MapEntry::Vacant(v) => {
                let (changes, _) = watch::channel(c.rev);
                v.insert(ConversationEntry {
                    conversation: c.clone(),
                    changes,
                });
                Ok(())
            }
        }
    }

    async fn get_conversation(
        &self,
        id: &ConversationId,
    ) -> Result<Option<Conversation>, StoreError> {
        Ok(self.conversations.get(id).map(|e| e.conversation.clone()))
    }

    async fn apply_conversation(
        &self,
        id: &ConversationId,
        op: &ConvOp,
        now: Timestamp,
    ) -> Result<Option<ConvUpdate>, StoreError> {
        let Some(mut entry) = self.conversations.get_mut(id) else {
            return Ok(None);
        };
        let was_ended = entry.conversation.is_ended();
        let applied = entry.conversation.apply(op, now);
        if applied.changed {
            entry.changes.send_replace(entry.conversation.rev);
        }
        Ok(Some(ConvUpdate {
            output: applied.output,
            ended_now: !was_ended && entry.conversation.is_ended(),
            conversation: entry.conversation.clone(),
            changed: applied.changed,
            finished: applied.finished,
        }))
    }

    async fn subscribe_conversation(
        &self,
        id: &ConversationId,
    ) -> Result<Option<watch::Receiver<u64>>, StoreError> {
        Ok(self.conversations.get(id).map(|e| e.changes.subscribe()))
    }

    async fn remove_conversation(&self, id: &ConversationId) -> Result<(), StoreError> {
        self.conversations.remove(id);
        Ok(())
    }
}
