//! Cross-node wake-ups: one subscriber connection per node, multiplexing
//! the channels of the records (sessions, conversations) that have local
//! receivers. This module knows channels only by name: any record whose
//! writes publish their `rev` on a channel can use it.
//!
//! - Every write publishes the record's new `rev` on the record's channel
//!   (from inside the compare-and-set script, so no write goes unannounced).
//! - [`Subscriptions::register`] gives a local `watch` receiver. The first
//!   one for a channel makes the subscriber task subscribe to it
//!   (`SSUBSCRIBE` on Redis ≥ 7, else `SUBSCRIBE`); the task unsubscribes
//!   once the last receiver is gone, noticed by a sweep every
//!   [`SWEEP_EVERY`]. Reference counting is `watch::Sender::receiver_count`,
//!   so a receiver needs no guard object and the store trait keeps returning
//!   a plain `watch::Receiver`. The short delay before unsubscribing is
//!   deliberate: a browser that reconnects within it reuses the
//!   subscription.
//! - After a disconnection the task re-subscribes every wanted channel,
//!   then wakes every local receiver, because messages may have been
//!   published while it was away. Receivers re-read the record when woken,
//!   so a lost message never loses a state; at worst it costs a re-read.
//! - A payload of `0` means the record was removed: local receivers are
//!   closed, as the memory stores close them.

use super::conn::{timed, Conn};
use futures_util::stream::{self, StreamExt};
use redis::{Msg, PushInfo, PushKind};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How often channels without local receivers are unsubscribed.
pub(super) const SWEEP_EVERY: Duration = Duration::from_secs(2);
/// Subscribe commands in flight at once.
const CONCURRENCY: usize = 64;
/// Pause between attempts to reach Redis again after a disconnection.
const RETRY_EVERY: Duration = Duration::from_millis(200);

/// This node's local receivers, shared by the store and the subscriber task.
pub(super) struct Subscriptions {
    /// By channel name. A std mutex: held for map operations only, never
    /// across an `.await`.
    locals: Mutex<HashMap<String, Local>>,
    /// Channels whose wanted subscription may have changed, for the task.
    dirty: mpsc::UnboundedSender<String>,
}

struct Local {
    /// Wakes this node's receivers; holds the highest `rev` seen.
    changes: watch::Sender<u64>,
    /// Whether Redis confirmed the subscription since the last
    /// (re)connection; `subscribe` waits for it so that no write made
    /// after it returns can go unseen.
    active: watch::Sender<bool>,
}

impl Subscriptions {
    pub(super) fn new() -> (Arc<Self>, mpsc::UnboundedReceiver<String>) {
        let (dirty, rx) = mpsc::unbounded_channel();
        let s = Self {
            locals: Mutex::new(HashMap::new()),
            dirty,
        };
        (Arc::new(s), rx)
    }

    fn locals(&self) -> MutexGuard<'_, HashMap<String, Local>> {
        self.locals.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A receiver for the changes announced on `channel`, and one that
    /// turns `true` once the channel subscription is confirmed.
    pub(super) fn register(&self, channel: &str) -> (watch::Receiver<u64>, watch::Receiver<bool>) {
        let mut locals = self.locals();
        if let Some(l) = locals.get(channel) {
            return (l.changes.subscribe(), l.active.subscribe());
        }
        let (changes, rx) = watch::channel(0);
        let (active, active_rx) = watch::channel(false);
        locals.insert(channel.to_owned(), Local { changes, active });
        drop(locals);
        let _ = self.dirty.send(channel.to_owned());
        (rx, active_rx)
    }

    /// Wakes `channel`'s receivers if `rev` is newer than what they saw.
    pub(super) fn notify(&self, channel: &str, rev: u64) {
        if let Some(l) = self.locals().get(channel) {
            l.changes.send_if_modified(|seen| {
                let newer = rev > *seen;
                if newer {
                    *seen = rev;
                }
                newer
            });
        }
    }

    /// The record is gone: close its receivers.
    pub(super) fn forget(&self, channel: &str) {
        if self.locals().remove(channel).is_some() {
            let _ = self.dirty.send(channel.to_owned());
        }
    }

    /// Wakes every receiver (after a gap in the message stream).
    fn wake_all(&self) {
        for l in self.locals().values() {
            l.changes.send_modify(|_| {});
        }
    }

    fn deliver(&self, channel: &str, payload: &str) {
        match payload.parse::<u64>() {
            Ok(0) => self.forget(channel),
            Ok(rev) => self.notify(channel, rev),
            Err(_) => {
                tracing::warn!(channel, payload, "unexpected message on a record channel")
            }
        }
    }

    fn wanted(&self, channel: &str) -> bool {
        self.locals().contains_key(channel)
    }

    fn set_active(&self, channel: &str, active: bool) {
        if let Some(l) = self.locals().get(channel) {
            l.active
                .send_if_modified(|a| std::mem::replace(a, active) != active);
        }
    }

    /// Drops the channels nobody listens to any more; returns them.
    fn sweep(&self) -> Vec<String> {
        let mut gone = Vec::new();
        self.locals().retain(|id, l| {
            let keep = l.changes.receiver_count() > 0;
            if !keep {
                gone.push(id.clone());
            }
            keep
        });
        gone
    }

