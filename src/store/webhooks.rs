//! Pending webhook deliveries that outlive the node that queued them.
//!
//! In Redis mode every delivery is queued in Redis before its first attempt
//! and stays there until it is delivered or given up, so a node that dies
//! (or restarts) between attempts loses nothing: any node picks the
//! delivery up when its next attempt is due. The contract:
//! - `put` stores (or replaces) a delivery, due at `at`.
//! - `claim_due` hands out deliveries due at or before `now`, each leased
//!   to its claimer until `lease_until`: no other caller, on any node, gets
//!   it meanwhile. The claimer attempts it, then `put`s it back with its
//!   next due time, or calls `done`. A claimer that dies mid-attempt loses
//!   nothing: the lease runs out and another node attempts it again (so a
//!   delivery the receiver accepted just before the node died may arrive
//!   twice; receivers deduplicate by session id and status).
//! - `done` forgets a delivery.
//!
//! Without a shared store (memory mode) there is no queue: the node's own
//! task retries, and a node that stops loses its pending retries.

use super::StoreError;
use async_trait::async_trait;
use bzt_core::Timestamp;
use serde::{Deserialize, Serialize};

/// One webhook event and how far its delivery got. The app's secret is not
/// in it: whoever attempts it signs with the secret of its own configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingDelivery {
    /// Unique per event: `<session id>.<status>`.
    pub id: String,
    pub app_id: String,
    pub url: String,
    /// The session view, as JSON text.
    pub body: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// The delay before the attempt after the next failure, in ms.
    pub backoff_ms: u64,
}

#[async_trait]
pub trait WebhookQueue: Send + Sync + 'static {
    async fn put(&self, delivery: &PendingDelivery, at: Timestamp) -> Result<(), StoreError>;
    async fn claim_due(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        max: usize,
    ) -> Result<Vec<PendingDelivery>, StoreError>;
    async fn done(&self, id: &str) -> Result<(), StoreError>;
}
