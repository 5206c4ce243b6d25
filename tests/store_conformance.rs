//! The `RecordStore` contract (src/store/mod.rs), written once and run for
//! each record type (sessions, conversations) against every backend: the
//! memory store, a standalone Redis and a 3-master Redis Cluster. For the
//! Redis stores, "nodes" are separate `RedisStore`s (own connections, own
//! subscriber) on one key prefix, as separate broker processes would be;
//! every test uses its own prefix. What only one record type has (a
//! conversation's moving deadlines, its many requests) follows, on every
//! backend too; then the Redis audit stream (appends from several nodes form
//! one chain), Redis outages, record sets and the webhook queue.
//!
//! Time is passed to the store explicitly, so deadline tests never sleep.

mod support;

use bzt::store::memory::MemoryStore;
use bzt::store::redis::{RedisAuditLog, RedisSettings, RedisStore};
use bzt::store::{AuditLog, AuditQuery};
use bzt::store::{RecordStore, StoreError, StoredRecord, EXPIRY_LEASE};
use bzt_core::conversation::{
    ConvApplied, ConvOp, ConvOutput, Conversation, EndedBy, OpenConversation, RequestStatus,
};
use bzt_core::pki::CertificateInfo;
use bzt_core::secret::{ConversationId, RequestId};
use bzt_core::session::{
    CancelledBy, ConversationPolicy, Device, DisplayText, Kind, NewSession, NewSessionRequest, Op,
    OpOutput,
};
use bzt_core::{DomainError, ErrorCode, Secret, Session, SessionId, Status, Timestamp};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use support::redis::{RedisCluster, RedisServer};

type Nodes<R> = Vec<Arc<dyn RecordStore<R>>>;

const WAIT: Duration = Duration::from_secs(5);

/// A change the suite asks a store to make.
type Change<R, O> = Box<dyn FnMut(&mut R) -> O + Send>;

/// What the suite needs of a record type: fresh records, and the domain's
/// changes that play each part of the contract.
trait Subject: StoredRecord {
    /// What its changes answer here.
    type Out: Send + std::fmt::Debug + 'static;
    /// A new record whose deadline is `deadline_s` after `now`.
    fn fresh(deadline_s: u32, now: Timestamp) -> Self;
    /// `read` is `written`, read back.
    fn assert_read_back(read: &Self, written: &Self);
    /// Brings a fresh record (before it is stored) to where many callers can
    /// race for one change (a conversation gets a pending request).
    fn prepare_race(&mut self, now: Timestamp);
    /// Caller `i`'s attempt at the change only one caller can make (a
    /// claim; an answer to the one request).
    fn contend(r: &Self, i: usize, now: Timestamp) -> Change<Self, Self::Out>;
    /// Whether the attempt won; checks its answer either way.
    fn won(out: &Self::Out, changed: bool) -> bool;
    /// After the race: the one winner's change is what is stored.
    fn assert_after_race(r: &Self);
    /// A change of a fresh record (a claim; a new request), and one that
    /// changes nothing after it (a second claim; a tick with nothing due).
    fn change(r: &Self, now: Timestamp) -> Change<Self, Self::Out>;
    fn no_change(r: &Self, now: Timestamp) -> Change<Self, Self::Out>;
    /// A change that ends the record (the RP cancels; the requester ends
    /// the conversation), and its checks given the record `before`.
    fn end(now: Timestamp) -> Change<Self, Self::Out>;
    fn assert_ended(out: &Self::Out, before: &Self, after: &Self);
    /// What a sweep does at the record's deadline (expire; tick), and its
    /// checks: the record ended.
    fn at_deadline(now: Timestamp) -> Change<Self, Self::Out>;
    fn assert_deadline_applied(out: &Self::Out, after: &Self);
}

// ---- sessions ---------------------------------------------------------------

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

/// A session op as the store's change: its answer and the status before.
fn session_op(op: Op, now: Timestamp) -> Change<Session, (Result<OpOutput, DomainError>, Status)> {
    Box::new(move |s: &mut Session| {
        let before = s.status;
        (s.apply(&op, now).output, before)
    })
}

impl Subject for Session {
    type Out = (Result<OpOutput, DomainError>, Status);

    fn fresh(deadline_s: u32, now: Timestamp) -> Self {
        session(deadline_s, now)
    }

    fn assert_read_back(read: &Self, s: &Self) {
        assert_eq!(read.id, s.id);
        assert_eq!(read.rev, s.rev);
        assert_eq!(read.status, Status::Pending);
        assert_eq!(read.expires_at, s.expires_at);
        assert_eq!(read.tbs, s.tbs);
        assert!(read.claim.current.matches(&s.claim.current));
    }

    fn prepare_race(&mut self, _now: Timestamp) {}

    fn contend(s: &Self, i: usize, now: Timestamp) -> Change<Self, Self::Out> {
        session_op(claim(s, i), now)
    }

    fn won((output, previous_status): &Self::Out, changed: bool) -> bool {
        match output {
            Ok(OpOutput::Claimed { .. }) => {
                assert!(changed);
                assert_eq!(*previous_status, Status::Pending);
                true
            }
            Err(e) => {
                assert_eq!(e.code, ErrorCode::AlreadyClaimed);
                assert!(!changed);
                false
            }
            Ok(other) => panic!("unexpected output {other:?}"),
        }
    }

    fn assert_after_race(after: &Self) {
        assert_eq!(after.status, Status::Scanned);
        assert_eq!(after.version, 2);
    }

    fn change(s: &Self, now: Timestamp) -> Change<Self, Self::Out> {
        session_op(claim(s, 1), now)
    }

    fn no_change(s: &Self, now: Timestamp) -> Change<Self, Self::Out> {
        session_op(claim(s, 2), now)
    }

    fn end(now: Timestamp) -> Change<Self, Self::Out> {
        session_op(
            Op::Cancel {
                by: CancelledBy::Rp,
            },
            now,
        )
    }

    fn assert_ended((output, previous_status): &Self::Out, before: &Self, after: &Self) {
        assert!(output.is_ok(), "{output:?}");
        // The suite ends a claimed session.
        assert_eq!(before.status, Status::Scanned);
        assert_eq!(*previous_status, Status::Scanned);
        assert_eq!(after.status, Status::Cancelled);
    }

    fn at_deadline(now: Timestamp) -> Change<Self, Self::Out> {
        session_op(Op::Expire, now)
    }

    fn assert_deadline_applied(_: &Self::Out, after: &Self) {
        assert_eq!(after.status, Status::Expired);
    }
}

// ---- conversations ----------------------------------------------------------

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

