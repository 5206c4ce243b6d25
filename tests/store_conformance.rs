//! The `SessionStore` contract (src/store/mod.rs), written once and run
//! against every implementation: the memory store, a standalone Redis and a
//! 3-master Redis Cluster. For the Redis stores, "nodes" are separate
//! `RedisStore`s (own connections, own subscriber) on one key prefix, as
//! separate broker processes would be; every test uses its own prefix.
//!
//! Time is passed to the store explicitly, so expiry tests never sleep.

mod support;

use bzt::store::memory::MemoryStore;
use bzt::store::redis::{RedisSettings, RedisStore};
use bzt::store::{SessionStore, StoreError, EXPIRY_LEASE};
use bzt_core::session::{
    CancelledBy, Device, DisplayText, Kind, NewSession, NewSessionRequest, Op, OpOutput,
};
use bzt_core::{ErrorCode, Secret, Session, SessionId, Status, Timestamp};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use support::redis::{RedisCluster, RedisServer};

type Nodes = Vec<Arc<dyn SessionStore>>;

const WAIT: Duration = Duration::from_secs(5);

fn session(ttl_s: u32, now: Timestamp) -> Session {
    let spec = NewSession::validate(
        NewSessionRequest {
            kind: Some(Kind::Login),
            ttl_s: Some(ttl_s),
            display: Some(DisplayText {
                title: "登录 示例交易平台".into(),
                detail: None,
            }),
            ..Default::default()
        },
        &["platform".to_owned()],
    )
    .unwrap();
    Session::create(SessionId::generate(), "demo", spec, now).0
}

fn claim(s: &Session, phone: usize) -> Op {
    Op::Claim {
        secret: s.claim.current.clone(),
        device: Device {
            id: format!("phone-{phone}"),
            name: format!("测试手机 {phone}"),
        },
        phone_token: Secret::generate().hash(),
        number_match: None,
    }
}

fn unique_prefix(test: &str) -> String {
    format!("t-{test}-{}", SessionId::generate())
}

// ---- backends ---------------------------------------------------------------

async fn memory_nodes(n: usize, _test: &str) -> Nodes {
    let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
    vec![store; n]
}

/// One standalone server for the whole test binary (tests use their own
/// prefixes); the watchdog kills it when the process exits.
fn shared_server() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(RedisServer::start)
}

fn shared_cluster() -> &'static RedisCluster {
    static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| RedisCluster::start(3))
}

async fn redis_store(url: &str, prefix: &str) -> RedisStore {
    let mut settings = RedisSettings::new(url);
    settings.key_prefix = prefix.to_owned();
    // A loaded 2-core test machine; production keeps the 500 ms default.
    settings.timeout = Duration::from_secs(2);
    RedisStore::connect(settings)
        .await
        .expect("connect to redis")
}

async fn redis_nodes(n: usize, test: &str) -> Nodes {
    let url = tokio::task::spawn_blocking(|| shared_server().url())
        .await
        .unwrap();
    let prefix = unique_prefix(test);
    let mut nodes: Nodes = Vec::new();
    for _ in 0..n {
        nodes.push(Arc::new(redis_store(&url, &prefix).await));
    }
    nodes
}

async fn cluster_nodes(n: usize, test: &str) -> Nodes {
    let urls = tokio::task::spawn_blocking(|| shared_cluster().urls())
        .await
        .unwrap();
    let prefix = unique_prefix(test);
    let mut nodes: Nodes = Vec::new();
    for _ in 0..n {
        nodes.push(Arc::new(redis_store(&urls, &prefix).await));
    }
    nodes
}

// ---- the contract ----------------------------------------------------------

