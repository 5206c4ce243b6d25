//! Failed claims per QR code (session id), counted where every node that
//! can answer a claim of it sees them: in this process
//! ([`LocalFailedClaims`], one node), or in Redis
//! ([`super::redis::RedisFailedClaims`], every node on that Redis). The
//! HTTP layer asks [`FailedClaims::locked_for`] before every claim and
//! reports failures with [`FailedClaims::count_failure`]; it never knows
//! which one it has.

use async_trait::async_trait;
use bzt_core::SessionId;
use dashmap::DashMap;
use std::time::{Duration, Instant};

/// A budget of failed claims per session id in a fixed window.
#[async_trait]
pub trait FailedClaims: Send + Sync {
    /// How long claims of `id` are still refused; `None` while its budget
    /// lasts. Answered from this process only, with no I/O: every claim
    /// asks, and a correct claim must cost nothing more than it did.
    fn locked_for(&self, id: &SessionId) -> Option<Duration>;
    /// Counts one failed claim of `id` (only failures pay for the count).
    async fn count_failure(&self, id: &SessionId);
    /// Forgets ids whose window is over (called periodically).
    fn forget_expired(&self);
}

/// The in-process budget (memory mode).
pub struct LocalFailedClaims(FailureBudget);

impl LocalFailedClaims {
    pub fn new(max: u32, window: Duration) -> Self {
        Self(FailureBudget::new(max, window))
    }
}

#[async_trait]
impl FailedClaims for LocalFailedClaims {
    fn locked_for(&self, id: &SessionId) -> Option<Duration> {
        self.0.check(id, Instant::now()).err()
    }

    async fn count_failure(&self, id: &SessionId) {
        self.0.spend(id, Instant::now());
    }

    fn forget_expired(&self) {
        self.0.forget_before(Instant::now());
    }
}

/// At most `max` failures per key in a fixed window. Written by hand because
/// only failures may spend the budget while every attempt must be checked
/// against it, and governor cannot check a key without spending a cell.
pub(crate) struct FailureBudget {
    max: u32,
    window: Duration,
    /// Per key: when its window started and the failures in it.
    spent: DashMap<SessionId, (Instant, u32)>,
}

impl FailureBudget {
    pub(crate) fn new(max: u32, window: Duration) -> Self {
        Self {
            max: max.max(1),
            window,
            spent: DashMap::new(),
        }
    }

    /// `Err(wait)` while the key's budget is used up.
    pub(crate) fn check(&self, key: &SessionId, now: Instant) -> Result<(), Duration> {
        match self.spent.get(key) {
            Some(entry) => {
                let (started, count) = *entry;
                let ends = started + self.window;
                if count >= self.max && now < ends {
                    Err(ends - now)
                } else {
                    Ok(())
                }
            }
            None => Ok(()),
        }
    }

    pub(crate) fn spend(&self, key: &SessionId, now: Instant) {
        let mut entry = self.spent.entry(key.clone()).or_insert((now, 0));
        if now >= entry.0 + self.window {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }

    /// Drops keys whose window is over (the map holds one entry per guessed id).
    pub(crate) fn forget_before(&self, now: Instant) {
        self.spent
            .retain(|_, (started, _)| now < *started + self.window);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_budget_refuses_past_its_max_until_the_window_ends() {
        let budget = FailureBudget::new(3, Duration::from_secs(60));
        let id = SessionId::generate();
        let other = SessionId::generate();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(budget.check(&id, t0).is_ok());
            budget.spend(&id, t0);
        }
        let wait = budget.check(&id, t0 + Duration::from_secs(20)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(40));
        assert!(
            budget.check(&other, t0).is_ok(),
            "another id has its own budget"
        );
        assert!(budget.check(&id, t0 + Duration::from_secs(60)).is_ok());
        budget.forget_before(t0 + Duration::from_secs(60));
        assert!(budget.spent.is_empty());
    }
}
