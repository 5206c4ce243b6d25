//! Conversations (会话签章): a `sign` session approved with
//! `open_conversation`, then requests from the requester answered by the
//! phone over its socket, by the reference phone library
//! (`bzt_phone::ConversationSocket`) or by raw frames where the test needs
//! to say something a well-behaved phone would not.

use crate::helpers::{
    assert_error, b64, openssl_verifies, unb64, ws_refusal, Browser, TestApp, TestPhone,
    ADMIN_TOKEN, API_KEY, OTHER_API_KEY,
};
use bzt_phone::{
    AckStatus, ConversationError, ConversationSocket, EndedBy, Outcome, PhoneConversation,
    SignRequest,
};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::ops::ControlFlow;
use std::time::Duration;

/// A conversation opened by a phone, with what each side was given.
pub(crate) struct Conv {
    pub(crate) id: String,
    /// The requester's token (`result.conversation.token`).
    token: String,
    /// The phone's grant (the complete answer's `conversation`).
    pub(crate) grant: PhoneConversation,
    /// The phone that opened it.
    pub(crate) phone: TestPhone,
    /// The certificate as the RP got it in the session result.
    pub(crate) cert_pem: String,
}

/// Creates a `sign` session allowing a conversation with `policy`, and has a
/// fresh phone approve it with `open_conversation: true`.
pub(crate) async fn open(app: &TestApp, policy: Value) -> Conv {
    let created = app
        .create_session(json!({
            "kind": "sign",
            "display": { "title": "签署投标文件", "detail": "开启会话签章" },
            "tbs_b64": b64("投标文件 第0页".as_bytes()),
            "conversation": policy,
        }))
        .await;
    let phone = app.phone("platform", "张三的手机");
    let claimed = phone.claim(&created).await;
    assert!(
        claimed.conversation_allowed,
        "sign + conversation allows one"
    );
    let answer = phone
        .approve_opening_conversation(&claimed)
        .await
        .unwrap_or_else(|e| panic!("approving with open_conversation failed: {e}"));
    let grant = answer
        .conversation
        .clone()
        .unwrap_or_else(|| panic!("the complete answer has no conversation: {answer:?}"));
    let session = app.get_session(&created.id).await;
    assert_eq!(session["status"], "approved");
    let rc = &session["result"]["conversation"];
    assert_eq!(
        rc["id"],
        grant.id.as_str(),
        "RP and phone see one conversation"
    );
    assert_eq!(rc["expires_at"], grant.expires_at.as_str());
    let token = rc["token"].as_str().expect("result.conversation.token");
    assert_ne!(
        token,
        grant.phone_token.as_str(),
        "each side has its own token"
    );
    Conv {
        id: grant.id.clone(),
        token: token.to_owned(),
        cert_pem: session["result"]["certificate"]["pem"]
            .as_str()
            .unwrap()
            .to_owned(),
        grant,
        phone,
    }
}

/// `ws://127.0.0.1:<port>` of the app.
fn ws_base(app: &TestApp) -> String {
    app.address.replacen("http", "ws", 1)
}

impl Conv {
    /// The requester's socket (`/ws?t=<token>`).
    async fn requester(&self, app: &TestApp) -> Browser {
        let url = format!(
            "{}/v1/conversations/{}/ws?t={}",
            ws_base(app),
            self.id,
            self.token
        );
        Browser::connect(&url, None)
            .await
            .unwrap_or_else(|e| panic!("requester socket refused: {e}"))
    }

    /// The phone's socket through the phone library.
    pub(crate) async fn phone_socket(&self, app: &TestApp) -> ConversationSocket {
        ConversationSocket::connect(&app.address, &self.grant)
            .await
            .unwrap_or_else(|e| panic!("phone socket refused: {e}"))
    }

    /// The phone's socket as raw frames.
    async fn phone_raw(&self, app: &TestApp) -> Browser {
        let url = format!(
            "{}/v1/conversations/{}/phone?t={}",
            ws_base(app),
            self.id,
            self.grant.phone_token.as_str()
        );
        Browser::connect(&url, None)
            .await
            .unwrap_or_else(|e| panic!("phone socket refused: {e}"))
    }

    /// `POST /v1/conversations/<id>/requests`, raw.
    async fn post(&self, app: &TestApp, tbs: &[u8], title: &str) -> reqwest::Response {
        self.post_body(
            app,
            json!({ "tbs_b64": b64(tbs), "display": { "title": title } }),
        )
        .await
    }

