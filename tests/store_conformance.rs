//! The `SessionStore` contract (src/store/mod.rs) and the
//! `ConversationStore` contract (src/store/conversation.rs), written once
//! and run against every implementation: the memory stores, a standalone
//! Redis and a 3-master Redis Cluster. For the Redis stores, "nodes" are
//! separate `RedisStore`s (own connections, own subscriber) on one key
//! prefix, as separate broker processes would be; every test uses its own
//! prefix. Then the Redis audit stream: appends from several nodes form one
//! chain.
//!
//! Time is passed to the store explicitly, so expiry tests never sleep.

mod support;

use bzt::store::memory::MemoryStore;
use bzt::store::redis::{RedisAuditLog, RedisSettings, RedisStore};
use bzt::store::{memory::MemoryConversationStore, ConversationStore};
use bzt::store::{AuditLog, AuditQuery};
use bzt::store::{SessionStore, StoreError, EXPIRY_LEASE};
use bzt_core::conversation::{
    ConvOp, ConvOutput, Conversation, EndedBy, OpenConversation, RequestStatus,
};
use bzt_core::pki::CertificateInfo;
use bzt_core::secret::{ConversationId, RequestId};
use bzt_core::session::{
    CancelledBy, ConversationPolicy, Device, DisplayText, Kind, NewSession, NewSessionRequest, Op,
    OpOutput,
};
use bzt_core::{ErrorCode, Secret, Session, SessionId, Status, Timestamp};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use support::redis::{RedisCluster, RedisServer};

type Nodes = Vec<Arc<dyn SessionStore>>;
type ConvNodes = Vec<Arc<dyn ConversationStore>>;

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

fn settings(url: &str, prefix: &str) -> RedisSettings {
    let mut settings = RedisSettings::new(url);
    settings.key_prefix = prefix.to_owned();
    // A loaded 2-core test machine; production keeps the 500 ms default.
    settings.timeout = Duration::from_secs(2);
    settings
}

async fn redis_store(url: &str, prefix: &str) -> RedisStore {
    RedisStore::connect(settings(url, prefix))
        .await
        .expect("connect to redis")
}

async fn server_url() -> String {
    tokio::task::spawn_blocking(|| shared_server().url())
        .await
        .unwrap()
}

async fn cluster_urls() -> String {
    tokio::task::spawn_blocking(|| shared_cluster().urls())
        .await
        .unwrap()
}

/// `n` stores on `url`, one key prefix.
async fn redis_stores(n: usize, url: &str, test: &str) -> Vec<Arc<RedisStore>> {
    let prefix = unique_prefix(test);
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(Arc::new(redis_store(url, &prefix).await));
    }
    nodes
}

async fn redis_nodes(n: usize, test: &str) -> Nodes {
    let stores = redis_stores(n, &server_url().await, test).await;
    stores
        .into_iter()
        .map(|s| s as Arc<dyn SessionStore>)
        .collect()
}

async fn cluster_nodes(n: usize, test: &str) -> Nodes {
    let stores = redis_stores(n, &cluster_urls().await, test).await;
    stores
        .into_iter()
        .map(|s| s as Arc<dyn SessionStore>)
        .collect()
}

async fn memory_conv_nodes(n: usize, _test: &str) -> ConvNodes {
    let store: Arc<dyn ConversationStore> = Arc::new(MemoryConversationStore::new());
    vec![store; n]
}

async fn redis_conv_nodes(n: usize, test: &str) -> ConvNodes {
    let stores = redis_stores(n, &server_url().await, test).await;
    stores
        .into_iter()
        .map(|s| s as Arc<dyn ConversationStore>)
        .collect()
}

