//! Where the service keeps its keys, counters, used nonces and audit trail.
//!
//! Contract of every backend:
//! - Records hold the server share only sealed under the master key
//!   ([`crate::sealing`]); the store never sees a share in clear.
//! - A revoked record stays revoked: [`KeyStore::put`] refuses to change a
//!   stored record whose state is `revoked`, and revocation drops the share.
//! - [`KeyStore::add_failure`] is atomic (several nodes may count at once),
//!   and the count is durable once [`KeyStore::keep_failures`] returns;
//!   [`KeyStore::use_once`] is an atomic set-if-absent with expiry: true the
//!   first time, false for a replay while the token lives.
//!
//! - A reclaimed grant stays reclaimed: [`KeyStore::put_grant`] refuses to
//!   change it, and [`KeyStore::reclaim_grant`] succeeds once per grant, for
//!   all nodes together, writing the member's key tombstone and the reclaim
//!   record in the same step.
//!
//! [`file::FileStore`] serves one node (embedded mode); it keeps used nonces
//! in memory only, so the service also refuses proofs made before it started.
//! [`redis::RedisStore`] serves several nodes on one Redis.

pub mod file;
pub mod redis;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::wire::{AuditRecord, Grant, OpeningWindow, ReclaimRecord};

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    Active,
    /// 挂失: refused until unfrozen.
    Frozen,
    /// 注销: the share is destroyed; final.
    Revoked,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::Frozen => "frozen",
            KeyState::Revoked => "revoked",
        }
    }
}

/// One enrolled key.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    pub key_id: String,
    pub label: String,
    /// The phone's `P1` (what PIN proofs are checked against), sealed under
    /// the master key: with a phone file, `P1` would test PIN guesses.
    pub sealed_p1: String,
    /// The joint public key, hex.
    pub public_key: String,
    /// `d2` sealed under the master key; `None` once revoked.
    pub sealed_share: Option<String>,
    pub state: KeyState,
    /// Unix seconds.
    pub created_at: i64,
}

/// A grant as the service stores it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GrantEntry {
    pub grant: Grant,
    /// Until the member accepts: its pending server share `d2·t⁻¹` and
    /// `P1' = t⁻¹·P1`, sealed under the master key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingShare>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PendingShare {
    pub sealed_share: String,
    pub sealed_p1: String,
}

impl GrantEntry {
    pub fn is_reclaimed(&self) -> bool {
        self.grant.status == "reclaimed"
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the key store is unreachable: {0}")]
    Unavailable(String),
    #[error("that key exists already")]
    Exists,
    #[error("a revoked key cannot change")]
    Revoked,
    #[error("the key store holds something unreadable: {0}")]
    Corrupt(String),
}

#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Inserts a new record; [`StoreError::Exists`] if its id is taken.
    async fn create(&self, record: &KeyRecord) -> Result<(), StoreError>;
    async fn get(&self, key_id: &str) -> Result<Option<KeyRecord>, StoreError>;
    /// Replaces an existing record, unless the stored one is revoked.
    async fn put(&self, record: &KeyRecord) -> Result<(), StoreError>;
    /// Counts one more PIN attempt in a row, before it is checked, and
    /// returns the count. It need survive a restart only once the attempt
    /// turned out wrong: [`KeyStore::keep_failures`].
    async fn add_failure(&self, key_id: &str) -> Result<u32, StoreError>;
    /// The attempts counted so far turned out wrong: from here on their count
    /// survives a restart (called before the phone is told, so no answer
    /// outlives its count).
    async fn keep_failures(&self, key_id: &str) -> Result<(), StoreError>;
    async fn failures(&self, key_id: &str) -> Result<u32, StoreError>;
    async fn reset_failures(&self, key_id: &str) -> Result<(), StoreError>;
    /// Marks `token` used for `ttl_s` seconds; false if it already was.
    async fn use_once(&self, token: &str, ttl_s: u64) -> Result<bool, StoreError>;
    async fn append_audit(&self, record: &AuditRecord) -> Result<(), StoreError>;
    /// The last `limit` records, oldest first.
    async fn audit(&self, limit: usize) -> Result<Vec<AuditRecord>, StoreError>;
    /// The sealed channel key: stores `candidate` unless one is stored, and
    /// returns the stored one (so every node of one store shares it).
    async fn channel_key(&self, candidate: &str) -> Result<String, StoreError>;
    async fn put_opening(&self, window: &OpeningWindow) -> Result<(), StoreError>;
    async fn opening(&self, envelope_sm3: &str) -> Result<Option<OpeningWindow>, StoreError>;
    /// Inserts a new grant; [`StoreError::Exists`] if its id is taken.
    async fn create_grant(&self, entry: &GrantEntry) -> Result<(), StoreError>;
    async fn get_grant(&self, grant_id: &str) -> Result<Option<GrantEntry>, StoreError>;
    /// Replaces a grant unless the stored one is reclaimed ([`StoreError::Revoked`]).
    async fn put_grant(&self, entry: &GrantEntry) -> Result<(), StoreError>;
    async fn grants(&self) -> Result<Vec<GrantEntry>, StoreError>;
    /// Atomically and once: unless the stored grant is reclaimed already (or,
    /// with `expected_end`, its end time has changed since the caller read
    /// it), stores `entry` (reclaimed), the member key's tombstone
    /// `member_key` (revoked, no share) and appends `record`. True if this
    /// call reclaimed the grant.
    async fn reclaim_grant(
        &self,
        entry: &GrantEntry,
        member_key: &KeyRecord,
        record: &ReclaimRecord,
        expected_end: Option<&str>,
    ) -> Result<bool, StoreError>;
    /// Every reclaim record, oldest first.
    async fn reclaims(&self) -> Result<Vec<ReclaimRecord>, StoreError>;
    /// True if used nonces do not survive a restart (the service then
    /// refuses proofs made before it started).
    fn forgets_nonces_on_restart(&self) -> bool;
}