    async fn post_body(&self, app: &TestApp, body: Value) -> reqwest::Response {
        app.http
            .post(app.url(&format!("/v1/conversations/{}/requests", self.id)))
            .bearer_auth(API_KEY)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// A request that must be accepted (202); its id.
    pub(crate) async fn add(&self, app: &TestApp, tbs: &[u8], title: &str) -> String {
        let resp = self.post(app, tbs, title).await;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(status, StatusCode::ACCEPTED, "POST request answered {body}");
        assert!(body["expires_at"].is_string(), "{body}");
        body["request_id"].as_str().unwrap().to_owned()
    }

    /// `GET /v1/conversations/<id>/requests/<rid>?wait=N` (200 expected).
    async fn request_view(&self, app: &TestApp, rid: &str, wait: u64) -> Value {
        let resp = app
            .http
            .get(app.url(&format!(
                "/v1/conversations/{}/requests/{rid}?wait={wait}",
                self.id
            )))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp.json().await.unwrap()
    }

    /// `GET /v1/conversations/<id>` (200 expected).
    async fn view(&self, app: &TestApp) -> Value {
        let resp = app
            .http
            .get(app.url(&format!("/v1/conversations/{}", self.id)))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp.json().await.unwrap()
    }

    /// `DELETE /v1/conversations/<id>` with the API key.
    async fn delete(&self, app: &TestApp) -> reqwest::Response {
        app.http
            .delete(app.url(&format!("/v1/conversations/{}", self.id)))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap()
    }
}

/// The next `request_result` on the requester socket.
async fn next_result(requester: &mut Browser) -> Value {
    let ev = requester.next_event().await;
    assert_eq!(
        ev["type"], "request_result",
        "expected a request_result: {ev}"
    );
    ev
}

/// Reads up to the `ended` frame, expects it to say `by` with an `at` time,
/// then a close 1000; answers the frames read before it.
async fn expect_ended(ws: &mut Browser, by: &str) -> Vec<Value> {
    let mut before = Vec::new();
    loop {
        let ev = ws.next_event().await;
        if ev["type"] == "ended" {
            assert_eq!(ev["by"], by, "ended for the wrong reason: {ev}");
            assert!(ev["at"].is_string(), "`ended` carries `at`: {ev}");
            break;
        }
        before.push(ev);
    }
    let close = ws.expect_close().await;
    assert_eq!(
        u16::from(close.code),
        1000,
        "close after `ended`: {close:?}"
    );
    before
}

/// A raw `sign_response` frame.
fn sign_response(request_id: &str, signature: &[u8], auto_confirmed: bool) -> Value {
    json!({
        "type": "sign_response",
        "request_id": request_id,
        "signature_b64": b64(signature),
        "auto_confirmed": auto_confirmed,
    })
}

/// Verifies a DER SM2 signature with the sm2 crate and the key of
/// `cert_pem` (ID 1234567812345678), independently of the broker and of
/// the phone library.
fn sm2_verifies(cert_pem: &str, msg: &[u8], sig_der: &[u8]) -> bool {
    use sm2::dsa::signature::Verifier;
    use sm2::dsa::{Signature, VerifyingKey};
    use x509_cert::der::DecodePem;
    let cert = x509_cert::Certificate::from_pem(cert_pem).expect("certificate PEM");
    let spki = cert.tbs_certificate().subject_public_key_info();
    let point = spki
        .subject_public_key
        .as_bytes()
        .expect("byte-aligned key");
    let key = sm2::PublicKey::from_sec1_bytes(point).expect("SM2 public key");
    let key = VerifyingKey::new("1234567812345678", key).expect("verifying key");
    match Signature::from_der(sig_der) {
        Ok(sig) => key.verify(msg, &sig).is_ok(),
        Err(_) => false,
    }
}

pub(crate) fn policy(max_requests: u32, idle_s: u32, max_s: u32) -> Value {
    json!({ "max_requests": max_requests, "idle_s": idle_s, "max_s": max_s })
}

/// The bytes of the `i`-th page: text plus bytes that are not UTF-8.
fn page(i: usize) -> Vec<u8> {
    let mut v = format!("投标文件 第{i}页\n").into_bytes();
    v.extend_from_slice(&[0, 0xff, (i % 256) as u8]);
    v
}

/// The audit trail's outcomes for the conversation's requests, by request id.
async fn audited_outcomes(app: &TestApp, conv: &Conv) -> BTreeMap<String, Vec<String>> {
    let url = app.url(&format!(
        "/v1/audit?serial={}&limit=1000",
        conv.phone.serial()
    ));
    let resp = app.http.get(url).bearer_auth(API_KEY).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in body["records"].as_array().expect("records") {
        if r["kind"] == "conversation_request" && r["conversation_id"] == conv.id.as_str() {
            out.entry(r["request_id"].as_str().unwrap().to_owned())
                .or_default()
                .push(r["outcome"].as_str().unwrap().to_owned());
        }
    }
    out
}

fn outcomes(list: &[(&String, &str)]) -> BTreeMap<String, Vec<String>> {
    list.iter()
        .map(|(id, o)| ((*id).clone(), vec![(*o).to_owned()]))
        .collect()
}

async fn revoke(app: &TestApp, serial: &str) {
    let resp = app
        .http
        .post(app.url("/v1/admin/revocations"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "serial": serial }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
}

// ---- Tests --------------------------------------------------------------------

#[tokio::test]
async fn a_hundred_auto_confirmed_requests_arrive_in_order_with_valid_signatures() {
    let app = TestApp::spawn().await;
    let conv = open(&app, policy(200, 600, 7200)).await;
    let view = conv.view(&app).await;
    assert_eq!(view["certificate"]["serial"], conv.phone.serial().as_str());
    let mut requester = conv.requester(&app).await;
    let mut socket = conv.phone_socket(&app).await;
    let identity = conv.phone.identity.clone();
    let phone = tokio::spawn(async move {
        let mut answered = Vec::new();
        let summary = socket
            .run_auto_confirm(&identity, |r, outcome| {
                answered.push((r.request_id.clone(), outcome.clone()));
                ControlFlow::Continue(())
            })
            .await;
        (summary, answered)
    });

    // Keep up to 16 requests in flight (the broker holds at most 32 pending).
    let mut posted: Vec<(String, Vec<u8>)> = Vec::new();
    let mut results: Vec<Value> = Vec::new();
    while results.len() < 100 {
        while posted.len() < 100 && posted.len() - results.len() < 16 {
            let i = posted.len() + 1;
            let rid = conv.add(&app, &page(i), &format!("第{i}页")).await;
            posted.push((rid, page(i)));
        }
        results.push(next_result(&mut requester).await);
    }

    for (i, (r, (rid, tbs))) in results.iter().zip(&posted).enumerate() {
        assert_eq!(r["request_id"], rid.as_str(), "result {i} out of order");
        assert_eq!(r["status"], "approved", "{r}");
        assert_eq!(r["auto_confirmed"], true, "{r}");
        let sig = unb64(r["signature_b64"].as_str().unwrap());
        assert!(
            sm2_verifies(&conv.cert_pem, tbs, &sig),
            "signature {i} does not verify over its own bytes"
        );
        let other = &posted[(i + 1) % posted.len()].1;
        assert!(
            !sm2_verifies(&conv.cert_pem, other, &sig),
            "signature {i} verifies over another request's bytes"
        );
    }
    let (rid, tbs) = &posted[41];
    let sig = unb64(results[41]["signature_b64"].as_str().unwrap());
    assert!(
        openssl_verifies(app.dir.path(), &conv.cert_pem, tbs, &sig),
        "OpenSSL does not verify the signature of request 42"
    );
    let one = conv.request_view(&app, rid, 0).await;
    assert_eq!(one["status"], "approved");
    assert_eq!(one["signature_b64"], results[41]["signature_b64"]);

    // The requester ends it; both sides hear so.
    let resp = conv.delete(&app).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let view: Value = resp.json().await.unwrap();
    assert_eq!(view["status"], "ended");
    assert_eq!(view["ended_by"], "requester");
    assert_eq!(view["requests"], 100);
    let before = expect_ended(&mut requester, "requester").await;
    assert!(before.is_empty(), "no result twice: {before:?}");
    let (summary, answered) = tokio::time::timeout(Duration::from_secs(10), phone)
        .await
        .expect("the phone loop stops when the conversation ends")
        .unwrap();
    let summary = summary.unwrap();
    assert_eq!(summary.ended.by, EndedBy::Requester.as_str());
    assert_eq!((summary.approved, summary.refused), (100, 0));
    assert_eq!(answered.len(), 100);
    assert!(answered.iter().all(|(_, o)| *o
        == Outcome::Approved {
            auto_confirmed: true
        }));
    let ids: Vec<&String> = answered.iter().map(|(id, _)| id).collect();
    let posted_ids: Vec<&String> = posted.iter().map(|(id, _)| id).collect();
    assert_eq!(ids, posted_ids, "the phone answered in request order");
}

#[tokio::test]
async fn manual_confirmation_and_rejection_reach_the_requester() {
    let app = TestApp::spawn().await;
    let conv = open(&app, policy(10, 600, 7200)).await;
    let mut requester = conv.requester(&app).await;
    let mut phone = conv.phone_socket(&app).await;
    let r1 = conv.add(&app, &page(1), "第1页").await;
    let r2 = conv.add(&app, &page(2), "第2页").await;
    let r3 = conv.add(&app, &page(3), "第3页").await;

    let got1 = phone.next_request().await.unwrap().unwrap();
    assert_eq!((got1.request_id.as_str(), got1.seq), (r1.as_str(), 1));
    assert_eq!(got1.display.title, "第1页");
    assert_eq!(got1.tbs, page(1));
    let ack = phone
        .approve(&got1, &conv.phone.identity, false)
        .await
        .unwrap();
    assert_eq!(ack.status, AckStatus::Approved.as_str());
    let got2 = phone.next_request().await.unwrap().unwrap();
    assert_eq!((got2.request_id.as_str(), got2.seq), (r2.as_str(), 2));
    let ack = phone.reject(&got2, "金额与合同不符").await.unwrap();
    assert_eq!(ack.status, AckStatus::Rejected.as_str());

    let res1 = next_result(&mut requester).await;
    assert_eq!(res1["request_id"], r1.as_str());
    assert_eq!(res1["status"], "approved");
    assert_eq!(res1["auto_confirmed"], false, "a tap is not auto-confirmed");
    let sig = unb64(res1["signature_b64"].as_str().unwrap());
    assert!(sm2_verifies(&conv.cert_pem, &page(1), &sig));
    let res2 = next_result(&mut requester).await;
    assert_eq!(res2["request_id"], r2.as_str());
    assert_eq!(res2["status"], "rejected");
    assert_eq!(res2["reason"], "金额与合同不符");
    assert!(res2.get("signature_b64").is_none(), "{res2}");
    let view2 = conv.request_view(&app, &r2, 0).await;
    assert_eq!(view2["status"], "rejected");
    assert_eq!(view2["reason"], "金额与合同不符");

    // A long-poll returns as soon as the phone answers.
    let pending = conv.request_view(&app, &r3, 0).await;
    assert_eq!(pending["status"], "pending");
    let waiter = {
        let http = app.http.clone();
        let url = app.url(&format!(
            "/v1/conversations/{}/requests/{r3}?wait=20",
            conv.id
        ));
        tokio::spawn(async move {
            let resp = http.get(url).bearer_auth(API_KEY).send().await.unwrap();
            resp.json::<Value>().await.unwrap()
        })
    };
    let got3 = phone.next_request().await.unwrap().unwrap();
    assert_eq!(got3.request_id, r3);
    phone
        .approve(&got3, &conv.phone.identity, true)
        .await
        .unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the long-poll answers once the request is approved")
        .unwrap();
    assert_eq!(waited["status"], "approved");
    assert_eq!(waited["auto_confirmed"], true);
}

#[tokio::test]
async fn requests_wait_for_a_phone_that_reconnects_and_expire_after_their_ttl() {
    let app = TestApp::spawn().await;
    let conv = open(&app, policy(20, 600, 7200)).await;
    let mut requester = conv.requester(&app).await;

    let mut phone = conv.phone_socket(&app).await;
    let r1 = conv.add(&app, &page(1), "第1页").await;
    let got = phone.next_request().await.unwrap().unwrap();
    phone
        .approve(&got, &conv.phone.identity, true)
        .await
        .unwrap();
    assert_eq!(next_result(&mut requester).await["request_id"], r1.as_str());

    // The phone's connection dies (no close frame) mid-conversation.
    drop(phone);
    let r2 = conv.add(&app, &page(2), "第2页").await;
    app.advance(Duration::from_secs(30));
    let r3 = conv.add(&app, &page(3), "第3页").await;
    let r4 = conv.add(&app, &page(4), "第4页").await;
    // r2's 60 s pass while the phone is away.
    app.advance(Duration::from_secs(30));
    let expired = next_result(&mut requester).await;
    assert_eq!(expired["request_id"], r2.as_str());
    assert_eq!(expired["status"], "expired");
    assert!(expired.get("signature_b64").is_none());
    assert_eq!(conv.request_view(&app, &r2, 0).await["status"], "expired");

    // A reconnecting phone gets what is still pending, in order.
    let mut raw = conv.phone_raw(&app).await;
    let f3 = raw.next_event().await;
    let f4 = raw.next_event().await;
    assert_eq!(
        (&f3["type"], &f3["request_id"], &f3["seq"]),
        (&json!("sign_request"), &json!(r3), &json!(3)),
        "{f3}"
    );
    assert_eq!(
        (&f4["request_id"], &f4["seq"]),
        (&json!(r4), &json!(4)),
        "{f4}"
    );
    assert_eq!(unb64(f3["tbs_b64"].as_str().unwrap()), page(3));
    drop(raw);

    // The library hands each request out once, though the broker re-sends
    // pending ones on every reconnect.
    let mut phone = conv.phone_socket(&app).await;
    let got3 = phone.next_request().await.unwrap().unwrap();
    assert_eq!(got3.request_id, r3);
    phone.reconnect().await.unwrap();
    let got4 = phone.next_request().await.unwrap().unwrap();
    assert_eq!(got4.request_id, r4, "r3 is not handed out again");
    let r5 = conv.add(&app, &page(5), "第5页").await;
    let got5 = phone.next_request().await.unwrap().unwrap();
    assert_eq!((got5.request_id.as_str(), got5.seq), (r5.as_str(), 5));
    for r in [&got3, &got4, &got5] {
        let ack = phone.approve(r, &conv.phone.identity, true).await.unwrap();
        assert_eq!(ack.request_id, r.request_id);
    }
    // One answer per request.
    match phone.approve(&got3, &conv.phone.identity, true).await {
        Err(ConversationError::Refused(e)) => {
            assert_eq!(e.code, "conflict", "{e}");
            assert_eq!(e.request_id.as_deref(), Some(r3.as_str()));
        }
        other => panic!("a second answer must be refused with conflict, got {other:?}"),
    }
    // An expired request cannot be answered any more.
    let late = SignRequest {
        request_id: r2.clone(),
        tbs: page(2),
        ..got5.clone()
    };
    match phone.approve(&late, &conv.phone.identity, true).await {
        Err(ConversationError::Refused(e)) => assert_eq!(e.code, "expired", "{e}"),
        other => panic!("an expired request must be refused, got {other:?}"),
    }

    for rid in [&r3, &r4, &r5] {
        let res = next_result(&mut requester).await;
        assert_eq!(res["request_id"], rid.as_str());
        assert_eq!(res["status"], "approved");
    }
    let resp = conv.delete(&app).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let before = expect_ended(&mut requester, "requester").await;
    assert!(before.is_empty(), "each request reported once: {before:?}");

    // A requester that reconnects gets every result again, then `ended`.
    let mut again = conv.requester(&app).await;
    let replay = expect_ended(&mut again, "requester").await;
    let ids: Vec<&str> = replay
        .iter()
        .map(|r| r["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![&r1, &r2, &r3, &r4, &r5]);
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), 5);
    let statuses: Vec<&str> = replay
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["approved", "expired", "approved", "approved", "approved"]
    );
    // One audit record per answer that took effect; none for the refused
    // second answer or the answer to the expired request.
    assert_eq!(
        audited_outcomes(&app, &conv).await,
        outcomes(&[
            (&r1, "approved"),
            (&r3, "approved"),
            (&r4, "approved"),
            (&r5, "approved")
        ])
    );
}

#[tokio::test]
async fn idle_time_ends_the_conversation_for_both_sides() {
    let app = TestApp::spawn().await;
    let conv = open(&app, policy(10, 30, 7200)).await;
    let mut requester = conv.requester(&app).await;
    let mut phone = conv.phone_raw(&app).await;
    let r1 = conv.add(&app, &page(1), "第1页").await;
    let req = phone.next_event().await;
    assert_eq!(req["request_id"], r1.as_str());
    let sig = conv.phone.identity.sign(&page(1)).unwrap();
    phone.send(sign_response(&r1, &sig, true)).await;
    let ack = phone.next_event().await;
    assert_eq!(
        ack,
        json!({ "type": "ack", "request_id": r1, "status": "approved" })
    );
    next_result(&mut requester).await;

    app.advance(Duration::from_secs(29));
    assert_eq!(conv.view(&app).await["status"], "open", "not idle yet");
    app.advance(Duration::from_secs(1));
    expect_ended(&mut requester, "idle").await;
    expect_ended(&mut phone, "idle").await;
    let view = conv.view(&app).await;
    assert_eq!(
        (&view["status"], &view["ended_by"]),
        (&json!("ended"), &json!("idle"))
    );
    assert!(view["ended_at"].is_string(), "{view}");
    assert_error(conv.post(&app, &page(2), "第2页").await, 410, "expired").await;
}

#[tokio::test]
async fn max_lifetime_ends_the_conversation_and_expires_what_is_pending() {
    let app = TestApp::spawn().await;
    let conv = open(&app, policy(10, 100, 120)).await;
    let view = conv.view(&app).await;
    assert_eq!(view["expires_at"], conv.grant.expires_at.as_str());
    let mut requester = conv.requester(&app).await;
    let mut phone = conv.phone_raw(&app).await;
    for i in 1..=2 {
        let rid = conv.add(&app, &page(i), "页").await;
        let req = phone.next_event().await;
        assert_eq!(req["request_id"], rid.as_str());
        let sig = conv.phone.identity.sign(&page(i)).unwrap();
        phone.send(sign_response(&rid, &sig, true)).await;
        assert_eq!(phone.next_event().await["type"], "ack");
        assert_eq!(next_result(&mut requester).await["status"], "approved");
        // Requests keep it from going idle, not past `max_s`.
        app.advance(Duration::from_secs(55));
    }
    let pending = conv.add(&app, &page(3), "第3页").await;
    assert_eq!(phone.next_event().await["request_id"], pending.as_str());
    app.advance(Duration::from_secs(10));
    let before = expect_ended(&mut requester, "limit").await;
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(before[0]["request_id"], pending.as_str());
    assert_eq!(before[0]["status"], "expired");
    expect_ended(&mut phone, "limit").await;
    assert_error(conv.post(&app, &page(4), "第4页").await, 410, "expired").await;
    assert_eq!(
        conv.request_view(&app, &pending, 0).await["status"],
        "expired"
    );
}

#[tokio::test]
async fn max_requests_ends_the_conversation_once_they_are_answered() {
    let app = TestApp::spawn().await;
    let conv = open(&app, policy(3, 600, 7200)).await;
    let mut requester = conv.requester(&app).await;
    let mut phone = conv.phone_raw(&app).await;
    let mut ids = Vec::new();
    for i in 1..=3 {
        ids.push(conv.add(&app, &page(i), "页").await);
    }
    // The fourth is refused while the three wait.
    assert_error(conv.post(&app, &page(4), "第4页").await, 409, "conflict").await;
    for rid in &ids {
        let req = phone.next_event().await;
        assert_eq!(req["request_id"], rid.as_str());
    }
    for (i, rid) in ids.iter().enumerate() {
        if i == 1 {
            phone
                .send(json!({ "type": "sign_reject", "request_id": rid, "reason": "不签" }))
                .await;
        } else {
            let sig = conv.phone.identity.sign(&page(i + 1)).unwrap();
            phone.send(sign_response(rid, &sig, false)).await;
        }
        assert_eq!(phone.next_event().await["type"], "ack");
    }
    let before = expect_ended(&mut requester, "limit").await;
    let statuses: Vec<&Value> = before.iter().map(|r| &r["status"]).collect();
    assert_eq!(
        statuses,
        [&json!("approved"), &json!("rejected"), &json!("approved")]
    );
    expect_ended(&mut phone, "limit").await;
    assert_error(conv.post(&app, &page(5), "第5页").await, 410, "expired").await;
    assert_eq!(conv.view(&app).await["ended_by"], "limit");
}

#[tokio::test]
async fn at_most_32_requests_wait_for_the_phone() {
    let app = TestApp::spawn().await;
    let conv = open(&app, policy(200, 600, 7200)).await;
    for i in 1..=32 {
        conv.add(&app, &page(i), "页").await;
    }
    assert_error(conv.post(&app, &page(33), "第33页").await, 409, "conflict").await;
    let view = conv.view(&app).await;
    assert_eq!(
        (&view["status"], &view["requests"]),
        (&json!("open"), &json!(32))
    );
}

#[tokio::test]
async fn the_requester_ends_it_and_both_sides_hear() {
    let app = TestApp::spawn().await;
    let conv = open(&app, policy(10, 600, 7200)).await;
    let mut requester = conv.requester(&app).await;
    let mut phone = conv.phone_raw(&app).await;
    let resp = conv.delete(&app).await;
    assert_eq!(resp.status(), StatusCode::OK);
    expect_ended(&mut requester, "requester").await;
    expect_ended(&mut phone, "requester").await;
    assert_error(conv.delete(&app).await, 410, "expired").await;
    assert_error(conv.post(&app, &page(1), "第1页").await, 410, "expired").await;
    // A phone connecting afterwards hears how it ended, at once.
    let mut late = conv.phone_socket(&app).await;
    assert_eq!(late.next_request().await.unwrap(), None);
    assert_eq!(late.ended().unwrap().by, EndedBy::Requester.as_str());
}

#[tokio::test]
async fn the_phone_ends_it_and_both_sides_hear() {
    let app = TestApp::spawn().await;
    let conv = open(&app, policy(10, 600, 7200)).await;
    let mut requester = conv.requester(&app).await;
    let mut watcher = conv.phone_raw(&app).await;
    let mut phone = conv.phone_socket(&app).await;
    let pending = conv.add(&app, &page(1), "第1页").await;
    let ended = phone.end().await.unwrap();
    assert_eq!(ended.by, EndedBy::Phone.as_str());
    assert!(ended.at.is_some());
    let before = expect_ended(&mut requester, "phone").await;
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(
        (&before[0]["request_id"], &before[0]["status"]),
        (&json!(pending), &json!("expired"))
    );
    let before = expect_ended(&mut watcher, "phone").await;
    assert_eq!(
        before.len(),
        1,
        "the pending request, then ended: {before:?}"
    );
    assert_error(conv.post(&app, &page(2), "第2页").await, 410, "expired").await;
    assert_eq!(conv.view(&app).await["ended_by"], "phone");
}

#[tokio::test]
async fn signatures_by_another_certificate_or_over_other_bytes_are_rejected() {
    let app = TestApp::spawn().await;
    let conv = open(&app, policy(10, 600, 7200)).await;
    // Trusted by the broker, but not the certificate that opened the conversation.
    let other = app.phone("platform", "李四的手机");
    let mut requester = conv.requester(&app).await;
    let mut phone = conv.phone_socket(&app).await;
    let r1 = conv.add(&app, &page(1), "第1页").await;
    let r2 = conv.add(&app, &page(2), "第2页").await;
    let r3 = conv.add(&app, &page(3), "第3页").await;
    let got1 = phone.next_request().await.unwrap().unwrap();
    let got2 = phone.next_request().await.unwrap().unwrap();
    let got3 = phone.next_request().await.unwrap().unwrap();
    assert_eq!(
        [&got1.request_id, &got2.request_id, &got3.request_id],
        [&r1, &r2, &r3]
    );

    let refused = |r: Result<_, ConversationError>| match r {
        Err(ConversationError::Refused(e)) => e,
        other => panic!("expected an error frame, got {other:?}"),
    };
    let e = refused(phone.approve(&got1, &other.identity, true).await);
    assert_eq!(
        (e.code.as_str(), e.request_id.as_deref()),
        ("bad_signature", Some(r1.as_str()))
    );
    // The opener's signature, but over r1's bytes, sent for r2.
    let sig_over_r1 = conv.phone.identity.sign(&got1.tbs).unwrap();
    let e = refused(phone.respond_raw(&r2, &sig_over_r1, true).await);
    assert_eq!(e.code, "bad_signature");
    // A refused request stays refused: it is never signed afterwards.
    let e = refused(phone.approve(&got1, &conv.phone.identity, true).await);
    assert_eq!(e.code, "conflict");

    for rid in [&r1, &r2] {
        let res = next_result(&mut requester).await;
        assert_eq!(res["request_id"], rid.as_str());
        assert_eq!(res["status"], "rejected");
        assert_eq!(res["reason"], "bad_signature");
        assert!(res.get("signature_b64").is_none(), "{res}");
    }
    assert_eq!(
        conv.request_view(&app, &r1, 0).await["reason"],
        "bad_signature"
    );

    // The conversation goes on.
    phone
        .approve(&got3, &conv.phone.identity, true)
        .await
        .unwrap();
    let res = next_result(&mut requester).await;
    assert_eq!(
        (&res["request_id"], &res["status"]),
        (&json!(r3), &json!("approved"))
    );
    assert_eq!(conv.view(&app).await["status"], "open");
    assert_eq!(
        audited_outcomes(&app, &conv).await,
        outcomes(&[(&r1, "rejected"), (&r2, "rejected"), (&r3, "approved")])
    );
}

#[tokio::test]
async fn a_certificate_revoked_mid_conversation_ends_it() {
    let app = TestApp::spawn().await;
    let conv = open(&app, policy(10, 600, 7200)).await;
    let mut requester = conv.requester(&app).await;
    let mut phone = conv.phone_raw(&app).await;
    let r1 = conv.add(&app, &page(1), "第1页").await;
    assert_eq!(phone.next_event().await["request_id"], r1.as_str());
    let sig = conv.phone.identity.sign(&page(1)).unwrap();
    phone.send(sign_response(&r1, &sig, true)).await;
    assert_eq!(phone.next_event().await["status"], "approved");
    assert_eq!(next_result(&mut requester).await["status"], "approved");

    revoke(&app, &conv.phone.serial()).await;
    assert_error(conv.post(&app, &page(2), "第2页").await, 410, "expired").await;
    expect_ended(&mut requester, "certificate").await;
    expect_ended(&mut phone, "certificate").await;
    let view = conv.view(&app).await;
    assert_eq!(view["ended_by"], "certificate");
    assert_error(conv.post(&app, &page(3), "第3页").await, 410, "expired").await;
}

#[tokio::test]
async fn a_response_after_revocation_is_refused_and_ends_the_conversation() {
    let app = TestApp::spawn().await;
    let conv = open(&app, policy(10, 600, 7200)).await;
    let mut requester = conv.requester(&app).await;
    let mut phone = conv.phone_socket(&app).await;
    let r1 = conv.add(&app, &page(1), "第1页").await;
    let got = phone.next_request().await.unwrap().unwrap();
    revoke(&app, &conv.phone.serial()).await;
    match phone.approve(&got, &conv.phone.identity, true).await {
        Err(ConversationError::Refused(e)) => {
            assert_eq!(e.code, "untrusted_certificate", "{e}")
        }
        other => panic!("a revoked certificate's signature must be refused, got {other:?}"),
    }
    assert_eq!(phone.next_request().await.unwrap(), None);
    assert_eq!(phone.ended().unwrap().by, EndedBy::Certificate.as_str());
    let before = expect_ended(&mut requester, "certificate").await;
    assert_eq!(before.len(), 1);
    assert_eq!(
        (&before[0]["request_id"], &before[0]["status"]),
        (&json!(r1), &json!("rejected"))
    );
    assert!(before[0].get("signature_b64").is_none());
    assert_error(conv.post(&app, &page(2), "第2页").await, 410, "expired").await;
}

#[tokio::test]
async fn conversations_are_guarded_by_their_tokens_and_app() {
    let app = TestApp::spawn().await;
    let conv = open(&app, policy(10, 600, 7200)).await;
    let resp = app
        .http
        .get(app.url(&format!("/v1/conversations/{}", conv.id)))
        .bearer_auth(OTHER_API_KEY)
        .send()
        .await
        .unwrap();
    assert_error(resp, 404, "not_found").await;
    let resp = app
        .http
        .post(app.url(&format!("/v1/conversations/{}/requests", conv.id)))
        .bearer_auth(OTHER_API_KEY)
        .json(&json!({ "tbs_b64": b64(b"x"), "display": { "title": "x" } }))
        .send()
        .await
        .unwrap();
    assert_error(resp, 404, "not_found").await;

    // The requester's token does not open the phone's socket, nor the reverse.
    let swapped = PhoneConversation {
        phone_token: conv.token.clone(),
        ..conv.grant.clone()
    };
    match ConversationSocket::connect(&app.address, &swapped).await {
        Err(ConversationError::Broker(b)) => {
            assert_eq!((b.status, b.code.as_str()), (401, "unauthorized"))
        }
        other => panic!("expected 401, got {other:?}"),
    }
    let url = format!(
        "{}/v1/conversations/{}/ws?t={}",
        ws_base(&app),
        conv.id,
        conv.grant.phone_token.as_str()
    );
    let (status, body) = ws_refusal(Browser::connect(&url, None).await.err().unwrap());
    assert_eq!(status, 401, "{body}");
    // The requester's page is checked as a session's browser endpoints are: a page of
    // another origin is refused before the upgrade, one of the app's own is let in.
    let url = format!(
        "{}/v1/conversations/{}/ws?t={}",
        ws_base(&app),
        conv.id,
        conv.token
    );
    let refused = Browser::connect(&url, Some(crate::helpers::OTHER_ORIGIN)).await;
    let (status, body) = ws_refusal(refused.err().expect("another origin is refused"));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("forbidden"), "{body}");
    Browser::connect(&url, Some(crate::helpers::ORIGIN))
        .await
        .expect("the app's own origin opens the requester socket");

