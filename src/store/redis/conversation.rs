//! Conversations (会话签章) in Redis, on the session store's machinery: the
//! same record layout (a hash of `rev` and `json`), the same Lua
//! compare-and-set, the same channel announcements and subscriber.
//!
//! - A conversation is `<prefix>:{c:<id>}` with its channel
//!   `<prefix>:{c:<id>}:ch` (one hash tag, one Cluster slot). TTL:
//!   `max(expires_at, ended_at)` + 10 min retention + a margin, renewed on
//!   every write.
//! - Deadlines are the sorted set `<prefix>:{cdue}` (member = conversation
//!   id, score = next deadline in Unix ms), kept as described in
//!   [`crate::store::ConversationStore`]. Unlike a session's, a conversation's
//!   deadline moves (a new request brings its TTL, an answer pushes the idle
//!   clock), and the writes that move it race with the nodes that claim it.
//!   The rule that keeps this sound: the recorded deadline is never later
//!   than the true one, except while a claim holds it.
//!   - A claim re-scores the member to the end of its lease minus half a
//!     millisecond: a score ending in `.5` marks a lease.
//!   - After every write, and after a claimer's tick, [`SET_DEADLINE`]
//!     replaces a lease by the new deadline, and otherwise keeps the earlier
//!     of the recorded and the new one. A writer whose write raced with a
//!     claimer's read runs it after its write, so the claimer's (older)
//!     deadline can never hide the writer's. A deadline recorded too early
//!     costs one tick that changes nothing, after which the claimer records
//!     the real one.
//!   - The one gap: a node that dies between its write and recording the
//!     deadline leaves the previous one, so that deadline can come late (at
//!     most until the previous recorded one, and every read in between
//!     applies it lazily anyway).

use super::conn::timed;
use super::{ttl_until, Cas, RedisStore, CLAIM_DUE, MAX_CAS_ATTEMPTS};
use crate::store::{ConvUpdate, ConversationStore};
use crate::store::{StoreError, EXPIRY_LEASE};
use async_trait::async_trait;
use bzt_core::conversation::{ConvApplied, ConvOp, Conversation};
use bzt_core::secret::ConversationId;
use bzt_core::Timestamp;
use redis::Script;
use std::sync::LazyLock;
use std::time::Duration;
use tokio::sync::watch;

/// Records a conversation's next deadline. KEYS: deadlines. ARGV: id,
/// deadline ms, or `''` for none (ended: forget it). A lease (a score
/// ending in `.5`) is replaced; otherwise the earlier deadline stays.
static SET_DEADLINE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if ARGV[2] == '' then return redis.call('ZREM', KEYS[1], ARGV[1]) end
local cur = redis.call('ZSCORE', KEYS[1], ARGV[1])
if cur then
  cur = tonumber(cur)
  if cur == math.floor(cur) and cur <= tonumber(ARGV[2]) then return 0 end
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return 1",
    )
});

/// Milliseconds the record must live from `now`.
fn ttl_ms(c: &Conversation, now: Timestamp) -> i64 {
    let end = c.ended.map_or(c.expires_at, |(_, at)| at.max(c.expires_at));
    ttl_until(end, now)
}

fn update(applied: ConvApplied, was_ended: bool, c: Conversation) -> ConvUpdate {
    ConvUpdate {
        output: applied.output,
        ended_now: !was_ended && c.is_ended(),
        changed: applied.changed,
        finished: applied.finished,
        conversation: c,
    }
}

impl RedisStore {
    async fn set_conversation_deadline(&self, c: &Conversation) -> Result<(), StoreError> {
        let at = c
            .next_deadline()
            .map(|t| t.unix_millis().to_string())
            .unwrap_or_default();
        timed(
            self.timeout,
            "conversation deadline",
            SET_DEADLINE
                .key(self.keys.conversation_due())
                .arg(c.id.as_str())
                .arg(at)
                .invoke_async::<i64>(&mut self.conn.clone()),
        )
        .await
        .map(|_| ())
    }
}

