//! The audit trail of certificate use (证书使用记录): one record per completed
//! operation, durable before the outcome is told, readable per app with
//! `GET /v1/audit`, kept across a restart, and checked by the real
//! `bzt audit verify` binary, which names the first record that was edited or
//! removed.

use crate::helpers::{
    assert_error, b64, Browser, TestApp, TestCas, TestPhone, API_KEY, APP_ID, EVENT_TIMEOUT,
    OTHER_API_KEY, OTHER_APP_ID,
};
use bzt::clock::Clock;
use bzt_phone::Claimed;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

/// Small, so every test crosses several signed checkpoints.
const CHECKPOINT_EVERY: u64 = 3;

/// A broker with its audit files.
struct Audited {
    app: TestApp,
    log: PathBuf,
    key: PathBuf,
}

/// Starts a broker that checkpoints every [`CHECKPOINT_EVERY`] operations;
/// on `data_dir` when given (a restart), else on the app's own directory.
async fn spawn(cas: Option<Arc<TestCas>>, data_dir: Option<&Path>) -> Audited {
    let mut paths = None;
    let configure = |cfg: &mut bzt::Config| {
        cfg.audit.checkpoint_every = CHECKPOINT_EVERY;
        if let Some(d) = data_dir {
            cfg.data_dir = Some(d.to_owned());
        }
        paths = Some((cfg.audit_path(), cfg.audit_key_path()));
    };
    let app = match cas {
        Some(cas) => TestApp::spawn_with_cas(cas, configure).await,
        None => TestApp::spawn_with(configure).await,
    };
    let (log, key) = paths.expect("the configuration was built");
    Audited { app, log, key }
}

/// The end user of session number `n`, as the RP passes it in the create call.
fn requester(n: u8) -> Value {
    json!({ "ip": format!("203.0.113.{n}"), "user_agent": format!("Mozilla/5.0 (bzt-audit {n})") })
}

fn sm3_hex(bytes: &[u8]) -> String {
    use sm3::Digest as _;
    hex::encode(sm3::Sm3::digest(bytes))
}

/// The certificate an operation used, as the RP got it in `result.certificate`.
#[derive(Clone, Debug)]
struct Cert {
    serial: String,
    issuer: String,
    subject: String,
}

impl Cert {
    fn of(result_certificate: &Value) -> Self {
        let s = |k: &str| result_certificate[k].as_str().unwrap().to_owned();
        Self {
            serial: s("serial"),
            issuer: s("issuer"),
            subject: s("subject"),
        }
    }
}

/// What the audit record of one operation must say, from what the test knows.
#[derive(Clone, Debug)]
struct Expect {
    app: &'static str,
    kind: &'static str,
    session_id: String,
    conversation: Option<(String, String)>,
    cert: Option<Cert>,
    tbs: Vec<u8>,
    outcome: &'static str,
    reason: Option<String>,
    auto_confirmed: Option<bool>,
    device: String,
    requester: u8,
}

impl Expect {
    /// The record's operation fields (everything but `seq`, `time`, `prev`, `hash`).
    fn fields(&self) -> Value {
        let cert = |f: fn(&Cert) -> &String| self.cert.as_ref().map(f).cloned().unwrap_or_default();
        let r = requester(self.requester);
        let mut v = json!({
            "type": "operation",
            "app": self.app,
            "kind": self.kind,
            "session_id": self.session_id,
            "cert_serial": cert(|c| &c.serial),
            "cert_issuer": cert(|c| &c.issuer),
            "cert_subject": cert(|c| &c.subject),
            "tbs_sm3": sm3_hex(&self.tbs),
            "outcome": self.outcome,
            "device_name": self.device,
            "requester_ip": r["ip"],
            "requester_user_agent": r["user_agent"],
        });
        if let Some((cid, rid)) = &self.conversation {
            v["conversation_id"] = json!(cid);
            v["request_id"] = json!(rid);
        }
        if let Some(reason) = &self.reason {
            v["reason"] = json!(reason);
        }
        if let Some(a) = self.auto_confirmed {
            v["auto_confirmed"] = json!(a);
        }
        v
    }
}

