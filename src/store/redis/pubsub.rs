//! Cross-node wake-ups: one subscriber connection per node, multiplexing
//! the channels of the records (sessions, conversations) that have local
//! receivers. This module knows channels only by name: any record whose
//! writes publish their `rev` on a channel can use it.
//!
//! - Every write publishes the record's new `rev` and the record itself
//!   (`<rev> <json>`), then the bare `rev` for older nodes, on the record's
//!   channel (from inside the compare-and-set script, so no write goes
//!   unannounced). The record is kept as this node's copy (`copies.rs`), so
//!   a woken receiver need not read it; channels are named `<record key>:ch`.
//! - [`Subscriptions::register`] gives a local `watch` receiver. The first
//!   one for a channel makes the subscriber task subscribe to it
//!   (`SSUBSCRIBE` on Redis ≥ 7, else `SUBSCRIBE`); the task unsubscribes
//!   once the last receiver is gone, noticed by a sweep every
//!   [`SWEEP_EVERY`]. Reference counting is `watch::Sender::receiver_count`,
//!   so a receiver needs no guard object and the store trait keeps returning
//!   a plain `watch::Receiver`. The short delay before unsubscribing is
//!   deliberate: a browser that reconnects within it reuses the
//!   subscription.
//! - Messages are delivered by a task of their own, so a result never
//!   waits behind subscribe round trips (which queue up under load).
//! - A subscribe that fails while Redis still answers (a timeout under
//!   load) is retried on its own after [`RETRY_EVERY`]; its receivers are
//!   woken once it succeeds.
//! - After a disconnection the task re-subscribes every wanted channel,
//!   then wakes every local receiver, because messages may have been
//!   published while it was away. Receivers re-read the record when woken,
//!   so a lost message never loses a state; at worst it costs a re-read.
//!   (Woken so, a receiver asks for the version it last saw, which its copy
//!   has: the copies of those records are forgotten first, so that the
//!   re-read is a real read.)
//! - A payload of `0` means the record was removed: local receivers are
//!   closed, as the memory stores close them.