    // Requests are checked like a sign session's bytes and display.
    for (body, status, code) in [
        (
            json!({ "tbs_b64": "", "display": { "title": "空" } }),
            400,
            "invalid_request",
        ),
        (
            json!({ "tbs_b64": "not base64!", "display": { "title": "x" } }),
            400,
            "invalid_request",
        ),
        (
            json!({ "tbs_b64": b64(b"x"), "display": { "title": " " } }),
            400,
            "invalid_request",
        ),
        (
            // A right-to-left override in a request's title (issue 13).
            json!({ "tbs_b64": b64(b"x"), "display": { "title": "第\u{202E}1页" } }),
            400,
            "invalid_request",
        ),
        (
            json!({ "tbs_b64": b64(b"x"), "display": { "title": "x" }, "ttl_s": 5 }),
            400,
            "invalid_request",
        ),
        (
            json!({ "tbs_b64": b64(&vec![7; 64 * 1024 + 1]), "display": { "title": "x" } }),
            413,
            "payload_too_large",
        ),
    ] {
        assert_error(conv.post_body(&app, body).await, status, code).await;
    }

    let view = conv.view(&app).await;
    assert_eq!(view["requests"], 0, "refused requests are not counted");
    for key in [
        "id",
        "session_id",
        "status",
        "opened_at",
        "expires_at",
        "max_requests",
        "requests",
    ] {
        assert!(view.get(key).is_some(), "the view lacks {key}: {view}");
    }
    assert!(view.get("ended_by").is_none());
}