/// Checks a record (from the API or the file) against what the test knows.
fn assert_record(record: &Value, expect: &Expect) {
    let mut fields = record.clone();
    let obj = fields.as_object_mut().expect("a record is an object");
    let seq = obj.remove("seq").expect("seq");
    assert!(seq.as_u64().is_some_and(|s| s >= 1), "seq: {record}");
    let time = obj.remove("time").expect("time");
    let time = time.as_str().expect("time is a string");
    assert!(
        bzt_core::Timestamp::parse_rfc3339(time).is_some()
            && time.ends_with('Z')
            && time.len() == 24,
        "time is RFC 3339 UTC with milliseconds: {record}"
    );
    for k in ["prev", "hash"] {
        let h = obj.remove(k).unwrap_or_else(|| panic!("{k}: {record}"));
        assert!(
            h.as_str()
                .is_some_and(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit())),
            "{k} is an SM3 hex digest: {record}"
        );
    }
    assert_eq!(
        fields,
        expect.fields(),
        "the audit record of {} {} ({})",
        expect.kind,
        expect.outcome,
        expect.session_id
    );
}

// ---- Operations -------------------------------------------------------------

/// Creates a session with requester `n`, and has `phone` claim it.
async fn created_and_claimed(
    app: &TestApp,
    api_key: &str,
    phone: &TestPhone,
    mut body: Value,
    n: u8,
) -> (String, Claimed) {
    body["requester"] = requester(n);
    let created = app.create_session_as(api_key, body).await;
    let claimed = phone.claim(&created).await;
    (created.id, claimed)
}

fn login(title: &str) -> Value {
    json!({ "kind": "login", "display": { "title": title } })
}

fn bind() -> Value {
    json!({ "kind": "bind", "display": { "title": "绑定证书到账户" } })
}

fn device_of(phone: &TestPhone) -> String {
    phone.identity.device.name.clone()
}

/// The session's result certificate, read as the RP (with `api_key`).
async fn result_certificate(app: &TestApp, api_key: &str, id: &str) -> Cert {
    let resp = app
        .http
        .get(app.url(&format!("/v1/sessions/{id}")))
        .bearer_auth(api_key)
        .send()
        .await
        .unwrap();
    let view: Value = resp.json().await.unwrap();
    assert_eq!(view["status"], "approved", "{view}");
    Cert::of(&view["result"]["certificate"])
}

/// A session of `body`'s kind approved by `phone`; the record it must leave.
async fn approved_as(
    app: &TestApp,
    api_key: &str,
    app_id: &'static str,
    phone: &TestPhone,
    body: Value,
    n: u8,
) -> Expect {
    let kind = match body["kind"].as_str().unwrap() {
        "login" => "login",
        "bind" => "bind",
        "sign" => "sign",
        other => panic!("kind {other} is not used here"),
    };
    let (id, claimed) = created_and_claimed(app, api_key, phone, body, n).await;
    phone
        .approve(&claimed)
        .await
        .unwrap_or_else(|e| panic!("approving {kind} failed: {e}"));
    let cert = result_certificate(app, api_key, &id).await;
    assert_eq!(cert.serial, phone.serial());
    Expect {
        app: app_id,
        kind,
        session_id: id,
        conversation: None,
        cert: Some(cert),
        tbs: claimed.tbs.clone(),
        outcome: "approved",
        reason: None,
        auto_confirmed: None,
        device: device_of(phone),
        requester: n,
    }
}

async fn approved(app: &TestApp, phone: &TestPhone, body: Value, n: u8) -> Expect {
    approved_as(app, API_KEY, APP_ID, phone, body, n).await
}

/// A session the phone declines.
async fn rejected(app: &TestApp, phone: &TestPhone, n: u8) -> Expect {
    let (id, claimed) = created_and_claimed(app, API_KEY, phone, login("登录"), n).await;
    let reason = "不是我发起的登录";
    phone.phone.reject(&claimed, reason).await.unwrap();
    assert_eq!(app.status_of(&id).await, "rejected");
    Expect {
        app: APP_ID,
        kind: "login",
        session_id: id,
        conversation: None,
        cert: None,
        tbs: claimed.tbs.clone(),
        outcome: "rejected",
        reason: Some(reason.into()),
        auto_confirmed: None,
        device: device_of(phone),
        requester: n,
    }
}

/// A session that fails after three bad signatures.
async fn failed(app: &TestApp, phone: &TestPhone, n: u8) -> Expect {
    let (id, claimed) = created_and_claimed(app, API_KEY, phone, bind(), n).await;
    let body = phone.completion_over(b"not the challenge");
    for _ in 0..3 {
        let resp = app
            .complete_raw(&id, claimed.phone_token.expose(), &body)
            .await;
        assert_error(resp, 422, "bad_signature").await;
    }
    assert_eq!(app.status_of(&id).await, "failed");
    Expect {
        app: APP_ID,
        kind: "bind",
        session_id: id,
        conversation: None,
        cert: None,
        tbs: claimed.tbs.clone(),
        outcome: "failed",
        reason: Some("too_many_bad_completions".into()),
        auto_confirmed: None,
        device: device_of(phone),
        requester: n,
    }
}

