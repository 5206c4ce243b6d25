//! Issue 13, "one claimed QR code can freeze the broker": a phone token is
//! all it takes to send a completion whose `chain_pem` makes path building
//! explode. Each test sends such a chain and checks that the broker refuses
//! it quickly as `untrusted_certificate`, that the refusal counts towards
//! the session's three strikes, and that `/healthz` and an ordinary login
//! keep answering while hostile completions are in flight.
//!
//! The broker runs on a runtime of its own with two workers, like the 2-core
//! machine of the report, and the test's client on another: a check that
//! blocked the broker's workers stalls `/healthz`, and the test's timeouts
//! still fire and say so (on a shared runtime the test itself would hang).

use crate::helpers::*;
use bzt_devca::{DevCa, LeafSpec};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// How long a refused hostile completion may take, end to end (the unbounded
/// search took 5 s for 8 copies and did not finish for 12).
const REFUSAL_WITHIN: Duration = Duration::from_secs(3);
/// How long `/healthz` may take while hostile completions run.
const HEALTHZ_WITHIN: Duration = Duration::from_millis(750);
/// How long an ordinary login (create, claim, approve) may take meanwhile.
const LOGIN_WITHIN: Duration = Duration::from_secs(5);

/// A broker on a two-worker runtime of its own.
struct IsolatedBroker {
    app: TestApp,
    runtime: Option<tokio::runtime::Runtime>,
}

impl IsolatedBroker {
    async fn spawn() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let app = runtime.spawn(TestApp::spawn()).await.unwrap();
        Self {
            app,
            runtime: Some(runtime),
        }
    }
}

impl std::ops::Deref for IsolatedBroker {
    type Target = TestApp;
    fn deref(&self) -> &TestApp {
        &self.app
    }
}

