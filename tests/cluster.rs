//! Several broker nodes (separate processes of the real `bzt` binary) on
//! one Redis: what a browser, a phone and the RP see when their requests
//! land on different nodes, when a node dies, and when Redis goes away; a
//! conversation whose phone, requester and requests are on three nodes, and
//! its audit trail read from any node. The main scenarios also run on a
//! 3-master Redis Cluster.
//!
//! Each test starts its own Redis (or Cluster) and nodes; see
//! tests/support. Expiry is real time here (30 s is the shortest TTL the
//! protocol allows), so the expiry test waits about 35 s.

mod support;

use base64::Engine;
use bzt_phone::{ApproveExtras, ConversationSocket, EndedBy, PhoneConversation};
use futures_util::future::join_all;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::nodes::{
    create, qr_on, rp_get, try_create, Browser, Fixture, Node, ADMIN_TOKEN, API_KEY,
};
use support::redis::{RedisCluster, RedisServer};

const STEP: Duration = Duration::from_secs(10);

/// Browser on node 1, claim on node 2, approval on node 3.
async fn browser_sees_claim_and_result_from_other_nodes(fx: &Fixture, nodes: &[Node]) {
    let created = create(&fx.http, &nodes[0], 180).await;
    let mut browser = Browser::connect(&nodes[0].rebase(&created.ws_url))
        .await
        .unwrap();
    let snapshot = browser.next_event(STEP).await.expect("snapshot");
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(snapshot["session"]["status"], "pending");

    let mut claimed = fx
        .phone
        .claim(&qr_on(&nodes[1], &created.qr_text), &fx.identity)
        .await
        .expect("claim on node 2");
    let scanned = browser.next_event(STEP).await.expect("scanned event");
    assert_eq!(scanned["type"], "status", "{scanned}");
    assert_eq!(scanned["status"], "scanned");

    claimed.base_url = nodes[2].base.clone();
    fx.phone
        .approve(&claimed, &fx.identity, ApproveExtras::default())
        .await
        .expect("approve on node 3");
    let seen = browser.until_closed(STEP).await;
    let results = seen.of_type("result");
    assert_eq!(results.len(), 1, "{seen:?}");
    assert_eq!(results[0]["status"], "approved");
    assert_eq!(
        results[0]["result"]["certificate"]["serial"],
        Value::String(fx.identity.serial_hex())
    );
    assert_eq!(seen.close_code, Some(1000));
}

/// The phone claims on node 2, which keeps a copy of the session (scanned);
/// the RP cancels it on node 1, which node 2 is not told of (no socket of
/// that session is on node 2). The phone's approval on node 2 starts from
/// the stale copy and is refused all the same: its compare-and-set reads the
/// cancellation. The audit trail shows the lost race as docs/redis.md says:
/// `approved`, then `aborted`.
async fn an_approval_from_a_stale_copy_is_refused(fx: &Fixture, nodes: &[Node]) {
    let created = create(&fx.http, &nodes[0], 180).await;
    let claimed = fx
        .phone
        .claim(&qr_on(&nodes[1], &created.qr_text), &fx.identity)
        .await
        .expect("claim on node 2");
    let r = fx
        .http
        .delete(format!("{}/v1/sessions/{}", nodes[0].base, created.id))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "cancel on node 1");

    let refused = fx
        .phone
        .approve(&claimed, &fx.identity, ApproveExtras::default())
        .await
        .expect_err("an approval of a cancelled session");
    let bzt_phone::Error::Broker(refused) = refused else {
        panic!("a protocol refusal: {refused:?}");
    };
    assert_eq!(refused.status, 409, "{refused:?}");

    let session: Value = rp_get(
        &fx.http,
        format!("{}/v1/sessions/{}", nodes[1].base, created.id),
    )
    .await;
    assert_eq!(session["status"], "cancelled", "{session}");
    let audit: Value = rp_get(&fx.http, format!("{}/v1/audit?limit=1000", nodes[1].base)).await;
    let outcomes: Vec<&str> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["session_id"] == created.id.as_str())
        .filter_map(|r| r["outcome"].as_str())
        .collect();
    assert_eq!(outcomes, ["approved", "aborted"], "{audit}");
}

/// 200 phones claim one QR at once through 3 nodes: one wins.
async fn concurrent_claims_have_one_winner(fx: &Fixture, nodes: &[Node]) {
    let created = create(&fx.http, &nodes[0], 180).await;
    let claims = (0..200).map(|i| {
        let node = &nodes[i % nodes.len()];
        let body = serde_json::json!({
            "qr_text": node.rebase(&created.qr_text),
            "device": { "id": format!("phone-{i}"), "name": format!("手机 {i}") },
        });
        let http = fx.http.clone();
        let url = format!("{}/v1/claim", node.base);
        async move {
            let r = http.post(url).json(&body).send().await.unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            (status, body)
        }
    });
    let answers = join_all(claims).await;
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    let mut statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
    statuses.sort();
    statuses.dedup();
    assert_eq!(ok, 1, "exactly one 200; statuses seen: {statuses:?}");
    for (status, body) in answers.iter().filter(|(s, _)| *s != 200) {
        assert_eq!(*status, 409, "{body}");
        assert_eq!(body["error"]["code"], "already_claimed", "{body}");
    }
}

