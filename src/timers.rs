//! The timer queue behind expiry, QR rotation and purging.
//!
//! One ordered set of `(deadline, timer)` and one task that sleeps until the
//! earliest deadline, so expiring a million sessions costs a million wake-ups
//! in total, not a scan of every session on every tick. Scheduling an earlier
//! deadline wakes the task so it can sleep less.
//!
//! The queue is local to a node. That is enough for correctness: every
//! session op expires a due session first (see `Session::apply`), and an
//! expiry applied twice (two nodes, or a timer and a late claim) changes the
//! session once. An `Expire` timer does not expire its session directly: it
//! sweeps what the store says is due (see `Broker::sweep_expiries`), so with
//! a shared store each session is expired by one node, and sessions whose
//! creating node died are swept by the others' periodic polls.

use crate::clock::Clock;
use bzt_core::secret::ConversationId;
use bzt_core::{SessionId, Timestamp};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// What to do when a deadline passes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timer {
    Expire(SessionId),
    Rotate(SessionId),
    Purge(SessionId),
    /// A conversation's next deadline (request TTL, idle, max lifetime).
    Conversation(ConversationId),
    PurgeConversation(ConversationId),
}

#[derive(Default)]
pub struct TimerQueue {
    // A std mutex: held only for a BTreeSet insert or pop, never across an await.
    queue: Mutex<BTreeSet<(Timestamp, Timer)>>,
    wake: Notify,
}

impl TimerQueue {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn schedule(&self, at: Timestamp, timer: Timer) {
        let earliest = {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            let earlier = q.first().is_none_or(|(t, _)| at < *t);
            q.insert((at, timer));
            earlier
        };
        if earliest {
            self.wake.notify_one();
        }
    }

    pub fn len(&self) -> usize {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn next_deadline(&self) -> Option<Timestamp> {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .first()
            .map(|(t, _)| *t)
    }

    fn pop_due(&self, now: Timestamp, max: usize) -> Vec<Timer> {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let mut due = Vec::new();
        while due.len() < max {
            match q.first() {
                Some((t, _)) if *t <= now => {
                    if let Some((_, timer)) = q.pop_first() {
                        due.push(timer);
                    }
                }
                _ => break,
            }
        }
        due
    }

    /// Runs forever: waits for due timers and hands them to `fire`, in
    /// deadline order, in batches.
    pub async fn run<F, Fut>(self: Arc<Self>, clock: Arc<dyn Clock>, mut fire: F)
    where
        F: FnMut(Timer) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        loop {
            let due = self.pop_due(clock.now(), 1024);
            if !due.is_empty() {
                for timer in due {
                    fire(timer).await;
                }
                continue;
            }
            // Register for a wake-up before reading the deadline, so a
            // schedule() between the two is not missed.
            let notified = self.wake.notified();
            match self.next_deadline() {
                Some(at) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = clock.sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::time::Duration;

    #[tokio::test]
    async fn fires_in_deadline_order_when_the_clock_passes() {
        let clock = ManualClock::new(Timestamp::from_unix_millis(0));
        let q = TimerQueue::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let id = |s: &str| SessionId::parse(s).unwrap();
        q.schedule(Timestamp::from_unix_millis(2_000), Timer::Expire(id("b")));
        q.schedule(Timestamp::from_unix_millis(1_000), Timer::Expire(id("a")));
        tokio::spawn(q.clone().run(Arc::new(clock.clone()), move |t| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(t);
            }
        }));
        tokio::task::yield_now().await;
        assert!(rx.try_recv().is_err(), "nothing is due yet");
        clock.advance(Duration::from_millis(2_500));
        let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap();
        let second = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap();
        assert_eq!(first, Some(Timer::Expire(id("a"))));
        assert_eq!(second, Some(Timer::Expire(id("b"))));
        // A timer scheduled later for an earlier deadline wakes the loop.
        q.schedule(Timestamp::from_unix_millis(2_600), Timer::Purge(id("c")));
        clock.advance(Duration::from_millis(200));
        let third = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap();
        assert_eq!(third, Some(Timer::Purge(id("c"))));
        assert!(q.is_empty());
    }
}