/// A claimed session the RP cancels: no certificate was used, nothing is recorded.
async fn cancelled(app: &TestApp, phone: &TestPhone, n: u8) -> String {
    let (id, _) = created_and_claimed(app, API_KEY, phone, login("登录"), n).await;
    assert_eq!(app.cancel_session(&id).await.status(), StatusCode::OK);
    id
}

/// A conversation opened from a `sign` session, with the phone's raw socket.
struct Conv {
    id: String,
    /// The record of the opening `sign` session; requests share its certificate.
    opening: Expect,
    socket: Browser,
}

impl Conv {
    async fn open(app: &TestApp, phone: &TestPhone, n: u8) -> Self {
        let tbs = "投标文件 第1页".as_bytes();
        let mut body = json!({
            "kind": "sign",
            "display": { "title": "签署投标文件" },
            "tbs_b64": b64(tbs),
            "conversation": {},
        });
        body["requester"] = requester(n);
        let created = app.create_session(body).await;
        let claimed = phone.claim(&created).await;
        assert!(claimed.conversation_allowed);
        let answer = phone
            .approve_opening_conversation(&claimed)
            .await
            .unwrap_or_else(|e| panic!("approving with open_conversation failed: {e}"));
        let grant = answer.conversation.expect("a conversation was opened");
        assert_eq!(claimed.tbs, tbs);
        let opening = Expect {
            app: APP_ID,
            kind: "sign",
            session_id: created.id.clone(),
            conversation: None,
            cert: Some(result_certificate(app, API_KEY, &created.id).await),
            tbs: tbs.to_vec(),
            outcome: "approved",
            reason: None,
            auto_confirmed: None,
            device: device_of(phone),
            requester: n,
        };
        let url = format!(
            "{}/v1/conversations/{}/phone?t={}",
            app.address.replacen("http", "ws", 1),
            grant.id,
            grant.phone_token.as_str()
        );
        let socket = Browser::connect(&url, None)
            .await
            .unwrap_or_else(|e| panic!("the phone socket was refused: {e}"));
        Self {
            id: grant.id,
            opening,
            socket,
        }
    }

