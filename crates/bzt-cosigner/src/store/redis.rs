//! Redis (several service nodes share one). Keys under a prefix:
//! `key:<id>` (JSON record), `fail:<id>` (counter), `once:<token>` (used
//! nonces, with expiry), `audit` (list), `channel_key`, `opening:<sm3>`,
//! `grant:<id>` (JSON), `grants` (set of ids), `reclaims` (list).

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;

use super::{GrantEntry, KeyRecord, KeyStore, StoreError};
use crate::wire::{AuditRecord, OpeningWindow, ReclaimRecord};

/// Replace a record unless the stored one is revoked, atomically.
const PUT_UNLESS_REVOKED: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur and cjson.decode(cur)['state'] == 'revoked' then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"#;

/// Replace a grant unless the stored one is reclaimed, atomically.
const PUT_GRANT_UNLESS_RECLAIMED: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur and cjson.decode(cur)['grant']['status'] == 'reclaimed' then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"#;

/// Reclaim a grant once for all nodes: the grant, the member key's
/// tombstone and the reclaim record in one step. ARGV[4] is the end time the
/// caller saw ('' for any): an extension in between wins over the sweep.
const RECLAIM_ONCE: &str = r#"
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local g = cjson.decode(cur)['grant']
if g['status'] == 'reclaimed' then return 0 end
if ARGV[4] ~= '' and g['end'] ~= ARGV[4] then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2])
redis.call('RPUSH', KEYS[3], ARGV[3])
return 1
"#;

pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl RedisStore {
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let conn = ConnectionManager::new(client).await.map_err(unavailable)?;
        Ok(Self {
            conn,
            prefix: prefix.to_owned(),
        })
    }

    fn k(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    fn encode<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
        serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    fn decode<T: serde::de::DeserializeOwned>(raw: &str) -> Result<T, StoreError> {
        serde_json::from_str(raw).map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    /// The JSON record at `key` (before the prefix), if there is one.
    async fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let mut conn = self.conn.clone();
        let raw: Option<String> = conn.get(self.k(key)).await.map_err(unavailable)?;
        raw.map(|s| Self::decode(&s)).transpose()
    }
}

