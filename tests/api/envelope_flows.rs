//! Bid-file encryption around the broker (多证书加密, 扫码解密): an `encrypt` session picks the
//! recipients, the file is sealed to them, a `decrypt` session hands the content key to the
//! hall re-wrapped to a one-time key, and the broker never holds the content key in clear.

use crate::helpers::*;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine;
use bzt::hall::{DecryptOptions, HallClient, HallEvent, HallOutcome};
use bzt_devca::IssuedCert;
use bzt_envelope::{
    header_digest, open_to_path_with_content_key, read_header, seal, unwrap_key, ContentKey,
    Header, Recipient, SealOptions,
};
use bzt_phone::{
    ApproveExtras, ChallengeError, DecryptOutcome, DecryptRefusal, Kind, PhoneIdentity, QrText,
    SessionStatus,
};
use bzt_rp_client::CreateSession;
use serde_json::{json, Value};
use sm2::SecretKey;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

// ---- helpers ----------------------------------------------------------------------------

/// A plaintext of a few chunks, not all alike.
fn bid_file() -> Vec<u8> {
    (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// Seals `plain` to `recipients` into `path`; returns the header bytes as in the file.
pub(crate) fn seal_to(path: &Path, plain: &[u8], recipients: &[Recipient]) -> Vec<u8> {
    let mut sealed = Vec::new();
    seal(recipients, plain, &mut sealed, &SealOptions::default()).unwrap();
    std::fs::write(path, &sealed).unwrap();
    read_header(&sealed[..]).unwrap().1
}

pub(crate) fn recipient(leaf: &IssuedCert) -> Recipient {
    Recipient::from_pem(&leaf.cert_pem).unwrap()
}

/// A one-time SM2 key of the hall and its `reply_key` (hex `04||X||Y`).
pub(crate) fn one_time_key() -> (SecretKey, String) {
    use sm2::elliptic_curve::Generate;
    let secret = SecretKey::try_generate().unwrap();
    let hex_text = hex::encode(secret.public_key().to_sec1_bytes());
    (secret, hex_text)
}

pub(crate) fn decrypt_body(title: &str, header: &[u8], reply_key: &str) -> Value {
    json!({
        "kind": "decrypt",
        "display": { "title": title },
        "envelope_header_b64": b64(header),
        "reply_key": reply_key,
    })
}

/// The hall's view of the end: `(status, result)` from the browser socket.
async fn outcome(browser: &mut Browser) -> (String, Value) {
    loop {
        let event = browser.next_event().await;
        let (status, result) = match event["type"].as_str() {
            Some("snapshot") => (
                event["session"]["status"].as_str(),
                &event["session"]["result"],
            ),
            Some("result") => (event["status"].as_str(), &event["result"]),
            _ => continue,
        };
        match status {
            Some(s @ ("approved" | "rejected" | "expired" | "cancelled" | "failed")) => {
                return (s.to_owned(), result.clone())
            }
            _ => continue,
        }
    }
}

/// Every form in which the content key could leak: hex (both cases), base64 (padded or not,
/// standard or URL-safe), and the JSON and `Debug` forms of its bytes.
fn key_forms(key: &[u8]) -> Vec<String> {
    vec![
        hex::encode(key),
        hex::encode_upper(key),
        STANDARD_NO_PAD.encode(key),
        URL_SAFE_NO_PAD.encode(key),
        serde_json::to_string(key).unwrap(),
        format!("{key:?}"),
    ]
}

/// The first form of `key` found in `haystack`, if any.
fn leaked_form(haystack: &str, key: &[u8]) -> Option<String> {
    key_forms(key).into_iter().find(|f| haystack.contains(f))
}

fn assert_absent(haystack: &str, key: &[u8], what: &str) {
    if let Some(form) = leaked_form(haystack, key) {
        panic!("the content key ({form}) appears in {what}");
    }
}

/// What [`encrypt_then_decrypt`] did, for later checks.
struct Flow {
    content_key: Vec<u8>,
    session_ids: Vec<String>,
    wrapped_key_b64: String,
}

/// An `encrypt` session (張三 picks himself and two colleagues, one from the other CA), a file
/// sealed to the result's certificates, then a `decrypt` session of the hall completed by a
/// colleague's phone; the hall opens the file. Asserts every step.
async fn encrypt_then_decrypt(app: &TestApp) -> Flow {
    let alice = app.phone_with(app.cas.leaf("platform", "张三"), "张三的手机");
    let bob_leaf = app.cas.leaf("platform", "李四");
    let carol_leaf = app.cas.leaf("national", "王五");

    // 1. encrypt: the trading platform asks which certificates may open the bid file.
    let created = app
        .create_session(json!({
            "kind": "encrypt",
            "display": { "title": "生成投标文件：某某道路改造工程" },
        }))
        .await;
    let claimed = alice.claim(&created).await;
    assert_eq!(claimed.kind, Kind::Encrypt);
    let done = alice
        .phone
        .approve_encrypt(
            &claimed,
            &alice.identity,
            &[bob_leaf.cert_pem.clone(), carol_leaf.cert_pem.clone()],
            None,
        )
        .await
        .unwrap();
    assert_eq!(done.status, SessionStatus::Approved.as_str());
    let view = app.get_session(&created.id).await;
    assert_eq!(view["status"], "approved", "{view}");
    let result = &view["result"];
    assert_eq!(result["certificate"]["serial"], alice.serial().as_str());
    let tbs = unb64(result["tbs_b64"].as_str().unwrap());
    assert_eq!(tbs, claimed.tbs);
    assert!(
        openssl_verifies(
            app.dir.path(),
            result["certificate"]["pem"].as_str().unwrap(),
            &tbs,
            &unb64(result["signature_b64"].as_str().unwrap()),
        ),
        "OpenSSL does not verify the signer's signature"
    );
    let listed = result["recipients"].as_array().expect("recipients");
    let serials: Vec<&str> = listed
        .iter()
        .map(|r| r["serial"].as_str().unwrap())
        .collect();
    assert_eq!(
        serials,
        vec![
            alice.serial().as_str(),
            bob_leaf.serial_hex.as_str(),
            carol_leaf.serial_hex.as_str()
        ],
        "own certificate first, then the colleagues"
    );
    assert_eq!(listed[2]["domain"], "national");
    // The RP seals to the certificates the result carries.
    let recipients: Vec<Recipient> = listed
        .iter()
        .map(|r| Recipient::from_pem(r["pem"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(recipients[1], recipient(&bob_leaf));

    let plain = bid_file();
    let sealed = app.dir.path().join("bid.bze");
    let header = seal_to(&sealed, &plain, &recipients);

    // 2. decrypt: the hall (another app) with a one-time key; 李四 scans.
    let (hall_key, reply_key) = one_time_key();
    let decrypt = app
        .create_session_as(
            OTHER_API_KEY,
            decrypt_body("开标解密：bid.bze", &header, &reply_key),
        )
        .await;
    let mut hall = app.browser(&decrypt).await;
    let bob = app.phone_with(bob_leaf, "李四的手机");
    let claimed = bob.claim(&decrypt).await;
    assert_eq!(claimed.kind, Kind::Decrypt);
    assert_eq!(
        unb64(claimed.envelope_header_b64.as_deref().unwrap()),
        header
    );
    assert_eq!(claimed.reply_key.as_deref(), Some(reply_key.as_str()));
    let text = String::from_utf8(claimed.tbs.clone()).unwrap();
    assert!(
        text.ends_with(&format!(
            "\nenvelope:{}",
            hex::encode(header_digest(&header))
        )),
        "{text}"
    );
    match bob
        .phone
        .approve_decrypt(&claimed, &bob.identity, None)
        .await
        .unwrap()
    {
        DecryptOutcome::Approved(a) => assert_eq!(a.status, SessionStatus::Approved.as_str()),
        DecryptOutcome::Rejected { refusal, .. } => panic!("a recipient refused: {refusal}"),
    }
    let (status, result) = outcome(&mut hall).await;
    assert_eq!(status, "approved", "{result}");
    assert_eq!(result["certificate"]["serial"], bob.serial().as_str());
    let wrapped_key_b64 = result["wrapped_key_b64"].as_str().unwrap().to_owned();

    // 3. The hall unwraps with its one-time key and opens the file.
    let key =
        ContentKey::from_slice(&unwrap_key(&hall_key, &unb64(&wrapped_key_b64)).unwrap()).unwrap();
    let opened = app.dir.path().join("bid.opened");
    let report = open_to_path_with_content_key(&key, &sealed, &opened).unwrap();
    assert_eq!(report.plaintext_len, plain.len() as u64);
    assert!(
        std::fs::read(&opened).unwrap() == plain,
        "not byte-identical"
    );
    // The same key 张三's own entry holds.
    let direct = Header::from_json(&header)
        .unwrap()
        .content_key(&alice.identity.secret_key(), &recipient(&alice.leaf))
        .unwrap();
    assert_eq!(direct.as_bytes(), key.as_bytes());

    Flow {
        content_key: key.as_bytes().to_vec(),
        session_ids: vec![created.id, decrypt.id],
        wrapped_key_b64,
    }
}

// ---- tests --------------------------------------------------------------------------------

#[tokio::test]
async fn encrypt_picks_recipients_and_a_colleagues_phone_opens_the_file_at_the_hall() {
    let app = TestApp::spawn().await;
    let flow = encrypt_then_decrypt(&app).await;

    // Both operations are in the audit trail, each under the app that asked for it.
    for (api_key, session_id, kind) in [
        (API_KEY, &flow.session_ids[0], "encrypt"),
        (OTHER_API_KEY, &flow.session_ids[1], "decrypt"),
    ] {
        let audit: Value = app.rp_get_as(api_key, "/v1/audit").await;
        let records: Vec<&Value> = audit["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["session_id"] == session_id.as_str())
            .collect();
        assert_eq!(records.len(), 1, "{audit}");
        assert_eq!(records[0]["kind"], kind);
        assert_eq!(records[0]["outcome"], "approved");
        assert!(!records[0]["cert_serial"].as_str().unwrap().is_empty());
    }
}

#[tokio::test]
async fn a_phone_whose_certificate_is_not_a_recipient_rejects_with_its_reason() {
    let app = TestApp::spawn().await;
    let bob_leaf = app.cas.leaf("platform", "李四");
    let header = seal_to(
        &app.dir.path().join("bid.bze"),
        b"bid",
        &[recipient(&bob_leaf)],
    );
    let (_, reply_key) = one_time_key();
    let created = app
        .create_session_as(
            OTHER_API_KEY,
            decrypt_body("开标解密：bid.bze", &header, &reply_key),
        )
        .await;
    let mut hall = app.browser(&created).await;
    let alice = app.phone("platform", "张三的手机");
    let claimed = alice.claim(&created).await;

    let (refusal, answer) = match alice
        .phone
        .approve_decrypt(&claimed, &alice.identity, None)
        .await
        .unwrap()
    {
        DecryptOutcome::Rejected { refusal, answer } => (refusal, answer),
        DecryptOutcome::Approved(_) => panic!("a non-recipient approved"),
    };
    assert_eq!(answer.status, SessionStatus::Rejected.as_str());
    assert!(
        matches!(&refusal, DecryptRefusal::NotARecipient { recipients, .. } if recipients.len() == 1),
        "{refusal:?}"
    );
    let reason = refusal.reason();
    assert!(
        reason.starts_with("本证书不在该投标文件的解密证书列表中"),
        "{reason}"
    );
    assert!(reason.contains(&bob_leaf.serial_hex), "{reason}");

    let (status, result) = outcome(&mut hall).await;
    assert_eq!(status, "rejected");
    assert_eq!(result, json!({ "reason": reason }));
}

#[tokio::test]
async fn a_decrypt_challenge_that_names_another_header_is_refused_by_the_phone() {
    let app = TestApp::spawn().await;
    let alice = app.phone("platform", "张三的手机");
    let me = recipient(&alice.leaf);
    let header = seal_to(
        &app.dir.path().join("a.bze"),
        b"file a",
        std::slice::from_ref(&me),
    );
    // Another file 张三 can open too: without the check, the phone would hand over its key.
    let other = seal_to(&app.dir.path().join("b.bze"), b"file b", &[me]);
    let (_, reply_key) = one_time_key();
    let created = app
        .create_session(decrypt_body("开标解密：a.bze", &header, &reply_key))
        .await;
    let claimed = alice.claim(&created).await;
    let secret = alice.identity.secret_key();
    bzt_phone::decrypt_answer(&claimed, &alice.identity, &secret)
        .expect("the genuine claim is answerable");

    // The header swapped under the challenge.
    let mut swapped_header = claimed.clone();
    swapped_header.envelope_header_b64 = Some(b64(&other));
    // The challenge's envelope line swapped under the header.
    let mut swapped_line = claimed.clone();
    let text = String::from_utf8(claimed.tbs.clone()).unwrap();
    let (head, _) = text.rsplit_once("\nenvelope:").unwrap();
    swapped_line.tbs =
        format!("{head}\nenvelope:{}", hex::encode(header_digest(&other))).into_bytes();

    for tampered in [&swapped_header, &swapped_line] {
        let refusal = bzt_phone::decrypt_answer(tampered, &alice.identity, &secret).unwrap_err();
        assert!(
            matches!(
                refusal,
                DecryptRefusal::Challenge(ChallengeError::Mismatch {
                    field: "envelope",
                    ..
                })
            ),
            "{refusal:?}"
        );
        // Nor does the plain approval sign it, whatever key it is given; nothing is sent.
        let e = alice
            .phone
            .approve(
                tampered,
                &alice.identity,
                ApproveExtras {
                    wrapped_key_b64: Some(b64(&[0x30, 0])),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(e, bzt_phone::Error::Challenge(_)), "{e:?}");
    }
    assert_eq!(app.status_of(&created.id).await, "scanned");

    // The phone declines, and the hall learns why.
    match alice
        .phone
        .approve_decrypt(&swapped_header, &alice.identity, None)
        .await
        .unwrap()
    {
        DecryptOutcome::Rejected { refusal, .. } => {
            let view = app.get_session(&created.id).await;
            assert_eq!(view["status"], "rejected");
            assert_eq!(view["result"]["reason"], refusal.reason().as_str());
            assert!(refusal.reason().contains("不一致"), "{refusal}");
        }
        DecryptOutcome::Approved(_) => panic!("approved a challenge for another header"),
    }
}

// The default (current-thread) runtime: the broker's tasks run on this thread, so the
// thread's default subscriber sees every event of the server and the clients.
#[tokio::test]
async fn the_broker_never_holds_the_content_key() {
    let (logs, _guard) = LogBuffer::capture(tracing::Level::TRACE);

    let app = TestApp::spawn().await;
    let flow = encrypt_then_decrypt(&app).await;
    let broker = app.broker();
    // The scan finds the key in each form when it is there.
    for form in key_forms(&flow.content_key) {
        let planted = format!("{{\"x\":\"{form}\"}}");
        assert_eq!(leaked_form(&planted, &flow.content_key), Some(form));
    }

    let mut stored = String::new();
    for id in &flow.session_ids {
        let sid = bzt_core::SessionId::parse(id).unwrap();
        let session = broker.load(&sid).await.expect("stored");
        stored.push_str(&serde_json::to_string(&session).unwrap());
        stored.push_str(&app.get_session_raw(id, "").await.text().await.unwrap());
    }
    // The scan looks at the completed records: the re-wrapped key is there.
    assert!(
        stored.contains(&flow.wrapped_key_b64),
        "the stored decrypt session lacks its wrapped key"
    );
    assert_absent(&stored, &flow.content_key, "the broker's store");

    // Whatever the broker keeps on disk (the audit trail).
    let mut files = 0;
    for path in walk(app.dir.path()) {
        if path.extension().is_some_and(|e| e == "opened") {
            continue; // the hall's plaintext, written by this test
        }
        let bytes = std::fs::read(&path).unwrap();
        assert_absent(
            &String::from_utf8_lossy(&bytes),
            &flow.content_key,
            &path.display().to_string(),
        );
        files += 1;
    }
    assert!(files > 0);

    let text = logs.text();
    assert!(
        text.contains("/v1/claim") && text.contains("/complete"),
        "the logs were not captured: {} bytes",
        text.len()
    );
    assert_absent(&text, &flow.content_key, "the logs");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn the_hall_library_decrypts_with_number_matching() {
    let app = TestApp::spawn().await;
    let bob = app.phone("national", "李四的手机");
    let plain = bid_file();
    let input = app.dir.path().join("投标文件.bze");
    seal_to(
        &input,
        &plain,
        &[
            recipient(&app.cas.leaf("platform", "张三")),
            recipient(&bob.leaf),
        ],
    );
    let output = app.dir.path().join("投标文件.pdf");

    let client = HallClient::new(app.http.clone(), &app.address, OTHER_API_KEY);
    let options = DecryptOptions {
        number_match: true,
        ..Default::default()
    };
    let session = client.create_decrypt(&input, &options).await.unwrap();

    let (code_tx, code_rx) = tokio::sync::oneshot::channel::<String>();
    let mut code_tx = Some(code_tx);
    let mut events = Vec::new();
    let hall = session.wait(|event| {
        if let HallEvent::Scanned {
            match_code: Some(code),
            ..
        } = &event
        {
            if let Some(tx) = code_tx.take() {
                let _ = tx.send(code.clone());
            }
        }
        events.push(event);
    });
    let phone = async {
        let claimed = bob
            .phone
            .claim(&QrText::parse(&session.qr_text).unwrap(), &bob.identity)
            .await
            .unwrap();
        assert_eq!(claimed.display.title, "开标解密：投标文件.bze");
        let code = tokio::time::timeout(EVENT_TIMEOUT, code_rx)
            .await
            .expect("the hall saw no match code")
            .unwrap();
        assert!(claimed.match_choices.as_ref().unwrap().contains(&code));
        bob.phone
            .approve_decrypt(&claimed, &bob.identity, Some(code))
            .await
            .unwrap()
    };
    let (terminal, phone_outcome) = tokio::join!(hall, phone);
    assert!(matches!(phone_outcome, DecryptOutcome::Approved(_)));
    assert!(
        matches!(&events[..], [HallEvent::Scanned { device: Some(d), .. }] if d == "李四的手机"),
        "{events:?}"
    );
    match session.finish(&terminal.unwrap(), &output).unwrap() {
        HallOutcome::Opened { signer, report } => {
            assert_eq!(signer.serial, bob.serial());
            assert!(signer.is_recipient);
            assert_eq!(report.plaintext_len, plain.len() as u64);
        }
        other => panic!("not opened: {other:?}"),
    }
    assert!(std::fs::read(&output).unwrap() == plain);
}

#[tokio::test]
async fn the_hall_library_reports_the_phones_refusal_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let input = app.dir.path().join("bid.bze");
    seal_to(
        &input,
        b"bid",
        &[recipient(&app.cas.leaf("platform", "李四"))],
    );
    let output = app.dir.path().join("bid.pdf");
    let client = HallClient::new(app.http.clone(), &app.address, OTHER_API_KEY);
    let session = client
        .create_decrypt(&input, &DecryptOptions::default())
        .await
        .unwrap();
    let alice = app.phone("platform", "张三的手机");
    let claimed = alice
        .phone
        .claim(&QrText::parse(&session.qr_text).unwrap(), &alice.identity)
        .await
        .unwrap();
    let refusal = match alice
        .phone
        .approve_decrypt(&claimed, &alice.identity, None)
        .await
        .unwrap()
    {
        DecryptOutcome::Rejected { refusal, .. } => refusal,
        DecryptOutcome::Approved(_) => panic!("a non-recipient approved"),
    };
    let terminal = session.wait(|_| {}).await.unwrap();
    match session.finish(&terminal, &output).unwrap() {
        HallOutcome::Rejected { reason } => assert_eq!(reason, refusal.reason()),
        other => panic!("{other:?}"),
    }
    assert!(!output.exists());
}

/// A TCP proxy in front of the broker whose live connections can be cut at will.
struct CuttingProxy {
    url: String,
    target: Arc<std::sync::OnceLock<std::net::SocketAddr>>,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    cut: tokio::sync::watch::Sender<u64>,
}

impl CuttingProxy {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let target = Arc::new(std::sync::OnceLock::<std::net::SocketAddr>::new());
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let (t, a, c) = (target.clone(), accepted.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(addr) = t.get().copied() else {
                    continue;
                };
                let mut cut_rx = c.subscribe();
                tokio::spawn(async move {
                    let Ok(mut up) = tokio::net::TcpStream::connect(addr).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                        _ = cut_rx.changed() => {}
                    }
                });
            }
        });
        Self {
            url,
            target,
            accepted,
            cut,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Drops every connection open now.
    fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

#[tokio::test]
async fn the_hall_reconnects_after_its_socket_drops() {
    let proxy = CuttingProxy::start().await;
    let public = proxy.url.clone();
    let app = TestApp::spawn_with(|c| c.public_base_url = Some(public)).await;
    let port: u16 = app.address.rsplit(':').next().unwrap().parse().unwrap();
    proxy
        .target
        .set(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .unwrap();

    let bob = app.phone("platform", "李四的手机");
    let plain = bid_file();
    let input = app.dir.path().join("bid.bze");
    seal_to(&input, &plain, &[recipient(&bob.leaf)]);
    let output = app.dir.path().join("bid.pdf");
    // The RP calls go straight to the broker; the socket (its URL is built from
    // public_base_url) and the phone go through the proxy.
    let client = HallClient::new(app.http.clone(), &app.address, OTHER_API_KEY);
    let session = client
        .create_decrypt(&input, &DecryptOptions::default())
        .await
        .unwrap();
    assert!(
        session.qr_text.starts_with(&proxy.url),
        "{}",
        session.qr_text
    );

    let mut events = Vec::new();
    let hall = session.wait(|e| events.push(e));
    let driver = async {
        let proxy = &proxy;
        let until = |n: usize| async move {
            let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
            while proxy.accepted() < n {
                assert!(tokio::time::Instant::now() < deadline, "no connection");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        until(1).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        proxy.cut();
        until(2).await;
        let claimed = bob
            .phone
            .claim(&QrText::parse(&session.qr_text).unwrap(), &bob.identity)
            .await
            .unwrap();
        bob.phone
            .approve_decrypt(&claimed, &bob.identity, None)
            .await
            .unwrap()
    };
    let (terminal, phone_outcome) = tokio::join!(hall, driver);
    assert!(matches!(phone_outcome, DecryptOutcome::Approved(_)));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, HallEvent::Reconnecting { .. })),
        "{events:?}"
    );
    match session.finish(&terminal.unwrap(), &output).unwrap() {
        HallOutcome::Opened { signer, .. } => assert_eq!(signer.serial, bob.serial()),
        other => panic!("not opened: {other:?}"),
    }
    assert!(std::fs::read(&output).unwrap() == plain);
}

// ---- the real binary ------------------------------------------------------------------------

/// A `bzt serve` process in development mode; killed on drop.
pub(crate) struct BrokerProcess {
    child: std::process::Child,
    pub(crate) log: PathBuf,
    pub(crate) base: String,
}

impl BrokerProcess {
    /// The development demo app's API key, which `bzt serve` wrote to `data/dev-secrets.json`.
    pub(crate) fn demo_api_key(&self) -> String {
        let dir = self
            .log
            .parent()
            .expect("the log is in the broker's directory");
        let secrets: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("data/dev-secrets.json")).unwrap(),
        )
        .unwrap();
        secrets["demo_api_key"].as_str().unwrap().to_owned()
    }

    /// The co-signing service's URL, as the development banner names it in the log.
    pub(crate) fn cosigner_url_in_banner(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap();
        log.lines()
            .find_map(|l| l.trim().strip_prefix("co-signing service (密钥拆分):"))
            .map(|u| u.trim().to_owned())
            .unwrap_or_else(|| panic!("the development banner names no co-signing service: {log}"))
    }

    /// This broker's relying-party API with `api_key` (the typed client a platform uses).
    pub(crate) fn rp(&self, api_key: &str) -> bzt_rp_client::RpClient {
        bzt_rp_client::RpClient::new(reqwest::Client::new(), &self.base, api_key)
    }

    /// The relying party's first step: `POST /v1/sessions` with `body`; returns what it answers.
    pub(crate) async fn create_session(
        &self,
        api_key: &str,
        body: &bzt_rp_client::CreateSession,
    ) -> bzt_rp_client::CreatedSession {
        self.rp(api_key).create_session(body).await.unwrap()
    }

    /// The relying party reads a session back: `GET /v1/sessions/<id>`, as the JSON it came in.
    pub(crate) async fn session(&self, api_key: &str, id: &str) -> Value {
        let view = self.rp(api_key).get_session(id).await.unwrap();
        serde_json::to_value(view).unwrap()
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn bzt(dir: &Path, args: &[&str]) -> std::process::Output {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bzt"))
        .args(args)
        .current_dir(dir)
        .env_remove("BZT_CONFIG")
        .env_remove("BZT_API_KEY")
        .env_remove("BZT_BROKER_URL")
        .output()
        .expect("run bzt");
    assert!(
        out.status.success(),
        "bzt {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// [`bzt`] off the async runtime, for commands that talk to a broker this test runs (the
/// phone commands run their own runtime).
pub(crate) async fn bzt_off_runtime(dir: &Path, args: &[&str]) -> std::process::Output {
    let dir = dir.to_path_buf();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        bzt(&dir, &args)
    })
    .await
    .unwrap()
}

/// Starts `bzt serve` (development mode, data in `dir/data`, debug logs to `dir/broker.log`)
/// on a port of its choosing, and waits until it is ready.
pub(crate) async fn start_broker(dir: &Path) -> BrokerProcess {
    start_broker_on(dir, "127.0.0.1:0").await
}

/// [`start_broker`] listening on `listen`.
pub(crate) async fn start_broker_on(dir: &Path, listen: &str) -> BrokerProcess {
    let log = dir.join("broker.log");
    let file = std::fs::File::create(&log).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_bzt"))
        .arg("serve")
        .current_dir(dir)
        .env_remove("BZT_CONFIG")
        .env_remove("BZT_PUBLIC_BASE_URL")
        .env("BZT_LISTEN", listen)
        .env("BZT_DATA_DIR", dir.join("data"))
        .env("BZT_LOG", "debug")
        .stdin(std::process::Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .expect("start bzt serve");
    let mut process = BrokerProcess {
        child,
        log,
        base: String::new(),
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let http = reqwest::Client::new();
    loop {
        let text = std::fs::read_to_string(&process.log).unwrap_or_default();
        if let Some(port) = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("listening port:"))
            .map(|p| p.trim().to_owned())
        {
            let base = format!("http://127.0.0.1:{port}");
            if http
                .get(format!("{base}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
            {
                process.base = base;
                return process;
            }
        }
        if let Ok(Some(status)) = process.child.try_wait() {
            panic!("bzt serve exited with {status}: {text}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "bzt serve not ready: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `bzt hall decrypt` as a process: waits for the QR text it prints, lets `phone` act on it,
/// then returns the hall's exit status and whole output.
pub(crate) async fn run_hall<F, Fut>(
    dir: &Path,
    broker_base: &str,
    api_key: &str,
    args: &[&str],
    phone: F,
) -> (bool, String)
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_bzt"))
        .args([
            "hall",
            "decrypt",
            "--broker",
            broker_base,
            "--api-key",
            api_key,
        ])
        .args(args)
        .current_dir(dir)
        .env_remove("BZT_CONFIG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start bzt hall decrypt");
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = String::new();
    let qr = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = stdout.next_line().await.unwrap() {
            seen.push_str(&line);
            seen.push('\n');
            if let Some(qr) = line.strip_prefix("QR text: ") {
                return qr.to_owned();
            }
        }
        panic!("the hall ended without a QR text");
    })
    .await
    .unwrap_or_else(|_| panic!("no QR text from the hall: {seen}"));
    phone(qr).await;
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the hall did not finish")
        .unwrap();
    while let Some(line) = stdout.next_line().await.unwrap() {
        seen.push_str(&line);
        seen.push('\n');
    }
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .await
        .unwrap();
    (status.success(), format!("{seen}{err}"))
}

/// `bzt hall decrypt`, `bzt envelope`, `bzt phone approve` and `bzt serve` as separate
/// processes; the phone acts through the library on the QR text the hall prints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hall_decrypt_end_to_end_with_the_real_binary() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for (name, cn) in [("alice", "张三"), ("bob", "李四"), ("carol", "王五")] {
        bzt(
            dir,
            &[
                "dev-ca",
                "issue",
                "--data-dir",
                "data",
                "--cn",
                cn,
                "--org",
                "示例建设有限公司",
                "--out",
                name,
            ],
        );
    }
    let broker = start_broker(dir).await;
    let api_key = broker.demo_api_key();
    let identity = |name: &str| {
        PhoneIdentity::from_files(
            dir.join(name).join("cert.pem"),
            dir.join(name).join("key.pem"),
            None,
        )
        .unwrap()
        .with_device(format!("dev-{name}"), format!("{name} 的手机"))
    };
    let phone = bzt_phone::Phone::new(reqwest::Client::new());

    // encrypt through `bzt phone approve --recipient`: own certificate plus 李四's.
    let created = broker
        .create_session(
            &api_key,
            &CreateSession::new(bzt_rp_client::Kind::Encrypt, "生成投标文件"),
        )
        .await;
    let out = bzt(
        dir,
        &[
            "phone",
            "approve",
            &created.qr_text,
            "--cert",
            "alice/cert.pem",
            "--key",
            "alice/key.pem",
            "--recipient",
            "bob/cert.pem",
        ],
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("已签名"));
    let view = broker.session(&api_key, &created.id).await;
    assert_eq!(view["status"], "approved", "{view}");
    let serials: Vec<&str> = view["result"]["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["serial"].as_str().unwrap())
        .collect();
    assert_eq!(
        serials,
        vec![identity("alice").serial_hex(), identity("bob").serial_hex()]
    );

    // Seal with the CLI to 张三 and 李四, and look inside.
    let plain = bid_file();
    std::fs::write(dir.join("bid.pdf"), &plain).unwrap();
    bzt(
        dir,
        &[
            "envelope",
            "seal",
            "--to",
            "alice/cert.pem",
            "--to",
            "bob/cert.pem",
            "bid.pdf",
            "bid.bze",
        ],
    );
    let inspected: Value =
        serde_json::from_slice(&bzt(dir, &["envelope", "inspect", "--json", "bid.bze"]).stdout)
            .unwrap();
    assert_eq!(inspected["plaintext_len"], plain.len());
    assert_eq!(
        inspected["recipients"][1]["serial"],
        identity("bob").serial_hex().as_str()
    );
    std::fs::create_dir(dir.join("out")).unwrap();

    // 1. 李四's phone (the library) opens it at the hall.
    let (ok, output) = run_hall(
        dir,
        &broker.base,
        &api_key,
        &["bid.bze", "out/bid.pdf"],
        |qr| {
            let phone = phone.clone();
            let bob = identity("bob");
            async move {
                let claimed = phone
                    .claim(&QrText::parse(&qr).unwrap(), &bob)
                    .await
                    .unwrap();
                assert_eq!(claimed.display.title, "开标解密：bid.bze");
                let outcome = phone.approve_decrypt(&claimed, &bob, None).await.unwrap();
                assert!(
                    matches!(outcome, DecryptOutcome::Approved(_)),
                    "{outcome:?}"
                );
            }
        },
    )
    .await;
    assert!(ok, "the hall failed:\n{output}");
    assert!(output.contains("已解密"), "{output}");
    assert!(std::fs::read(dir.join("out/bid.pdf")).unwrap() == plain);
    let svg = std::fs::read_to_string(dir.join("out/bid.pdf.qr.svg")).unwrap();
    assert!(svg.contains("<svg"), "{svg}");

    // 2. 王五 is not a recipient: the hall prints the phone's reason and writes nothing.
    let (ok, output) = run_hall(
        dir,
        &broker.base,
        &api_key,
        &["bid.bze", "out/refused.pdf"],
        |qr| {
            let phone = phone.clone();
            let carol = identity("carol");
            async move {
                let claimed = phone
                    .claim(&QrText::parse(&qr).unwrap(), &carol)
                    .await
                    .unwrap();
                let outcome = phone.approve_decrypt(&claimed, &carol, None).await.unwrap();
                assert!(
                    matches!(outcome, DecryptOutcome::Rejected { .. }),
                    "{outcome:?}"
                );
            }
        },
    )
    .await;
    assert!(!ok, "the hall succeeded without a key:\n{output}");
    assert!(
        output.contains("本证书不在该投标文件的解密证书列表中"),
        "{output}"
    );
    assert!(!dir.join("out/refused.pdf").exists());

    // 3. 张三 with `bzt phone approve` (the CLI phone) on a decrypt session.
    let (ok, output) = run_hall(
        dir,
        &broker.base,
        &api_key,
        &["bid.bze", "out/cli.pdf"],
        |qr| {
            let dir = dir.to_owned();
            async move {
                tokio::task::spawn_blocking(move || {
                    bzt(
                        &dir,
                        &[
                            "phone",
                            "approve",
                            &qr,
                            "--cert",
                            "alice/cert.pem",
                            "--key",
                            "alice/key.pem",
                        ],
                    )
                })
                .await
                .unwrap();
            }
        },
    )
    .await;
    assert!(ok, "the hall failed:\n{output}");
    assert!(std::fs::read(dir.join("out/cli.pdf")).unwrap() == plain);

    // The broker's debug log never shows the content key.
    let (header, raw) = read_header(std::fs::File::open(dir.join("bid.bze")).unwrap()).unwrap();
    let alice = identity("alice");
    let key = header
        .content_key(
            &alice.secret_key(),
            &Recipient::from_certificate(alice.certificate()).unwrap(),
        )
        .unwrap();
    drop(raw);
    let log = std::fs::read_to_string(&broker.log).unwrap();
    assert!(log.contains("DEBUG"), "no debug log captured: {log}");
    assert_absent(&log, key.as_bytes(), "the broker's log");
}
