//! Injectable time.
//!
//! Everything in the broker that depends on the time of day asks a [`Clock`]:
//! session expiry, QR rotation, certificate validity. Production uses
//! [`SystemClock`]; tests use [`ManualClock`] and move time forward in one
//! call, so a three-minute expiry test takes milliseconds and never sleeps.

use bzt_core::Timestamp;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

pub type SleepFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
    /// Resolves once `now() >= deadline`.
    fn sleep_until(&self, deadline: Timestamp) -> SleepFuture;
}

/// The operating system's wall clock, with tokio timers.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now_utc()
    }

    fn sleep_until(&self, deadline: Timestamp) -> SleepFuture {
        let ms = self.now().millis_until(deadline).max(0) as u64;
        Box::pin(tokio::time::sleep(std::time::Duration::from_millis(ms)))
    }
}

/// A clock that moves only when told to. Sleepers wake when `advance` or
/// `set` passes their deadline.
#[derive(Clone)]
pub struct ManualClock {
    now: Arc<AtomicI64>,
    tick: watch::Sender<i64>,
}

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        let (tick, _) = watch::channel(start.unix_millis());
        Self {
            now: Arc::new(AtomicI64::new(start.unix_millis())),
            tick,
        }
    }

    /// Starts at the current system time (certificates made "now" are valid).
    pub fn starting_now() -> Self {
        Self::new(Timestamp::now_utc())
    }

    pub fn advance(&self, by: std::time::Duration) {
        let ms = by.as_millis() as i64;
        let now = self.now.fetch_add(ms, Ordering::SeqCst) + ms;
        self.tick.send_replace(now);
    }

    pub fn set(&self, to: Timestamp) {
        self.now.store(to.unix_millis(), Ordering::SeqCst);
        self.tick.send_replace(to.unix_millis());
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_unix_millis(self.now.load(Ordering::SeqCst))
    }

    fn sleep_until(&self, deadline: Timestamp) -> SleepFuture {
        let mut rx = self.tick.subscribe();
        Box::pin(async move {
            // `wait_for` checks the current value first, then every change.
            let _ = rx.wait_for(|now| *now >= deadline.unix_millis()).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn manual_sleepers_wake_on_advance() {
        let clock = ManualClock::new(Timestamp::from_unix_millis(1_000));
        let sleeper = tokio::spawn(clock.sleep_until(Timestamp::from_unix_millis(5_000)));
        clock.advance(Duration::from_secs(1));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(Duration::from_secs(3));
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .expect("sleeper should wake")
            .unwrap();
    }
}
