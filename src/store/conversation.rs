//! Where conversations (会话签章) live.
//!
//! The contract mirrors [`super::SessionStore`] (the conformance suite in
//! `tests/store_conformance.rs` checks it): `apply_conversation` is atomic
//! (read, [`Conversation::apply`], write back if changed) on one node or
//! many, every write wakes the receivers of `subscribe_conversation` on
//! every node, removing a conversation closes them, and failures to reach a
//! backing service are [`StoreError::Unavailable`]. A store may forget a
//! conversation by itself, but never before `max(expires_at, ended_at)`
//! plus the protocol's 10-minute retention.
//!
//! Deadlines (request TTL, idle, max lifetime). Every op applies what is
//! due first, and the node that writes a conversation sets a local timer at
//! its next deadline, which sends [`ConvOp::Tick`]. That is enough on one
//! node. With a shared store the node holding the timer may die, and then
//! nobody would tell the sockets on other nodes that a request expired or
//! the conversation went idle. So a shared store also keeps every open
//! conversation's next deadline where every node can see it, handed out
//! like session expiries:
//! - every write records the written conversation's next deadline (an
//!   ended conversation has none);
//! - `claim_due_conversations(now, max)` hands out conversations whose
//!   deadline passed, each leased for [`super::EXPIRY_LEASE`] to one caller;
//! - the caller applies `Tick` and then calls `conversation_ticked` with
//!   the result, which records its next deadline (or forgets it) and ends
//!   the lease. A caller that dies in between loses nothing: the lease runs
//!   out and another node gets the conversation.
//!
//! [`ConversationStore::conversation_poll_interval`] says whether nodes must
//! poll; the defaults (no poll, nothing to claim) are right for one node.

use super::StoreError;
use async_trait::async_trait;
use bzt_core::conversation::{ConvOp, ConvOutput, Conversation};
use bzt_core::secret::{ConversationId, RequestId};
use bzt_core::{DomainError, Timestamp};
use dashmap::mapref::entry::Entry as MapEntry;
use dashmap::DashMap;
use tokio::sync::watch;

/// The outcome of an atomic [`ConversationStore::apply_conversation`].
#[derive(Debug)]
pub struct ConvUpdate {
    pub output: Result<ConvOutput, DomainError>,
    pub conversation: Conversation,
    pub changed: bool,
    /// Requests that reached a final status in this op.
    pub finished: Vec<RequestId>,
    /// Whether this op ended the conversation.
    pub ended_now: bool,
}

#[async_trait]
pub trait ConversationStore: Send + Sync + 'static {
    async fn insert_conversation(&self, c: &Conversation) -> Result<(), StoreError>;
    async fn get_conversation(
        &self,
        id: &ConversationId,
    ) -> Result<Option<Conversation>, StoreError>;
    async fn apply_conversation(
        &self,
        id: &ConversationId,
        op: &ConvOp,
        now: Timestamp,
    ) -> Result<Option<ConvUpdate>, StoreError>;
    async fn subscribe_conversation(
        &self,
        id: &ConversationId,
    ) -> Result<Option<watch::Receiver<u64>>, StoreError>;
    /// Forgets a conversation (after its retention period), and its deadline.
    async fn remove_conversation(&self, id: &ConversationId) -> Result<(), StoreError>;

    /// Claims up to `max` conversations whose next deadline is at or before
    /// `now`, each for [`super::EXPIRY_LEASE`] (see the module doc).
    async fn claim_due_conversations(
        &self,
        _now: Timestamp,
        _max: usize,
    ) -> Result<Vec<ConversationId>, StoreError> {
        Ok(Vec::new())
    }

    /// A claimed conversation was ticked and now is `c`: record its next
    /// deadline (none once ended), ending the claim's lease.
    async fn conversation_ticked(&self, _c: &Conversation) -> Result<(), StoreError> {
        Ok(())
    }

    /// How often every node should call `claim_due_conversations`; `None`
    /// if the local timers see every deadline (one node).
    fn conversation_poll_interval(&self) -> Option<std::time::Duration> {
        None
    }
}

struct Entry {
    conversation: Conversation,
    changes: watch::Sender<u64>,
}

/// In-process conversations: one node only, the embedded default. The
/// shard lock of the entry makes `apply_conversation` atomic. The node's
/// own timers see every deadline, so it keeps no shared deadlines.
#[derive(Default)]
pub struct MemoryConversationStore {
    conversations: DashMap<ConversationId, Entry>,
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
                v.insert(Entry {
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