impl Drop for IsolatedBroker {
    fn drop(&mut self) {
        // Dropping a runtime inside another blocks, which tokio refuses.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// An attacker's phone: a self-made CA, and a leaf it issued.
struct Attacker {
    ca: DevCa,
    phone: TestPhone,
}

impl Attacker {
    fn new(app: &TestApp, ca: DevCa) -> Self {
        let leaf = ca.issue(&LeafSpec::new("攻击者", "无名公司")).unwrap();
        Self {
            phone: app.phone_with(leaf, "attacker"),
            ca,
        }
    }

    /// A completion over the session's own bytes (so only the chain is wrong).
    fn completion_with_chain(&self, claimed: &bzt_phone::Claimed, chain: Vec<String>) -> Value {
        let mut body = self.phone.completion_over(&claimed.tbs);
        body["chain_pem"] = json!(chain);
        body
    }
}

/// `n` copies of the attacker's CA: every copy verifies every other, so an
/// unbounded depth-first search tries n^depth paths.
fn copies_of(ca: &DevCa, n: usize) -> Vec<String> {
    vec![ca.cert_pem().to_owned(); n]
}

/// Sends one completion and returns (status, code, message, how long it took).
async fn complete_timed(
    app: &TestApp,
    claimed: &bzt_phone::Claimed,
    body: &Value,
) -> (u16, String, String, Duration) {
    let started = Instant::now();
    let answer = tokio::time::timeout(
        Duration::from_secs(20),
        app.complete_raw(&claimed.session_id, claimed.phone_token.expose(), body),
    )
    .await
    .expect("the broker did not answer a hostile completion within 20 s");
    let took = started.elapsed();
    let status = answer.status().as_u16();
    let error: Value = answer.json().await.unwrap();
    (
        status,
        error["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        error["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        took,
    )
}

/// Sends `body` and expects a prompt 422 `untrusted_certificate`; returns the message.
async fn expect_prompt_refusal(
    app: &TestApp,
    claimed: &bzt_phone::Claimed,
    body: &Value,
) -> String {
    let (status, code, message, took) = complete_timed(app, claimed, body).await;
    assert_eq!(
        (status, code.as_str()),
        (422, "untrusted_certificate"),
        "{message}"
    );
    assert!(
        took < REFUSAL_WITHIN,
        "a hostile chain took {took:?} to refuse ({message})"
    );
    message
}

#[tokio::test]
async fn copies_of_a_self_made_ca_are_refused_promptly_and_count_as_strikes() {
    let app = IsolatedBroker::spawn().await;
    let attacker = Attacker::new(&app, DevCa::generate("Evil CA", "Evil", "evil").unwrap());
    let created = app.create_login().await;
    let claimed = attacker.phone.claim(&created).await;

    // More copies than accepted; then as many as accepted, which
    // de-duplicate to one certificate.
    for (strike, n) in [(1, 12), (2, 8), (3, 8)] {
        let body = attacker.completion_with_chain(&claimed, copies_of(&attacker.ca, n));
        let message = expect_prompt_refusal(&app, &claimed, &body).await;
        let view = app.get_session(&created.id).await;
        if strike < 3 {
            assert_eq!(view["status"], "scanned", "strike {strike}: {message}");
        } else {
            assert!(message.contains("session has failed"), "{message}");
            assert_eq!(view["status"], "failed");
            assert_eq!(
                view["result"],
                json!({"reason": "too_many_bad_completions"})
            );
        }
    }
}

#[tokio::test]
async fn a_chain_longer_than_the_limit_is_refused_and_says_so() {
    let app = IsolatedBroker::spawn().await;
    let attacker = Attacker::new(&app, DevCa::generate("Evil CA", "Evil", "evil").unwrap());
    let created = app.create_login().await;
    let claimed = attacker.phone.claim(&created).await;

    // 40 copies, a 25 KB body: the report's freezing request.
    let body = attacker.completion_with_chain(&claimed, copies_of(&attacker.ca, 40));
    let message = expect_prompt_refusal(&app, &claimed, &body).await;
    assert!(message.contains("chain_pem"), "{message}");

    // A real path, root → 7 sub-CAs → leaf, longer than the broker follows.
    let mut cas = vec![DevCa::generate("Evil Root", "Evil", "evil").unwrap()];
    for level in 1..=7 {
        let sub = cas
            .last()
            .unwrap()
            .issue_ca(&format!("Evil Sub {level}"), "Evil", "evil")
            .unwrap();
        cas.push(sub);
    }
    let deep = Attacker::new(&app, cas.pop().unwrap());
    let mut chain: Vec<String> = vec![deep.ca.cert_pem().to_owned()];
    chain.extend(cas.iter().rev().map(|ca| ca.cert_pem().to_owned()));
    let created = app.create_login().await;
    let claimed = deep.phone.claim(&created).await;
    let body = deep.completion_with_chain(&claimed, chain);
    expect_prompt_refusal(&app, &claimed, &body).await;
}

#[tokio::test]
async fn self_signed_roots_named_like_the_trusted_root_are_refused() {
    let app = IsolatedBroker::spawn().await;
    let trusted = app.cas.platform.certificate().tbs_certificate().subject();
    // Same subject as the platform root ("测试平台根 CA", "bzt 测试", OU=platform), other keys.
    // With the attacker's own, as many as chain_pem may hold.
    let impostors: Vec<DevCa> = (0..7)
        .map(|_| DevCa::generate("测试平台根 CA", "bzt 测试", "platform").unwrap())
        .collect();
    assert_eq!(
        impostors[0].certificate().tbs_certificate().subject(),
        trusted
    );
    let attacker = Attacker::new(
        &app,
        DevCa::generate("测试平台根 CA", "bzt 测试", "platform").unwrap(),
    );
    let mut chain: Vec<String> = impostors
        .iter()
        .map(|ca| ca.cert_pem().to_owned())
        .collect();
    chain.push(attacker.ca.cert_pem().to_owned());

    let created = app.create_login().await;
    let claimed = attacker.phone.claim(&created).await;
    let body = attacker.completion_with_chain(&claimed, chain);
    let message = expect_prompt_refusal(&app, &claimed, &body).await;
    assert!(
        message.contains("not a CA of any configured trust domain"),
        "{message}"
    );
}

#[tokio::test]
async fn healthz_and_an_ordinary_login_answer_while_hostile_chains_are_checked() {
    let app = IsolatedBroker::spawn().await;
    let copier = Attacker::new(&app, DevCa::generate("Evil CA", "Evil", "evil").unwrap());
    let impostor = Attacker::new(
        &app,
        DevCa::generate("测试平台根 CA", "bzt 测试", "platform").unwrap(),
    );
    let mut impostor_chain: Vec<String> = (0..7)
        .map(|_| {
            DevCa::generate("测试平台根 CA", "bzt 测试", "platform")
                .unwrap()
                .cert_pem()
                .to_owned()
        })
        .collect();
    impostor_chain.push(impostor.ca.cert_pem().to_owned());

    // Eight attackers at once, each on its own claimed session, each sending
    // three completions: half with 10 copies of a CA, half with as many roots
    // named like the trusted one as accepted (the costliest search allowed).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut attacks = Vec::new();
    for n in 0..8 {
        let attacker = if n % 2 == 0 { &copier } else { &impostor };
        let chain = if n % 2 == 0 {
            copies_of(&copier.ca, 10)
        } else {
            impostor_chain.clone()
        };
        let created = app.create_login().await;
        let claimed = attacker.phone.claim(&created).await;
        let body = attacker.completion_with_chain(&claimed, chain);
        let (http, url, token, stop) = (
            app.http.clone(),
            app.url(&format!("/v1/sessions/{}/complete", created.id)),
            claimed.phone_token.expose().to_owned(),
            stop.clone(),
        );
        attacks.push(tokio::spawn(async move {
            let mut sent = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && sent < 3 {
                let _ = http.post(&url).bearer_auth(&token).json(&body).send().await;
                sent += 1;
            }
        }));
    }
    // Let the hostile completions reach the broker.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let started = Instant::now();
        let answer =
            tokio::time::timeout(HEALTHZ_WITHIN * 4, app.http.get(app.url("/healthz")).send())
                .await
                .expect("/healthz did not answer while hostile chains were checked")
                .unwrap();
        assert!(answer.status().is_success());
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(slowest < HEALTHZ_WITHIN, "/healthz took {slowest:?}");

    let started = Instant::now();
    let login = tokio::time::timeout(LOGIN_WITHIN, async {
        let phone = app.phone("platform", "honest");
        let created = app.create_login().await;
        let claimed = phone.claim(&created).await;
        phone.approve(&claimed).await
    })
    .await
    .expect("an ordinary login did not finish while hostile chains were checked");
    assert_eq!(
        login.unwrap().status,
        bzt_phone::SessionStatus::Approved.as_str(),
        "took {:?}",
        started.elapsed()
    );

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for attack in attacks {
        tokio::time::timeout(Duration::from_secs(20), attack)
            .await
            .expect("hostile completions kept the broker busy")
            .unwrap();
    }
}