async fn cluster_conv_nodes(n: usize, test: &str) -> ConvNodes {
    let stores = redis_stores(n, &cluster_urls().await, test).await;
    stores
        .into_iter()
        .map(|s| s as Arc<dyn ConversationStore>)
        .collect()
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

/// A caller that just read the session may write from its copy; a stale
/// copy must never win over what happened since.
async fn apply_on_a_stale_copy_sees_what_happened_since(nodes: Nodes) {
    let now = Timestamp::now_utc();
    let s = session(180, now);
    nodes[0].insert(&s).await.unwrap();
    let stale = nodes[1].get(&s.id).await.unwrap().unwrap();
    let first = nodes[0]
        .apply(&s.id, &claim(&s, 1), now)
        .await
        .unwrap()
        .unwrap();
    assert!(first.changed);

    let late = nodes[1]
        .apply_on(&stale, &claim(&s, 2), now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(late.output.unwrap_err().code, ErrorCode::AlreadyClaimed);
    assert!(!late.changed);
    assert_eq!(late.session.rev, 2, "it answers the current session");

    let cancel = Op::Cancel {
        by: CancelledBy::Rp,
    };
    let fresh = nodes[1].get(&s.id).await.unwrap().unwrap();
    let done = nodes[1]
        .apply_on(&fresh, &cancel, now)
        .await
        .unwrap()
        .unwrap();
    assert!(done.changed);
    assert_eq!(done.previous_status, Status::Scanned);
    assert_eq!(done.session.status, Status::Cancelled);
    let after = nodes[0].get(&s.id).await.unwrap().unwrap();
    assert_eq!(after.status, Status::Cancelled);
    assert_eq!(after.rev, 3, "one write each");

    nodes[0].remove(&s.id).await.unwrap();
    assert!(nodes[1]
        .apply_on(&fresh, &cancel, now)
        .await
        .unwrap()
        .is_none());
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
            async fn apply_on_a_stale_copy_sees_what_happened_since() {
                super::apply_on_a_stale_copy_sees_what_happened_since($nodes(2, "stale").await)
                    .await
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

// ---- the conversation contract ---------------------------------------------

fn conversation(idle_s: u32, now: Timestamp) -> Conversation {
    Conversation::open(
        OpenConversation {
            id: ConversationId::generate(),
            app_id: "demo".into(),
            session_id: SessionId::generate(),
            certificate: CertificateInfo {
                pem: String::new(),
                serial: "1a2b".into(),
                subject: "CN=张三".into(),
                issuer: "CN=测试根".into(),
                not_before: now,
                not_after: now.plus_secs(86_400),
                domain: "platform".into(),
            },
            chain_pem: vec![],
            device_name: "张三的手机".into(),
            requester: None,
            requester_token: Secret::generate().hash(),
            phone_token: Secret::generate().hash(),
            policy: ConversationPolicy {
                max_requests: 50,
                idle_s,
                max_s: 3600,
            },
        },
        now,
    )
}

fn add_request(page: usize) -> (RequestId, ConvOp) {
    let id = RequestId::generate();
    let op = ConvOp::AddRequest {
        id: id.clone(),
        display: DisplayText {
            title: format!("第{page}页"),
            detail: None,
        },
        tbs: format!("投标文件 第{page}页").into_bytes(),
    };
    (id, op)
}

fn respond(id: &RequestId, phone: usize) -> ConvOp {
    ConvOp::Respond {
        request_id: id.clone(),
        verdict: Ok(format!("signature by answer {phone}").into_bytes()),
        auto_confirmed: true,
    }
}

async fn conv_insert_get_duplicate(nodes: ConvNodes) {
    let (a, b) = (&nodes[0], &nodes[1]);
    let now = Timestamp::now_utc();
    let c = conversation(600, now);
    a.insert_conversation(&c).await.unwrap();
    let read = b.get_conversation(&c.id).await.unwrap().expect("inserted");
    assert_eq!(read.id, c.id);
    assert_eq!(read.rev, 1);
    assert_eq!(read.expires_at, c.expires_at);
    assert_eq!(read.certificate.subject, "CN=张三");
    assert!(matches!(
        b.insert_conversation(&c).await,
        Err(StoreError::Duplicate)
    ));
    let unknown = ConversationId::generate();
    assert!(a.get_conversation(&unknown).await.unwrap().is_none());
    assert!(a
        .apply_conversation(&unknown, &ConvOp::Tick, now)
        .await
        .unwrap()
        .is_none());
    assert!(a.subscribe_conversation(&unknown).await.unwrap().is_none());
}

/// Requests added from every node at once all land (no lost update), and
/// many concurrent answers to each request give exactly one approval.
async fn conv_apply_is_atomic(nodes: ConvNodes) {
    let now = Timestamp::now_utc();
    let c = conversation(600, now);
    nodes[0].insert_conversation(&c).await.unwrap();

    let adds: Vec<_> = (0..12)
        .map(|i| {
            let store = nodes[i % nodes.len()].clone();
            let id = c.id.clone();
            tokio::spawn(async move {
                let (rid, op) = add_request(i);
                let u = store.apply_conversation(&id, &op, now).await.unwrap();
                let u = u.unwrap();
                assert!(matches!(u.output, Ok(ConvOutput::Added { .. })), "{u:?}");
                rid
            })
        })
        .collect();
    let mut rids = Vec::new();
    for t in adds {
        rids.push(t.await.unwrap());
    }
    let after = nodes[1].get_conversation(&c.id).await.unwrap().unwrap();
    assert_eq!(after.requests.len(), 12, "no add was lost");
    let mut seqs: Vec<u32> = after.requests.iter().map(|r| r.seq).collect();
    seqs.sort();
    assert_eq!(seqs, (1..=12).collect::<Vec<_>>());
    assert_eq!(after.rev, 13);

    let answers: Vec<_> = (0..12 * 10)
        .map(|i| {
            let store = nodes[i % nodes.len()].clone();
            let id = c.id.clone();
            let op = respond(&rids[i % rids.len()], i);
            tokio::spawn(async move {
                store
                    .apply_conversation(&id, &op, now)
                    .await
                    .unwrap()
                    .unwrap()
            })
        })
        .collect();
    let mut approvals = 0;
    for t in answers {
        let u = t.await.unwrap();
        match u.output {
            Ok(ConvOutput::Done) => {
                approvals += 1;
                assert!(u.changed);
                assert_eq!(u.finished.len(), 1);
            }
            Err(e) => {
                assert_eq!(e.code, ErrorCode::Conflict, "{e:?}");
                assert!(!u.changed);
            }
            Ok(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(approvals, 12, "one approval per request");
    let done = nodes[2].get_conversation(&c.id).await.unwrap().unwrap();
    assert!(done
        .requests
        .iter()
        .all(|r| r.status == RequestStatus::Approved && r.signature.is_some()));
    assert_eq!(done.rev, 25, "one write per add and per approval");
}

async fn conv_subscribe_wakes_on_change(nodes: ConvNodes) {
    let (a, b) = (&nodes[0], &nodes[1]);
    let now = Timestamp::now_utc();
    let c = conversation(600, now);
    a.insert_conversation(&c).await.unwrap();
    let mut on_a = a.subscribe_conversation(&c.id).await.unwrap().unwrap();
    let mut on_b = b.subscribe_conversation(&c.id).await.unwrap().unwrap();

    let (_, op) = add_request(1);
    let u = b
        .apply_conversation(&c.id, &op, now)
        .await
        .unwrap()
        .unwrap();
    assert!(u.changed);
    for rx in [&mut on_a, &mut on_b] {
        let rev = u.conversation.rev;
        tokio::time::timeout(WAIT, rx.wait_for(|r| *r >= rev))
            .await
            .expect("woken within 5 s")
            .expect("open");
    }
    // A tick with nothing due changes nothing and wakes nobody.
    let u = a
        .apply_conversation(&c.id, &ConvOp::Tick, now)
        .await
        .unwrap()
        .unwrap();
    assert!(!u.changed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!on_b.has_changed().unwrap());

    let u = a
        .apply_conversation(
            &c.id,
            &ConvOp::End {
                by: EndedBy::Requester,
            },
            now,
        )
        .await
        .unwrap()
        .unwrap();
    assert!(u.ended_now);
    assert_eq!(u.finished.len(), 1, "the pending request expired with it");
    let rev = u.conversation.rev;
    tokio::time::timeout(WAIT, on_b.wait_for(|r| *r >= rev))
        .await
        .expect("woken within 5 s")
        .expect("open");
}

async fn conv_remove_closes_receivers(nodes: ConvNodes) {
    let (a, b) = (&nodes[0], &nodes[1]);
    let now = Timestamp::now_utc();
    let c = conversation(600, now);
    a.insert_conversation(&c).await.unwrap();
    let mut on_a = a.subscribe_conversation(&c.id).await.unwrap().unwrap();
    let mut on_b = b.subscribe_conversation(&c.id).await.unwrap().unwrap();
    b.remove_conversation(&c.id).await.unwrap();
    for rx in [&mut on_a, &mut on_b] {
        let closed =
            tokio::time::timeout(WAIT, async { while rx.changed().await.is_ok() {} }).await;
        assert!(closed.is_ok(), "receiver closed within 5 s");
    }
    assert!(a.get_conversation(&c.id).await.unwrap().is_none());
    a.remove_conversation(&c.id).await.unwrap();
}

macro_rules! conversation_conformance {
    ($backend:ident, $nodes:path) => {
        mod $backend {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn insert_get_duplicate() {
                super::conv_insert_get_duplicate($nodes(2, "c-insert").await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn apply_is_atomic_one_approval_per_request() {
                super::conv_apply_is_atomic($nodes(3, "c-atomic").await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn subscribe_wakes_on_change() {
                super::conv_subscribe_wakes_on_change($nodes(2, "c-wake").await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn remove_closes_receivers() {
                super::conv_remove_closes_receivers($nodes(2, "c-remove").await).await
            }
        }
    };
}

conversation_conformance!(memory_conversations, super::memory_conv_nodes);
conversation_conformance!(redis_conversations, super::redis_conv_nodes);
conversation_conformance!(redis_cluster_conversations, super::cluster_conv_nodes);

// ---- shared stores: conversation deadlines ----------------------------------

async fn claim_at(node: &Arc<dyn ConversationStore>, at: Timestamp) -> Vec<ConversationId> {
    node.claim_due_conversations(at, 100).await.unwrap()
}

/// The shared deadlines of conversations: handed to one node at a time,
/// following the deadline as writes move it (earlier with a request's TTL,
/// later once it is answered), and never hidden by a claimer's stale view.
async fn conversation_deadlines(nodes: ConvNodes) {
    let t0 = Timestamp::now_utc();
    let lease = EXPIRY_LEASE.as_millis() as i64;
    assert!(nodes[0].conversation_poll_interval().is_some());

    // Idle after 60 s: one claim among many callers, then ticked to its end.
    let idle = conversation(60, t0);
    nodes[0].insert_conversation(&idle).await.unwrap();
    assert!(claim_at(&nodes[1], t0.plus_millis(59_999)).await.is_empty());
    let due = t0.plus_secs(60);
    let asks: Vec<_> = (0..8)
        .map(|i| {
            let n = nodes[i % nodes.len()].clone();
            tokio::spawn(async move { n.claim_due_conversations(due, 100).await.unwrap() })
        })
        .collect();
    let mut claimed = Vec::new();
    for a in asks {
        claimed.extend(a.await.unwrap());
    }
    assert_eq!(
        claimed,
        vec![idle.id.clone()],
        "claimed once, by one caller"
    );
    let u = nodes[2]
        .apply_conversation(&idle.id, &ConvOp::Tick, due)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(u.conversation.ended.map(|e| e.0), Some(EndedBy::Idle));
    nodes[2].conversation_ticked(&u.conversation).await.unwrap();
    assert!(
        claim_at(&nodes[0], due.plus_secs(7200)).await.is_empty(),
        "an ended conversation has no deadline"
    );

    // A request moves the deadline earlier (its 60 s TTL before the 600 s idle).
    let busy = conversation(600, t0);
    nodes[0].insert_conversation(&busy).await.unwrap();
    let (_, op) = add_request(1);
    nodes[1]
        .apply_conversation(&busy.id, &op, t0.plus_secs(1))
        .await
        .unwrap()
        .unwrap();
    let ttl = t0.plus_secs(61);
    assert!(claim_at(&nodes[2], ttl.plus_millis(-1)).await.is_empty());
    assert_eq!(claim_at(&nodes[2], ttl).await, vec![busy.id.clone()]);
    // Leased: nobody else gets it until the lease ends (its claimer "died").
    assert!(claim_at(&nodes[0], ttl.plus_millis(lease - 1))
        .await
        .is_empty());
    let retry = ttl.plus_millis(lease);
    assert_eq!(claim_at(&nodes[0], retry).await, vec![busy.id.clone()]);
    let u = nodes[0]
        .apply_conversation(&busy.id, &ConvOp::Tick, retry)
        .await
        .unwrap()
        .unwrap();
    assert!(u.changed, "the request expired");
    nodes[0].conversation_ticked(&u.conversation).await.unwrap();
    // Next: idle, 600 s after the request arrived.
    let idle_at = t0.plus_secs(601);
    assert!(claim_at(&nodes[1], idle_at.plus_millis(-1))
        .await
        .is_empty());
    assert_eq!(claim_at(&nodes[1], idle_at).await, vec![busy.id.clone()]);
    // Removing a conversation forgets its deadline.
    nodes[0].remove_conversation(&busy.id).await.unwrap();
    assert!(claim_at(&nodes[2], t0.plus_secs(90_000)).await.is_empty());

    // A write during a lease wins over the claimer's stale view: the
    // claimer read before a new request arrived and records the old idle
    // deadline afterwards; the request's TTL must still come first.
    let raced = conversation(600, t0);
    nodes[0].insert_conversation(&raced).await.unwrap();
    let idle_due = t0.plus_secs(600);
    assert_eq!(claim_at(&nodes[1], idle_due).await, vec![raced.id.clone()]);
    let stale = nodes[1].get_conversation(&raced.id).await.unwrap().unwrap();
    let (_, op) = add_request(1);
    let early = t0.plus_secs(599);
    nodes[2]
        .apply_conversation(&raced.id, &op, early)
        .await
        .unwrap()
        .unwrap();
    let mut later = stale.clone();
    later.last_request_at = t0.plus_secs(3000); // the stale view, as if idle far away
    nodes[1].conversation_ticked(&later).await.unwrap();
    assert_eq!(
        claim_at(&nodes[0], early.plus_secs(60)).await,
        vec![raced.id.clone()],
        "the new request's TTL is not hidden"
    );

    nodes[0].remove_conversation(&raced.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_conversation_deadlines() {
    conversation_deadlines(redis_conv_nodes(3, "c-due").await).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_conversation_deadlines() {
    conversation_deadlines(cluster_conv_nodes(3, "c-due").await).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_conversations_need_no_poll() {
    let nodes = memory_conv_nodes(1, "c-due").await;
    assert!(nodes[0].conversation_poll_interval().is_none());
}

// ---- the Redis audit stream -------------------------------------------------

fn audit_key() -> sm2::dsa::SigningKey {
    use sm2::elliptic_curve::Generate;
    let secret = sm2::SecretKey::try_generate().unwrap();
    sm2::dsa::SigningKey::new(bzt_core::pki::DEFAULT_DIST_ID, &secret).unwrap()
}

fn audit_op(node: usize, n: usize) -> bzt_core::audit::Operation {
    bzt_core::audit::Operation {
        app: if n.is_multiple_of(3) { "other" } else { "demo" }.into(),
        kind: "conversation_request".into(),
        session_id: format!("s-{node}-{n}"),
        conversation_id: Some("c".into()),
        request_id: Some(format!("r-{node}-{n}")),
        cert_serial: format!("{:x}", 0xa00 + node),
        cert_issuer: "CN=测试根".into(),
        cert_subject: "CN=张三".into(),
        tbs_sm3: bzt_core::pki::sm3_hex(format!("{node}/{n}").as_bytes()),
        outcome: "approved".into(),
        reason: None,
        auto_confirmed: Some(true),
        device_name: format!("手机 {node}"),
        requester_ip: None,
        requester_user_agent: None,
        actor: None,
        delegate: None,
    }
}

/// Two nodes append at once: one unbroken chain with signed checkpoints,
/// every operation once; queries filter; another key is refused.
async fn audit_stream_is_one_chain(url: &str) {
    const EACH: usize = 60;
    const CHECKPOINT_EVERY: u64 = 7;
    let prefix = unique_prefix("audit");
    let s = settings(url, &prefix);
    let key = audit_key();
    let nodes = [
        Arc::new(
            RedisAuditLog::connect(&s, key.clone(), CHECKPOINT_EVERY)
                .await
                .unwrap(),
        ),
        Arc::new(
            RedisAuditLog::connect(&s, key.clone(), CHECKPOINT_EVERY)
                .await
                .unwrap(),
        ),
    ];
    let t0 = Timestamp::now_utc();
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        for n in 0..EACH {
            let node = node.clone();
            // Node 1's clock runs 5 s behind node 0's.
            let time = t0.plus_millis(n as i64 * 10 - i as i64 * 5_000);
            tasks.push(tokio::spawn(async move {
                node.append(audit_op(i, n), time).await.unwrap()
            }));
        }
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap());
    }
    eprintln!(
        "{} concurrent appends from 2 nodes: {:?}",
        2 * EACH,
        started.elapsed()
    );
    seqs.sort();
    seqs.dedup();
    assert_eq!(seqs.len(), 2 * EACH, "every append has its own seq");

    let lines = nodes[1].lines().await.unwrap();
    let v = bzt_core::audit::verify_lines(
        lines.iter().map(String::as_str),
        Some(&hex::encode(key.verifying_key().to_sec1_bytes())),
    )
    .unwrap_or_else(|e| panic!("the chain is broken: {e}"));
    let ops = 2 * EACH as u64;
    assert_eq!(
        v.checkpoints,
        ops / CHECKPOINT_EVERY,
        "checkpoints counted across nodes"
    );
    assert_eq!(v.records, ops + v.checkpoints);
    assert_eq!(v.unsigned_tail, ops % CHECKPOINT_EVERY);
    let mut ids: Vec<String> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<bzt_core::audit::Record>(l).ok())
        .filter_map(|r| r.operation().map(|o| o.request_id.clone().unwrap()))
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 2 * EACH, "each operation once");

    // Queries, from either node.
    let all = nodes[0].query(AuditQuery::default()).await.unwrap();
    assert_eq!(all.len(), 2 * EACH, "operations only, no checkpoints");
    let q = AuditQuery {
        app: Some("other".into()),
        serial: Some("a01".into()),
        ..Default::default()
    };
    let found = nodes[0].query(q).await.unwrap();
    assert_eq!(found.len(), EACH / 3);
    assert!(found.iter().all(|r| {
        let op = r.operation().unwrap();
        op.app == "other" && op.cert_serial == "a01"
    }));
    // `since` by record time, although node 1's times are 5 s behind its
    // place in the stream.
    let since = t0.plus_millis(-5_000 + 300);
    let q = AuditQuery {
        since: Some(since),
        ..Default::default()
    };
    let found = nodes[1].query(q).await.unwrap();
    let expected = all.iter().filter(|r| r.body.time >= since).count();
    assert_eq!(found.len(), expected);
    assert_eq!(
        expected,
        EACH + (EACH - 30),
        "all of node 0, half of node 1"
    );
    let q = AuditQuery {
        limit: 5,
        ..Default::default()
    };
    let first = nodes[1].query(q).await.unwrap();
    assert_eq!(first, all[..5].to_vec(), "oldest first, at most `limit`");

    // The timed checkpoint signs the unsigned tail, once.
    let signed_before = v.checkpoints;
    let later = t0.plus_millis(60_000);
    nodes[1].checkpoint_if_unsigned(later).await.unwrap();
    nodes[0].checkpoint_if_unsigned(later).await.unwrap();
    let lines = nodes[0].lines().await.unwrap();
    let v = bzt_core::audit::verify_lines(lines.iter().map(String::as_str), None).unwrap();
    assert_eq!((v.unsigned_tail, v.checkpoints), (0, signed_before + 1));

    // A node with another signing key would fork the checkpoints: refused.
    let other = RedisAuditLog::connect(&s, audit_key(), CHECKPOINT_EVERY).await;
    let err = other.err().expect("another key is refused").to_string();
    assert!(err.contains("signing_key_file"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_audit_stream_is_one_chain_across_nodes() {
    audit_stream_is_one_chain(&server_url().await).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_audit_stream_is_one_chain_across_nodes() {
    audit_stream_is_one_chain(&cluster_urls().await).await
}

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
    let store = redis_store(&server_url().await, &unique_prefix("sharded")).await;
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

// ---- record sets (run-time revocations, and later others) -------------------

use bzt::store::records::{FileRecordSet, MemoryRecordSet, RecordSet};

/// The `RecordSet` contract (src/store/records.rs) on two "nodes" sharing one set.
async fn record_set_contract(a: Arc<dyn RecordSet>, b: Arc<dyn RecordSet>) {
    let v0 = a.version().await.unwrap();
    assert!(a.put("1f", r#"{"serial":"1f"}"#).await.unwrap(), "new");
    let v1 = b.version().await.unwrap();
    assert!(v1 > v0, "a change moves the version, seen by every node");
    assert!(
        !b.put("1f", r#"{"serial":"1f","reason":"x"}"#)
            .await
            .unwrap(),
        "replaced"
    );
    let snap = a.load().await.unwrap();
    assert!(snap.version > v1);
    assert_eq!(snap.records.len(), 1);
    assert!(snap.records["1f"].contains("\"x\""), "{snap:?}");
    assert_eq!(b.delete("00").await.unwrap(), None);
    assert_eq!(
        a.version().await.unwrap(),
        snap.version,
        "no change, no new version"
    );
    assert!(b.delete("1f").await.unwrap().is_some());
    let snap = a.load().await.unwrap();
    assert!(snap.records.is_empty());
    assert!(snap.version > v1);
}

#[tokio::test]
async fn memory_record_set() {
    let set: Arc<dyn RecordSet> = Arc::new(MemoryRecordSet::new());
    record_set_contract(set.clone(), set).await;
}

#[tokio::test]
async fn file_record_set_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub").join("revocations.json");
    let set: Arc<dyn RecordSet> = Arc::new(FileRecordSet::open(&path).unwrap());
    record_set_contract(set.clone(), set.clone()).await;
    set.put("ab", r#"{"serial":"ab"}"#).await.unwrap();
    let version = set.version().await.unwrap();
    drop(set);
    let reopened = FileRecordSet::open(&path).unwrap();
    let snap = reopened.load().await.unwrap();
    assert_eq!(snap.version, version);
    assert_eq!(snap.records["ab"], r#"{"serial":"ab"}"#);
    // A damaged file is refused, not read as empty (that would lift every revocation).
    std::fs::write(&path, b"{ not json").unwrap();
    assert!(FileRecordSet::open(&path).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_record_set_is_shared_by_nodes() {
    let stores = redis_stores(2, &server_url().await, "records").await;
    let (a, b) = (
        stores[0].record_set("revocations"),
        stores[1].record_set("revocations"),
    );
    assert!(a
        .poll_interval()
        .is_some_and(|p| p <= Duration::from_millis(500)));
    record_set_contract(Arc::new(a), Arc::new(b)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_record_set_is_shared_by_nodes() {
    let stores = redis_stores(2, &cluster_urls().await, "records").await;
    let (a, b) = (
        stores[0].record_set("revocations"),
        stores[1].record_set("revocations"),
    );
    record_set_contract(Arc::new(a), Arc::new(b)).await;
}

// ---- Webhook queue (Redis) ---------------------------------------------------

/// Two nodes share the queue: a due delivery goes to exactly one of them
/// for its lease, comes back when the lease runs out (its claimer died),
/// waits for its next due time when put back, and is gone once done.
async fn webhook_queue_leases_each_delivery_to_one_node(stores: Vec<Arc<RedisStore>>) {
    use bzt::store::webhooks::{PendingDelivery, WebhookQueue};
    let (a, b) = (stores[0].webhook_queue(), stores[1].webhook_queue());
    let t0 = Timestamp::now_utc();
    let at = |ms: i64| t0.plus_millis(ms);
    let delivery = |n: u32| PendingDelivery {
        id: format!("sess{n}.approved"),
        app_id: "demo".into(),
        url: "https://rp.example.com/hook".into(),
        body: format!("{{\"id\":\"sess{n}\"}}"),
        attempts: 0,
        backoff_ms: 1000,
    };
    a.put(&delivery(1), at(0)).await.unwrap();
    a.put(&delivery(2), at(60_000)).await.unwrap();

    // Due now: one node gets it, the other nothing, until the lease ends.
    let got = a.claim_due(at(10), at(10_000), 10).await.unwrap();
    assert_eq!(got, vec![delivery(1)]);
    assert!(b
        .claim_due(at(20), at(10_020), 10)
        .await
        .unwrap()
        .is_empty());
    // Its claimer died: after the lease the other node gets it.
    let again = b.claim_due(at(10_001), at(20_000), 10).await.unwrap();
    assert_eq!(again, vec![delivery(1)]);
    // Put back after a failed attempt: not before its next due time.
    let mut retried = delivery(1);
    retried.attempts = 1;
    b.put(&retried, at(12_000)).await.unwrap();
    assert!(a
        .claim_due(at(11_000), at(21_000), 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        a.claim_due(at(12_000), at(22_000), 10).await.unwrap(),
        vec![retried]
    );
    // Delivered: gone for every node, and the other delivery is untouched.
    a.done("sess1.approved").await.unwrap();
    assert_eq!(
        b.claim_due(at(100_000), at(110_000), 10).await.unwrap(),
        vec![delivery(2)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_webhook_queue_leases_each_delivery_to_one_node() {
    let stores = redis_stores(2, &server_url().await, "wh").await;
    webhook_queue_leases_each_delivery_to_one_node(stores).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_webhook_queue_leases_each_delivery_to_one_node() {
    let stores = redis_stores(2, &cluster_urls().await, "wh-cluster").await;
    webhook_queue_leases_each_delivery_to_one_node(stores).await
}
