//! Split keys end to end (密钥拆分): a real broker and a real co-signing service, a phone
//! enrolled with a split key, and every flow the broker offers: login, sign, a conversation,
//! encrypt and decrypt. Signatures are checked by OpenSSL against the issued certificate;
//! decryption opens keys sealed by `bzt envelope seal`'s library and by `openssl pkeyutl
//! -encrypt`; after 注销 the broker refuses the certificate and the service the key; relying
//! parties see the same result shape as for a whole key.

use crate::conversation::policy;
use crate::envelope_flows::{
    bzt, bzt_off_runtime, decrypt_body, one_time_key, run_hall, seal_to, start_broker,
    start_broker_on,
};
use crate::helpers::*;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bzt_cosigner::config::{StoreConfig, StoreKind};
use bzt_cosigner::{Config as CosignerConfig, Service};
use bzt_envelope::{open_to_path_with_content_key, unwrap_key, ContentKey, Recipient};
use bzt_phone::conversation::Decision;
use bzt_phone::split::{Enrolled, SplitIdentity, UnlockedSplit};
use bzt_phone::{
    ApproveExtras, ConversationSigner, ConversationSocket, DecryptOutcome, Device, Phone,
    PhoneConversation, RunSummary, SessionStatus,
};
use bzt_rp_client::{CreateSession, Kind, SealInput};
use serde_json::{json, Value};
use sm3::{Digest, Sm3};
use std::collections::BTreeSet;
use std::ops::ControlFlow;

const CREDENTIAL: &str = "split-test-cosigner-credential-0123456789";
const SERVICE_ADMIN: &str = "split-test-service-admin-0123456789";
pub(crate) const PIN: &str = "246810";
/// The opening hall's token at the co-signing service.
const HALL_TOKEN: &str = "split-test-hall-token-0123456789";

/// A broker that knows its co-signing service, and the service, both on loopback ports.
pub(crate) struct SplitWorld {
    pub(crate) app: TestApp,
    pub(crate) cosigner_url: String,
    _service_dir: tempfile::TempDir,
}