use super::conn::{timed, Conn};
use super::copies::Copies;
use super::record_of_channel;
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
    /// The records' copies: announced records are kept there.
    copies: Arc<Copies>,
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
    pub(super) fn new(copies: Arc<Copies>) -> (Arc<Self>, mpsc::UnboundedReceiver<String>) {
        let (dirty, rx) = mpsc::unbounded_channel();
        let s = Self {
            locals: Mutex::new(HashMap::new()),
            dirty,
            copies,
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
        self.copies.forget(record_of_channel(channel));
        if self.locals().remove(channel).is_some() {
            let _ = self.dirty.send(channel.to_owned());
        }
    }

    /// Wakes the receivers of `channels` (after a gap in their messages),
    /// forgetting the records' copies first: the copies may miss a write.
    fn wake<'a>(&self, channels: impl Iterator<Item = &'a String>) {
        let locals = self.locals();
        for c in channels {
            if let Some(l) = locals.get(c) {
                self.wake_after_gap(c, l);
            }
        }
    }

    /// Wakes every receiver (after a gap in the message stream).
    fn wake_all(&self) {
        for (c, l) in self.locals().iter() {
            self.wake_after_gap(c, l);
        }
    }

    fn wake_after_gap(&self, channel: &str, local: &Local) {
        self.copies.forget(record_of_channel(channel));
        local.changes.send_modify(|_| {});
    }

    /// One message: `<rev> <json>` (a write, with the record), `<rev>` (a
    /// write, as older nodes announce it), or `0` (removed).
    fn deliver(&self, channel: &str, payload: &str) {
        let (rev, record) = match payload.split_once(' ') {
            Some((rev, json)) => (rev, Some(json)),
            None => (payload, None),
        };
        match (rev.parse::<u64>(), record) {
            (Ok(0), _) => self.forget(channel),
            (Ok(rev), Some(json)) => {
                self.copies.keep_json(record_of_channel(channel), rev, json);
                self.notify(channel, rev);
            }
            (Ok(rev), None) => self.notify(channel, rev),
            (Err(_), _) => {
                tracing::warn!(
                    channel,
                    payload = payload.get(..40).unwrap_or(payload),
                    "unexpected message on a record channel"
                )
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

/// The task that owns the subscriber connection's subscriptions. Messages
/// themselves are delivered by a task of their own ([`deliver_pushes`]):
/// under load the subscribe and unsubscribe round trips queue up, and a
/// result must not wait behind them.
pub(super) struct Subscriber {
    pub(super) subs: Arc<Subscriptions>,
    pub(super) conn: Conn,
    /// `SSUBSCRIBE` (Redis ≥ 7, and required for a Cluster to scale) or
    /// plain `SUBSCRIBE`.
    pub(super) sharded: bool,
    pub(super) timeout: Duration,
    /// Channels Redis has confirmed on the current connection.
    pub(super) subscribed: HashSet<String>,
    /// Channels whose subscribe failed while Redis still answered (a
    /// timeout under load): tried again every [`RETRY_EVERY`].
    pub(super) retry: Vec<String>,
}

/// Delivers messages to local receivers as they arrive; reports a
/// disconnection (the gap the subscriber must repair) on `gaps`.
async fn deliver_pushes(
    subs: Arc<Subscriptions>,
    mut pushes: mpsc::UnboundedReceiver<PushInfo>,
    gaps: mpsc::UnboundedSender<()>,
) {
    while let Some(push) = pushes.recv().await {
        match push.kind {
            PushKind::Message | PushKind::SMessage => {
                if let Some(msg) = Msg::from_push_info(push) {
                    let payload: String = msg.get_payload().unwrap_or_default();
                    subs.deliver(msg.get_channel_name(), &payload);
                }
            }
            PushKind::Disconnection => {
                tracing::warn!("redis subscriber connection lost; re-subscribing");
                if gaps.send(()).is_err() {
                    return;
                }
            }
            _ => {}
        }
    }
}

impl Subscriber {
    pub(super) async fn run(
        mut self,
        pushes: mpsc::UnboundedReceiver<PushInfo>,
        mut dirty: mpsc::UnboundedReceiver<String>,
    ) {
        let (gap_tx, mut gaps) = mpsc::unbounded_channel();
        let delivery = tokio::spawn(deliver_pushes(self.subs.clone(), pushes, gap_tx));
        let _delivery = super::AbortOnDrop(delivery);
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut retry = tokio::time::interval(RETRY_EVERY);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let healthy = tokio::select! {
                gap = gaps.recv() => match gap {
                    Some(()) => false,
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
                _ = retry.tick(), if !self.retry.is_empty() => {
                    let again = std::mem::take(&mut self.retry);
                    let healthy = self.reconcile(again.clone()).await;
                    // Messages published while these were unsubscribed are
                    // lost: their receivers re-read the record.
                    self.subs.wake(again.iter().filter(|c| self.subscribed.contains(*c)));
                    healthy
                }
            };
            if !healthy {
                self.resync().await;
            }
        }
    }

    /// Brings Redis's subscriptions for `channels` in line with the local
    /// receivers. A channel whose subscribe fails is retried later; `false`
    /// only if Redis stopped answering (the connection needs a resync).
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
        let mut failed = false;
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
                    tracing::warn!(channel = %id, error = %e, "redis subscribe failed; retrying");
                    self.retry.push(id);
                    failed = true;
                }
            }
        }
        for (id, result) in self.run_all(unsub, to_unsubscribe).await {
            // An unsubscribe that failed only leaves messages nobody wants.
            self.subscribed.remove(&id);
            failed |= result.is_err();
        }
        !failed || self.answers().await
    }

    /// Whether Redis answers a `PING` on the subscriber connection.
    async fn answers(&self) -> bool {
        let mut conn = self.conn.clone();
        timed(
            self.timeout,
            "PING",
            redis::cmd("PING").exec_async(&mut conn),
        )
        .await
        .is_ok()
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
        self.retry.clear();
        loop {
            if self.answers().await && self.reconcile(self.subs.all()).await {
                break;
            }
            self.subscribed.clear();
            self.retry.clear();
            tokio::time::sleep(RETRY_EVERY).await;
        }
        tracing::info!(
            channels = self.subscribed.len(),
            retrying = self.retry.len(),
            "redis subscriptions restored"
        );
        self.subs.wake_all();
    }
}
