//! Failed claims per QR code counted in Redis, so that N nodes behind a
//! load balancer give an attacker the budget of one, not N.
//!
//! - A failure is one script call: `INCRBY` the counter
//!   `<session key>:claim-failures` (the session's hash tag, so its slot on
//!   a Cluster), start its window with `PEXPIRE` if it is new, and answer
//!   the count and the window's remaining time. `INCRBY` rather than
//!   `INCR` because nothing else in the broker sends it: a test counts it.
//! - A correct claim costs no Redis call: a node answers "locked?" from
//!   its own memory. It learns of a lock from its own failure count, and
//!   from every other node: the failure that uses up a budget (and any past
//!   it) publishes `<id> <remaining ms>` on `<prefix>:claim-locks`, which
//!   every node subscribes to on a connection of its own.
//! - A node that was disconnected from Redis when a lock was published
//!   learns of it at its next failure of that id, which is counted and
//!   refused; so the budget of one id across N nodes is at most
//!   `max + N - 1` even then (`max` while they stay connected).
//! - A failure Redis cannot count (Redis down) is counted in this process
//!   instead, so an outage never lifts the limit on a node.

use super::conn::{connect, timed, Conn};
use super::{AbortOnDrop, Keys, RedisSettings, RedisStore};
use crate::store::claim_failures::{FailedClaims, FailureBudget};
use async_trait::async_trait;
use bzt_core::{Session, SessionId};
use dashmap::DashMap;
use redis::{Msg, PushInfo, PushKind, Script};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// KEYS: counter. ARGV: window ms, max, lock channel, session id.
/// Answers `{count, remaining ms}`.
static COUNT_FAILURE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = redis.call('INCRBY', KEYS[1], 1)
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
if n >= tonumber(ARGV[2]) then
  redis.call('PUBLISH', ARGV[3], ARGV[4] .. ' ' .. ttl)
end
return {n, ttl}",
    )
});

/// Pause before subscribing again after the subscriber connection failed.
const RESUBSCRIBE_EVERY: Duration = Duration::from_millis(500);

/// The failed-claims budget shared by every node on one Redis.
pub struct RedisFailedClaims {
    conn: Conn,
    keys: Keys,
    channel: String,
    max: u32,
    window: Duration,
    timeout: Duration,
    /// Ids known to be locked, and until when (this node's and others').
    locked: Arc<DashMap<SessionId, Instant>>,
    /// Failures Redis could not count.
    fallback: FailureBudget,
    _listener: AbortOnDrop,
}

impl RedisStore {
    /// The failed-claims budget on this store's Redis: counts go over the
    /// store's command connection (kept fresh by its pollers, so the first
    /// failure after a Redis restart does not meet a dead socket); lock
    /// messages arrive on a subscriber connection of their own, opened
    /// with `settings` (the store's).
    pub async fn failed_claims(
        &self,
        settings: &RedisSettings,
        max: u32,
        window: Duration,
    ) -> anyhow::Result<RedisFailedClaims> {
        use anyhow::Context;
        let what = || format!("cannot connect to Redis at {}", settings.urls.join(","));
        let (push_tx, pushes) = mpsc::unbounded_channel();
        let sub_conn = tokio::time::timeout(settings.timeout * 4, connect(settings, Some(push_tx)))
            .await
            .map_err(|_| anyhow::anyhow!("no answer"))
            .with_context(what)?
            .with_context(|| format!("{} (claim-lock subscriber)", what()))?;
        let channel = format!("{}:claim-locks", settings.key_prefix);
        let locked = Arc::new(DashMap::new());
        // Subscribed before the node serves: no lock published from now on
        // is missed while connected.
        subscribe(&sub_conn, &channel, settings.timeout)
            .await
            .with_context(|| format!("cannot subscribe to {channel}"))?;
        let listener = tokio::spawn(listen(
            sub_conn,
            channel.clone(),
            settings.timeout,
            pushes,
            locked.clone(),
        ));
        Ok(RedisFailedClaims {
            conn: self.conn.clone(),
            keys: self.keys.clone(),
            channel,
            max: max.max(1),
            window,
            timeout: settings.timeout,
            locked,
            fallback: FailureBudget::new(max, window),
            _listener: AbortOnDrop(listener),
        })
    }
}

