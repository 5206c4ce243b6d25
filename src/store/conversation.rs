//! Where conversations (会话签章) live.
//!
//! The contract mirrors [`super::SessionStore`]: `apply_conversation` is
//! atomic (read, [`Conversation::apply`], write back if changed), every write
//! wakes the receivers of `subscribe_conversation`, and failures to reach a
//! backing service are [`StoreError::Unavailable`].

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
    async fn remove_conversation(&self, id: &ConversationId) -> Result<(), StoreError>;
}

struct Entry {
    conversation: Conversation,
    changes: watch::Sender<u64>,
}

/// In-process conversations: one node only, the embedded default. The
/// shard lock of the entry makes `apply_conversation` atomic.
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