/// A conversation op as the store's change: its answer and whether the
/// conversation had ended before.
fn conv_op(op: ConvOp, now: Timestamp) -> Change<Conversation, (ConvApplied, bool)> {
    Box::new(move |c: &mut Conversation| {
        let was_ended = c.is_ended();
        (c.apply(&op, now), was_ended)
    })
}

impl Subject for Conversation {
    type Out = (ConvApplied, bool);

    fn fresh(idle_s: u32, now: Timestamp) -> Self {
        conversation(idle_s, now)
    }

    fn assert_read_back(read: &Self, c: &Self) {
        assert_eq!(read.id, c.id);
        assert_eq!(read.rev, 1);
        assert_eq!(read.expires_at, c.expires_at);
        assert_eq!(read.certificate.subject, "CN=张三");
    }

    fn prepare_race(&mut self, now: Timestamp) {
        let (_, op) = add_request(1);
        assert!(self.apply(&op, now).changed);
    }

    fn contend(c: &Self, i: usize, now: Timestamp) -> Change<Self, Self::Out> {
        conv_op(respond(&c.requests[0].id, i), now)
    }

    fn won((applied, _): &Self::Out, changed: bool) -> bool {
        match &applied.output {
            Ok(ConvOutput::Done) => {
                assert!(changed);
                assert_eq!(applied.finished.len(), 1);
                true
            }
            Err(e) => {
                assert_eq!(e.code, ErrorCode::Conflict, "{e:?}");
                assert!(!changed);
                false
            }
            Ok(other) => panic!("unexpected {other:?}"),
        }
    }

    fn assert_after_race(after: &Self) {
        assert!(after
            .requests
            .iter()
            .all(|r| r.status == RequestStatus::Approved && r.signature.is_some()));
    }

    fn change(_: &Self, now: Timestamp) -> Change<Self, Self::Out> {
        conv_op(add_request(1).1, now)
    }

    fn no_change(_: &Self, now: Timestamp) -> Change<Self, Self::Out> {
        conv_op(ConvOp::Tick, now)
    }

    fn end(now: Timestamp) -> Change<Self, Self::Out> {
        conv_op(
            ConvOp::End {
                by: EndedBy::Requester,
            },
            now,
        )
    }

    fn assert_ended((applied, was_ended): &Self::Out, before: &Self, after: &Self) {
        assert!(applied.output.is_ok(), "{applied:?}");
        assert!(!was_ended && after.is_ended(), "ended now");
        let pending = before.requests.iter().filter(|r| !r.is_finished()).count();
        assert_eq!(
            applied.finished.len(),
            pending,
            "the pending requests expired with it"
        );
    }

    fn at_deadline(now: Timestamp) -> Change<Self, Self::Out> {
        conv_op(ConvOp::Tick, now)
    }

    fn assert_deadline_applied(_: &Self::Out, after: &Self) {
        assert_eq!(after.ended.map(|e| e.0), Some(EndedBy::Idle));
    }
}

fn unique_prefix(test: &str) -> String {
    format!("t-{test}-{}", SessionId::generate())
}

// ---- backends ---------------------------------------------------------------

async fn memory_nodes<R: Subject>(n: usize, _test: &str) -> Nodes<R> {
    let store: Arc<dyn RecordStore<R>> = Arc::new(MemoryStore::<R>::new());
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

fn as_nodes<R: Subject>(stores: Vec<Arc<RedisStore>>) -> Nodes<R> {
    stores
        .into_iter()
        .map(|s| s as Arc<dyn RecordStore<R>>)
        .collect()
}

async fn redis_nodes<R: Subject>(n: usize, test: &str) -> Nodes<R> {
    as_nodes(redis_stores(n, &server_url().await, test).await)
}

async fn cluster_nodes<R: Subject>(n: usize, test: &str) -> Nodes<R> {
    as_nodes(redis_stores(n, &cluster_urls().await, test).await)
}

// ---- the contract ----------------------------------------------------------

async fn insert_get_duplicate<R: Subject>(nodes: Nodes<R>) {
    let (a, b) = (&nodes[0], &nodes[1]);
    let now = Timestamp::now_utc();
    let r = R::fresh(180, now);
    a.insert(&r).await.unwrap();
    let read = b.get(r.id()).await.unwrap().expect("inserted record");
    R::assert_read_back(&read, &r);

    assert!(matches!(b.insert(&r).await, Err(StoreError::Duplicate)));

    let unknown = R::fresh(180, now);
    let unknown = unknown.id();
    assert!(a.get(unknown).await.unwrap().is_none());
    assert!(a
        .update(unknown, now, R::at_deadline(now))
        .await
        .unwrap()
        .is_none());
    assert!(a.subscribe(unknown).await.unwrap().is_none());
    a.ping().await.unwrap();
}

async fn update_is_atomic<R: Subject>(nodes: Nodes<R>) {
    let now = Timestamp::now_utc();
    let mut r = R::fresh(180, now);
    r.prepare_race(now);
    nodes[0].insert(&r).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let store = nodes[i % nodes.len()].clone();
        let change = R::contend(&r, i, now);
        let id = r.id().clone();
        tasks.push(tokio::spawn(async move {
            store.update(&id, now, change).await.unwrap().unwrap()
        }));
    }
    let mut winners = 0;
    for t in tasks {
        let u = t.await.unwrap();
        if R::won(&u.output, u.changed) {
            winners += 1;
        }
    }
    assert_eq!(winners, 1, "exactly one wins");
    let after = nodes[1].get(r.id()).await.unwrap().unwrap();
    R::assert_after_race(&after);
    assert_eq!(after.rev(), r.rev() + 1, "one write");
}

async fn subscribe_wakes_on_change<R: Subject>(nodes: Nodes<R>) {
    let (a, b) = (&nodes[0], &nodes[1]);
    let now = Timestamp::now_utc();
    let r = R::fresh(600, now);
    let id = r.id();
    a.insert(&r).await.unwrap();
    let mut on_a = a.subscribe(id).await.unwrap().unwrap();
    let mut on_b = b.subscribe(id).await.unwrap().unwrap();

    // A write on one node wakes receivers on both (the writer's directly,
    // the other's through Redis).
    let u = b
        .update(id, now, R::change(&r, now))
        .await
        .unwrap()
        .unwrap();
    assert!(u.changed);
    for rx in [&mut on_a, &mut on_b] {
        let rev = u.record.rev();
        tokio::time::timeout(WAIT, rx.wait_for(|v| *v >= rev))
            .await
            .expect("woken within 5 s")
            .expect("open");
    }
    // A change that changes nothing wakes nobody.
    let before = u.record;
    let u = a
        .update(id, now, R::no_change(&r, now))
        .await
        .unwrap()
        .unwrap();
    assert!(!u.changed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!on_a.has_changed().unwrap());
    assert!(!on_b.has_changed().unwrap());

    // The next write, made on the other node, wakes again.
    let u = a.update(id, now, R::end(now)).await.unwrap().unwrap();
    R::assert_ended(&u.output, &before, &u.record);
    let rev = u.record.rev();
    tokio::time::timeout(WAIT, on_b.wait_for(|v| *v >= rev))
        .await
        .expect("woken within 5 s")
        .expect("open");
}