async fn insert_get_duplicate(nodes: Nodes) {
    let (a, b) = (&nodes[0], &nodes[1]);
    let now = Timestamp::now_utc();
    let s = session(180, now);
    a.insert(&s).await.unwrap();
    let read = b.get(&s.id).await.unwrap().expect("inserted session");
    assert_eq!(read.id, s.id);
    assert_eq!(read.rev, s.rev);
    assert_eq!(read.status, Status::Pending);
    assert_eq!(read.expires_at, s.expires_at);
    assert_eq!(read.tbs, s.tbs);
    assert!(read.claim.current.matches(&s.claim.current));

    assert!(matches!(b.insert(&s).await, Err(StoreError::Duplicate)));

    let unknown = SessionId::generate();
    assert!(a.get(&unknown).await.unwrap().is_none());
    assert!(a.apply(&unknown, &Op::Expire, now).await.unwrap().is_none());
    assert!(a.subscribe(&unknown).await.unwrap().is_none());
    a.ping().await.unwrap();
}

async fn apply_is_atomic(nodes: Nodes) {
    let now = Timestamp::now_utc();
    let s = session(180, now);
    nodes[0].insert(&s).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let store = nodes[i % nodes.len()].clone();
        let op = claim(&s, i);
        let id = s.id.clone();
        tasks.push(tokio::spawn(async move {
            store.apply(&id, &op, now).await.unwrap().unwrap()
        }));
    }
    let mut winners = 0;
    for t in tasks {
        let u = t.await.unwrap();
        match u.output {
            Ok(OpOutput::Claimed { .. }) => {
                winners += 1;
                assert!(u.changed);
                assert_eq!(u.previous_status, Status::Pending);
            }
            Err(e) => {
                assert_eq!(e.code, ErrorCode::AlreadyClaimed);
                assert!(!u.changed);
            }
            Ok(other) => panic!("unexpected output {other:?}"),
        }
    }
    assert_eq!(winners, 1, "exactly one claim wins");
    let after = nodes[1].get(&s.id).await.unwrap().unwrap();
    assert_eq!(after.status, Status::Scanned);
    assert_eq!(after.version, 2);
    assert_eq!(after.rev, 2, "one write");
}

