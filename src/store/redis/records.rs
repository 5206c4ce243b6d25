//! [`RecordSet`]s in Redis: the records of set `<name>` are the hash
//! `<prefix>:{rs:<name>}`, its version the counter `<prefix>:{rs:<name>}:v`
//! (one hash tag, one Cluster slot, so one script changes both). Neither
//! key has a TTL: these records last until deleted.

use super::conn::{timed, Conn};
use super::RedisStore;
use crate::store::records::{RecordSet, Snapshot};
use crate::store::StoreError;
use async_trait::async_trait;
use redis::Script;
use std::sync::LazyLock;
use std::time::Duration;

/// How often each node reads the version of a shared set: a change made on
/// one node is seen on every other within this (plus one Redis round trip).
pub const RECORD_POLL: Duration = Duration::from_millis(250);

/// KEYS: hash, version. ARGV: key, json. Answers 1 if the key is new.
static PUT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local new = redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('INCR', KEYS[2])
return new",
    )
});

/// KEYS: hash, version. ARGV: key. Answers the removed value, or nil.
static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('INCR', KEYS[2])
end
return old",
    )
});

/// KEYS: hash, version. Answers {version, flat hash}, read at one instant.
static LOAD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
return {redis.call('GET', KEYS[2]) or '0', redis.call('HGETALL', KEYS[1])}",
    )
});

pub struct RedisRecordSet {
    conn: Conn,
    hash: String,
    version: String,
    timeout: Duration,
}

impl RedisStore {
    /// The shared record set called `name` (letters, digits, `-`, `_`).
    pub fn record_set(&self, name: &str) -> RedisRecordSet {
        let base = self.keys.record_set(name);
        RedisRecordSet {
            conn: self.conn.clone(),
            version: format!("{base}:v"),
            hash: base,
            timeout: self.timeout,
        }
    }
}

#[async_trait]
impl RecordSet for RedisRecordSet {
    async fn put(&self, key: &str, json: &str) -> Result<bool, StoreError> {
        let new: i64 = timed(
            self.timeout,
            "record put",
            PUT.key(&self.hash)
                .key(&self.version)
                .arg(key)
                .arg(json)
                .invoke_async(&mut self.conn.clone()),
        )
        .await?;
        Ok(new == 1)
    }

    async fn delete(&self, key: &str) -> Result<Option<String>, StoreError> {
        timed(
            self.timeout,
            "record delete",
            DELETE
                .key(&self.hash)
                .key(&self.version)
                .arg(key)
                .invoke_async(&mut self.conn.clone()),
        )
        .await
    }

    async fn version(&self) -> Result<u64, StoreError> {
        let v: Option<u64> = timed(
            self.timeout,
            "GET",
            redis::cmd("GET")
                .arg(&self.version)
                .query_async(&mut self.conn.clone()),
        )
        .await?;
        Ok(v.unwrap_or(0))
    }

    async fn load(&self) -> Result<Snapshot, StoreError> {
        let (version, flat): (u64, Vec<String>) = timed(
            self.timeout,
            "record load",
            LOAD.key(&self.hash)
                .key(&self.version)
                .invoke_async(&mut self.conn.clone()),
        )
        .await?;
        let records = flat
            .chunks_exact(2)
            .map(|kv| (kv[0].clone(), kv[1].clone()))
            .collect();
        Ok(Snapshot { version, records })
    }

    fn poll_interval(&self) -> Option<Duration> {
        Some(RECORD_POLL)
    }
}
