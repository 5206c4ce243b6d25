//! Connections to Redis, standalone or Cluster, behind one type, and the
//! time limit every call goes through.

use super::RedisSettings;
use crate::store::StoreError;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{
    Client, Cmd, ErrorKind, IntoConnectionInfo, Pipeline, ProtocolVersion, PushInfo, RedisError,
    RedisFuture, RedisResult, Value,
};
use std::future::Future;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;

/// A reconnecting, multiplexed connection: cheap to clone, usable from
/// many tasks at once.
#[derive(Clone)]
pub(super) enum Conn {
    /// One server (`ConnectionManager` reconnects by itself).
    Single(ConnectionManager),
    /// A Redis Cluster: commands are routed by key slot, and the client
    /// follows `MOVED`/`ASK` and reconnects to nodes by itself.
    Cluster(ClusterConnection),
}

impl Conn {
    /// Whether this is a Cluster, where one script reaches one slot only.
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => Box::pin(async move {
                match c.req_packed_command(cmd).await {
                    Err(e) if never_sent(&e) => c.req_packed_command(cmd).await,
                    done => done,
                }
            }),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => Box::pin(async move {
                match c.req_packed_commands(cmd, offset, count).await {
                    Err(e) if never_sent(&e) => c.req_packed_commands(cmd, offset, count).await,
                    done => done,
                }
            }),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// The command failed before reaching Redis: the manager's last
/// reconnection was refused (Redis was down). The failure itself starts a
/// new reconnection, so one more attempt succeeds once Redis is back. Without
/// it, a node that had no traffic while Redis was away answered its first
/// request after the outage with 503. Nothing was sent, so trying again
/// cannot apply a write twice.
fn never_sent(e: &RedisError) -> bool {
    e.is_connection_refusal()
}

/// Opens a connection. With `push`, the connection speaks RESP3 and hands
/// every push (pub/sub messages, and the library's `Disconnection` notice)
/// to that channel: that is the subscriber connection.
pub(super) async fn connect(
    settings: &RedisSettings,
    push: Option<UnboundedSender<PushInfo>>,
) -> RedisResult<Conn> {
    let t = settings.timeout;
    if settings.cluster {
        let mut builder = ClusterClientBuilder::new(settings.urls.clone())
            .connection_timeout(t)
            .response_timeout(t)
            .retries(2)
            .min_retry_wait(20)
            .max_retry_wait(200);
        if let Some(tx) = push {
            builder = builder.use_protocol(ProtocolVersion::RESP3).push_sender(tx);
        }
        let client = builder.build()?;
        Ok(Conn::Cluster(client.get_async_connection().await?))
    } else {
        let mut info = settings.urls[0].as_str().into_connection_info()?;
        // One connection attempt per reconnection, no backoff: a call that
        // finds Redis down fails at once (a refused connection is instant),
        // and the next call starts the next attempt. With retries, every
        // call would wait out the backoff (a second or more) instead.
        let mut config = ConnectionManagerConfig::new()
            .set_connection_timeout(t)
            .set_response_timeout(t)
            .set_number_of_retries(0);
        if let Some(tx) = push {
            info.redis.protocol = ProtocolVersion::RESP3;
            config = config.set_push_sender(tx);
        }
        let client = Client::open(info)?;
        Ok(Conn::Single(
            ConnectionManager::new_with_config(client, config).await?,
        ))
    }
}

/// Runs one Redis call within `limit`; any failure is `Unavailable` (or
/// `Corrupt` when Redis answered something unreadable), never a hang.
pub(super) async fn timed<T>(
    limit: Duration,
    what: &'static str,
    call: impl Future<Output = RedisResult<T>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(from_redis(what, e)),
        Err(_) => Err(StoreError::Unavailable(format!(
            "redis {what}: no answer within {} ms",
            limit.as_millis()
        ))),
    }
}

fn from_redis(what: &str, e: RedisError) -> StoreError {
    match e.kind() {
        ErrorKind::TypeError => StoreError::Corrupt(format!("redis {what}: {e}")),
        _ => StoreError::Unavailable(format!("redis {what}: {e}")),
    }
}