#[async_trait]
impl ConversationStore for RedisStore {
    async fn insert_conversation(&self, c: &Conversation) -> Result<(), StoreError> {
        let json = super::to_json(c, &c.id)?;
        // The deadline first, so a record never exists without one. For a
        // duplicate id this may record an early deadline for the existing
        // conversation: that costs one tick that changes nothing.
        self.set_conversation_deadline(c).await?;
        self.insert_record(
            &self.keys.conversation(&c.id),
            c.rev,
            json,
            ttl_ms(c, c.opened_at),
        )
        .await
    }

    async fn get_conversation(
        &self,
        id: &ConversationId,
    ) -> Result<Option<Conversation>, StoreError> {
        self.read_record(&self.keys.conversation(id)).await
    }

    async fn apply_conversation(
        &self,
        id: &ConversationId,
        op: &ConvOp,
        now: Timestamp,
    ) -> Result<Option<ConvUpdate>, StoreError> {
        let key = self.keys.conversation(id);
        let channel = self.keys.conversation_channel(id);
        for attempt in 0..MAX_CAS_ATTEMPTS {
            let Some(mut c) = self.read_record::<Conversation>(&key).await? else {
                return Ok(None);
            };
            let was_ended = c.is_ended();
            let expected = c.rev;
            let applied = c.apply(op, now);
            if !applied.changed {
                return Ok(Some(update(applied, was_ended, c)));
            }
            let json = super::to_json(&c, id)?;
            match self
                .cas_record(&key, &channel, expected, c.rev, json, ttl_ms(&c, now))
                .await?
            {
                Cas::Written => {
                    // After the write, never before: see the module doc.
                    // The write happened, so a failure here is only logged:
                    // it is the module doc's gap (this node's timer still
                    // holds the deadline).
                    if let Err(e) = self.set_conversation_deadline(&c).await {
                        tracing::warn!(conversation = %id, error = %e, "could not record the conversation's next deadline");
                    }
                    return Ok(Some(update(applied, was_ended, c)));
                }
                Cas::Gone => return Ok(None),
                Cas::Conflict => Self::back_off(attempt).await,
            }
        }
        Err(StoreError::Unavailable(format!(
            "conversation {id}: {MAX_CAS_ATTEMPTS} compare-and-set conflicts in a row"
        )))
    }

    async fn subscribe_conversation(
        &self,
        id: &ConversationId,
    ) -> Result<Option<watch::Receiver<u64>>, StoreError> {
        self.subscribe_record(
            &self.keys.conversation(id),
            &self.keys.conversation_channel(id),
        )
        .await
    }

    async fn remove_conversation(&self, id: &ConversationId) -> Result<(), StoreError> {
        self.remove_record(
            &self.keys.conversation(id),
            &self.keys.conversation_channel(id),
        )
        .await?;
        timed(
            self.timeout,
            "ZREM",
            redis::cmd("ZREM")
                .arg(self.keys.conversation_due())
                .arg(id.as_str())
                .exec_async(&mut self.conn.clone()),
        )
        .await
    }

    async fn claim_due_conversations(
        &self,
        now: Timestamp,
        max: usize,
    ) -> Result<Vec<ConversationId>, StoreError> {
        let lease_until = now.plus_millis(EXPIRY_LEASE.as_millis() as i64);
        let ids: Vec<String> = timed(
            self.timeout,
            "claim conversation deadlines",
            CLAIM_DUE
                .key(self.keys.conversation_due())
                .arg(now.unix_millis())
                // Half a millisecond before the lease ends: the `.5` marks
                // a lease (see the module doc).
                .arg(format!("{}.5", lease_until.unix_millis() - 1))
                .arg(max)
                .invoke_async(&mut self.conn.clone()),
        )
        .await?;
        Ok(ids
            .iter()
            .filter_map(|s| ConversationId::parse(s))
            .collect())
    }

    async fn conversation_ticked(&self, c: &Conversation) -> Result<(), StoreError> {
        self.set_conversation_deadline(c).await
    }

    fn conversation_poll_interval(&self) -> Option<Duration> {
        Some(self.expiry_poll)
    }
}