/// A write that lands while another node is still subscribing is seen by
/// the new receiver: either in the value it starts with, or as a wake-up.
/// (A receiver that read the record's `rev` before its channel subscription
/// took effect would miss such a write for good.)
async fn a_write_racing_a_subscription_is_never_missed<R: Subject>(nodes: Nodes<R>) {
    let (a, b) = (nodes[0].clone(), nodes[1].clone());
    let now = Timestamp::now_utc();
    let mut missed = 0;
    for i in 0..150u64 {
        let r = R::fresh(600, now);
        let id = r.id().clone();
        a.insert(&r).await.unwrap();
        let writer = {
            let (b, id, change) = (b.clone(), id.clone(), R::change(&r, now));
            // Spread the write over the subscription's round trips.
            let delay = Duration::from_micros((i * 37) % 1500);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                b.update(&id, now, change).await.unwrap().unwrap()
            })
        };
        let mut rx = a.subscribe(&id).await.unwrap().unwrap();
        let written = writer.await.unwrap();
        assert!(written.changed);
        let rev = written.record.rev();
        // (`matches!` drops the borrow at once: a kept one blocks the next notification.)
        let seen = matches!(
            tokio::time::timeout(Duration::from_secs(2), rx.wait_for(|v| *v >= rev)).await,
            Ok(Ok(_))
        );
        if !seen {
            missed += 1;
        }
        a.remove(&id).await.unwrap();
    }
    assert_eq!(
        missed, 0,
        "writes missed by a receiver subscribing meanwhile"
    );
}

async fn remove_closes_receivers<R: Subject>(nodes: Nodes<R>) {
    let (a, b) = (&nodes[0], &nodes[1]);
    let now = Timestamp::now_utc();
    let r = R::fresh(180, now);
    let id = r.id();
    a.insert(&r).await.unwrap();
    let mut on_a = a.subscribe(id).await.unwrap().unwrap();
    let mut on_b = b.subscribe(id).await.unwrap().unwrap();
    b.remove(id).await.unwrap();
    for rx in [&mut on_a, &mut on_b] {
        let closed =
            tokio::time::timeout(WAIT, async { while rx.changed().await.is_ok() {} }).await;
        assert!(closed.is_ok(), "receiver closed within 5 s");
    }
    assert!(a.get(id).await.unwrap().is_none());
    assert!(a
        .update(id, now, R::at_deadline(now))
        .await
        .unwrap()
        .is_none());
    // Removing twice is fine.
    a.remove(id).await.unwrap();
}

async fn claim_due<R: Subject>(
    node: &Arc<dyn RecordStore<R>>,
    at: Timestamp,
    max: usize,
) -> Vec<R::Id> {
    node.claim_due(R::DEADLINES, at, max).await.unwrap()
}

async fn deadline_is_claimed_once<R: Subject>(nodes: Nodes<R>) {
    let t0 = Timestamp::now_utc();
    let r = R::fresh(30, t0);
    let other = R::fresh(60, t0);
    nodes[0].insert(&r).await.unwrap();
    nodes[0].insert(&other).await.unwrap();
    let mut rx = nodes[1].subscribe(r.id()).await.unwrap().unwrap();

    assert!(claim_due(&nodes[1], t0.plus_millis(29_999), 100)
        .await
        .is_empty());

    // Every node asks at once; exactly one gets the record.
    let due = t0.plus_secs(30);
    assert_eq!(r.next_deadline(), Some(due));
    let mut asks = Vec::new();
    for i in 0..8 {
        let store = nodes[i % nodes.len()].clone();
        asks.push(tokio::spawn(async move {
            store.claim_due(R::DEADLINES, due, 100).await.unwrap()
        }));
    }
    let mut claimed = Vec::new();
    for a in asks {
        claimed.extend(a.await.unwrap());
    }
    assert_eq!(claimed, vec![r.id().clone()], "claimed once, by one caller");

    let u = nodes[0]
        .update(r.id(), due, R::at_deadline(due))
        .await
        .unwrap()
        .unwrap();
    assert!(u.changed);
    R::assert_deadline_applied(&u.output, &u.record);
    let rev = u.record.rev();
    tokio::time::timeout(WAIT, rx.wait_for(|v| *v >= rev))
        .await
        .expect("subscriber woken by the deadline")
        .unwrap();
    nodes[0].deadlines_handled(&[u.record]).await.unwrap();

    // Handled, and it has no next deadline (it ended): never handed out again.
    let later = due.plus_millis(EXPIRY_LEASE.as_millis() as i64 + 1);
    assert!(claim_due(&nodes[1], later, 100).await.is_empty());

    // A claim that is never handled comes back once its lease ends.
    let due2 = t0.plus_secs(60);
    assert_eq!(
        claim_due(&nodes[1], due2, 100).await,
        vec![other.id().clone()]
    );
    assert!(claim_due(&nodes[0], due2, 100).await.is_empty());
    let lease = EXPIRY_LEASE.as_millis() as i64;
    assert!(claim_due(&nodes[0], due2.plus_millis(lease - 1), 100)
        .await
        .is_empty());
    let after_lease = due2.plus_millis(lease);
    assert_eq!(
        claim_due(&nodes[0], after_lease, 100).await,
        vec![other.id().clone()]
    );
    // Removing a record forgets its deadline.
    nodes[0].remove(other.id()).await.unwrap();
    let much_later = after_lease.plus_secs(3600);
    assert!(claim_due(&nodes[1], much_later, 100).await.is_empty());
}

/// A write that ends a record leaves its deadline behind (the hot path
/// stays one write): the sweep that claims it changes nothing and forgets
/// it, once.
async fn an_ended_records_deadline_is_handled_once_then_forgotten<R: Subject>(nodes: Nodes<R>) {
    let t0 = Timestamp::now_utc();
    let r = R::fresh(30, t0);
    nodes[0].insert(&r).await.unwrap();
    let ended = nodes[1]
        .update(r.id(), t0, R::end(t0))
        .await
        .unwrap()
        .unwrap();
    assert!(ended.changed);
    assert_eq!(ended.record.next_deadline(), None);

    let due = t0.plus_secs(30);
    let claimed = claim_due(&nodes[0], due, 100).await;
    assert_eq!(claimed, vec![r.id().clone()], "the entry is still there");
    let u = nodes[0]
        .update(r.id(), due, R::at_deadline(due))
        .await
        .unwrap()
        .unwrap();
    assert!(!u.changed, "nothing more was due");
    nodes[0].deadlines_handled(&[u.record]).await.unwrap();
    let much_later = due.plus_secs(7200);
    assert!(
        claim_due(&nodes[1], much_later, 100).await.is_empty(),
        "an ended record has no deadline"
    );
}