#[async_trait]
impl KeyStore for RedisStore {
    async fn create(&self, record: &KeyRecord) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let set: bool = conn
            .set_nx(
                self.k(&format!("key:{}", record.key_id)),
                Self::encode(record)?,
            )
            .await
            .map_err(unavailable)?;
        if set {
            Ok(())
        } else {
            Err(StoreError::Exists)
        }
    }

    async fn get(&self, key_id: &str) -> Result<Option<KeyRecord>, StoreError> {
        self.read_json(&format!("key:{key_id}")).await
    }

    async fn put(&self, record: &KeyRecord) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let done: i32 = redis::Script::new(PUT_UNLESS_REVOKED)
            .key(self.k(&format!("key:{}", record.key_id)))
            .arg(Self::encode(record)?)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if done == 1 {
            Ok(())
        } else {
            Err(StoreError::Revoked)
        }
    }

    async fn add_failure(&self, key_id: &str) -> Result<u32, StoreError> {
        let mut conn = self.conn.clone();
        conn.incr(self.k(&format!("fail:{key_id}")), 1)
            .await
            .map_err(unavailable)
    }

    /// `INCR` stored it already, as durably as Redis keeps anything.
    async fn keep_failures(&self, _key_id: &str) -> Result<(), StoreError> {
        Ok(())
    }

    async fn failures(&self, key_id: &str) -> Result<u32, StoreError> {
        let mut conn = self.conn.clone();
        let n: Option<u32> = conn
            .get(self.k(&format!("fail:{key_id}")))
            .await
            .map_err(unavailable)?;
        Ok(n.unwrap_or(0))
    }

    async fn reset_failures(&self, key_id: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: () = conn
            .del(self.k(&format!("fail:{key_id}")))
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn use_once(&self, token: &str, ttl_s: u64) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(self.k(&format!("once:{token}")))
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(ttl_s.max(1))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(set.is_some())
    }

    async fn append_audit(&self, record: &AuditRecord) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: () = conn
            .rpush(self.k("audit"), Self::encode(record)?)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn audit(&self, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let mut conn = self.conn.clone();
        let start = -(isize::try_from(limit.max(1)).unwrap_or(isize::MAX));
        let raw: Vec<String> = conn
            .lrange(self.k("audit"), start, -1)
            .await
            .map_err(unavailable)?;
        raw.iter().map(|s| Self::decode(s)).collect()
    }

    async fn channel_key(&self, candidate: &str) -> Result<String, StoreError> {
        let mut conn = self.conn.clone();
        let _: bool = conn
            .set_nx(self.k("channel_key"), candidate)
            .await
            .map_err(unavailable)?;
        conn.get(self.k("channel_key")).await.map_err(unavailable)
    }

    async fn put_opening(&self, window: &OpeningWindow) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: () = conn
            .set(
                self.k(&format!("opening:{}", window.envelope_sm3)),
                Self::encode(window)?,
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn opening(&self, envelope_sm3: &str) -> Result<Option<OpeningWindow>, StoreError> {
        self.read_json(&format!("opening:{envelope_sm3}")).await
    }

    async fn create_grant(&self, entry: &GrantEntry) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let id = &entry.grant.grant_id;
        let taken: bool = conn
            .exists(self.k(&format!("key:{id}")))
            .await
            .map_err(unavailable)?;
        let set: bool = !taken
            && conn
                .set_nx(self.k(&format!("grant:{id}")), Self::encode(entry)?)
                .await
                .map_err(unavailable)?;
        if !set {
            return Err(StoreError::Exists);
        }
        let _: () = conn.sadd(self.k("grants"), id).await.map_err(unavailable)?;
        Ok(())
    }

    async fn get_grant(&self, grant_id: &str) -> Result<Option<GrantEntry>, StoreError> {
        self.read_json(&format!("grant:{grant_id}")).await
    }

    async fn put_grant(&self, entry: &GrantEntry) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let done: i32 = redis::Script::new(PUT_GRANT_UNLESS_RECLAIMED)
            .key(self.k(&format!("grant:{}", entry.grant.grant_id)))
            .arg(Self::encode(entry)?)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if done == 1 {
            Ok(())
        } else {
            Err(StoreError::Revoked)
        }
    }

    async fn grants(&self) -> Result<Vec<GrantEntry>, StoreError> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = conn.smembers(self.k("grants")).await.map_err(unavailable)?;
        let mut all = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(entry) = self.get_grant(&id).await? {
                all.push(entry);
            }
        }
        all.sort_by(|a, b| a.grant.start.cmp(&b.grant.start));
        Ok(all)
    }

    async fn reclaim_grant(
        &self,
        entry: &GrantEntry,
        member_key: &KeyRecord,
        record: &ReclaimRecord,
        expected_end: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let done: i32 = redis::Script::new(RECLAIM_ONCE)
            .key(self.k(&format!("grant:{}", entry.grant.grant_id)))
            .key(self.k(&format!("key:{}", member_key.key_id)))
            .key(self.k("reclaims"))
            .arg(Self::encode(entry)?)
            .arg(Self::encode(member_key)?)
            .arg(Self::encode(record)?)
            .arg(expected_end.unwrap_or(""))
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(done == 1)
    }

    async fn reclaims(&self) -> Result<Vec<ReclaimRecord>, StoreError> {
        let mut conn = self.conn.clone();
        let raw: Vec<String> = conn
            .lrange(self.k("reclaims"), 0, -1)
            .await
            .map_err(unavailable)?;
        raw.iter().map(|s| Self::decode(s)).collect()
    }

    fn forgets_nonces_on_restart(&self) -> bool {
        false
    }
}