pub(crate) async fn start() -> SplitWorld {
    // The service's port first: the broker's admin API needs its URL.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cosigner_url = format!("http://{}", listener.local_addr().unwrap());
    let app = TestApp::spawn_with(|c| {
        c.cosigner.credential = Some(CREDENTIAL.into());
        c.cosigner.url = Some(cosigner_url.clone());
        c.cosigner.admin_token = Some(SERVICE_ADMIN.into());
        // Seals made by the platform CA are trusted (扫码签章 with a seal).
        c.seals.trusted_makers_pem_files = c.trust_domains[0].ca_pem_files.clone();
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = CosignerConfig {
        listen: "127.0.0.1:0".into(),
        node_name: Some("test".into()),
        store: StoreConfig {
            kind: StoreKind::File,
            path: Some(dir.path().join("keys.json")),
            redis_url: None,
            key_prefix: None,
        },
        master_key_hex: Some("00112233445566778899aabbccddeeff".into()),
        master_key_file: None,
        data_dir: Some(dir.path().to_path_buf()),
        broker_url: app.address.clone(),
        broker_credential: Some(CREDENTIAL.into()),
        enrolment_token: None,
        admin_token: Some(SERVICE_ADMIN.into()),
        // The opening hall may register opening windows (开标时间).
        relying_parties: vec![bzt_cosigner::config::RelyingPartyConfig {
            id: "hall".into(),
            token: HALL_TOKEN.into(),
        }],
        require_registered_opening: false,
        proof_window_s: 120,
        csr_window_s: 600,
        // Open enrolment, as the development service has.
        dev_mode: true,
    };
    let service = Service::build(config).await.unwrap();
    tokio::spawn(bzt_cosigner::run(listener, service));
    SplitWorld {
        app,
        cosigner_url,
        _service_dir: dir,
    }
}

impl SplitWorld {
    /// Enrols a split key certified by the platform CA.
    pub(crate) async fn enrol(&self, cn: &str) -> SplitIdentity {
        let enrolled = Enrolled::generate(&self.cosigner_url, cn, None)
            .await
            .unwrap_or_else(|e| panic!("enrolment failed: {e}"));
        let (cert_pem, _) = self
            .app
            .cas
            .platform
            .issue_for_public_key(
                &bzt_devca::LeafSpec::new(cn, "示例建设有限公司"),
                &enrolled.public_key().unwrap(),
            )
            .unwrap();
        enrolled
            .finish(
                &cert_pem,
                PIN,
                Device {
                    id: format!("dev-{cn}"),
                    name: format!("{cn}的手机（密钥拆分）"),
                },
            )
            .unwrap()
    }

    pub(crate) fn phone(&self) -> Phone {
        Phone::new(reqwest::Client::new())
    }
}

/// The phone scans `created`'s QR code with `identity`'s device (claim).
pub(crate) async fn scan(
    phone: &Phone,
    created: &Created,
    identity: &SplitIdentity,
) -> bzt_phone::Claimed {
    phone
        .claim_as(&created.qr(), identity.device())
        .await
        .unwrap()
}

/// The co-signing service refused the phone's step with `code`.
fn assert_cosigner_refused<T: std::fmt::Debug>(outcome: Result<T, bzt_phone::Error>, code: &str) {
    match outcome {
        Err(bzt_phone::Error::Cosigner(c)) if c.code() == Some(code) => {}
        other => panic!("expected the co-signing service to refuse with {code}, got {other:?}"),
    }
}

/// The service's refusal to stamp `ask` for the session `claimed` at `at`, as text.
async fn stamp_refusal(
    key: &UnlockedSplit<'_>,
    claimed: &bzt_phone::Claimed,
    ask: &bzt_phone::SealAsk,
    seal: &bzt_seal::Seal,
    at: time::OffsetDateTime,
) -> String {
    key.stamp(&session_context(claimed), ask, seal, at)
        .await
        .unwrap_err()
        .to_string()
}

/// 扫码签章's result checks: OpenSSL verifies the co-signed SM2 signature over exactly the
/// DER(TBS_Sign) in `result`, which is the TBS_Sign inside its SES_Signature, around
/// `document`'s SM3. Returns the signature.
fn assert_seal_co_signed_over(
    app: &TestApp,
    cert_pem: &str,
    result: &Value,
    document: &[u8],
) -> Vec<u8> {
    let tbs_sign = unb64(result["tbs_b64"].as_str().unwrap());
    let signature = unb64(result["signature_b64"].as_str().unwrap());
    assert!(openssl_verifies(
        app.dir.path(),
        cert_pem,
        &tbs_sign,
        &signature
    ));
    let ses =
        bzt_seal::SealSignature::from_der(&unb64(result["seal_signature_b64"].as_str().unwrap()))
            .unwrap();
    assert_eq!(ses.signed_bytes().unwrap(), tbs_sign);
    assert_eq!(ses.data_hash(), Sm3::digest(document).as_slice());
    signature
}

/// 会话签章, the phone's first step: one scan of `created` as `identity`'s device, approved with
/// the split key and asking to open a conversation; returns the conversation it opened.
pub(crate) async fn open_conversation_with_one_scan(
    phone: &Phone,
    created: &Created,
    identity: &SplitIdentity,
    key: &UnlockedSplit<'_>,
) -> PhoneConversation {
    let claimed = scan(phone, created, identity).await;
    let answer = phone
        .approve_split(
            &claimed,
            key,
            ApproveExtras {
                open_conversation: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    answer.conversation.expect("a conversation was opened")
}

/// 会话签章, the phone's answering step: connects to `grant` and approves the next `count`
/// requests with the split key (stamping `seal` where a request asks for one).
pub(crate) async fn approve_requests_with_split_key(
    app: &TestApp,
    grant: &PhoneConversation,
    key: &UnlockedSplit<'_>,
    seal: Option<bzt_seal::Seal>,
    count: usize,
    auto_confirmed: bool,
) -> RunSummary {
    let mut socket = ConversationSocket::connect(&app.address, grant)
        .await
        .unwrap();
    if let Some(seal) = seal {
        socket = socket.with_seal(seal);
    }
    let mut answered = 0;
    socket
        .run(
            ConversationSigner::Split {
                key,
                phone_token: grant.phone_token.as_str().to_owned(),
            },
            |_| std::future::ready(Decision::Approve { auto_confirmed }),
            |_, _| {
                answered += 1;
                if answered == count {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        )
        .await
        .unwrap()
}

/// The keys of an approved session's `result` and of its certificate: what an RP can rely on.
fn shape(result: &Value) -> (BTreeSet<String>, BTreeSet<String>) {
    let keys = |v: &Value| {
        v.as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };
    (keys(result), keys(&result["certificate"]))
}

#[tokio::test]
async fn a_split_key_logs_in_signs_and_converses_and_openssl_verifies_its_signatures() {
    let world = start().await;
    let app = &world.app;
    let identity = world.enrol("张三").await;
    // The identity directory holds no whole key and no P1.
    let dir = app.dir.path().join("zhangsan");
    identity.save(&dir).unwrap();
    let identity = SplitIdentity::load(&dir).unwrap();
    let files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(files.iter().all(|f| !f.contains("PRIVATE KEY")));
    let key = identity.unlock(PIN).unwrap();
    let phone = world.phone();

    // 扫码登录.
    let created = app.create_login().await;
    let claimed = scan(&phone, &created, &identity).await;
    let answer = phone
        .approve_split(&claimed, &key, ApproveExtras::default())
        .await
        .unwrap();
    assert_eq!(answer.status, SessionStatus::Approved.as_str());
    let view = app.get_session(&created.id).await;
    let result = &view["result"];
    assert_eq!(
        result["certificate"]["serial"],
        identity.serial_hex().as_str()
    );
    let signature = unb64(result["signature_b64"].as_str().unwrap());
    assert!(openssl_verifies(
        app.dir.path(),
        result["certificate"]["pem"].as_str().unwrap(),
        &claimed.tbs,
        &signature
    ));

    // The RP sees what it sees for a whole key.
    let whole = app.phone("platform", "李四的手机");
    let created_whole = app.create_login().await;
    let claimed_whole = whole.claim(&created_whole).await;
    whole.approve(&claimed_whole).await.unwrap();
    let whole_view = app.get_session(&created_whole.id).await;
    assert_eq!(shape(result), shape(&whole_view["result"]));

    // 扫码签章 of the RP's bytes, opening a conversation (会话签章).
    let tbs = "投标函：总价人民币壹佰万元整".as_bytes();
    let created = app
        .create_session(json!({
            "kind": "sign",
            "display": { "title": "签署投标函" },
            "tbs_b64": b64(tbs),
            "conversation": policy(10, 600, 7200),
        }))
        .await;
    let grant = open_conversation_with_one_scan(&phone, &created, &identity, &key).await;
    let view = app.get_session(&created.id).await;
    let cert_pem = view["result"]["certificate"]["pem"]
        .as_str()
        .unwrap()
        .to_owned();
    let signature = unb64(view["result"]["signature_b64"].as_str().unwrap());
    assert!(openssl_verifies(app.dir.path(), &cert_pem, tbs, &signature));

    let conversation_id = grant.id.clone();
    let requester_token = view["result"]["conversation"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut requester = Browser::connect(
        &format!(
            "{}/v1/conversations/{conversation_id}/ws?t={requester_token}",
            app.address.replacen("http", "ws", 1)
        ),
        None,
    )
    .await
    .unwrap();
    let pages: Vec<Vec<u8>> = (1..=3).map(|i| format!("第{i}页").into_bytes()).collect();
    for (i, page) in pages.iter().enumerate() {
        app.send_conversation_request(
            &conversation_id,
            json!({ "tbs_b64": b64(page), "display": { "title": format!("第{}页", i + 1) } }),
        )
        .await;
    }
    let summary = approve_requests_with_split_key(app, &grant, &key, None, 3, true).await;
    assert_eq!(summary.approved, 3, "{summary:?}");
    for page in &pages {
        let event = requester.next_event().await;
        assert_eq!(event["status"], "approved", "{event}");
        let sig = unb64(event["signature_b64"].as_str().unwrap());
        assert!(openssl_verifies(app.dir.path(), &cert_pem, page, &sig));
    }
}

#[tokio::test]
async fn a_split_key_picks_recipients_and_opens_keys_sealed_by_bzt_and_by_openssl() {
    let world = start().await;
    let app = &world.app;
    let identity = world.enrol("王五").await;
    let key = identity.unlock(PIN).unwrap();
    let phone = world.phone();

    // 扫码生成投标文件: the split certificate is its own first recipient.
    let created = app
        .create_session(json!({ "kind": "encrypt", "display": { "title": "生成投标文件" } }))
        .await;
    let claimed = scan(&phone, &created, &identity).await;
    phone
        .approve_encrypt_split(&claimed, &key, &[], None)
        .await
        .unwrap();
    let view = app.get_session(&created.id).await;
    let recipients = view["result"]["recipients"].as_array().unwrap();
    assert_eq!(recipients[0]["serial"], identity.serial_hex().as_str());

    // A bid file sealed to the split certificate (the library of `bzt envelope seal`).
    let plain = "投标文件正文：报价与技术方案".as_bytes();
    let sealed_path = app.dir.path().join("bid.bze");
    let split_recipient = Recipient::from_pem(identity.certificate_pem()).unwrap();
    let header = seal_to(&sealed_path, plain, &[split_recipient]);
    let content_key = open_at_the_hall(&world, &identity, &key, &header).await;
    let opened_path = app.dir.path().join("bid.opened");
    open_to_path_with_content_key(
        &ContentKey::from_slice(&content_key).unwrap(),
        &sealed_path,
        &opened_path,
    )
    .expect("the hall's key opens the sealed file");
    assert_eq!(std::fs::read(&opened_path).unwrap(), plain);

    // A 16-byte key wrapped by OpenSSL to the certificate, in an envelope header.
    let dir = app.dir.path();
    std::fs::write(dir.join("split-cert.pem"), identity.certificate_pem()).unwrap();
    let key16: Vec<u8> = (0..16u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
    std::fs::write(dir.join("key16"), &key16).unwrap();
    openssl_ok(
        dir,
        &[
            "pkeyutl",
            "-encrypt",
            "-certin",
            "-inkey",
            "split-cert.pem",
            "-in",
            "key16",
            "-out",
            "wrapped.der",
        ],
    );
    let wrapped = std::fs::read(dir.join("wrapped.der")).unwrap();
    let mut header_json: Value = serde_json::from_slice(&header).unwrap();
    header_json["recipients"][0]["key_b64"] = json!(STANDARD.encode(&wrapped));
    let openssl_header = serde_json::to_vec(&header_json).unwrap();
    let unwrapped = open_at_the_hall(&world, &identity, &key, &openssl_header).await;
    assert_eq!(
        unwrapped, key16,
        "the co-decryption recovers what OpenSSL wrapped"
    );
}

/// A `decrypt` session of the hall for `header`, completed by the split key; the content key
/// as the hall unwraps it with its one-time key.
async fn open_at_the_hall(
    world: &SplitWorld,
    identity: &SplitIdentity,
    key: &bzt_phone::UnlockedSplit<'_>,
    header: &[u8],
) -> Vec<u8> {
    let app = &world.app;
    let (hall_key, reply_key) = one_time_key();
    let created = app
        .create_session_as(OTHER_API_KEY, decrypt_body("开标解密", header, &reply_key))
        .await;
    let claimed = scan(&world.phone(), &created, identity).await;
    match world
        .phone()
        .approve_decrypt_split(&claimed, key, None)
        .await
        .unwrap()
    {
        DecryptOutcome::Approved(a) => assert_eq!(a.status, SessionStatus::Approved.as_str()),
        DecryptOutcome::Rejected { refusal, .. } => panic!("refused: {refusal:?}"),
    }
    let view: Value = app
        .rp_get_as(OTHER_API_KEY, &format!("/v1/sessions/{}", created.id))
        .await;
    let wrapped = unb64(view["result"]["wrapped_key_b64"].as_str().unwrap());
    unwrap_key(&hall_key, &wrapped).unwrap().to_vec()
}

#[tokio::test]
async fn a_wrong_pin_is_refused_by_the_service_and_after_revocation_nothing_works() {
    let world = start().await;
    let app = &world.app;
    let identity = world.enrol("赵六").await;
    let phone = world.phone();

    // A wrong PIN unmasks a wrong share: the service refuses, the session stays scanned.
    let created = app.create_login().await;
    let claimed = scan(&phone, &created, &identity).await;
    let wrong = identity.unlock("135790").unwrap();
    assert_cosigner_refused(
        phone
            .approve_split(&claimed, &wrong, ApproveExtras::default())
            .await,
        "wrong_pin",
    );
    assert_eq!(app.status_of(&created.id).await, "scanned");
    let key = identity.unlock(PIN).unwrap();
    phone
        .approve_split(&claimed, &key, ApproveExtras::default())
        .await
        .unwrap();

    // 注销 through the broker's admin API: the service destroys its share and the broker
    // revokes the certificate.
    let resp = app
        .http
        .post(app.url(&format!(
            "/v1/admin/cosigner/keys/{}/revoke",
            identity.key_id()
        )))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "certificate_serial": identity.serial_hex() }))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "revoked");

    let created = app.create_login().await;
    let claimed = scan(&phone, &created, &identity).await;
    assert_cosigner_refused(
        phone
            .approve_split(&claimed, &key, ApproveExtras::default())
            .await,
        "revoked",
    );
    // Whatever signature comes with it, the broker refuses the certificate first.
    let resp = app
        .complete_raw(
            &created.id,
            claimed.phone_token.expose(),
            &json!({
                "certificate_pem": identity.certificate_pem(),
                "signature_b64": b64(&[0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01]),
            }),
        )
        .await;
    let message = assert_error(resp, 422, "untrusted_certificate").await;
    assert!(message.contains("revoked"), "{message}");
}

#[tokio::test]
async fn development_mode_runs_the_service_and_the_cli_enrols_with_a_request_openssl_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path()).await;
    let cosigner_url = broker.cosigner_url_in_banner();
    assert_ne!(cosigner_url, "(none)");

    // `bzt phone enroll`, with a PKCS#10 request co-signed by both parties.
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let out = bzt(
        dir.path(),
        &[
            "phone",
            "enroll",
            "--cosigner",
            &cosigner_url,
            "--pin",
            PIN,
            "--cn",
            "张三",
            "--org",
            "示例建设有限公司",
            "--out",
            "zhangsan",
            "--csr",
            "zhangsan.csr",
            "--data-dir",
            data,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verified = openssl_ok(
        dir.path(),
        &[
            "req",
            "-in",
            "zhangsan.csr",
            "-verify",
            "-noout",
            "-vfyopt",
            DISTID_OPT,
        ],
    );
    let said = String::from_utf8_lossy(&verified.stderr).to_string()
        + &String::from_utf8_lossy(&verified.stdout);
    assert!(said.contains("verify OK"), "{said}");
    // The request is for the certificate's key: the joint key.
    let req_key = openssl_ok(
        dir.path(),
        &["req", "-in", "zhangsan.csr", "-noout", "-pubkey"],
    );
    let cert_key = openssl_ok(
        dir.path(),
        &["x509", "-in", "zhangsan/cert.pem", "-noout", "-pubkey"],
    );
    assert_eq!(req_key.stdout, cert_key.stdout);
    // No whole private key on the phone's side.
    for entry in std::fs::read_dir(dir.path().join("zhangsan")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(!text.contains("PRIVATE KEY"), "{text}");
        assert!(!text.contains(PIN));
    }

    // `bzt phone approve --identity DIR --pin PIN` logs in through the demo app.
    let api_key = broker.demo_api_key();
    let created = broker.create_session(&api_key, &rp_login()).await;
    let qr = created.qr_text.as_str();
    let out = bzt_off_runtime(
        dir.path(),
        &[
            "phone",
            "approve",
            qr,
            "--identity",
            "zhangsan",
            "--pin",
            PIN,
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let view = broker.session(&api_key, &created.id).await;
    assert_eq!(view["status"], "approved", "{view}");
    let signature = unb64(view["result"]["signature_b64"].as_str().unwrap());
    let tbs = unb64(view["result"]["tbs_b64"].as_str().unwrap());
    let cert_pem = std::fs::read_to_string(dir.path().join("zhangsan/cert.pem")).unwrap();
    assert!(openssl_verifies(dir.path(), &cert_pem, &tbs, &signature));

    // 扫码签章 with a seal: `bzt dev-ca make-seal` for the split certificate, then
    // `bzt phone approve --identity --seals` stamps with it, co-signing the TBS_Sign.
    std::fs::write(
        dir.path().join("seal.png"),
        b"\x89PNG\r\n\x1a\n-test-seal-picture-",
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("seals")).unwrap();
    bzt(
        dir.path(),
        &[
            "dev-ca",
            "make-seal",
            "--data-dir",
            data,
            "--owner-cert",
            "zhangsan/cert.pem",
            "--name",
            "示例建设有限公司",
            "--picture",
            "seal.png",
            "--out",
            "seals/company.seal",
        ],
    );
    let document = "投标函 第1页".as_bytes();
    let mut seal_session = CreateSession::new(Kind::Sign, "投标文件签章");
    seal_session.seal = Some(SealInput {
        data_hash_b64: b64(&Sm3::digest(document)),
        property_info: "bid/page-1.txt".into(),
    });
    let created = broker.create_session(&api_key, &seal_session).await;
    let qr = created.qr_text.as_str();
    let out = bzt_off_runtime(
        dir.path(),
        &[
            "phone",
            "approve",
            qr,
            "--identity",
            "zhangsan",
            "--pin",
            PIN,
            "--seals",
            "seals",
        ],
    )
    .await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("使用印章：示例建设有限公司"));
    let view = broker.session(&api_key, &created.id).await;
    assert_eq!(view["status"], "approved", "{view}");
    assert_eq!(view["result"]["seal"]["name"], "示例建设有限公司");
    let tbs_sign = unb64(view["result"]["tbs_b64"].as_str().unwrap());
    let signature = unb64(view["result"]["signature_b64"].as_str().unwrap());
    assert!(openssl_verifies(
        dir.path(),
        &cert_pem,
        &tbs_sign,
        &signature
    ));
    std::fs::write(
        dir.path().join("bid.ses"),
        unb64(view["result"]["seal_signature_b64"].as_str().unwrap()),
    )
    .unwrap();
    std::fs::write(dir.path().join("page-1.txt"), document).unwrap();
    let out = bzt(
        dir.path(),
        &[
            "seal",
            "verify",
            "bid.ses",
            "--data",
            "page-1.txt",
            "--data-dir",
            data,
        ],
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("OK: stamped"));
}

#[tokio::test]
async fn development_mode_starts_the_service_on_another_port_when_the_brokers_port_plus_one_is_taken(
) {
    // Something else holds port Q; the broker is told to listen on Q - 1.
    let (holder, broker_port) = loop {
        let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = holder.local_addr().unwrap().port();
        if taken > 1024 && std::net::TcpListener::bind(("127.0.0.1", taken - 1)).is_ok() {
            break (holder, taken - 1);
        }
    };
    let taken = holder.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_on(dir.path(), &format!("127.0.0.1:{broker_port}")).await;

    let cosigner_url = broker.cosigner_url_in_banner();
    assert_ne!(cosigner_url, "(none)", "split keys must stay available");
    assert_ne!(cosigner_url, format!("http://127.0.0.1:{taken}"));
    let info = reqwest::get(format!("{cosigner_url}/v1/info"))
        .await
        .unwrap();
    assert_eq!(
        info.status(),
        200,
        "the service answers where the banner says"
    );
    // The broker's own relay reaches it too (the phone page's path to the service).
    let relayed = reqwest::get(format!("{}/demo/cosigner/v1/info", broker.base))
        .await
        .unwrap();
    assert_eq!(relayed.status(), 200);
    drop(holder);
}

#[tokio::test]
async fn the_service_refuses_to_open_before_the_opening_time_and_freezing_stops_it_at_once() {
    let world = start().await;
    let app = &world.app;
    let identity = world.enrol("钱七").await;
    let key = identity.unlock(PIN).unwrap();
    let phone = world.phone();
    let split_recipient = Recipient::from_pem(identity.certificate_pem()).unwrap();
    let header = seal_to(&app.dir.path().join("bid.bze"), b"bid", &[split_recipient]);

    // Opens in ten minutes: the service refuses by its own clock, before any completion.
    let (_, reply_key) = one_time_key();
    let mut body = decrypt_body("开标解密", &header, &reply_key);
    let now = bzt::clock::Clock::now(&app.clock);
    body["opening"] = json!({
        "not_before": now.plus_secs(600).to_rfc3339(),
        "not_after": now.plus_secs(3600).to_rfc3339(),
    });
    let created = app.create_session_as(OTHER_API_KEY, body).await;
    let claimed = scan(&phone, &created, &identity).await;
    assert_cosigner_refused(
        phone.approve_decrypt_split(&claimed, &key, None).await,
        "outside_opening_window",
    );

    // 挂失 through the broker: refused at once; unfreezing restores.
    let admin = |action: &'static str| {
        let url = app.url(&format!(
            "/v1/admin/cosigner/keys/{}/{action}",
            identity.key_id()
        ));
        let http = app.http.clone();
        async move {
            let resp = http
                .post(url)
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            resp.json::<Value>().await.unwrap()
        }
    };
    assert_eq!(admin("freeze").await["state"], "frozen");
    let created = app.create_login().await;
    let claimed = scan(&phone, &created, &identity).await;
    assert_cosigner_refused(
        phone
            .approve_split(&claimed, &key, ApproveExtras::default())
            .await,
        "frozen",
    );
    assert_eq!(admin("unfreeze").await["state"], "active");
    let answer = phone
        .approve_split(&claimed, &key, ApproveExtras::default())
        .await
        .unwrap();
    assert_eq!(answer.status, SessionStatus::Approved.as_str());
}

/// A company seal made by the platform CA for `cert_pem`, valid for a year.
fn seal_for(world: &SplitWorld, cert_pem: &str) -> bzt_seal::Seal {
    use x509_cert::der::{DecodePem, Encode};
    let owner = x509_cert::Certificate::from_pem(cert_pem).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let maker = &world.app.cas.platform;
    let der = bzt_seal::make_seal(
        &bzt_seal::SealSpec {
            es_id: "91110000SPLIT001".into(),
            seal_type: bzt_seal::SealType::Company,
            name: "示例建设有限公司".into(),
            owner_certs: vec![owner.to_der().unwrap()],
            created: now,
            valid_start: now - time::Duration::days(1),
            valid_end: now + time::Duration::days(365),
            picture: bzt_seal::Picture {
                picture_type: "PNG".into(),
                data: b"\x89PNG\r\n\x1a\n-split-seal-".to_vec(),
                width_mm: 40,
                height_mm: 40,
            },
        },
        &maker.certificate().to_der().unwrap(),
        maker.signing_key(),
    )
    .unwrap();
    bzt_seal::Seal::from_der(&der).unwrap()
}

fn seal_ask(document: &[u8], property_info: &str) -> bzt_phone::SealAsk {
    bzt_phone::SealAsk {
        data_hash: Sm3::digest(document).to_vec(),
        property_info: property_info.into(),
    }
}

fn session_context(claimed: &bzt_phone::Claimed) -> bzt_cosigner::wire::Context {
    bzt_cosigner::wire::Context::Session(bzt_cosigner::wire::SessionRef {
        id: claimed.session_id.clone(),
        phone_token: claimed.phone_token.expose().to_owned(),
        delegate: None,
    })
}

#[tokio::test]
async fn a_split_key_stamps_a_seal_that_the_broker_and_openssl_verify_and_the_service_signs_no_tbs_sign_nobody_asked_for(
) {
    const PROPERTY_INFO: &str = "/Doc_0/Signs/Sign_0/Signature.xml";
    let world = start().await;
    let app = &world.app;
    let identity = world.enrol("示例建设有限公司").await;
    let key = identity.unlock(PIN).unwrap();
    let seal = seal_for(&world, identity.certificate_pem());
    let phone = world.phone();
    let document = "投标文件 第1页".as_bytes();
    // The service refuses a TBS_Sign whose dataHash is not the session's, and one for a
    // session that asked for no seal: the phone cannot get other bytes sealed (and no PIN
    // attempt is spent: the content is checked first).
    let created = app
        .create_session(json!({
            "kind": "sign",
            "display": {"title": "投标文件签章"},
            "seal": {"data_hash_b64": b64(&Sm3::digest(document)), "property_info": PROPERTY_INFO},
            "conversation": {"max_requests": 3},
        }))
        .await;
    let claimed = scan(&phone, &created, &identity).await;
    let now = time::OffsetDateTime::now_utc();
    let err = stamp_refusal(
        &key,
        &claimed,
        &seal_ask("另一份文件".as_bytes(), PROPERTY_INFO),
        &seal,
        now,
    )
    .await;
    assert!(
        err.contains("not_requested") && err.contains("dataHash"),
        "{err}"
    );
    let err = stamp_refusal(
        &key,
        &claimed,
        &seal_ask(document, "/Doc_0/Signs/Sign_9/Signature.xml"),
        &seal,
        now,
    )
    .await;
    assert!(err.contains("propertyInfo"), "{err}");
    let err = stamp_refusal(
        &key,
        &claimed,
        &seal_ask(document, PROPERTY_INFO),
        &seal,
        now - time::Duration::hours(1),
    )
    .await;
    assert!(err.contains("timeInfo"), "{err}");
    let login = app.create_login().await;
    let claimed_login = scan(&phone, &login, &identity).await;
    let err = stamp_refusal(
        &key,
        &claimed_login,
        &seal_ask(document, PROPERTY_INFO),
        &seal,
        now,
    )
    .await;
    assert!(
        err.contains("not_requested") && err.contains("no seal"),
        "{err}"
    );
    // A plain co-signature of a seal session's hash is refused too: it asks for a TBS_Sign.
    assert!(key.sign_session(&claimed).await.is_err());

    // 扫码签章 with the seal, opening a conversation: the broker checks it as for a whole key.
    let answer = phone
        .approve_with_seal_split(
            &claimed,
            &key,
            &seal,
            ApproveExtras {
                open_conversation: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(answer.status, SessionStatus::Approved.as_str());
    let view = app.get_session(&created.id).await;
    let result = &view["result"];
    assert_eq!(result["seal"]["name"], "示例建设有限公司", "{result}");
    let cert_pem = result["certificate"]["pem"].as_str().unwrap().to_owned();
    let signature = assert_seal_co_signed_over(app, &cert_pem, result, document);
    assert!(!openssl_verifies(
        app.dir.path(),
        &cert_pem,
        document,
        &signature
    ));

    // A seal on each page of the conversation, co-signed the same way.
    let grant = answer.conversation.expect("a conversation was opened");
    let pages: Vec<Vec<u8>> = (1..=2).map(|n| format!("第{n}页").into_bytes()).collect();
    let mut ids = Vec::new();
    for (n, page) in pages.iter().enumerate() {
        ids.push(
            app.send_conversation_request(
                &grant.id,
                json!({
                    "display": {"title": format!("第{}页", n + 1)},
                    "seal": {"data_hash_b64": b64(&Sm3::digest(page)), "property_info": format!("/Doc_0/Pages/Page_{n}")},
                }),
            )
            .await,
        );
    }
    let summary =
        approve_requests_with_split_key(app, &grant, &key, Some(seal.clone()), pages.len(), true)
            .await;
    assert_eq!(summary.approved, pages.len() as u64, "{summary:?}");
    for (rid, page) in ids.iter().zip(&pages) {
        let r: Value = app.conversation_request_result(&grant.id, rid).await;
        assert_eq!(r["status"], "approved", "{r}");
        assert_seal_co_signed_over(app, &cert_pem, &r, page);
    }

    // The service's audit names each co-signed TBS_Sign by its SM3.
    let audit: Value = reqwest::Client::new()
        .get(format!("{}/v1/audit", world.cosigner_url))
        .bearer_auth(SERVICE_ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let signed: Vec<&str> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["operation"] == "sign" && r["outcome"] == "ok")
        .filter_map(|r| r["tbs_sm3"].as_str())
        .collect();
    let first = hex::encode(Sm3::digest(unb64(result["tbs_b64"].as_str().unwrap())));
    assert!(signed.contains(&first.as_str()), "{audit}");
    let refused = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["outcome"] == "not_requested")
        .count();
    assert!(refused >= 4, "{audit}");
}

/// 开标时间 in the hall: `bzt hall decrypt --opening T --cosigner URL` registers the window with
/// the co-signing service under the hall's own token before anything else. Before T the service
/// refuses to co-decrypt the envelope's key even for a session whose broker names no window;
/// at T the hall shows its QR and the split-key phone opens the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hall_registers_its_opening_time_with_the_service_which_refuses_before_it_and_opens_after(
) {
    use bzt::hall::{CosignerRegistration, HallClient, HallError, OpeningWindow};
    use time::format_description::well_known::Rfc3339;
    let world = start().await;
    let app = &world.app;
    let identity = world.enrol("孙八").await;
    let key = identity.unlock(PIN).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let recipient = Recipient::from_pem(identity.certificate_pem()).unwrap();
    let header = seal_to(
        &dir.path().join("bid.bze"),
        "投标文件正文".as_bytes(),
        &[recipient],
    );
    let opening = time::OffsetDateTime::now_utc() + time::Duration::seconds(5);
    let opening_text = opening.format(&Rfc3339).unwrap();
    let window = OpeningWindow {
        not_before: opening_text.clone(),
        not_after: (opening + time::Duration::hours(1))
            .format(&Rfc3339)
            .unwrap(),
    };

    // Only a relying party's token registers a window.
    let hall = HallClient::new(app.http.clone(), &app.address, OTHER_API_KEY);
    let err = hall
        .register_opening(
            &CosignerRegistration {
                url: world.cosigner_url.clone(),
                token: "not-the-hall".into(),
            },
            &header,
            &window,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, HallError::Opening(m) if m.contains("401")),
        "{err}"
    );

    // The hall registers its window (as the CLI does first, below).
    let registration = CosignerRegistration {
        url: world.cosigner_url.clone(),
        token: HALL_TOKEN.into(),
    };
    hall.register_opening(&registration, &header, &window)
        .await
        .unwrap();

    // Before the opening time: a decrypt session whose broker names no window at all is
    // refused by the service, by its own clock.
    let (_, reply_key) = one_time_key();
    let created = app
        .create_session_as(OTHER_API_KEY, decrypt_body("开标解密", &header, &reply_key))
        .await;
    let phone = world.phone();
    let claimed = scan(&phone, &created, &identity).await;
    assert_cosigner_refused(
        phone.approve_decrypt_split(&claimed, &key, None).await,
        "outside_opening_window",
    );
    assert!(
        time::OffsetDateTime::now_utc() < opening,
        "the refusal came before the opening time"
    );

    // The hall on the command line: registers, waits for the opening time, shows the QR; the
    // phone opens the file after it.
    std::fs::create_dir_all(dir.path().join("out")).unwrap();
    let phone_identity = identity.clone();
    let broker_clock = app.clock.clone();
    let (ok, output) = run_hall(
        dir.path(),
        &app.address,
        OTHER_API_KEY,
        &[
            "--opening",
            &opening_text,
            "--cosigner",
            &world.cosigner_url,
            "--cosigner-token",
            HALL_TOKEN,
            "bid.bze",
            "out/bid.txt",
        ],
        |qr| async move {
            let now = time::OffsetDateTime::now_utc();
            assert!(now >= opening, "QR shown before the opening time");
            // The broker's test clock is manual: bring it to the real time, as the service's is.
            broker_clock.set(bzt_core::Timestamp::from_unix_millis(
                (now.unix_timestamp_nanos() / 1_000_000) as i64,
            ));
            let phone = Phone::new(reqwest::Client::new());
            let qr = bzt_phone::QrText::parse(&qr).unwrap();
            let claimed = phone.claim_as(&qr, phone_identity.device()).await.unwrap();
            assert!(
                claimed.opening.is_some(),
                "the phone is shown the opening window"
            );
            let key = phone_identity.unlock(PIN).unwrap();
            match phone
                .approve_decrypt_split(&claimed, &key, None)
                .await
                .unwrap()
            {
                DecryptOutcome::Approved(a) => {
                    assert_eq!(a.status, SessionStatus::Approved.as_str())
                }
                DecryptOutcome::Rejected { refusal, .. } => panic!("refused: {refusal:?}"),
            }
        },
    )
    .await;
    assert!(ok, "{output}");
    assert!(output.contains("opening window registered"), "{output}");
    assert!(output.contains("waiting for the opening time"), "{output}");
    assert_eq!(
        std::fs::read(dir.path().join("out/bid.txt")).unwrap(),
        "投标文件正文".as_bytes()
    );

    // The service's audit names the hall's registrations.
    let audit: Value = reqwest::Client::new()
        .get(format!("{}/v1/audit", world.cosigner_url))
        .bearer_auth(SERVICE_ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let registrations = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["operation"] == "opening" && r["context"].as_str().unwrap().ends_with("by hall")
        })
        .count();
    assert_eq!(registrations, 2, "{audit}");
}