    /// The requester posts a request; the phone receives it. Its id.
    async fn request(&mut self, app: &TestApp, tbs: &[u8]) -> String {
        let resp = app
            .http
            .post(app.url(&format!("/v1/conversations/{}/requests", self.id)))
            .bearer_auth(API_KEY)
            .json(&json!({ "tbs_b64": b64(tbs), "display": { "title": "签署附件" } }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        let rid = resp.json::<Value>().await.unwrap()["request_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let frame = self.socket.next_event().await;
        assert_eq!(frame["type"], "sign_request", "{frame}");
        assert_eq!(frame["request_id"], rid.as_str(), "{frame}");
        rid
    }

    /// The phone sends `frame`; the broker's reply.
    async fn answer(&mut self, frame: Value) -> Value {
        self.socket.send(frame).await;
        self.socket.next_event().await
    }

    async fn sign(&mut self, phone: &TestPhone, rid: &str, tbs: &[u8], auto: bool) -> Value {
        let signature = bzt_phone::sign(&phone.identity, tbs).unwrap();
        self.answer(json!({
            "type": "sign_response",
            "request_id": rid,
            "signature_b64": b64(&signature),
            "auto_confirmed": auto,
        }))
        .await
    }

    /// What the record of an answer to request `rid` over `tbs` must say.
    fn expect(
        &self,
        rid: &str,
        tbs: &[u8],
        outcome: &'static str,
        reason: Option<&str>,
        auto: bool,
    ) -> Expect {
        Expect {
            kind: "conversation_request",
            conversation: Some((self.id.clone(), rid.to_owned())),
            tbs: tbs.to_vec(),
            outcome,
            reason: reason.map(str::to_owned),
            auto_confirmed: Some(auto),
            ..self.opening.clone()
        }
    }
}

fn assert_ack(reply: &Value, rid: &str, status: &str) {
    assert_eq!(
        reply,
        &json!({ "type": "ack", "request_id": rid, "status": status })
    );
}

fn assert_frame_error(reply: &Value, rid: &str, code: &str) {
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["request_id"], rid, "{reply}");
    assert_eq!(reply["error"]["code"], code, "{reply}");
}

/// What a scenario did: the records it must have left, in order, and the
/// ids of what must not be recorded.
struct Scenario {
    expected: Vec<Expect>,
    not_recorded: Vec<String>,
    /// The certificate serial of the first phone (张三).
    serial_a: String,
}

/// Every kind of recorded operation, plus some that are not certificate uses.
async fn run_scenario(app: &TestApp) -> Scenario {
    let a = app.phone("platform", "张三的手机");
    let b = app.phone("national", "李四的手机");
    let mut expected = vec![
        approved(app, &a, login("登录 示例交易平台"), 1).await,
        approved(app, &b, bind(), 2).await,
        rejected(app, &a, 3).await,
        failed(app, &b, 4).await,
    ];
    let mut not_recorded = vec![cancelled(app, &a, 5).await];

    let mut conv = Conv::open(app, &a, 6).await;
    expected.push(conv.opening.clone());
    // Answers with and without a tap, a decline, a bad signature: each recorded as sent.
    let tbs1 = "附件一 报价表".as_bytes();
    let r1 = conv.request(app, tbs1).await;
    let reply = conv.sign(&a, &r1, tbs1, true).await;
    assert_ack(&reply, &r1, "approved");
    expected.push(conv.expect(&r1, tbs1, "approved", None, true));
    // The same answer again (a phone after a reconnect): refused, not recorded twice.
    let reply = conv.sign(&a, &r1, tbs1, true).await;
    assert_frame_error(&reply, &r1, "conflict");

    let tbs2 = "附件二 技术方案".as_bytes();
    let r2 = conv.request(app, tbs2).await;
    let reply = conv.sign(&a, &r2, tbs2, false).await;
    assert_ack(&reply, &r2, "approved");
    expected.push(conv.expect(&r2, tbs2, "approved", None, false));

    let tbs3 = "附件三 资格证明".as_bytes();
    let r3 = conv.request(app, tbs3).await;
    let reply = conv
        .answer(json!({ "type": "sign_reject", "request_id": r3, "reason": "内容与纸质版不符" }))
        .await;
    assert_ack(&reply, &r3, "rejected");
    expected.push(conv.expect(&r3, tbs3, "rejected", Some("内容与纸质版不符"), false));

    let tbs4 = "附件四 业绩证明".as_bytes();
    let r4 = conv.request(app, tbs4).await;
    let reply = conv.sign(&a, &r4, b"other bytes", true).await;
    assert_frame_error(&reply, &r4, "bad_signature");
    expected.push(conv.expect(&r4, tbs4, "rejected", Some("bad_signature"), true));

    // A request left to expire is no use of the certificate; a late answer is refused.
    let r5 = conv.request(app, "附件五".as_bytes()).await;
    app.advance(Duration::from_secs(61));
    let view: Value = app
        .rp_get_as(
            API_KEY,
            &format!("/v1/conversations/{}/requests/{r5}", conv.id),
        )
        .await;
    assert_eq!(view["status"], "expired", "{view}");
    let reply = conv.sign(&a, &r5, "附件五".as_bytes(), true).await;
    assert_frame_error(&reply, &r5, "expired");
    not_recorded.push(r5);

    // Ending the conversation is not recorded either.
    let reply = conv.answer(json!({ "type": "end" })).await;
    assert_eq!(reply["type"], "ended", "{reply}");
    conv.socket.expect_close().await;

    Scenario {
        expected,
        not_recorded,
        serial_a: a.serial(),
    }
}

// ---- Reading the trail ----------------------------------------------------------

async fn get_audit(
    app: &TestApp,
    api_key: Option<&str>,
    query: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = app.http.get(app.url("/v1/audit")).query(query);
    if let Some(k) = api_key {
        req = req.bearer_auth(k);
    }
    req.send().await.unwrap()
}

/// `GET /v1/audit` (200 expected): the records.
async fn records(app: &TestApp, api_key: &str, query: &[(&str, &str)]) -> Vec<Value> {
    let resp = get_audit(app, Some(api_key), query).await;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "GET /v1/audit answered {body}");
    let obj = body.as_object().unwrap();
    assert_eq!(obj.keys().collect::<Vec<_>>(), ["records"], "{body}");
    body["records"].as_array().unwrap().clone()
}

fn session_ids(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["session_id"].as_str().unwrap().to_owned())
        .collect()
}

