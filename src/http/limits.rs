//! Abuse limits (governor): claim attempts per IP, session creation per app,
//! socket connects per IP, and simultaneous sockets per session; failed
//! claims per session id (a small fixed window, see [`FailureBudget`]).

use crate::config::LimitsConfig;
use crate::error::ApiError;
use bzt_core::SessionId;
use dashmap::DashMap;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Limits {
    claims: DefaultKeyedRateLimiter<IpAddr>,
    creates: DefaultKeyedRateLimiter<String>,
    sockets: DefaultKeyedRateLimiter<IpAddr>,
    per_session: Arc<SocketSlots>,
    failed_claims: FailureBudget,
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN)
}

fn check<K: std::hash::Hash + Eq + Clone>(
    limiter: &DefaultKeyedRateLimiter<K>,
    key: &K,
) -> Result<(), ApiError> {
    limiter.check_key(key).map_err(|not_until| {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        ApiError::rate_limited(wait.as_secs().max(1))
    })
}

impl Limits {
    pub fn new(cfg: &LimitsConfig) -> Self {
        Self {
            claims: governor::RateLimiter::keyed(Quota::per_minute(nz(
                cfg.claims_per_ip_per_minute
            ))),
            creates: governor::RateLimiter::keyed(Quota::per_second(nz(
                cfg.creates_per_app_per_second
            ))),
            sockets: governor::RateLimiter::keyed(Quota::per_minute(nz(
                cfg.sockets_per_ip_per_minute
            ))),
            per_session: Arc::new(SocketSlots {
                max: cfg.sockets_per_session,
                open: DashMap::new(),
            }),
            failed_claims: FailureBudget::new(
                cfg.failed_claims_per_session_per_minute,
                FAILURE_WINDOW,
            ),
        }
    }

    /// Refuses a claim of a session id whose failed claims used up its
    /// budget (checked before the secret, so guessing stops there).
    pub fn claim_of(&self, id: &SessionId) -> Result<(), ApiError> {
        self.failed_claims
            .check(id, Instant::now())
            .map_err(|wait| {
                ApiError::new(
                bzt_core::ErrorCode::RateLimited,
                "too many failed claims of this QR code; wait, or reload the page for a new code",
            )
            .with_retry_after(wait.as_secs().max(1))
            })
    }

    /// Counts a failed claim (wrong secret or unknown session) against its id.
    pub fn claim_failed(&self, id: &SessionId) {
        self.failed_claims.spend(id, Instant::now());
    }

    pub fn claim(&self, ip: IpAddr) -> Result<(), ApiError> {
        check(&self.claims, &ip)
    }

    pub fn create(&self, app_id: &str) -> Result<(), ApiError> {
        check(&self.creates, &app_id.to_owned())
    }

    pub fn socket_connect(&self, ip: IpAddr) -> Result<(), ApiError> {
        check(&self.sockets, &ip)
    }

    /// Reserves one of the session's socket slots until the guard drops.
    pub fn socket_slot(&self, id: &SessionId) -> Result<SocketSlot, ApiError> {
        self.per_session.acquire(id)
    }

    /// Forgets idle keys so the maps do not grow without bound (called periodically).
    pub fn shrink(&self) {
        self.claims.retain_recent();
        self.creates.retain_recent();
        self.sockets.retain_recent();
        self.claims.shrink_to_fit();
        self.sockets.shrink_to_fit();
        self.failed_claims.forget_before(Instant::now());
    }
}

/// The window of [`FailureBudget`] for claims.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// At most `max` failures per key in a fixed window. Written by hand because
/// only failures may spend the budget while every attempt must be checked
/// against it, and governor cannot check a key without spending a cell.
struct FailureBudget {
    max: u32,
    window: Duration,
    /// Per key: when its window started and the failures in it.
    spent: DashMap<SessionId, (Instant, u32)>,
}

impl FailureBudget {
    fn new(max: u32, window: Duration) -> Self {
        Self {
            max: max.max(1),
            window,
            spent: DashMap::new(),
        }
    }

    /// `Err(wait)` while the key's budget is used up.
    fn check(&self, key: &SessionId, now: Instant) -> Result<(), Duration> {
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

    fn spend(&self, key: &SessionId, now: Instant) {
        let mut entry = self.spent.entry(key.clone()).or_insert((now, 0));
        if now >= entry.0 + self.window {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }

    /// Drops keys whose window is over (the map holds one entry per guessed id).
    fn forget_before(&self, now: Instant) {
        self.spent
            .retain(|_, (started, _)| now < *started + self.window);
    }
}

pub struct SocketSlots {
    max: usize,
    open: DashMap<SessionId, usize>,
}

impl SocketSlots {
    fn acquire(self: &Arc<Self>, id: &SessionId) -> Result<SocketSlot, ApiError> {
        let mut n = self.open.entry(id.clone()).or_insert(0);
        if *n >= self.max {
            return Err(ApiError::new(
                bzt_core::ErrorCode::RateLimited,
                format!(
                    "this session already has {} open sockets; close one first",
                    self.max
                ),
            )
            .with_retry_after(5));
        }
        *n += 1;
        Ok(SocketSlot {
            slots: self.clone(),
            id: id.clone(),
        })
    }
}

/// An open socket's claim on its session's slot; released on drop.
pub struct SocketSlot {
    slots: Arc<SocketSlots>,
    id: SessionId,
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        self.slots.open.remove_if_mut(&self.id, |_, n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
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
