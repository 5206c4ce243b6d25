//! Abuse limits (governor): claim attempts per IP, session creation per app,
//! socket connects per IP, and simultaneous sockets per session; failed
//! claims per session id (a fixed window, counted by a
//! [`FailedClaims`]: in this process, or in Redis for every node).

use crate::config::LimitsConfig;
use crate::error::ApiError;
use crate::store::claim_failures::{FailedClaims, LocalFailedClaims};
use bzt_core::SessionId;
use dashmap::DashMap;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

pub struct Limits {
    claims: DefaultKeyedRateLimiter<IpAddr>,
    creates: DefaultKeyedRateLimiter<String>,
    sockets: DefaultKeyedRateLimiter<IpAddr>,
    per_session: Arc<SocketSlots>,
    failed_claims: Arc<dyn FailedClaims>,
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
    /// The limits with failed claims counted in this process (one node).
    pub fn new(cfg: &LimitsConfig) -> Self {
        Self::with_failed_claims(
            cfg,
            Arc::new(LocalFailedClaims::new(
                cfg.failed_claims_per_session_per_minute,
                FAILURE_WINDOW,
            )),
        )
    }

    /// The limits with failed claims counted by `failed_claims` (shared by
    /// every node in Redis mode).
    pub fn with_failed_claims(cfg: &LimitsConfig, failed_claims: Arc<dyn FailedClaims>) -> Self {
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
            failed_claims,
        }
    }

    /// Refuses a claim of a session id whose failed claims used up its
    /// budget (checked before the secret, so guessing stops there).
    pub fn claim_of(&self, id: &SessionId) -> Result<(), ApiError> {
        match self.failed_claims.locked_for(id) {
            None => Ok(()),
            Some(wait) => Err({
                ApiError::new(
                bzt_core::ErrorCode::RateLimited,
                "too many failed claims of this QR code; wait, or reload the page for a new code",
            )
            .with_retry_after(wait.as_secs().max(1))
            }),
        }
    }

    /// Counts a failed claim (wrong secret or unknown session) against its id.
    pub async fn claim_failed(&self, id: &SessionId) {
        self.failed_claims.count_failure(id).await;
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
        self.failed_claims.forget_expired();
    }
}

/// The window of the failed-claims budget.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

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
