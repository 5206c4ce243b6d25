//! Abuse limits (governor): claim attempts per IP, session creation per app,
//! socket connects per IP, and simultaneous sockets per session.

use crate::config::LimitsConfig;
use crate::error::ApiError;
use bzt_core::SessionId;
use dashmap::DashMap;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

pub struct Limits {
    claims: DefaultKeyedRateLimiter<IpAddr>,
    creates: DefaultKeyedRateLimiter<String>,
    sockets: DefaultKeyedRateLimiter<IpAddr>,
    per_session: Arc<SocketSlots>,
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
        }
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