async fn subscribe_wakes_on_change(nodes: Nodes) {
    let (a, b) = (&nodes[0], &nodes[1]);
    let now = Timestamp::now_utc();
    let s = session(180, now);
    a.insert(&s).await.unwrap();
    let mut on_a = a.subscribe(&s.id).await.unwrap().unwrap();
    let mut on_b = b.subscribe(&s.id).await.unwrap().unwrap();

    // A write on one node wakes receivers on both (the writer's directly,
    // the other's through Redis).
    let u = b.apply(&s.id, &claim(&s, 1), now).await.unwrap().unwrap();
    assert!(u.changed);
    for rx in [&mut on_a, &mut on_b] {
        let rev = u.session.rev;
        tokio::time::timeout(WAIT, rx.wait_for(|r| *r >= rev))
            .await
            .expect("woken within 5 s")
            .expect("open");
    }
    // An op that changes nothing wakes nobody.
    let u = a.apply(&s.id, &claim(&s, 2), now).await.unwrap().unwrap();
    assert!(!u.changed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!on_a.has_changed().unwrap());

    // The next write, made on the other node, wakes again.
    let u = a
        .apply(
            &s.id,
            &Op::Cancel {
                by: CancelledBy::Rp,
            },
            now,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(u.session.status, Status::Cancelled);
    let rev = u.session.rev;
    tokio::time::timeout(WAIT, on_b.wait_for(|r| *r >= rev))
        .await
        .expect("woken within 5 s")
        .expect("open");
}

async fn remove_closes_receivers(nodes: Nodes) {
    let (a, b) = (&nodes[0], &nodes[1]);
    let now = Timestamp::now_utc();
    let s = session(180, now);
    a.insert(&s).await.unwrap();
    let mut on_a = a.subscribe(&s.id).await.unwrap().unwrap();
    let mut on_b = b.subscribe(&s.id).await.unwrap().unwrap();
    b.remove(&s.id).await.unwrap();
    for rx in [&mut on_a, &mut on_b] {
        let closed =
            tokio::time::timeout(WAIT, async { while rx.changed().await.is_ok() {} }).await;
        assert!(closed.is_ok(), "receiver closed within 5 s");
    }
    assert!(a.get(&s.id).await.unwrap().is_none());
    assert!(a.apply(&s.id, &Op::Expire, now).await.unwrap().is_none());
    // Removing twice is fine.
    a.remove(&s.id).await.unwrap();
}

async fn expiry_is_claimed_once(nodes: Nodes) {
    let t0 = Timestamp::now_utc();
    let s = session(30, t0);
    let other = session(60, t0);
    nodes[0].insert(&s).await.unwrap();
    nodes[0].insert(&other).await.unwrap();
    let mut rx = nodes[1].subscribe(&s.id).await.unwrap().unwrap();

    let before = t0.plus_millis(29_999);
    assert!(nodes[1]
        .claim_due_expiries(before, 100)
        .await
        .unwrap()
        .is_empty());

    // Every node asks at once; exactly one gets the session.
    let due = s.expires_at;
    let mut asks = Vec::new();
    for i in 0..8 {
        let store = nodes[i % nodes.len()].clone();
        asks.push(tokio::spawn(async move {
            store.claim_due_expiries(due, 100).await.unwrap()
        }));
    }
    let mut claimed = Vec::new();
    for a in asks {
        claimed.extend(a.await.unwrap());
    }
    assert_eq!(claimed, vec![s.id.clone()], "claimed once, by one caller");

    let u = nodes[0]
        .apply(&s.id, &Op::Expire, due)
        .await
        .unwrap()
        .unwrap();
    assert!(u.changed);
    assert_eq!(u.session.status, Status::Expired);
    let rev = u.session.rev;
    tokio::time::timeout(WAIT, rx.wait_for(|r| *r >= rev))
        .await
        .expect("subscriber woken by the expiry")
        .unwrap();
    nodes[0].expiries_done(&claimed).await.unwrap();

    // Done: never handed out again.
    let later = due.plus_millis(EXPIRY_LEASE.as_millis() as i64 + 1);
    assert!(nodes[1]
        .claim_due_expiries(later, 100)
        .await
        .unwrap()
        .is_empty());

    // A claim that is never marked done comes back once its lease ends.
    let due2 = other.expires_at;
    assert_eq!(
        nodes[1].claim_due_expiries(due2, 100).await.unwrap(),
        vec![other.id.clone()]
    );
    assert!(nodes[0]
        .claim_due_expiries(due2, 100)
        .await
        .unwrap()
        .is_empty());
    let after_lease = due2.plus_millis(EXPIRY_LEASE.as_millis() as i64);
    assert_eq!(
        nodes[0].claim_due_expiries(after_lease, 100).await.unwrap(),
        vec![other.id.clone()]
    );
    // Removing a session forgets its deadline.
    nodes[0].remove(&other.id).await.unwrap();
    let much_later = after_lease.plus_secs(3600);
    assert!(nodes[1]
        .claim_due_expiries(much_later, 100)
        .await
        .unwrap()
        .is_empty());
}

async fn due_expiries_come_oldest_first_in_batches(nodes: Nodes) {
    let t0 = Timestamp::now_utc();
    let mut ids = Vec::new();
    for i in 0..5 {
        let s = session(30 + i, t0);
        nodes[i as usize % nodes.len()].insert(&s).await.unwrap();
        ids.push(s.id);
    }
    let all_due = t0.plus_secs(60);
    let first = nodes[0].claim_due_expiries(all_due, 2).await.unwrap();
    assert_eq!(first, ids[..2].to_vec());
    let rest = nodes[1].claim_due_expiries(all_due, 100).await.unwrap();
    assert_eq!(rest, ids[2..].to_vec());
    nodes[0].expiries_done(&ids).await.unwrap();
}

macro_rules! conformance {
    ($backend:ident, $nodes:path) => {
        mod $backend {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn insert_get_duplicate() {
                super::insert_get_duplicate($nodes(2, "insert").await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn apply_is_atomic() {
                super::apply_is_atomic($nodes(3, "atomic").await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn subscribe_wakes_on_change() {
                super::subscribe_wakes_on_change($nodes(2, "wake").await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn remove_closes_receivers() {
                super::remove_closes_receivers($nodes(2, "remove").await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn expiry_is_claimed_once() {
                super::expiry_is_claimed_once($nodes(3, "expiry").await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn due_expiries_come_oldest_first_in_batches() {
                super::due_expiries_come_oldest_first_in_batches($nodes(2, "batches").await).await
            }
        }
    };
}

conformance!(memory, super::memory_nodes);
conformance!(redis, super::redis_nodes);
conformance!(redis_cluster, super::cluster_nodes);

// ---- Redis only: outages ----------------------------------------------------

/// Redis down: every call fails fast with `Unavailable`; Redis back: the
/// same store works again, and receivers are woken after the gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_is_fast_unavailable_then_recovers() {
    let mut server = RedisServer::start();
    let store = redis_store(&server.url(), &unique_prefix("outage")).await;
    let now = Timestamp::now_utc();
    let s = session(180, now);
    store.insert(&s).await.unwrap();
    let mut rx = store.subscribe(&s.id).await.unwrap().unwrap();

    server.stop();
    let started = std::time::Instant::now();
    for _ in 0..3 {
        assert!(matches!(
            store.get(&s.id).await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(store.ping().await.is_err());
        assert!(matches!(
            store.apply(&s.id, &Op::Expire, now).await,
            Err(StoreError::Unavailable(_))
        ));
    }
    eprintln!("9 calls against a dead Redis: {:?}", started.elapsed());
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "9 calls against a dead Redis took {:?}",
        started.elapsed()
    );

    // Back (empty: no persistence). The store reconnects by itself, and
    // the receiver is woken because messages may have been missed.
    tokio::task::block_in_place(|| server.restart());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.ping().await.is_err() {
        assert!(std::time::Instant::now() < deadline, "no recovery in 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::timeout(Duration::from_secs(10), rx.changed())
        .await
        .expect("woken after the reconnection")
        .expect("open");
    let fresh = session(180, now);
    store.insert(&fresh).await.unwrap();
    let mut rx2 = store.subscribe(&fresh.id).await.unwrap().unwrap();
    let u = store
        .apply(&fresh.id, &claim(&fresh, 1), now)
        .await
        .unwrap()
        .unwrap();
    assert!(u.changed);
    tokio::time::timeout(WAIT, rx2.wait_for(|r| *r >= u.session.rev))
        .await
        .unwrap()
        .unwrap();
}

/// The subscriber connection re-subscribes after a reconnection: a write
/// made through another node afterwards still wakes this node's receiver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_resubscribes_after_reconnect() {
    let mut server = RedisServer::start();
    let prefix = unique_prefix("resub");
    let a = redis_store(&server.url(), &prefix).await;
    let b = redis_store(&server.url(), &prefix).await;
    let now = Timestamp::now_utc();
    let s = session(180, now);
    a.insert(&s).await.unwrap();
    let mut rx = a.subscribe(&s.id).await.unwrap().unwrap();

    tokio::task::block_in_place(|| server.restart());
    // The data is gone with the restart: put the session back.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while b.insert(&s).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "no recovery in 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Wait for the gap wake-up, which comes after re-subscribing.
    tokio::time::timeout(Duration::from_secs(10), rx.changed())
        .await
        .expect("gap wake-up")
        .unwrap();
    let u = b.apply(&s.id, &claim(&s, 1), now).await.unwrap().unwrap();
    assert!(u.changed);
    tokio::time::timeout(WAIT, rx.wait_for(|r| *r >= u.session.rev))
        .await
        .expect("woken through the new subscription")
        .unwrap();
    assert_eq!(a.local_subscriptions(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_uses_sharded_pubsub_on_redis_7() {
    let url = tokio::task::spawn_blocking(|| shared_server().url())
        .await
        .unwrap();
    let store = redis_store(&url, &unique_prefix("sharded")).await;
    let version = std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&version.stdout);
    let major: u32 = text
        .split("v=")
        .nth(1)
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse().ok())
        .unwrap();
    assert_eq!(store.sharded_pubsub(), major >= 7, "{text}");
}