#[tokio::test]
async fn conversation_limits_have_upper_bounds() {
    let app = TestApp::spawn().await;
    let sign = |policy: Value| {
        json!({
            "kind": "sign",
            "display": { "title": "签署投标文件" },
            "tbs_b64": b64(b"page"),
            "conversation": policy,
        })
    };
    for (policy, field) in [
        (policy(1001, 600, 7200), "max_requests"),
        (policy(200, 3601, 7200), "idle_s"),
        (policy(200, 600, 28801), "max_s"),
    ] {
        let message = assert_error(
            app.post_session(&sign(policy)).await,
            400,
            "invalid_request",
        )
        .await;
        assert!(message.contains(field), "{message}");
    }
    let at_the_bounds = app.post_session(&sign(policy(1000, 3600, 28800))).await;
    assert_eq!(at_the_bounds.status(), 201);
}

#[tokio::test]
async fn conversation_sockets_close_on_binary_and_oversized_frames() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let app = TestApp::spawn().await;
    let conv = open(&app, policy(200, 600, 7200)).await;

    // The phone's socket takes 320 KiB (a seal answer carries its picture).
    let mut phone = conv.phone_raw(&app).await;
    phone
        .send(json!({"type": "pad", "pad": "x".repeat(320 * 1024)}))
        .await;
    let close = phone.expect_close().await;
    assert_eq!(u16::from(close.code), 1009);
    assert!(close.reason.contains("327680"), "{}", close.reason);
    let mut phone = conv.phone_raw(&app).await;
    phone
        .ws
        .send(Message::Binary(b"\x00\x01".to_vec().into()))
        .await
        .unwrap();
    let error = phone.next_event().await;
    assert_eq!(error["error"]["code"], "invalid_request", "{error}");
    assert_eq!(u16::from(phone.expect_close().await.code), 1003);

    // The requester's socket only receives: 4096 bytes at most.
    let mut requester = conv.requester(&app).await;
    requester
        .send(json!({"type": "pad", "pad": "x".repeat(4096)}))
        .await;
    let close = requester.expect_close().await;
    assert_eq!(u16::from(close.code), 1009);
    assert!(close.reason.contains("4096"), "{}", close.reason);

    // Neither ended the conversation.
    let view = conv.view(&app).await;
    assert!(view.get("ended_by").is_none(), "{view}");
}