/// Node 1 dies under its browser; the browser reconnects to node 2 and
/// gets the result completed on node 3.
async fn browser_survives_its_node_dying(fx: &Fixture, nodes: &mut [Node]) {
    let created = create(&fx.http, &nodes[0], 180).await;
    let mut browser = Browser::connect(&nodes[0].rebase(&created.ws_url))
        .await
        .unwrap();
    assert_eq!(browser.next_event(STEP).await.unwrap()["type"], "snapshot");
    nodes[0].kill();
    // The socket ends without a result.
    assert!(browser.next_event(STEP).await.is_none());

    let mut claimed = fx
        .phone
        .claim(&qr_on(&nodes[1], &created.qr_text), &fx.identity)
        .await
        .unwrap();
    let mut browser = Browser::connect(&nodes[1].rebase(&created.ws_url))
        .await
        .unwrap();
    let snapshot = browser.next_event(STEP).await.unwrap();
    assert_eq!(snapshot["session"]["status"], "scanned", "{snapshot}");
    claimed.base_url = nodes[2].base.clone();
    fx.phone
        .approve(&claimed, &fx.identity, ApproveExtras::default())
        .await
        .unwrap();
    let seen = browser.until_closed(STEP).await;
    let results = seen.of_type("result");
    assert_eq!(results.len(), 1, "{seen:?}");
    assert_eq!(results[0]["status"], "approved");
}

/// `n` sessions with the shortest TTL, created on and watched from
/// different nodes, expire together: each browser gets exactly one
/// `expired` result.
async fn sessions_expire_once_each(fx: &Fixture, nodes: &[Node], n: usize) {
    let started = Instant::now();
    let mut browsers = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(50) {
        let batch = chunk.iter().map(|&i| async move {
            let created = create(&fx.http, &nodes[i % nodes.len()], 30).await;
            let watch_on = &nodes[(i + 1) % nodes.len()];
            let mut b = Browser::connect(&watch_on.rebase(&created.ws_url))
                .await
                .unwrap();
            assert_eq!(b.next_event(STEP).await.unwrap()["type"], "snapshot");
            b
        });
        browsers.extend(join_all(batch).await);
    }
    eprintln!("{n} sessions and sockets ready in {:?}", started.elapsed());
    let seen = join_all(
        browsers
            .into_iter()
            .map(|b| b.until_closed(Duration::from_secs(60))),
    )
    .await;
    eprintln!("{n} sessions expired after {:?}", started.elapsed());
    for s in &seen {
        let results = s.of_type("result");
        assert_eq!(results.len(), 1, "{s:?}");
        assert_eq!(results[0]["status"], "expired");
        assert_eq!(s.close_code, Some(1000));
    }
}

/// Creates, claims and approves one session on `node` (a smoke check).
async fn full_flow_on(fx: &Fixture, node: &Node) {
    let created = create(&fx.http, node, 180).await;
    let browser = Browser::connect(&node.rebase(&created.ws_url))
        .await
        .unwrap();
    let claimed = fx
        .phone
        .claim(&qr_on(node, &created.qr_text), &fx.identity)
        .await
        .unwrap();
    fx.phone
        .approve(&claimed, &fx.identity, ApproveExtras::default())
        .await
        .unwrap();
    let seen = browser.until_closed(STEP).await;
    assert_eq!(seen.of_type("result")[0]["status"], "approved", "{seen:?}");
}