/// The log file's lines.
fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The broker's checkpoint key, SEC1 hex, from its PEM.
fn public_key_hex(key_pem: &Path) -> String {
    let key = bzt::store::file_audit::load_existing_key(key_pem).unwrap();
    hex::encode(key.verifying_key().to_sec1_bytes())
}

/// `verify_lines` over the file with the broker's key pinned.
fn verify(log: &Path, key_pem: &Path) -> bzt_core::audit::Verified {
    let lines = lines(log);
    let pinned = public_key_hex(key_pem);
    bzt_core::audit::verify_lines(lines.iter().map(String::as_str), Some(&pinned))
        .unwrap_or_else(|e| panic!("the audit log does not verify: {e}"))
}

/// The records of `log`, parsed.
fn file_records(log: &Path) -> Vec<Value> {
    lines(log)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn operations(records: &[Value]) -> Vec<Value> {
    records
        .iter()
        .filter(|r| r["type"] == "operation")
        .cloned()
        .collect()
}

/// Runs the real `bzt` binary.
fn bzt(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_bzt"))
        .args(args)
        .env_remove("BZT_CONFIG")
        .output()
        .expect("the bzt binary runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Waits until no broker holds the log's writer lock (the old broker's
/// writer thread has stopped).
async fn wait_for_release(log: &Path) {
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    loop {
        let file = std::fs::OpenOptions::new().append(true).open(log).unwrap();
        if file.try_lock().is_ok() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stopped broker still holds the audit log's lock"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- Tests --------------------------------------------------------------------

#[tokio::test]
async fn every_completed_operation_is_recorded_once_with_what_was_used() {
    let audited = spawn(None, None).await;
    let app = &audited.app;
    let s = run_scenario(app).await;

    // The API: exactly the expected records, in order, nothing else.
    let got = records(app, API_KEY, &[("limit", "1000")]).await;
    assert_eq!(
        session_ids(&got),
        s.expected
            .iter()
            .map(|e| e.session_id.clone())
            .collect::<Vec<_>>(),
        "one record per completed operation: {got:#?}"
    );
    for (record, expect) in got.iter().zip(&s.expected) {
        assert_record(record, expect);
    }
    let text = serde_json::to_string(&got).unwrap();
    for id in &s.not_recorded {
        assert!(!text.contains(id.as_str()), "{id} must not be recorded");
    }
    let seqs: Vec<u64> = got.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "oldest first: {seqs:?}"
    );
    let times: Vec<&str> = got.iter().map(|r| r["time"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    // The requests were recorded when answered, before the 61 s wait.
    assert!(times[times.len() - 1] < app.clock.now().to_rfc3339().as_str());

    // The file: the same operations, interleaved with signed checkpoints.
    let all = file_records(&audited.log);
    let ops = operations(&all);
    assert_eq!(ops, got, "the API serves the file's records unchanged");
    let n = s.expected.len() as u64;
    let checkpoints = n / CHECKPOINT_EVERY;
    let v = verify(&audited.log, &audited.key);
    assert_eq!(v.records, n + checkpoints);
    assert_eq!(v.checkpoints, checkpoints);
    assert_eq!(v.unsigned_tail, n % CHECKPOINT_EVERY);
    for (i, r) in all.iter().enumerate() {
        let expected = if (i as u64 + 1).is_multiple_of(CHECKPOINT_EVERY + 1) {
            "checkpoint"
        } else {
            "operation"
        };
        assert_eq!(r["type"], expected, "line {}: {r}", i + 1);
        assert_eq!(r["seq"], i as u64 + 1, "line {}", i + 1);
    }
}

#[tokio::test]
async fn the_trail_survives_a_restart_and_chains_across_it() {
    let data = tempfile::tempdir().unwrap();
    let cas = Arc::new(TestCas::generate());
    let first = spawn(Some(cas.clone()), Some(data.path())).await;
    let a = first.app.phone("platform", "张三的手机");
    let mut expected = vec![
        approved(&first.app, &a, login("登录"), 1).await,
        approved(&first.app, &a, bind(), 2).await,
        rejected(&first.app, &a, 3).await,
        approved(&first.app, &a, login("再次登录"), 4).await,
    ];
    let log = first.log.clone();
    let key = first.key.clone();
    let before = lines(&log);
    assert_eq!(before.len(), 5, "four operations and one checkpoint");

    // Stop the broker; a new one opens the same data directory.
    drop(first);
    wait_for_release(&log).await;
    let second = spawn(Some(cas), Some(data.path())).await;
    assert_eq!((&second.log, &second.key), (&log, &key));
    let app = &second.app;
    let a = app.phone_with(a.leaf.clone(), "张三的手机");
    let b = app.phone("national", "李四的手机");
    expected.push(approved(app, &b, bind(), 5).await);
    expected.push(failed(app, &a, 6).await);
    expected.push(approved(app, &a, login("重启后登录"), 7).await);

    // All of it is served, in order, by the new broker.
    let got = records(app, API_KEY, &[]).await;
    assert_eq!(got.len(), expected.len(), "{got:#?}");
    for (record, expect) in got.iter().zip(&expected) {
        assert_record(record, expect);
    }

    // The chain continues: the first new record points at the last old one,
    // and the checkpoint count resumed (one operation was unsigned at the stop).
    let after = file_records(&log);
    assert_eq!(
        lines(&log)[..before.len()],
        before[..],
        "the old records are untouched"
    );
    let last_old: Value = serde_json::from_str(&before[4]).unwrap();
    assert_eq!(after[5]["seq"], 6);
    assert_eq!(after[5]["prev"], last_old["hash"]);
    let types: Vec<&str> = after.iter().map(|r| r["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "operation",
            "operation",
            "operation",
            "checkpoint",
            "operation",
            "operation",
            "operation",
            "checkpoint",
            "operation"
        ]
    );
    let v = verify(&log, &key);
    assert_eq!((v.records, v.checkpoints, v.unsigned_tail), (9, 2, 1));

    // The real binary agrees about the live log.
    let out = bzt(&[
        "audit",
        "verify",
        "--file",
        path_str(&log),
        "--key",
        path_str(&key),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("OK"),
        "{}",
        text(&out)
    );
}

#[tokio::test]
async fn the_query_filters_by_serial_time_and_limit_within_the_app() {
    let audited = spawn(None, None).await;
    let app = &audited.app;
    let a = app.phone("platform", "张三的手机");
    let b = app.phone("platform", "李四的手机");
    assert_ne!(a.serial(), b.serial());

    let a1 = approved(app, &a, login("登录"), 1).await;
    let b1 = approved(app, &b, login("登录"), 2).await;
    app.advance(Duration::from_secs(5));
    let t1 = app.clock.now();
    let a2 = approved(app, &a, bind(), 3).await;
    let b2 = approved(app, &b, bind(), 4).await;
    app.advance(Duration::from_secs(5));
    let a3 = approved(app, &a, login("再次登录"), 5).await;
    // Another app's operation, with the same certificate.
    let hall = approved_as(
        app,
        OTHER_API_KEY,
        OTHER_APP_ID,
        &a,
        login("开标大厅登录"),
        6,
    )
    .await;
    let ids = |es: &[&Expect]| es.iter().map(|e| e.session_id.clone()).collect::<Vec<_>>();

    let all = records(app, API_KEY, &[]).await;
    assert_eq!(session_ids(&all), ids(&[&a1, &b1, &a2, &b2, &a3]));

    // By serial, in any case and with colons, as certificates print them.
    let serial_a = a.serial();
    let got = records(app, API_KEY, &[("serial", &serial_a)]).await;
    assert_eq!(session_ids(&got), ids(&[&a1, &a2, &a3]));
    for (r, e) in got.iter().zip([&a1, &a2, &a3]) {
        assert_record(r, e);
    }
    let padded = format!("00{serial_a}").to_uppercase();
    let colons = padded
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":");
    assert_eq!(
        session_ids(&records(app, API_KEY, &[("serial", &colons)]).await),
        ids(&[&a1, &a2, &a3])
    );
    let got = records(app, API_KEY, &[("serial", &b.serial())]).await;
    assert_eq!(session_ids(&got), ids(&[&b1, &b2]));
    assert!(records(app, API_KEY, &[("serial", "abcdef0123")])
        .await
        .is_empty());

    // By time: at or after `since`, in any offset.
    let since = t1.to_rfc3339();
    let got = records(app, API_KEY, &[("since", &since)]).await;
    assert_eq!(session_ids(&got), ids(&[&a2, &b2, &a3]));
    let beijing =
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(t1.unix_millis()) * 1_000_000)
            .unwrap()
            .to_offset(time::macros::offset!(+8))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
    assert!(beijing.contains("+08:00"), "{beijing}");
    let got = records(app, API_KEY, &[("since", &beijing)]).await;
    assert_eq!(session_ids(&got), ids(&[&a2, &b2, &a3]));
    let later = t1.plus_secs(1).to_rfc3339();
    let got = records(app, API_KEY, &[("since", &later)]).await;
    assert_eq!(session_ids(&got), ids(&[&a3]));
    let got = records(app, API_KEY, &[("since", &since), ("serial", &serial_a)]).await;
    assert_eq!(session_ids(&got), ids(&[&a2, &a3]));

    // Limit: the oldest first.
    let got = records(app, API_KEY, &[("limit", "2")]).await;
    assert_eq!(session_ids(&got), ids(&[&a1, &b1]));
    let got = records(app, API_KEY, &[("limit", "1"), ("since", &since)]).await;
    assert_eq!(session_ids(&got), ids(&[&a2]));
    let got = records(app, API_KEY, &[("limit", "1000")]).await;
    assert_eq!(got.len(), 5);

    // Each app sees its own records only.
    let other = records(app, OTHER_API_KEY, &[]).await;
    assert_eq!(session_ids(&other), ids(&[&hall]));
    assert_record(&other[0], &hall);
    let other = records(
        app,
        OTHER_API_KEY,
        &[("serial", &serial_a), ("limit", "1000")],
    )
    .await;
    assert_eq!(session_ids(&other), ids(&[&hall]));
    assert!(records(app, OTHER_API_KEY, &[("since", &later)])
        .await
        .iter()
        .all(|r| r["app"] == OTHER_APP_ID));

    // Bad parameters and credentials.
    for query in [
        vec![("serial", "xyz")],
        vec![("serial", "")],
        vec![("since", "yesterday")],
        vec![("since", "2026-13-01T00:00:00.000Z")],
        vec![("limit", "0")],
        vec![("limit", "1001")],
        vec![("limit", "-1")],
        vec![("limit", "ten")],
        vec![("app", OTHER_APP_ID)],
        vec![("foo", "1")],
    ] {
        let resp = get_audit(app, Some(API_KEY), &query).await;
        assert_error(resp, 400, "invalid_request").await;
    }
    assert_error(get_audit(app, None, &[]).await, 401, "unauthorized").await;
    assert_error(
        get_audit(app, Some("not-a-key"), &[]).await,
        401,
        "unauthorized",
    )
    .await;
}

#[tokio::test]
async fn bzt_audit_verify_names_the_first_edited_or_missing_record() {
    let audited = spawn(None, None).await;
    let s = run_scenario(&audited.app).await;
    let original = lines(&audited.log);
    let work = tempfile::tempdir().unwrap();
    let key = path_str(&audited.key);
    let write = |name: &str, lines: &[String]| -> PathBuf {
        let p = work.path().join(name);
        std::fs::write(
            &p,
            lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
        )
        .unwrap();
        p
    };
    let verify_file = |p: &Path| bzt(&["audit", "verify", "--file", path_str(p), "--key", key]);
    let find = |needle: &str| {
        original
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no record contains {needle}"))
    };

    // The untouched log.
    let copy = write("copy.jsonl", &original);
    let out = verify_file(&copy);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("OK"), "{}", text(&out));
    assert!(
        stdout.contains(&format!("{} records", original.len())),
        "{stdout}"
    );

    // A conversation answer's `auto_confirmed` turned from true to false.
    let i = find("\"auto_confirmed\":true");
    assert!(i > 0 && i + 1 < original.len(), "a record in the middle");
    let mut edited = original.clone();
    edited[i] = edited[i].replacen("\"auto_confirmed\":true", "\"auto_confirmed\":false", 1);
    let out = verify_file(&write("auto.jsonl", &edited));
    assert!(
        !out.status.success(),
        "an edited log verified: {}",
        text(&out)
    );
    let named = format!("record seq {} (line {})", i + 1, i + 1);
    assert!(
        text(&out).contains(&named),
        "expected {named:?} in: {}",
        text(&out)
    );
    assert!(text(&out).contains("edited"), "{}", text(&out));

    // A rejection turned into an approval.
    let i = find("\"outcome\":\"rejected\"");
    let mut edited = original.clone();
    edited[i] = edited[i].replacen("\"outcome\":\"rejected\"", "\"outcome\":\"approved\"", 1);
    let out = verify_file(&write("outcome.jsonl", &edited));
    assert!(!out.status.success(), "{}", text(&out));
    let named = format!("record seq {} (line {})", i + 1, i + 1);
    assert!(
        text(&out).contains(&named),
        "expected {named:?} in: {}",
        text(&out)
    );

    // A byte that is no longer UTF-8: still named by its record.
    let i = find("\"outcome\":\"failed\"");
    let mut bytes = Vec::new();
    for (n, line) in original.iter().enumerate() {
        let mut line = line.as_bytes().to_vec();
        if n == i {
            let at = line.len() / 2;
            line[at] = 0xff;
        }
        bytes.extend_from_slice(&line);
        bytes.push(b'\n');
    }
    let garbled = work.path().join("garbled.jsonl");
    std::fs::write(&garbled, bytes).unwrap();
    let out = verify_file(&garbled);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("line {})", i + 1))
            || text(&out).contains(&format!("line {}:", i + 1)),
        "expected line {} named in: {}",
        i + 1,
        text(&out)
    );

    // A record removed: the one after the gap is named, at the removed line.
    let gone = 4; // line 5, an operation between two checkpoints
    assert_eq!(
        serde_json::from_str::<Value>(&original[gone]).unwrap()["type"],
        "operation"
    );
    let mut cut = original.clone();
    cut.remove(gone);
    let out = verify_file(&write("cut.jsonl", &cut));
    assert!(!out.status.success(), "{}", text(&out));
    let named = format!("record seq {} (line {})", gone + 2, gone + 1);
    assert!(
        text(&out).contains(&named),
        "expected {named:?} in: {}",
        text(&out)
    );
    assert!(
        text(&out).contains(&format!("expected seq {}", gone + 1)),
        "{}",
        text(&out)
    );

    // The last checkpoint signed with another key: the pinned key notices.
    let other_key = work.path().join("other-key.pem");
    bzt::store::file_audit::load_or_create_key(&other_key).unwrap();
    let out = bzt(&[
        "audit",
        "verify",
        "--file",
        path_str(&copy),
        "--key",
        path_str(&other_key),
    ]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "record seq {} (line {})",
            CHECKPOINT_EVERY + 1,
            CHECKPOINT_EVERY + 1
        )),
        "{}",
        text(&out)
    );

    // `show --serial`: only that certificate's records, as JSON lines.
    let upper = s.serial_a.to_uppercase();
    let out = bzt(&[
        "audit",
        "show",
        "--file",
        path_str(&copy),
        "--serial",
        &upper,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let shown: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let expected: Vec<String> = s
        .expected
        .iter()
        .filter(|e| e.cert.as_ref().is_some_and(|c| c.serial == s.serial_a))
        .map(|e| e.session_id.clone())
        .collect();
    assert!(expected.len() >= 5, "{expected:?}");
    assert_eq!(session_ids(&shown), expected);
    assert!(shown
        .iter()
        .all(|r| r["cert_serial"] == s.serial_a.as_str()));
    let out = bzt(&[
        "audit",
        "show",
        "--file",
        path_str(&copy),
        "--serial",
        &upper,
        "--limit",
        "2",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        2,
        "{}",
        text(&out)
    );
}

/// One operation, then nothing: within `checkpoint_interval_s` on the
/// broker's clock a signed checkpoint covers it, so cutting the log's end
/// would no longer verify as a complete, signed chain.
#[tokio::test]
async fn a_lone_operation_is_signed_within_the_checkpoint_interval() {
    let a = spawn(None, None).await; // checkpoint_every = 3: one operation stays unsigned
    let phone = a.app.phone("platform", "p");
    let body = json!({ "kind": "login", "display": { "title": "登录" } });
    approved(&a.app, &phone, body, 1).await;
    let verified = |log: &Path| {
        let text = std::fs::read_to_string(log).unwrap();
        bzt_core::audit::verify_lines(text.lines(), None).unwrap()
    };
    assert_eq!(
        verified(&a.log).unsigned_tail,
        1,
        "one operation, no checkpoint yet"
    );

    // 30 s on: not yet.
    a.app.clock.advance(Duration::from_secs(30));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(verified(&a.log).unsigned_tail, 1);

    // Past 60 s: signed, without any further operation.
    a.app.clock.advance(Duration::from_secs(31));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let v = verified(&a.log);
        if v.unsigned_tail == 0 {
            assert_eq!(v.checkpoints, 1, "{v:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no timed checkpoint: {v:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Nothing new: the next interval adds no checkpoint.
    a.app.clock.advance(Duration::from_secs(61));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(verified(&a.log).checkpoints, 1);
}