async fn due_deadlines_come_oldest_first_in_batches<R: Subject>(nodes: Nodes<R>) {
    let t0 = Timestamp::now_utc();
    let mut ids = Vec::new();
    for i in 0..5 {
        let r = R::fresh(30 + i, t0);
        nodes[i as usize % nodes.len()].insert(&r).await.unwrap();
        ids.push(r.id().clone());
    }
    let all_due = t0.plus_secs(60);
    let first = claim_due(&nodes[0], all_due, 2).await;
    assert_eq!(first, ids[..2].to_vec());
    let rest = claim_due(&nodes[1], all_due, 100).await;
    assert_eq!(rest, ids[2..].to_vec());
    let handled: Vec<_> = ids.iter().map(|id| (id.clone(), None)).collect();
    nodes[0].schedule(R::DEADLINES, &handled).await.unwrap();
    assert!(claim_due(&nodes[1], all_due.plus_secs(3600), 100)
        .await
        .is_empty());
}

/// A caller that just read the record may write from its copy; a stale
/// copy must never win over what happened since.
async fn update_on_a_stale_copy_sees_what_happened_since<R: Subject>(nodes: Nodes<R>) {
    let now = Timestamp::now_utc();
    let mut r = R::fresh(180, now);
    r.prepare_race(now);
    let id = r.id();
    nodes[0].insert(&r).await.unwrap();
    let stale = nodes[1].get(id).await.unwrap().unwrap();
    let first = nodes[0]
        .update(id, now, R::contend(&r, 1, now))
        .await
        .unwrap()
        .unwrap();
    assert!(R::won(&first.output, first.changed));

    let late = nodes[1]
        .update_on(&stale, now, R::contend(&r, 2, now))
        .await
        .unwrap()
        .unwrap();
    assert!(!R::won(&late.output, late.changed));
    assert!(!late.changed);
    assert_eq!(
        late.record.rev(),
        r.rev() + 1,
        "it answers the current record"
    );

    let fresh = nodes[1].get(id).await.unwrap().unwrap();
    let done = nodes[1]
        .update_on(&fresh, now, R::end(now))
        .await
        .unwrap()
        .unwrap();
    assert!(done.changed);
    R::assert_ended(&done.output, &fresh, &done.record);
    let after = nodes[0].get(id).await.unwrap().unwrap();
    R::assert_ended(&done.output, &fresh, &after);
    assert_eq!(after.rev(), r.rev() + 2, "one write each");

    nodes[0].remove(id).await.unwrap();
    assert!(nodes[1]
        .update_on(&fresh, now, R::end(now))
        .await
        .unwrap()
        .is_none());
}

/// Shared stores ask every node to poll; the memory store's own timers see
/// every deadline.
async fn polls_only_when_shared<R: Subject>(nodes: Nodes<R>, shared: bool) {
    assert_eq!(nodes[0].poll_interval().is_some(), shared);
}