/// A conversation opened by a `sign` session created on node 1, claimed on
/// node 2 and approved with `open_conversation` on node 3: the session id,
/// the phone's grant and the requester's token.
async fn open_conversation(
    fx: &Fixture,
    nodes: &[Node],
    policy: Value,
) -> (String, PhoneConversation, String) {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let r = fx
        .http
        .post(format!("{}/v1/sessions", nodes[0].base))
        .bearer_auth(API_KEY)
        .json(&json!({
            "kind": "sign",
            "display": { "title": "签署投标文件", "detail": "开启会话签章" },
            "tbs_b64": b64("投标文件 第0页".as_bytes()),
            "conversation": policy,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let session_id = created["id"].as_str().unwrap().to_owned();
    let qr = qr_on(&nodes[1], created["qr_text"].as_str().unwrap());
    let mut claimed = fx.phone.claim(&qr, &fx.identity).await.unwrap();
    claimed.base_url = nodes[2].base.clone();
    let extras = ApproveExtras {
        open_conversation: true,
        ..Default::default()
    };
    let answer = fx
        .phone
        .approve(&claimed, &fx.identity, extras)
        .await
        .unwrap();
    let grant = answer.conversation.expect("a conversation was opened");
    let session: Value = rp_get(
        &fx.http,
        format!("{}/v1/sessions/{session_id}", nodes[0].base),
    )
    .await;
    let token = session["result"]["conversation"]["token"]
        .as_str()
        .expect("result.conversation.token")
        .to_owned();
    (session_id, grant, token)
}

/// The node that opened a conversation (the only one with a timer for it)
/// dies; the sockets on the other nodes still hear it end when it goes
/// idle, because every node polls the shared deadlines.
async fn conversation_deadline_outlives_its_node(fx: &Fixture, nodes: &mut [Node]) {
    const IDLE_S: u64 = 8;
    let started = Instant::now();
    let policy = json!({ "max_requests": 5, "idle_s": IDLE_S, "max_s": 3600 });
    let (_, grant, token) = open_conversation(fx, nodes, policy).await;
    let mut phone = ConversationSocket::connect(&nodes[0].base, &grant)
        .await
        .expect("phone socket on node 1");
    let requester = Browser::connect(&format!(
        "ws://127.0.0.1:{}/v1/conversations/{}/ws?t={token}",
        nodes[1].port, grant.id
    ))
    .await
    .expect("requester socket on node 2");
    nodes[2].kill();
    assert!(
        started.elapsed() < Duration::from_secs(IDLE_S - 2),
        "too slow to test this: the sockets must be up before the idle deadline ({:?})",
        started.elapsed()
    );
    let seen = requester
        .until_closed(Duration::from_secs(IDLE_S + 15))
        .await;
    let ended = seen.of_type("ended");
    assert_eq!(ended.len(), 1, "the requester heard the end: {seen:?}");
    assert_eq!(ended[0]["by"], "idle");
    let next = tokio::time::timeout(STEP, phone.next_request())
        .await
        .expect("ended within 10 s")
        .expect("phone socket");
    assert!(next.is_none());
    assert_eq!(
        phone.ended().map(|e| e.by.as_str()),
        Some(EndedBy::Idle.as_str())
    );
    eprintln!("idle end heard after {:?}", started.elapsed());
}

/// A conversation (会话签章) split across nodes: the phone's socket on node
/// 1, the requester's on node 2, requests POSTed to node 3. Every request
/// reaches the phone and every result the requester; `ended` reaches both.
/// Then the audit records of the flow read the same from every node, and
/// the stream verifies as one chain (`bzt audit verify --redis`).
async fn conversation_across_nodes(fx: &Fixture, nodes: &[Node], redis_url: &str) {
    const REQUESTS: usize = 6;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let policy = json!({ "max_requests": 50, "idle_s": 600, "max_s": 3600 });
    let (session_id, grant, token) = open_conversation(fx, nodes, policy).await;
    let cid = grant.id.clone();

    let mut phone = ConversationSocket::connect(&nodes[0].base, &grant)
        .await
        .expect("phone socket on node 1");
    let mut requester = Browser::connect(&format!(
        "ws://127.0.0.1:{}/v1/conversations/{cid}/ws?t={token}",
        nodes[1].port
    ))
    .await
    .expect("requester socket on node 2");

    // The phone answers while the requests arrive one by one on node 3.
    let answering = async {
        let mut answered = Vec::new();
        while answered.len() < REQUESTS {
            let req = tokio::time::timeout(STEP, phone.next_request())
                .await
                .expect("a request within 10 s")
                .expect("phone socket")
                .expect("not ended");
            phone
                .approve(&req, &fx.identity, true)
                .await
                .unwrap_or_else(|e| panic!("approving {}: {e}", req.request_id));
            answered.push(req.request_id);
        }
        answered
    };
    let requesting = async {
        let mut ids = Vec::new();
        for i in 1..=REQUESTS {
            let r = fx
                .http
                .post(format!("{}/v1/conversations/{cid}/requests", nodes[2].base))
                .bearer_auth(API_KEY)
                .json(&json!({
                    "tbs_b64": b64(format!("投标文件 第{i}页").as_bytes()),
                    "display": { "title": format!("第{i}页") },
                }))
                .send()
                .await
                .unwrap();
            let status = r.status();
            let body: Value = r.json().await.unwrap();
            assert_eq!(status, 202, "{body}");
            ids.push(body["request_id"].as_str().unwrap().to_owned());
        }
        ids
    };
    let (answered, mut requested) = tokio::join!(answering, requesting);
    assert_eq!(
        answered, requested,
        "every request reached the phone, in order"
    );

    let mut results = Vec::new();
    while results.len() < REQUESTS {
        let e = requester
            .next_event(STEP)
            .await
            .expect("a request_result within 10 s");
        assert_eq!(e["type"], "request_result", "{e}");
        assert_eq!(e["status"], "approved", "{e}");
        assert_eq!(e["auto_confirmed"], true, "{e}");
        assert!(e["signature_b64"].as_str().is_some_and(|s| !s.is_empty()));
        results.push(e["request_id"].as_str().unwrap().to_owned());
    }
    results.sort();
    requested.sort();
    assert_eq!(results, requested, "one result per request");

    // The requester ends it on node 3: both sockets hear it.
    let r = fx
        .http
        .delete(format!("{}/v1/conversations/{cid}", nodes[2].base))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = requester.until_closed(STEP).await;
    let ended = seen.of_type("ended");
    assert_eq!(ended.len(), 1, "{seen:?}");
    assert_eq!(ended[0]["by"], "requester");
    assert_eq!(seen.close_code, Some(1000));
    let next = tokio::time::timeout(STEP, phone.next_request())
        .await
        .expect("ended within 10 s")
        .expect("phone socket");
    assert!(next.is_none());
    assert_eq!(
        phone.ended().map(|e| e.by.as_str()),
        Some(EndedBy::Requester.as_str())
    );

    // The audit records of the flow, from any node: the same.
    let mut seen_by_node = Vec::new();
    for node in nodes {
        let body = rp_get(&fx.http, format!("{}/v1/audit?limit=1000", node.base)).await;
        let ours: Vec<Value> = body["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["session_id"] == session_id.as_str())
            .cloned()
            .collect();
        seen_by_node.push(ours);
    }
    assert_eq!(seen_by_node[0], seen_by_node[1]);
    assert_eq!(seen_by_node[0], seen_by_node[2]);
    let ours = &seen_by_node[0];
    assert_eq!(ours.len(), 1 + REQUESTS, "{ours:#?}");
    assert_eq!(ours[0]["kind"], "sign");
    assert_eq!(ours[0]["outcome"], "approved");
    let mut audited: Vec<String> = ours[1..]
        .iter()
        .map(|r| {
            assert_eq!(r["kind"], "conversation_request");
            assert_eq!(r["outcome"], "approved");
            assert_eq!(r["conversation_id"], cid.as_str());
            assert_eq!(r["auto_confirmed"], true);
            r["request_id"].as_str().unwrap().to_owned()
        })
        .collect();
    audited.sort();
    assert_eq!(audited, requested);

    // The whole stream is one chain signed by the shared key.
    let out = tokio::task::spawn_blocking({
        let args = [
            "audit".to_owned(),
            "verify".to_owned(),
            "--redis".to_owned(),
            redis_url.to_owned(),
            "--prefix".to_owned(),
            nodes[0].prefix.clone(),
            "--key".to_owned(),
            fx.dir
                .path()
                .join("audit-signing-key.pem")
                .display()
                .to_string(),
        ];
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_bzt"))
                .args(&args)
                .env_remove("BZT_CONFIG")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("OK: "),
        "bzt audit verify --redis: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{}", stdout.lines().next().unwrap_or_default());
}

/// An operator revokes the phone's certificate on node 1; one second later
/// node 2 refuses it, and so do both nodes after a restart.
async fn revocation_reaches_every_node_within_a_second(fx: &Fixture, nodes: &mut [Node]) {
    let serial = fx.identity.serial_hex();
    let created = create(&fx.http, &nodes[1], 180).await;
    let claimed = fx
        .phone
        .claim(&qr_on(&nodes[1], &created.qr_text), &fx.identity)
        .await
        .expect("claim on node 2");
    let r = fx
        .http
        .post(format!("{}/v1/admin/revocations", nodes[0].base))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "serial": serial, "revoked_by": "值班员 李四" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let revoked_at = Instant::now();
    tokio::time::sleep_until((revoked_at + Duration::from_secs(1)).into()).await;
    let refused = fx
        .phone
        .approve(&claimed, &fx.identity, ApproveExtras::default())
        .await
        .expect_err("node 2 must refuse a certificate revoked on node 1 a second ago");
    assert!(
        matches!(&refused, bzt_phone::Error::Broker(e) if e.is("untrusted_certificate") && e.message.contains("revoked")),
        "{refused}"
    );
    let listed: Value = fx
        .http
        .get(format!("{}/v1/admin/revocations", nodes[1].base))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["runtime_records"][0]["revoked_by"], "值班员 李四");

    // Both nodes restarted: the revocation is in Redis, not in their memory.
    for node in nodes.iter_mut() {
        node.restart(&fx.http).await;
    }
    for node in nodes.iter() {
        let created = create(&fx.http, node, 180).await;
        let claimed = fx
            .phone
            .claim(&qr_on(node, &created.qr_text), &fx.identity)
            .await
            .unwrap();
        let refused = fx
            .phone
            .approve(&claimed, &fx.identity, ApproveExtras::default())
            .await
            .expect_err("still revoked after a restart");
        assert!(
            matches!(&refused, bzt_phone::Error::Broker(e) if e.is("untrusted_certificate")),
            "{}: {refused}",
            node.name
        );
    }
}

/// `n` browsers wait on node 1; node 1 gets SIGTERM. Each browser is told
/// 1012 (service restart), reconnects to node 2, and its session completes
/// there; node 1 exits 0 within its drain time.
async fn sigterm_moves_every_browser_to_the_other_node(fx: &Fixture, nodes: &mut [Node], n: usize) {
    let created: Vec<_> = join_all((0..n).map(|_| create(&fx.http, &nodes[1], 180))).await;
    let mut browsers = Vec::new();
    for c in &created {
        let mut b = Browser::connect(&nodes[0].rebase(&c.ws_url)).await.unwrap();
        let snapshot = b.next_event(STEP).await.expect("snapshot on node 1");
        assert_eq!(snapshot["session"]["status"], "pending");
        browsers.push(b);
    }
    let started = Instant::now();
    let (code, closed) = tokio::join!(
        async {
            let node = &mut nodes[0];
            tokio::task::block_in_place(|| node.terminate(Duration::from_secs(15)))
        },
        join_all(browsers.into_iter().map(|b| b.until_closed(STEP)))
    );
    assert_eq!(
        code,
        Some(0),
        "node 1 exits 0 after draining: {}",
        nodes[0].log()
    );
    eprintln!(
        "{n} sockets closed and node 1 exited in {:?}",
        started.elapsed()
    );
    for seen in &closed {
        assert_eq!(seen.close_code, Some(1012), "{seen:?}");
        assert!(seen.of_type("result").is_empty(), "{seen:?}");
    }
    let outcomes = join_all(created.iter().map(|c| async {
        let mut b = Browser::connect(&nodes[1].rebase(&c.ws_url)).await.unwrap();
        let snapshot = b.next_event(STEP).await.expect("snapshot on node 2");
        assert_eq!(snapshot["session"]["status"], "pending", "{snapshot}");
        let claimed = fx
            .phone
            .claim(&qr_on(&nodes[1], &c.qr_text), &fx.identity)
            .await
            .expect("claim on node 2");
        fx.phone
            .approve(&claimed, &fx.identity, ApproveExtras::default())
            .await
            .expect("approve on node 2");
        b.until_closed(STEP).await
    }))
    .await;
    for seen in outcomes {
        let results = seen.of_type("result");
        assert_eq!(results.len(), 1, "{seen:?}");
        assert_eq!(results[0]["status"], "approved");
        assert_eq!(seen.close_code, Some(1000));
    }
}

// ---- standalone Redis -------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_one_redis_sigterm_sends_200_browsers_to_the_other_node() {
    let redis = RedisServer::start();
    let fx = Fixture::new();
    let mut nodes = fx.start_nodes(2, &redis.url()).await;
    sigterm_moves_every_browser_to_the_other_node(&fx, &mut nodes, 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_one_redis_a_revocation_on_one_node_is_refused_by_the_other_within_a_second() {
    let redis = RedisServer::start();
    let fx = Fixture::new();
    let mut nodes = fx.start_nodes(2, &redis.url()).await;
    revocation_reaches_every_node_within_a_second(&fx, &mut nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_one_redis_browser_phone_and_rp_on_different_nodes() {
    let redis = RedisServer::start();
    let fx = Fixture::new();
    let nodes = fx.start_nodes(3, &redis.url()).await;
    browser_sees_claim_and_result_from_other_nodes(&fx, &nodes).await;
}

/// The node's start line names the one-thread runtime.
fn assert_runs_one_thread(node: &Node) {
    assert!(
        node.log().contains("runtime=\"current_thread\""),
        "{} should say it runs one thread: {}",
        node.name,
        node.log()
    );
}

/// A node allowed one CPU runs on one thread (cheaper: loadtest/RESULTS.md);
/// the cross-node flow and the claim race behave as on the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_one_redis_each_on_one_cpu_run_one_thread_and_keep_the_protocol() {
    let redis = RedisServer::start();
    let fx = Fixture::new();
    let nodes = fx.start_nodes_on_one_cpu(3, &redis.url()).await;
    for node in &nodes {
        assert_runs_one_thread(node);
    }
    browser_sees_claim_and_result_from_other_nodes(&fx, &nodes).await;
    concurrent_claims_have_one_winner(&fx, &nodes).await;
}

/// The embedded mode (memory store, audit log on disk with its own
/// writer thread) allowed one CPU: one thread, and a whole login works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_node_on_one_cpu_runs_one_thread_and_completes_a_login() {
    let fx = Fixture::new();
    let node = fx.start_embedded_on_one_cpu().await;
    assert_runs_one_thread(&node);
    full_flow_on(&fx, &node).await;
}

/// A CPU quota of one CPU (a container's CPU limit) counts as one CPU,
/// as docs/deploy.md says, though the node may run on every CPU.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_node_under_a_one_cpu_quota_runs_one_thread_and_completes_a_login() {
    let fx = Fixture::new();
    let Some(node) = fx.start_embedded_under_a_quota_of_one_cpu().await else {
        return;
    };
    assert_runs_one_thread(&node);
    full_flow_on(&fx, &node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_one_redis_an_approval_from_a_stale_copy_is_refused() {
    let redis = RedisServer::start();
    let fx = Fixture::new();
    let nodes = fx.start_nodes(2, &redis.url()).await;
    an_approval_from_a_stale_copy_is_refused(&fx, &nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_one_redis_200_concurrent_claims_one_winner() {
    let redis = RedisServer::start();
    let fx = Fixture::new();
    let nodes = fx.start_nodes(3, &redis.url()).await;
    concurrent_claims_have_one_winner(&fx, &nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_one_redis_browser_reconnects_after_sigkill() {
    let redis = RedisServer::start();
    let fx = Fixture::new();
    let mut nodes = fx.start_nodes(3, &redis.url()).await;
    browser_survives_its_node_dying(&fx, &mut nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_one_redis_conversation_split_across_nodes_and_its_audit_trail() {
    let redis = RedisServer::start();
    let fx = Fixture::new();
    let nodes = fx.start_nodes(3, &redis.url()).await;
    conversation_across_nodes(&fx, &nodes, &redis.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_one_redis_conversation_deadline_outlives_its_node() {
    let redis = RedisServer::start();
    let fx = Fixture::new();
    let mut nodes = fx.start_nodes(3, &redis.url()).await;
    conversation_deadline_outlives_its_node(&fx, &mut nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_one_redis_1000_sessions_expire_once_each() {
    let redis = RedisServer::start();
    let fx = Fixture::new();
    let nodes = fx.start_nodes(3, &redis.url()).await;
    sessions_expire_once_each(&fx, &nodes, 1000).await;
}

/// Redis stops for ~5 s while requests keep coming: fast 503s with
/// Retry-After, `/readyz` 503, no crash; then every node recovers alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_survive_a_redis_outage() {
    let mut redis = RedisServer::start();
    let fx = Fixture::new();
    let mut nodes = fx.start_nodes(3, &redis.url()).await;

    // Load: sessions created round-robin until told to stop.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let load = {
        let stop = stop.clone();
        let http = fx.http.clone();
        tokio::spawn(async move {
            let (mut ok, mut unavailable, mut slowest) = (0u32, 0u32, Duration::ZERO);
            let mut i = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let base = &bases[i % bases.len()];
                i += 1;
                let t = Instant::now();
                let r = http
                    .post(format!("{base}/v1/sessions"))
                    .bearer_auth(support::nodes::API_KEY)
                    .json(&serde_json::json!({ "kind": "login", "display": { "title": "x" } }))
                    .send()
                    .await
                    .expect("the node answers");
                slowest = slowest.max(t.elapsed());
                match r.status().as_u16() {
                    201 => ok += 1,
                    503 => {
                        assert!(r.headers().contains_key("retry-after"));
                        let body: Value = r.json().await.unwrap();
                        assert_eq!(body["error"]["code"], "unavailable");
                        unavailable += 1;
                    }
                    other => panic!("unexpected {other}"),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (ok, unavailable, slowest)
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let waiting = create(&fx.http, &nodes[0], 180).await;

    tokio::task::block_in_place(|| redis.stop());
    tokio::time::sleep(Duration::from_secs(1)).await;
    // A phone scanning meanwhile is told to retry: the claim fails at reading the session,
    // before any secret is compared (docs/security.md, failed claims).
    match fx
        .phone
        .claim(&qr_on(&nodes[1], &waiting.qr_text), &fx.identity)
        .await
    {
        Err(bzt_phone::Error::Broker(e)) => {
            assert_eq!((e.status, e.code.as_str()), (503, "unavailable"));
            assert!(e.retry_after.is_some());
        }
        other => panic!("expected 503 unavailable, got {other:?}"),
    }
    for node in &nodes {
        let t = Instant::now();
        let r = fx
            .http
            .get(format!("{}/readyz", node.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503, "{} /readyz while Redis is down", node.name);
        assert!(t.elapsed() < Duration::from_secs(3));
        match try_create(&fx.http, node, 60).await {
            Err((503, body, retry_after)) => {
                assert_eq!(body["error"]["code"], "unavailable");
                assert!(retry_after.is_some());
            }
            other => panic!("expected 503, got {other:?}"),
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    tokio::task::block_in_place(|| redis.restart());

    // Every node comes back by itself.
    for node in &mut nodes {
        node.wait_ready(&fx.http).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, unavailable, slowest) = load.await.unwrap();
    eprintln!("outage load: {ok} created, {unavailable} answered 503, slowest {slowest:?}");
    assert!(ok > 0 && unavailable > 0);
    assert!(
        slowest < Duration::from_secs(2),
        "slowest answer {slowest:?}"
    );
    for node in &mut nodes {
        assert!(node.alive(), "{} crashed: {}", node.name, node.log());
    }
    for node in &nodes {
        full_flow_on(&fx, node).await;
    }
    browser_sees_claim_and_result_from_other_nodes(&fx, &nodes).await;
}

/// Redis restarts while no request reaches the nodes: the first request
/// each node gets afterwards succeeds (no 503 from a dead connection that
/// only a failed command would have noticed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_redis_restart_the_first_request_on_each_idle_node_succeeds() {
    let mut redis = RedisServer::start();
    let fx = Fixture::new();
    let nodes = fx.start_nodes(2, &redis.url()).await;
    for node in &nodes {
        create(&fx.http, node, 60).await;
    }
    for round in 0..2 {
        tokio::task::block_in_place(|| redis.stop());
        tokio::time::sleep(Duration::from_secs(2)).await;
        tokio::task::block_in_place(|| redis.restart());
        for node in &nodes {
            match try_create(&fx.http, node, 60).await {
                Ok(_) => {}
                Err(e) => panic!(
                    "round {round}: first request on {} after the restart: {e:?}",
                    node.name
                ),
            }
        }
    }
}

/// A rotating QR created on node 1 keeps rotating after node 1 dies: node 2
/// picks the due rotation up from Redis, and its browser sees the new QR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_one_redis_qr_rotation_continues_after_its_node_dies() {
    let redis = RedisServer::start();
    let fx = Fixture::new();
    let mut nodes = fx.start_nodes(2, &redis.url()).await;
    let r = fx
        .http
        .post(format!("{}/v1/sessions", nodes[0].base))
        .bearer_auth(API_KEY)
        .json(
            &json!({ "kind": "login", "ttl_s": 60, "rotate_s": 5, "display": { "title": "登录" } }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    nodes[0].kill();
    let ws_url = nodes[1].rebase(created["ws_url"].as_str().unwrap());
    let mut browser = Browser::connect(&ws_url).await.unwrap();
    let snapshot = browser.next_event(STEP).await.expect("snapshot");
    assert_eq!(snapshot["session"]["qr_seq"], 0, "{snapshot}");
    let rotated = browser
        .next_event(Duration::from_secs(9))
        .await
        .expect("a rotation within 9 s although node 1 is gone");
    assert_eq!(rotated["type"], "qr", "{rotated}");
    assert_ne!(rotated["qr_text"], created["qr_text"], "{rotated}");
    let again = browser
        .next_event(Duration::from_secs(7))
        .await
        .expect("and the next one");
    assert_eq!(again["type"], "qr", "{again}");
}

/// Every webhook attempt a receiver saw: the status it answered and the body.
type Attempts = std::sync::Arc<std::sync::Mutex<Vec<(u16, Value)>>>;

/// A webhook receiver on loopback that answers 500 to the first attempt and
/// 200 to every later one.
async fn flaky_webhook_receiver() -> (String, Attempts) {
    let attempts: Attempts = Default::default();
    let seen = attempts.clone();
    let router = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let seen = seen.clone();
                async move {
                    assert!(headers.contains_key("bzt-signature"));
                    let mut seen = seen.lock().unwrap();
                    let status = if seen.is_empty() { 500 } else { 200 };
                    seen.push((status, serde_json::from_slice(&body).unwrap()));
                    axum::http::StatusCode::from_u16(status).unwrap()
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, attempts)
}

async fn wait_for_attempts(attempts: &Attempts, n: usize, within: Duration) {
    let deadline = Instant::now() + within;
    while attempts.lock().unwrap().len() < n {
        assert!(
            Instant::now() < deadline,
            "{n} webhook attempts expected within {within:?}, saw {:?}",
            attempts.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_one_redis_a_pending_webhook_survives_its_node_and_is_delivered_once() {
    let redis = RedisServer::start();
    let fx = Fixture::new();
    let mut nodes = fx.start_nodes(2, &redis.url()).await;
    let (hook_url, attempts) = flaky_webhook_receiver().await;
    let r = fx
        .http
        .post(format!("{}/v1/sessions", nodes[0].base))
        .bearer_auth(API_KEY)
        .json(&json!({ "kind": "login", "ttl_s": 60, "display": { "title": "登录" }, "webhook_url": hook_url }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    // Node 1 finishes the session and makes the first attempt, which fails.
    let r = fx
        .http
        .delete(format!("{}/v1/sessions/{id}", nodes[0].base))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    wait_for_attempts(&attempts, 1, STEP).await;
    // Node 1 dies during the backoff (its retry timer with it) and comes back.
    tokio::time::sleep(Duration::from_millis(200)).await;
    nodes[0].restart(&fx.http).await;

    // Some node retries it from Redis: the receiver gets it, once.
    wait_for_attempts(&attempts, 2, Duration::from_secs(25)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let seen = attempts.lock().unwrap().clone();
    let statuses: Vec<u16> = seen.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        statuses,
        [500, 200],
        "one failed attempt, then one delivery: {seen:?}"
    );
    for (_, body) in &seen {
        assert_eq!(
            (body["id"].as_str(), body["status"].as_str()),
            (Some(id.as_str()), Some("cancelled"))
        );
    }
}

// ---- Redis Cluster ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_three_nodes_cross_node_flow_claims_conversation_and_node_death() {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3))
        .await
        .unwrap();
    let fx = Fixture::new();
    let mut nodes = fx.start_nodes(3, &cluster.urls()).await;
    browser_sees_claim_and_result_from_other_nodes(&fx, &nodes).await;
    concurrent_claims_have_one_winner(&fx, &nodes).await;
    conversation_across_nodes(&fx, &nodes, &cluster.urls()).await;
    browser_survives_its_node_dying(&fx, &mut nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_three_nodes_sessions_expire_once_each() {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3))
        .await
        .unwrap();
    let fx = Fixture::new();
    let nodes = fx.start_nodes(3, &cluster.urls()).await;
    sessions_expire_once_each(&fx, &nodes, 300).await;
}

/// `cmdstat_incrby` calls on the Redis servers `urls` (comma-separated):
/// the failed-claim counter's command (nothing else in the broker sends
/// `INCRBY`).
async fn failed_claim_counts(urls: &str) -> u64 {
    let mut total = 0;
    for url in urls.split(',') {
        let mut conn = ::redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let info: String = ::redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut conn)
            .await
            .unwrap();
        total += info
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_incrby:calls="))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse::<u64>().unwrap());
    }
    total
}

async fn claim_raw(fx: &Fixture, node: &Node, qr_text: &str) -> (u16, Value) {
    let r = fx
        .http
        .post(format!("{}/v1/claim", node.base))
        .json(&json!({"qr_text": node.rebase(qr_text), "device": {"id": "a", "name": "手机"}}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// One QR code's wrong guesses are counted across nodes: ten spread over
/// two nodes lock it on both (the default budget is 10 a minute), even for
/// the right secret. Only failures pay a Redis call; a correct claim none.
async fn failed_claims_are_counted_across_nodes(fx: &Fixture, nodes: &[Node], redis_urls: &str) {
    // A correct claim adds no Redis call for the budget.
    let fine = create(&fx.http, &nodes[0], 180).await;
    let before = failed_claim_counts(redis_urls).await;
    let (status, _) = claim_raw(fx, &nodes[1], &fine.qr_text).await;
    assert_eq!(status, 200);
    assert_eq!(failed_claim_counts(redis_urls).await, before);

    let created = create(&fx.http, &nodes[0], 180).await;
    let (url, _) = created.qr_text.split_once('#').unwrap();
    for i in 0..10 {
        let (status, body) = claim_raw(fx, &nodes[i % 2], &format!("{url}#guess{i}")).await;
        assert_eq!(status, 404, "guess {i} on node {}: {body}", i % 2 + 1);
    }
    assert_eq!(
        failed_claim_counts(redis_urls).await,
        before + 10,
        "one counted call per failure"
    );
    // Node 2 counted the tenth; node 1 hears of it on the lock channel.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for node in nodes {
        let (status, body) = claim_raw(fx, node, &created.qr_text).await;
        assert_eq!(status, 429, "{}: {body}", node.name);
        assert_eq!(body["error"]["code"], "rate_limited", "{body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("failed claims"), "{message}");
    }
    let other = create(&fx.http, &nodes[1], 180).await;
    let (status, body) = claim_raw(fx, &nodes[0], &other.qr_text).await;
    assert_eq!(status, 200, "another QR code is not locked: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_one_redis_share_a_qr_codes_failed_claim_budget() {
    let redis = RedisServer::start();
    let fx = Fixture::new();
    let nodes = fx.start_nodes(2, &redis.url()).await;
    failed_claims_are_counted_across_nodes(&fx, &nodes, &redis.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_two_nodes_share_a_qr_codes_failed_claim_budget() {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3))
        .await
        .unwrap();
    let fx = Fixture::new();
    let nodes = fx.start_nodes(2, &cluster.urls()).await;
    failed_claims_are_counted_across_nodes(&fx, &nodes, &cluster.urls()).await;
}

/// After a Redis restart every node subscribes to the claim-lock channel
/// again, and the budget is shared as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_redis_restart_failed_claims_are_still_counted_across_nodes() {
    let mut redis = RedisServer::start();
    let fx = Fixture::new();
    let nodes = fx.start_nodes(2, &redis.url()).await;
    let channel = format!("{}:claim-locks", nodes[0].prefix);
    let url = redis.url();
    let subscribers = || async {
        let mut conn = ::redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let (_, n): (String, u64) = ::redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(&channel)
            .query_async(&mut conn)
            .await
            .unwrap();
        n
    };
    assert_eq!(subscribers().await, 2);
    tokio::task::block_in_place(|| redis.stop());
    tokio::time::sleep(Duration::from_secs(1)).await;
    tokio::task::block_in_place(|| redis.restart());
    let deadline = Instant::now() + STEP;
    while subscribers().await < 2 {
        assert!(
            Instant::now() < deadline,
            "the nodes did not subscribe again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    failed_claims_are_counted_across_nodes(&fx, &nodes, &redis.url()).await;
}