impl RedisFailedClaims {
    fn lock(&self, id: &SessionId, remaining: Duration) {
        self.locked.insert(id.clone(), Instant::now() + remaining);
    }
}

async fn subscribe(conn: &Conn, channel: &str, timeout: Duration) -> anyhow::Result<()> {
    timed(
        timeout,
        "SUBSCRIBE",
        redis::cmd("SUBSCRIBE")
            .arg(channel)
            .exec_async(&mut conn.clone()),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Records every lock published by any node; subscribes again after a
/// disconnection (the connection itself reconnects).
async fn listen(
    conn: Conn,
    channel: String,
    timeout: Duration,
    mut pushes: mpsc::UnboundedReceiver<PushInfo>,
    locked: Arc<DashMap<SessionId, Instant>>,
) {
    while let Some(push) = pushes.recv().await {
        match push.kind {
            PushKind::Message => {
                let Some(msg) = Msg::from_push_info(push) else {
                    continue;
                };
                let payload: String = msg.get_payload().unwrap_or_default();
                match parse_lock(&payload) {
                    Some((id, remaining)) => {
                        locked.insert(id, Instant::now() + remaining);
                    }
                    None => {
                        tracing::warn!(%payload, "unexpected message on the claim-lock channel")
                    }
                }
            }
            PushKind::Disconnection => {
                tracing::warn!("redis claim-lock subscriber lost; subscribing again");
                while let Err(e) = subscribe(&conn, &channel, timeout).await {
                    tracing::warn!(error = %e, "redis claim-lock subscribe failed; retrying");
                    tokio::time::sleep(RESUBSCRIBE_EVERY).await;
                }
            }
            _ => {}
        }
    }
}

/// `<session id> <remaining ms>`.
fn parse_lock(payload: &str) -> Option<(SessionId, Duration)> {
    let (id, ms) = payload.split_once(' ')?;
    let id = SessionId::parse(id)?;
    let ms: u64 = ms.parse().ok()?;
    Some((id, Duration::from_millis(ms)))
}

#[async_trait]
impl FailedClaims for RedisFailedClaims {
    fn locked_for(&self, id: &SessionId) -> Option<Duration> {
        let now = Instant::now();
        if let Some(until) = self.locked.get(id).map(|u| *u) {
            if until > now {
                return Some(until - now);
            }
        }
        self.fallback.check(id, now).err()
    }

    async fn count_failure(&self, id: &SessionId) {
        let key = format!("{}:claim-failures", self.keys.record::<Session>(id));
        let mut call = COUNT_FAILURE.key(key);
        call.arg(self.window.as_millis() as u64)
            .arg(self.max)
            .arg(&self.channel)
            .arg(id.to_string());
        let mut conn = self.conn.clone();
        let answer: Result<(u32, i64), _> = timed(self.timeout, "count a failed claim", async {
            match call.invoke_async(&mut conn).await {
                // The connection had died under us (Redis restarted): once
                // more on the new one. Had the first run reached Redis, the
                // failure counts twice, which errs on the guesser's cost.
                Err(e) if e.is_connection_dropped() || e.is_io_error() => {
                    call.invoke_async(&mut conn).await
                }
                done => done,
            }
        })
        .await;
        match answer {
            Ok((count, remaining_ms)) if count >= self.max => {
                self.lock(id, Duration::from_millis(remaining_ms.max(0) as u64));
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(session = %id, error = %e, "failed claim counted on this node only (Redis did not answer)");
                self.fallback.spend(id, Instant::now());
            }
        }
    }

    fn forget_expired(&self) {
        let now = Instant::now();
        self.locked.retain(|_, until| *until > now);
        self.fallback.forget_before(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_message_parses_and_nothing_else_does() {
        let id = SessionId::generate();
        let (parsed, remaining) = parse_lock(&format!("{id} 1500")).unwrap();
        assert_eq!(
            (parsed, remaining),
            (id.clone(), Duration::from_millis(1500))
        );
        assert!(parse_lock(&format!("{id}")).is_none());
        assert!(parse_lock(&format!("{id} -1")).is_none());
        assert!(parse_lock("no/such/id 10").is_none());
    }
}