macro_rules! conformance {
    ($backend:ident, $record:ty, $nodes:ident, shared: $shared:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn insert_get_duplicate() {
                super::insert_get_duplicate($nodes::<$record>(2, "insert").await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn update_is_atomic() {
                super::update_is_atomic($nodes::<$record>(3, "atomic").await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn update_on_a_stale_copy_sees_what_happened_since() {
                super::update_on_a_stale_copy_sees_what_happened_since(
                    $nodes::<$record>(2, "stale").await,
                )
                .await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn subscribe_wakes_on_change() {
                super::subscribe_wakes_on_change($nodes::<$record>(2, "wake").await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_write_racing_a_subscription_is_never_missed() {
                super::a_write_racing_a_subscription_is_never_missed(
                    $nodes::<$record>(2, "subrace").await,
                )
                .await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn remove_closes_receivers() {
                super::remove_closes_receivers($nodes::<$record>(2, "remove").await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn deadline_is_claimed_once() {
                super::deadline_is_claimed_once($nodes::<$record>(3, "deadline").await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn an_ended_records_deadline_is_handled_once_then_forgotten() {
                super::an_ended_records_deadline_is_handled_once_then_forgotten(
                    $nodes::<$record>(2, "leftover").await,
                )
                .await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn due_deadlines_come_oldest_first_in_batches() {
                super::due_deadlines_come_oldest_first_in_batches(
                    $nodes::<$record>(2, "batches").await,
                )
                .await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn polls_only_when_shared() {
                super::polls_only_when_shared($nodes::<$record>(1, "poll").await, $shared).await
            }
        }
    };
}

conformance!(memory, Session, memory_nodes, shared: false);
conformance!(redis, Session, redis_nodes, shared: true);
conformance!(redis_cluster, Session, cluster_nodes, shared: true);
conformance!(memory_conversations, Conversation, memory_nodes, shared: false);
conformance!(redis_conversations, Conversation, redis_nodes, shared: true);
conformance!(redis_cluster_conversations, Conversation, cluster_nodes, shared: true);

// ---- conversations only ------------------------------------------------------

/// A conversation op through the store, answered as the broker sees it.
#[derive(Debug)]
struct ConvUpdate {
    output: Result<ConvOutput, DomainError>,
    conversation: Conversation,
    changed: bool,
    finished: Vec<RequestId>,
}

#[async_trait::async_trait]
trait ApplyConversation {
    async fn apply_conversation(
        &self,
        id: &ConversationId,
        op: &ConvOp,
        now: Timestamp,
    ) -> Result<Option<ConvUpdate>, StoreError>;
}

#[async_trait::async_trait]
impl ApplyConversation for dyn RecordStore<Conversation> {
    async fn apply_conversation(
        &self,
        id: &ConversationId,
        op: &ConvOp,
        now: Timestamp,
    ) -> Result<Option<ConvUpdate>, StoreError> {
        let u = self.update(id, now, conv_op(op.clone(), now)).await?;
        Ok(u.map(|u| {
            let (applied, _) = u.output;
            ConvUpdate {
                output: applied.output,
                changed: u.changed,
                finished: applied.finished,
                conversation: u.record,
            }
        }))
    }
}

/// Requests added from every node at once all land (no lost update), and
/// many concurrent answers to each request give exactly one approval.
async fn conv_apply_is_atomic(nodes: Nodes<Conversation>) {
    let now = Timestamp::now_utc();
    let c = conversation(600, now);
    nodes[0].insert(&c).await.unwrap();

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
    let after = nodes[1].get(&c.id).await.unwrap().unwrap();
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
    let done = nodes[2].get(&c.id).await.unwrap().unwrap();
    assert!(done
        .requests
        .iter()
        .all(|r| r.status == RequestStatus::Approved && r.signature.is_some()));
    assert_eq!(done.rev, 25, "one write per add and per approval");
}

async fn claim_at(node: &Arc<dyn RecordStore<Conversation>>, at: Timestamp) -> Vec<ConversationId> {
    node.claim_due(Conversation::DEADLINES, at, 100)
        .await
        .unwrap()
}

/// The shared deadlines of conversations: handed to one node at a time,
/// following the deadline as writes move it (earlier with a request's TTL,
/// later once it is answered), and never hidden by a claimer's stale view.
async fn conversation_deadlines(nodes: Nodes<Conversation>) {
    let t0 = Timestamp::now_utc();
    let lease = EXPIRY_LEASE.as_millis() as i64;

    // Idle after 60 s: one claim among many callers, then ticked to its end.
    let idle = conversation(60, t0);
    nodes[0].insert(&idle).await.unwrap();
    assert!(claim_at(&nodes[1], t0.plus_millis(59_999)).await.is_empty());
    let due = t0.plus_secs(60);
    let asks: Vec<_> = (0..8)
        .map(|i| {
            let n = nodes[i % nodes.len()].clone();
            tokio::spawn(async move {
                n.claim_due(Conversation::DEADLINES, due, 100)
                    .await
                    .unwrap()
            })
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
    nodes[2]
        .deadlines_handled(std::slice::from_ref(&u.conversation))
        .await
        .unwrap();
    assert!(
        claim_at(&nodes[0], due.plus_secs(7200)).await.is_empty(),
        "an ended conversation has no deadline"
    );

    // A request moves the deadline earlier (its 60 s TTL before the 600 s idle).
    let busy = conversation(600, t0);
    nodes[0].insert(&busy).await.unwrap();
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
    nodes[0]
        .deadlines_handled(std::slice::from_ref(&u.conversation))
        .await
        .unwrap();
    // Next: idle, 600 s after the request arrived.
    let idle_at = t0.plus_secs(601);
    assert!(claim_at(&nodes[1], idle_at.plus_millis(-1))
        .await
        .is_empty());
    assert_eq!(claim_at(&nodes[1], idle_at).await, vec![busy.id.clone()]);
    // Removing a conversation forgets its deadline.
    nodes[0].remove(&busy.id).await.unwrap();
    assert!(claim_at(&nodes[2], t0.plus_secs(90_000)).await.is_empty());

    // A write during a lease wins over the claimer's stale view: the
    // claimer read before a new request arrived and records the old idle
    // deadline afterwards; the request's TTL must still come first.
    let raced = conversation(600, t0);
    nodes[0].insert(&raced).await.unwrap();
    let idle_due = t0.plus_secs(600);
    assert_eq!(claim_at(&nodes[1], idle_due).await, vec![raced.id.clone()]);
    let stale = nodes[1].get(&raced.id).await.unwrap().unwrap();
    let (_, op) = add_request(1);
    let early = t0.plus_secs(599);
    nodes[2]
        .apply_conversation(&raced.id, &op, early)
        .await
        .unwrap()
        .unwrap();
    let mut later = stale.clone();
    later.last_request_at = t0.plus_secs(3000); // the stale view, as if idle far away
    nodes[1]
        .deadlines_handled(std::slice::from_ref(&later))
        .await
        .unwrap();
    assert_eq!(
        claim_at(&nodes[0], early.plus_secs(60)).await,
        vec![raced.id.clone()],
        "the new request's TTL is not hidden"
    );

    nodes[0].remove(&raced.id).await.unwrap();
}

/// A rolling upgrade: a node of the version before `.5` lease scores still
/// claims due ids by re-scoring them to the integer end of their lease, and
/// the current schedule script cannot tell that score from a due time. What
/// happens, step by step, when such a lease meets a current node's write and
/// its claimer dies: the integer lease is kept as an earlier due time, costs
/// exactly one handling that changes nothing, and then the real deadline
/// comes back on time. Nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_an_old_nodes_integer_lease_costs_one_no_op_handling() {
    let url = server_url().await;
    let prefix = unique_prefix("old-lease");
    let mut nodes: Nodes<Conversation> = Vec::new();
    for _ in 0..2 {
        nodes.push(Arc::new(redis_store(&url, &prefix).await));
    }
    let queue = format!("{prefix}:{{{}}}", Conversation::DEADLINES.0);
    let mut redis = ::redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let t0 = Timestamp::now_utc();
    let lease = EXPIRY_LEASE.as_millis() as i64;

    let c = conversation(600, t0);
    nodes[0].insert(&c).await.unwrap();
    let idle_due = t0.plus_secs(600);

    // The old node claims the idle deadline as it did: the same script, with
    // the lease's end as a whole number of milliseconds.
    let old_lease_end = idle_due.plus_millis(lease);
    let old_claim: Vec<String> = ::redis::Script::new(
        "local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], 'XX', ARGV[2], id) end
return ids",
    )
    .key(&queue)
    .arg(idle_due.unix_millis())
    .arg(old_lease_end.unix_millis())
    .arg(100)
    .invoke_async(&mut redis)
    .await
    .unwrap();
    assert_eq!(old_claim, vec![c.id.to_string()]);
    // Current nodes respect it as they would their own lease.
    assert!(claim_at(&nodes[1], old_lease_end.plus_millis(-1))
        .await
        .is_empty());

    // A current node writes meanwhile (a request, whose 60 s TTL is now the
    // next deadline; its clock a second behind the old node's). The schedule
    // script takes the integer lease for an earlier due time and keeps it.
    let (_, op) = add_request(1);
    let write_at = t0.plus_secs(599);
    let ttl = write_at.plus_secs(60);
    nodes[0]
        .apply_conversation(&c.id, &op, write_at)
        .await
        .unwrap()
        .unwrap();
    let score: f64 = ::redis::cmd("ZSCORE")
        .arg(&queue)
        .arg(c.id.as_str())
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(
        score,
        old_lease_end.unix_millis() as f64,
        "kept, not replaced by the TTL"
    );

    // The old node dies (or is stopped by the upgrade) before it records
    // anything. At the end of its lease a current node claims the id: the
    // one extra handling. Nothing is due then, so the tick changes nothing,
    // and recording the next deadline replaces the current node's own lease.
    assert_eq!(claim_at(&nodes[1], old_lease_end).await, vec![c.id.clone()]);
    let extra = nodes[1]
        .apply_conversation(&c.id, &ConvOp::Tick, old_lease_end)
        .await
        .unwrap()
        .unwrap();
    assert!(!extra.changed, "the extra handling is a no-op");
    assert_eq!(extra.conversation.next_deadline(), Some(ttl));
    nodes[1]
        .deadlines_handled(std::slice::from_ref(&extra.conversation))
        .await
        .unwrap();

    // Nothing lost, nothing more: the request's TTL is due exactly on time,
    // and not one handling before it.
    assert!(claim_at(&nodes[0], ttl.plus_millis(-1)).await.is_empty());
    assert_eq!(claim_at(&nodes[0], ttl).await, vec![c.id.clone()]);
    let expired = nodes[0]
        .apply_conversation(&c.id, &ConvOp::Tick, ttl)
        .await
        .unwrap()
        .unwrap();
    assert!(expired.changed, "the request expired on time");
    nodes[0].remove(&c.id).await.unwrap();
}

/// A second insert of a taken id is refused and changes nothing, its
/// deadline included (on one Redis server the record and its first
/// deadline are one script; a Cluster, where they are two calls, may keep
/// the earlier deadline: docs/redis.md).
async fn a_refused_insert_leaves_the_deadline_alone(node: Arc<dyn RecordStore<Session>>) {
    let t0 = Timestamp::now_utc();
    let first = session(180, t0);
    node.insert(&first).await.unwrap();
    let mut again = first.clone();
    again.expires_at = t0.plus_secs(10);

    assert!(matches!(
        node.insert(&again).await,
        Err(StoreError::Duplicate)
    ));

    let due = |at| node.claim_due(Session::DEADLINES, at, 100);
    assert!(due(t0.plus_secs(11)).await.unwrap().is_empty());
    assert_eq!(due(first.expires_at).await.unwrap(), vec![first.id.clone()]);
}

#[tokio::test]
async fn memory_a_refused_insert_leaves_the_deadline_alone() {
    let node = memory_nodes::<Session>(1, "dup-due").await.remove(0);
    a_refused_insert_leaves_the_deadline_alone(node).await
}

#[tokio::test]
async fn redis_a_refused_insert_leaves_the_deadline_alone() {
    let node = redis_nodes::<Session>(1, "dup-due").await.remove(0);
    a_refused_insert_leaves_the_deadline_alone(node).await
}

macro_rules! conversation_only {
    ($backend:ident, $nodes:ident) => {
        mod $backend {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn apply_is_atomic_one_approval_per_request() {
                super::conv_apply_is_atomic($nodes::<Conversation>(3, "c-atomic").await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn deadlines_follow_writes() {
                super::conversation_deadlines($nodes::<Conversation>(3, "c-due").await).await
            }
        }
    };
}

conversation_only!(memory_conversation_only, memory_nodes);
conversation_only!(redis_conversation_only, redis_nodes);
conversation_only!(redis_cluster_conversation_only, cluster_nodes);

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

/// Rewrites the audit stream entry of record `seq` with `edit`'s line (the
/// stream cannot be edited in place: every entry goes back with its id).
async fn rewrite_audit_entry(url: &str, stream: &str, seq: u64, edit: impl Fn(&str) -> String) {
    let mut conn = ::redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let all: ::redis::streams::StreamRangeReply = ::redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = ::redis::cmd("DEL")
        .arg(stream)
        .query_async(&mut conn)
        .await
        .unwrap();
    for entry in all.ids {
        let line: String = entry.get("record").unwrap();
        // By the seq it names: an earlier edit may have left no record.
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        let line = if value["seq"].as_u64() == Some(seq) {
            edit(&line)
        } else {
            line
        };
        let _: String = ::redis::cmd("XADD")
            .arg(stream)
            .arg(&entry.id)
            .arg("record")
            .arg(line)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

/// A node starts on the Redis stream only if its tail (the entries since
/// the last checkpoint, and that checkpoint's signature) is intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_audit_a_broken_tail_stops_the_start_naming_the_stream_and_seq() {
    use bzt_core::audit::{Event, Record};
    let url = server_url().await;
    let prefix = unique_prefix("audit-tail");
    let s = settings(&url, &prefix);
    let key = audit_key();
    let stream = format!("{prefix}:{{audit}}");
    // seq 1-3 operations, 4 a checkpoint, 5-7, 8 a checkpoint, 9-10 unsigned.
    {
        let node = RedisAuditLog::connect(&s, key.clone(), 3).await.unwrap();
        for n in 0..8 {
            node.append(audit_op(0, n), Timestamp::now_utc())
                .await
                .unwrap();
        }
    }
    let lines = RedisAuditLog::open_read_only(&s)
        .await
        .unwrap()
        .lines()
        .await
        .unwrap();
    let records: Vec<Record> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 10);
    assert!(matches!(records[7].body.event, Event::Checkpoint(_)));
    let original = |seq: u64| lines[seq as usize - 1].clone();
    let start = || RedisAuditLog::connect(&s, key.clone(), 3);
    let refusal = |r: anyhow::Result<RedisAuditLog>| {
        let e = r.err().expect("the start is refused").to_string();
        assert!(e.contains(&stream), "names the stream: {e}");
        e
    };

    // Intact: starts, and appends on the chain.
    start().await.expect("an intact chain starts");

    // An operation after the last checkpoint edited (its hash left alone).
    rewrite_audit_entry(&url, &stream, 9, |line| {
        let mut r: Record = serde_json::from_str(line).unwrap();
        if let Event::Operation(op) = &mut r.body.event {
            op.outcome = "rejected".into();
        }
        r.to_line()
    })
    .await;
    let e = refusal(start().await);
    assert!(e.contains("record seq 9") && e.contains("edited"), "{e}");
    rewrite_audit_entry(&url, &stream, 9, |_| original(9)).await;
    start().await.expect("restored");

    // The last checkpoint's signature dropped.
    rewrite_audit_entry(&url, &stream, 8, |line| {
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        v.as_object_mut().unwrap().remove("signature_b64");
        v.to_string()
    })
    .await;
    let e = refusal(start().await);
    assert!(
        e.contains("record seq 8") && e.contains("not a record"),
        "{e}"
    );
    // …or replaced by the previous checkpoint's, the tail's hashes and the
    // head recomputed: only the signature check can tell.
    let old_signature = match &records[3].body.event {
        Event::Checkpoint(cp) => cp.signature_b64.clone(),
        _ => unreachable!(),
    };
    let mut prev = records[6].hash.clone();
    for seq in 8..=10u64 {
        let mut body = records[seq as usize - 1].body.clone();
        body.prev = prev.clone();
        if let Event::Checkpoint(cp) = &mut body.event {
            cp.signature_b64 = old_signature.clone();
        }
        let forged = body.seal();
        prev = forged.hash.clone();
        rewrite_audit_entry(&url, &stream, seq, |_| forged.to_line()).await;
    }
    let mut conn = ::redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let head_key = format!("{stream}:head");
    let real_head: String = ::redis::cmd("HGET")
        .arg(&head_key)
        .arg("hash")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = ::redis::cmd("HSET")
        .arg(&head_key)
        .arg("hash")
        .arg(&prev)
        .query_async(&mut conn)
        .await
        .unwrap();
    let e = refusal(start().await);
    assert!(
        e.contains("record seq 8") && e.contains("signature does not verify"),
        "{e}"
    );
    for seq in 8..=10 {
        rewrite_audit_entry(&url, &stream, seq, |_| original(seq)).await;
    }
    let _: () = ::redis::cmd("HSET")
        .arg(&head_key)
        .arg("hash")
        .arg(&real_head)
        .query_async(&mut conn)
        .await
        .unwrap();
    start().await.expect("restored");

    // The last record removed.
    let last_id: ::redis::streams::StreamRangeReply = ::redis::cmd("XREVRANGE")
        .arg(&stream)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = ::redis::cmd("XDEL")
        .arg(&stream)
        .arg(&last_id.ids[0].id)
        .query_async(&mut conn)
        .await
        .unwrap();
    let e = refusal(start().await);
    assert!(e.contains("expected seq 10"), "{e}");
}

/// A young chain (no checkpoint yet) longer than one page of the check's
/// reads: walked back to the genesis hash, a break found on a later page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_audit_a_long_unsigned_tail_is_checked_to_its_start() {
    use bzt_core::audit::{Event, Record};
    let url = server_url().await;
    let prefix = unique_prefix("audit-long");
    let s = settings(&url, &prefix);
    let key = audit_key();
    let stream = format!("{prefix}:{{audit}}");
    {
        let node = Arc::new(
            RedisAuditLog::connect(&s, key.clone(), 10_000)
                .await
                .unwrap(),
        );
        let appends = (0..620).map(|n| {
            let node = node.clone();
            tokio::spawn(async move { node.append(audit_op(0, n), Timestamp::now_utc()).await })
        });
        for a in appends {
            a.await.unwrap().unwrap();
        }
    }
    RedisAuditLog::connect(&s, key.clone(), 10_000)
        .await
        .expect("an intact young chain starts");
    rewrite_audit_entry(&url, &stream, 3, |line| {
        let mut r: Record = serde_json::from_str(line).unwrap();
        if let Event::Operation(op) = &mut r.body.event {
            op.cert_serial = "ff".into();
        }
        r.to_line()
    })
    .await;
    let e = RedisAuditLog::connect(&s, key.clone(), 10_000)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(
        e.contains(&stream) && e.contains("record seq 3") && e.contains("edited"),
        "{e}"
    );
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
    let store: Arc<dyn RecordStore<Session>> =
        Arc::new(redis_store(&server.url(), &unique_prefix("outage")).await);
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
            store.update(&s.id, now, session_op(Op::Expire, now)).await,
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
        .update(&fresh.id, now, session_op(claim(&fresh, 1), now))
        .await
        .unwrap()
        .unwrap();
    assert!(u.changed);
    tokio::time::timeout(WAIT, rx2.wait_for(|r| *r >= u.record.rev))
        .await
        .unwrap()
        .unwrap();
}

/// Restarts Redis (its data is gone with it), puts `record` back through
/// `b` once Redis answers, and waits for `rx`'s gap wake-up, which comes
/// after its node re-subscribed. Answers the deadline of what follows.
async fn restart_redis_and_put_back(
    server: &mut RedisServer,
    b: &Arc<dyn RecordStore<Session>>,
    record: &Session,
    rx: &mut tokio::sync::watch::Receiver<u64>,
) -> std::time::Instant {
    tokio::task::block_in_place(|| server.restart());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while b.insert(record).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "no recovery in 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::timeout(Duration::from_secs(10), rx.changed())
        .await
        .expect("gap wake-up")
        .unwrap();
    deadline
}

/// The subscriber connection re-subscribes after a reconnection: a write
/// made through another node afterwards still wakes this node's receiver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_resubscribes_after_reconnect() {
    let mut server = RedisServer::start();
    let prefix = unique_prefix("resub");
    let a_store = Arc::new(redis_store(&server.url(), &prefix).await);
    let a: Arc<dyn RecordStore<Session>> = a_store.clone();
    let b: Arc<dyn RecordStore<Session>> = Arc::new(redis_store(&server.url(), &prefix).await);
    let now = Timestamp::now_utc();
    let s = session(180, now);
    a.insert(&s).await.unwrap();
    let mut rx = a.subscribe(&s.id).await.unwrap().unwrap();

    restart_redis_and_put_back(&mut server, &b, &s, &mut rx).await;
    let u = b
        .update(&s.id, now, session_op(claim(&s, 1), now))
        .await
        .unwrap()
        .unwrap();
    assert!(u.changed);
    tokio::time::timeout(WAIT, rx.wait_for(|r| *r >= u.record.rev))
        .await
        .expect("woken through the new subscription")
        .unwrap();
    assert_eq!(a_store.local_subscriptions(), 1);
}

/// A failed-claims budget counted in the Redis of `settings`,
/// as the claim handler sees it through [`bzt::http::limits::Limits`].
async fn redis_counted_claim_limits(
    settings: &RedisSettings,
    budget: u32,
) -> bzt::http::limits::Limits {
    let store = RedisStore::connect(settings.clone())
        .await
        .expect("connect to redis");
    let failed_claims = store
        .failed_claims(settings, budget, Duration::from_secs(60))
        .await
        .expect("claim-lock subscriber");
    bzt::http::limits::Limits::with_failed_claims(
        &bzt::config::LimitsConfig {
            failed_claims_per_session_per_minute: budget,
            ..Default::default()
        },
        Arc::new(failed_claims),
    )
}

/// While Redis cannot count (the caller made it so), the first `budget`
/// wrong claims of a QR code still reach the secret check, each counted
/// within about one Redis timeout, and the next is refused: the node counted
/// them in its own memory. Another QR code keeps its own budget.
async fn wrong_claims_past_the_budget_are_refused_on_the_node(
    limits: &bzt::http::limits::Limits,
    budget: u32,
    timeout: Duration,
) {
    let qr_code = SessionId::generate();
    let another = SessionId::generate();
    for wrong in 1..=budget {
        assert!(
            limits.claim_of(&qr_code).is_ok(),
            "wrong claim {wrong} of {budget} still reaches the secret check"
        );
        let started = std::time::Instant::now();
        limits.claim_failed(&qr_code).await;
        assert!(
            started.elapsed() < timeout * 3,
            "counting a failure Redis cannot count took {:?}",
            started.elapsed()
        );
    }
    let refused = limits
        .claim_of(&qr_code)
        .expect_err("the wrong claim after the budget is refused");
    assert_eq!(refused.code, ErrorCode::RateLimited);
    assert!(
        limits.claim_of(&another).is_ok(),
        "another QR code keeps its own budget"
    );
}

/// Redis down (stopped): a wrong claim cannot be counted there, so the node
/// counts it itself and the QR code's budget still runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_failed_claims_are_counted_on_the_node() {
    let mut server = RedisServer::start();
    let settings = settings(&server.url(), &unique_prefix("claim-fallback"));
    let limits = redis_counted_claim_limits(&settings, 3).await;
    server.stop();
    wrong_claims_past_the_budget_are_refused_on_the_node(&limits, 3, settings.timeout).await;
}

/// Redis up but not answering in time (`CLIENT PAUSE`): the count times out
/// and is kept on the node, as when Redis is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_timing_out_failed_claims_are_counted_on_the_node() {
    let server = RedisServer::start();
    let mut settings = settings(&server.url(), &unique_prefix("claim-timeout"));
    settings.timeout = Duration::from_millis(300);
    let limits = redis_counted_claim_limits(&settings, 3).await;
    let mut admin = ::redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // Long enough for the three counts (about 300 ms each), short enough not
    // to hold the test up; the pause ends by itself (UNPAUSE would wait too).
    let () = ::redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(2000)
        .arg("ALL")
        .query_async(&mut admin)
        .await
        .unwrap();
    wrong_claims_past_the_budget_are_refused_on_the_node(&limits, 3, settings.timeout).await;
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

// ---- node-local copies (`get_recent`) ----------------------------------------

/// A reject on the phone's copy from before the claim would be refused
/// there (nothing to reject yet); the store runs it again on a fresh read,
/// where the phone's claim makes it succeed. No refusal rests on a copy.
async fn a_change_refused_on_a_stale_copy_runs_again_on_a_fresh_read(nodes: Nodes<Session>) {
    let (a, b) = (&nodes[0], &nodes[1]);
    let now = Timestamp::now_utc();
    let s = session(180, now);
    a.insert(&s).await.unwrap();
    let before_claim = b.get_recent(&s.id, 0).await.unwrap().unwrap();
    let token = Secret::generate();
    let mut op = claim(&s, 1);
    if let Op::Claim { phone_token, .. } = &mut op {
        *phone_token = token.hash();
    }
    let claimed = a
        .update(&s.id, now, session_op(op, now))
        .await
        .unwrap()
        .unwrap();
    assert!(claimed.changed);
    let rejected = b
        .update_on(
            &before_claim,
            now,
            session_op(
                Op::Reject {
                    phone_token: token,
                    reason: "用户拒绝".into(),
                },
                now,
            ),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(rejected.changed, "{:?}", rejected.output);
    assert_eq!(rejected.record.status, Status::Rejected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_a_change_refused_on_a_stale_copy_runs_again_on_a_fresh_read() {
    a_change_refused_on_a_stale_copy_runs_again_on_a_fresh_read(memory_nodes(2, "refused").await)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_change_refused_on_a_stale_copy_runs_again_on_a_fresh_read() {
    a_change_refused_on_a_stale_copy_runs_again_on_a_fresh_read(redis_nodes(2, "refused").await)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_a_change_refused_on_a_stale_copy_runs_again_on_a_fresh_read() {
    a_change_refused_on_a_stale_copy_runs_again_on_a_fresh_read(cluster_nodes(2, "refused").await)
        .await
}

/// A write's announcement carries the record: the node it wakes answers
/// `get_recent` at that version from its copy, without asking Redis
/// (Redis is paused meanwhile, and a plain read waits for the pause).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_woken_node_has_the_announced_version_without_a_read() {
    let server = RedisServer::start();
    let url = server.url();
    let prefix = unique_prefix("announced");
    let a: Arc<dyn RecordStore<Session>> = Arc::new(redis_store(&url, &prefix).await);
    let b: Arc<dyn RecordStore<Session>> = Arc::new(redis_store(&url, &prefix).await);
    let now = Timestamp::now_utc();
    let s = session(180, now);
    b.insert(&s).await.unwrap();
    let mut rx = a.subscribe(&s.id).await.unwrap().unwrap();
    let claimed = b
        .update(&s.id, now, session_op(claim(&s, 1), now))
        .await
        .unwrap()
        .unwrap();
    let rev = claimed.record.rev;
    tokio::time::timeout(WAIT, rx.wait_for(|r| *r >= rev))
        .await
        .expect("woken")
        .unwrap();

    let mut admin = ::redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = ::redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1000)
        .arg("ALL")
        .query_async(&mut admin)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let copy = a.get_recent(&s.id, rev).await.unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "answered from the copy, not from the paused Redis ({:?})",
        started.elapsed()
    );
    assert_eq!(copy.rev, rev);
    assert_eq!(copy.status, Status::Scanned);
    let read = a.get(&s.id).await.unwrap().unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "a read waits for the pause: the copy was not a read"
    );
    assert_eq!(read.rev, rev);
}

/// After a gap in the announcements (Redis restarted), a woken receiver's
/// `get_recent` at the version it last saw reads afresh: the copy of that
/// version may miss a write made during the gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_after_a_gap_a_woken_receiver_reads_afresh() {
    let mut server = RedisServer::start();
    let prefix = unique_prefix("gapcopy");
    let a: Arc<dyn RecordStore<Session>> = Arc::new(redis_store(&server.url(), &prefix).await);
    let b: Arc<dyn RecordStore<Session>> = Arc::new(redis_store(&server.url(), &prefix).await);
    let now = Timestamp::now_utc();
    let s = session(180, now);
    a.insert(&s).await.unwrap();
    let mut rx = a.subscribe(&s.id).await.unwrap().unwrap();
    let seen = *rx.borrow_and_update();
    assert_eq!(a.get_recent(&s.id, seen).await.unwrap().unwrap().rev, s.rev);

    // The session comes back claimed: a write nobody announced.
    let mut claimed = s.clone();
    assert!(claimed.apply(&claim(&s, 1), now).output.is_ok());
    let deadline = restart_redis_and_put_back(&mut server, &b, &claimed, &mut rx).await;
    let woken_at = *rx.borrow_and_update();
    // (The command connection's first call after the restart may fail.)
    let after = loop {
        match a.get_recent(&s.id, woken_at).await {
            Ok(found) => break found.expect("the session"),
            Err(e) => assert!(std::time::Instant::now() < deadline, "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(after.rev, claimed.rev, "read afresh, not the copy");
    assert_eq!(after.status, Status::Scanned);
}
