//! The [`WebhookQueue`] in Redis: delivery `<id>` is the field `<id>` of the
//! hash `<prefix>:{wh}:d` (its JSON), and its next due time (ms) the score
//! of `<id>` in the sorted set `<prefix>:{wh}`; one hash tag, so one
//! script changes both on a Cluster. No TTL: a delivery lasts until it is
//! delivered or given up (at most `max_attempts` attempts).

use super::conn::{timed, Conn};
use super::RedisStore;
use crate::store::webhooks::{PendingDelivery, WebhookQueue};
use crate::store::StoreError;
use async_trait::async_trait;
use bzt_core::Timestamp;
use redis::Script;
use std::sync::LazyLock;
use std::time::Duration;

/// KEYS: due, data. ARGV: id, json, due ms.
static PUT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1",
    )
});

/// Leases due deliveries by moving their score to the lease's end.
/// KEYS: due, data. ARGV: now ms, lease end ms, max. Returns their JSON.
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
local out = {}
for _, id in ipairs(ids) do
  local json = redis.call('HGET', KEYS[2], id)
  if json then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[2], id)
    table.insert(out, json)
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out",
    )
});

/// KEYS: due, data. ARGV: id.
static DONE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('ZREM', KEYS[1], ARGV[1])
return redis.call('HDEL', KEYS[2], ARGV[1])",
    )
});

pub struct RedisWebhookQueue {
    conn: Conn,
    due: String,
    data: String,
    timeout: Duration,
}

impl RedisStore {
    /// The queue of pending webhook deliveries every node shares.
    pub fn webhook_queue(&self) -> RedisWebhookQueue {
        let due = self.keys.webhooks();
        RedisWebhookQueue {
            conn: self.conn.clone(),
            data: format!("{due}:d"),
            due,
            timeout: self.timeout,
        }
    }
}

#[async_trait]
impl WebhookQueue for RedisWebhookQueue {
    async fn put(&self, delivery: &PendingDelivery, at: Timestamp) -> Result<(), StoreError> {
        let json = serde_json::to_string(delivery)
            .map_err(|e| StoreError::Corrupt(format!("webhook delivery: {e}")))?;
        timed(
            self.timeout,
            "webhook put",
            PUT.key(&self.due)
                .key(&self.data)
                .arg(&delivery.id)
                .arg(json)
                .arg(at.unix_millis())
                .invoke_async::<i64>(&mut self.conn.clone()),
        )
        .await
        .map(|_| ())
    }

    async fn claim_due(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        max: usize,
    ) -> Result<Vec<PendingDelivery>, StoreError> {
        let found: Vec<String> = timed(
            self.timeout,
            "webhook claim",
            CLAIM
                .key(&self.due)
                .key(&self.data)
                .arg(now.unix_millis())
                .arg(lease_until.unix_millis())
                .arg(max)
                .invoke_async(&mut self.conn.clone()),
        )
        .await?;
        found
            .iter()
            .map(|json| {
                serde_json::from_str(json)
                    .map_err(|e| StoreError::Corrupt(format!("webhook delivery: {e}")))
            })
            .collect()
    }

    async fn done(&self, id: &str) -> Result<(), StoreError> {
        timed(
            self.timeout,
            "webhook done",
            DONE.key(&self.due)
                .key(&self.data)
                .arg(id)
                .invoke_async::<i64>(&mut self.conn.clone()),
        )
        .await
        .map(|_| ())
    }
}