    fn all(&self) -> Vec<String> {
        self.locals().keys().cloned().collect()
    }

    fn deactivate_all(&self) {
        for l in self.locals().values() {
            l.active.send_replace(false);
        }
    }

    /// How many channels have local receivers (tests, metrics).
    pub(super) fn len(&self) -> usize {
        self.locals().len()
    }
}

/// The task that owns the subscriber connection.
pub(super) struct Subscriber {
    pub(super) subs: Arc<Subscriptions>,
    pub(super) conn: Conn,
    /// `SSUBSCRIBE` (Redis ≥ 7, and required for a Cluster to scale) or
    /// plain `SUBSCRIBE`.
    pub(super) sharded: bool,
    pub(super) timeout: Duration,
    /// Channels Redis has confirmed on the current connection.
    pub(super) subscribed: HashSet<String>,
}

impl Subscriber {
    pub(super) async fn run(
        mut self,
        mut pushes: mpsc::UnboundedReceiver<PushInfo>,
        mut dirty: mpsc::UnboundedReceiver<String>,
    ) {
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let healthy = tokio::select! {
                push = pushes.recv() => match push {
                    Some(p) => self.on_push(p),
                    None => return,
                },
                id = dirty.recv() => match id {
                    Some(id) => {
                        let mut batch = vec![id];
                        while let Ok(more) = dirty.try_recv() {
                            batch.push(more);
                        }
                        self.reconcile(batch).await
                    }
                    None => return,
                },
                _ = sweep.tick() => {
                    let gone = self.subs.sweep();
                    self.reconcile(gone).await
                }
            };
            if !healthy {
                self.resync().await;
            }
        }
    }

    /// Handles one push; `false` when the connection dropped.
    fn on_push(&self, push: PushInfo) -> bool {
        match push.kind {
            PushKind::Message | PushKind::SMessage => {
                if let Some(msg) = Msg::from_push_info(push) {
                    let payload: String = msg.get_payload().unwrap_or_default();
                    self.subs.deliver(msg.get_channel_name(), &payload);
                }
                true
            }
            PushKind::Disconnection => {
                tracing::warn!("redis subscriber connection lost; re-subscribing");
                false
            }
            _ => true,
        }
    }

    /// Brings Redis's subscriptions for `channels` in line with the local
    /// receivers; `false` if Redis could not be reached.
    async fn reconcile(&mut self, channels: Vec<String>) -> bool {
        let mut to_subscribe = Vec::new();
        let mut to_unsubscribe = Vec::new();
        for id in channels {
            match (self.subs.wanted(&id), self.subscribed.contains(&id)) {
                (true, true) => self.subs.set_active(&id, true),
                (true, false) => to_subscribe.push(id),
                (false, true) => to_unsubscribe.push(id),
                (false, false) => {}
            }
        }
        to_subscribe.sort();
        to_subscribe.dedup();
        to_unsubscribe.sort();
        to_unsubscribe.dedup();
        let mut ok = true;
        let (sub, unsub) = if self.sharded {
            ("SSUBSCRIBE", "SUNSUBSCRIBE")
        } else {
            ("SUBSCRIBE", "UNSUBSCRIBE")
        };
        for (id, result) in self.run_all(sub, to_subscribe).await {
            match result {
                Ok(()) => {
                    self.subscribed.insert(id.clone());
                    self.subs.set_active(&id, true);
                }
                Err(e) => {
                    tracing::warn!(channel = %id, error = %e, "redis subscribe failed");
                    ok = false;
                }
            }
        }
        for (id, result) in self.run_all(unsub, to_unsubscribe).await {
            self.subscribed.remove(&id);
            if result.is_err() {
                ok = false;
            }
        }
        ok
    }

    async fn run_all(
        &self,
        command: &'static str,
        channels: Vec<String>,
    ) -> Vec<(String, Result<(), crate::store::StoreError>)> {
        stream::iter(channels)
            .map(|id| {
                let mut conn = self.conn.clone();
                let limit = self.timeout;
                async move {
                    let mut cmd = redis::cmd(command);
                    cmd.arg(&id);
                    let r = timed(limit, command, cmd.exec_async(&mut conn)).await;
                    (id, r)
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await
    }

    /// After a disconnection: wait for Redis, re-subscribe everything
    /// wanted, then wake every receiver so it re-reads its record.
    async fn resync(&mut self) {
        self.subs.deactivate_all();
        self.subscribed.clear();
        loop {
            let mut conn = self.conn.clone();
            let ping = timed(
                self.timeout,
                "PING",
                redis::cmd("PING").exec_async(&mut conn),
            )
            .await;
            if ping.is_ok() && self.reconcile(self.subs.all()).await {
                break;
            }
            self.subscribed.clear();
            tokio::time::sleep(RETRY_EVERY).await;
        }
        tracing::info!(
            channels = self.subscribed.len(),
            "redis subscriptions restored"
        );
        self.subs.wake_all();
    }
}
