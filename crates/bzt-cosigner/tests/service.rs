//! The co-signing service, driven as the phone drives it, against a stand-in
//! for the broker's context endpoint. Each test is one claim of
//! docs/key-splitting.md.

mod support;

use bzt_cosigner::wire::{Context, CsrRef, KeyStatus, Opening, OpeningWindow};
use bzt_cosigner::{CosignerClient, SplitKeyFile};
use sm2::dsa::signature::Verifier;
use sm2::dsa::VerifyingKey;
use support::*;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

const PIN: &str = "246810";

struct Phone {
    client: CosignerClient,
    file: SplitKeyFile,
}

impl Phone {
    async fn enrol(service: &TestService) -> Self {
        let client = service.client().await;
        let enrollment = client
            .enroll("张三 (test)", Some(ENROLMENT_TOKEN))
            .await
            .unwrap();
        let file = SplitKeyFile::with_iterations(&enrollment, &client, PIN, 1000).unwrap();
        Self { client, file }
    }

    async fn sign(
        &self,
        pin: &str,
        context: &Context,
        tbs: &[u8],
    ) -> Result<sm2::dsa::Signature, bzt_cosigner::ClientError> {
        let d1 = self.file.unmask(pin).unwrap();
        let joint = self.file.joint_public_key().unwrap();
        self.client
            .sign(&self.file.key_id, &d1, &joint, context, tbs)
            .await
    }

    async fn decrypt(
        &self,
        pin: &str,
        context: &Context,
        ct: &[u8],
    ) -> Result<Vec<u8>, bzt_cosigner::ClientError> {
        let d1 = self.file.unmask(pin).unwrap();
        self.client
            .decrypt(&self.file.key_id, &d1, context, ct)
            .await
    }

    /// The administrator's `action` on this phone's key (`freeze`, `unlock`, `revoke`, ...).
    async fn admin(&self, action: &str) -> Result<KeyStatus, bzt_cosigner::ClientError> {
        self.client
            .admin(ADMIN_TOKEN, &self.file.key_id, action)
            .await
    }

    /// The key's state as the administrator sees it.
    async fn key_status(&self) -> Result<KeyStatus, bzt_cosigner::ClientError> {
        self.client.key_status(ADMIN_TOKEN, &self.file.key_id).await
    }

    /// Wrong PINs counted against the key so far.
    async fn failures(&self) -> u32 {
        self.key_status().await.unwrap().failures
    }

    fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey::from_sec1_bytes(
            "1234567812345678",
            &hex::decode(&self.file.public_key).unwrap(),
        )
        .unwrap()
    }

    fn seal_to_joint_key(&self, msg: &[u8]) -> Vec<u8> {
        let key =
            sm2::PublicKey::from_sec1_bytes(&hex::decode(&self.file.public_key).unwrap()).unwrap();
        sm2::pke::EncryptingKey::new(key)
            .encrypt_der(&mut getrandom::SysRng, msg)
            .unwrap()
    }
}

/// The broker stand-in, the co-signing service, and a phone enrolled with a split key there.
async fn enrol_a_phone() -> (TestBroker, TestService, Phone) {
    let broker = TestBroker::start().await;
    let service = TestService::start(&broker).await;
    let phone = Phone::enrol(&service).await;
    (broker, service, phone)
}

/// A login session the phone has scanned: its challenge and the context naming it.
fn scan_a_login(broker: &TestBroker) -> (Vec<u8>, Context) {
    let tbs = challenge("login");
    let session = broker.scanned("login", &tbs, None);
    (tbs, session)
}

fn code(result: Result<impl std::fmt::Debug, bzt_cosigner::ClientError>) -> String {
    result.unwrap_err().code().unwrap_or("no code").to_owned()
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap()
}

#[tokio::test]
async fn a_co_signed_login_verifies_under_the_joint_key_and_is_audited() {
    let (broker, _service, phone) = enrol_a_phone().await;
    let (tbs, session) = scan_a_login(&broker);

    let sig = phone.sign(PIN, &session, &tbs).await.unwrap();

    assert!(phone.verifying_key().verify(&tbs, &sig).is_ok());
    let audit = phone.client.audit(ADMIN_TOKEN).await.unwrap().records;
    let last = audit.last().unwrap();
    assert_eq!(
        (last.operation.as_str(), last.outcome.as_str()),
        ("sign", "ok")
    );
    assert_eq!(last.key_id, phone.file.key_id);
    assert_eq!(
        last.tbs_sm3.as_deref(),
        Some(hex::encode(<sm3::Sm3 as sm3::Digest>::digest(&tbs)).as_str())
    );
}

#[tokio::test]
async fn enrolment_needs_the_enrolment_token() {
    let broker = TestBroker::start().await;
    let service = TestService::start(&broker).await;
    let client = service.client().await;
    assert_eq!(
        code(client.enroll("x", None).await.map(|_| ())),
        "unauthorized"
    );
    assert_eq!(
        code(client.enroll("x", Some("guess")).await.map(|_| ())),
        "unauthorized"
    );
}

#[tokio::test]
async fn bytes_that_no_session_asked_for_are_never_co_signed() {
    let (broker, _service, phone) = enrol_a_phone().await;

    // A session the broker never had.
    let unknown = Context::Session(bzt_cosigner::wire::SessionRef {
        id: "nope".into(),
        phone_token: "t".into(),
        delegate: None,
    });
    assert_eq!(
        code(phone.sign(PIN, &unknown, b"any bytes").await),
        "not_requested"
    );

    // A real session, but another phone's token.
    let (tbs, session) = scan_a_login(&broker);
    let Context::Session(s) = &session else {
        unreachable!()
    };
    let stolen = Context::Session(bzt_cosigner::wire::SessionRef {
        id: s.id.clone(),
        phone_token: "not-the-token".into(),
        delegate: None,
    });
    assert_eq!(code(phone.sign(PIN, &stolen, &tbs).await), "not_requested");

    // The right session, but the phone wants its own bytes signed: the
    // service signs the broker's bytes, so no signature over the phone's verifies.
    let err = phone
        .sign(PIN, &session, b"pay 1,000,000 to mallory")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            bzt_cosigner::ClientError::Crypto(bzt_crypto::two_party::Error::BadSignature)
        ),
        "{err}"
    );

    // Once the session is over, nothing more.
    broker.finish(&session);
    assert_eq!(code(phone.sign(PIN, &session, &tbs).await), "not_requested");
}

#[tokio::test]
async fn a_replayed_pin_proof_is_refused() {
    let broker = TestBroker::start().await;
    let service = TestService::start(&broker).await;
    let proxy = RecordingProxy::start(&service.url).await;
    let mut phone = Phone::enrol(&service).await;
    phone.client = CosignerClient::new(&proxy.url, &phone.file.service_key).unwrap();
    let (tbs, session) = scan_a_login(&broker);
    phone.sign(PIN, &session, &tbs).await.unwrap();

    let replay = proxy.replay_last("/sign", &service.url).await;
    assert_eq!(replay.status(), 409);
    let body: serde_json::Value = replay.json().await.unwrap();
    assert_eq!(body["error"]["code"], "replayed");
}

#[tokio::test]
async fn five_wrong_pins_lock_the_key_until_its_owner_unlocks_it() {
    let (broker, _service, phone) = enrol_a_phone().await;
    let (tbs, session) = scan_a_login(&broker);

    for left in (1..=4).rev() {
        let err = phone.sign("000000", &session, &tbs).await.unwrap_err();
        assert_eq!(err.code(), Some("wrong_pin"));
        assert!(
            err.to_string().contains(&format!("{left} attempt")),
            "{err}"
        );
    }
    assert_eq!(code(phone.sign("111111", &session, &tbs).await), "locked");
    // The right PIN is refused too while locked, and does not reset the count.
    assert_eq!(code(phone.sign(PIN, &session, &tbs).await), "locked");
    let status = phone.key_status().await.unwrap();
    assert!(status.locked);

    let status = phone.admin("unlock").await.unwrap();
    assert!(!status.locked);
    phone.sign(PIN, &session, &tbs).await.unwrap();
}

#[tokio::test]
async fn wrong_pins_counted_in_file_mode_survive_a_restart() {
    let broker = TestBroker::start().await;
    let dir = tempfile::tempdir().unwrap();
    let service = TestService::start_with(config(&broker, dir.path())).await;
    let phone = Phone::enrol(&service).await;
    let tbs = challenge("login");
    let session = broker.scanned("login", &tbs, None);
    for _ in 0..2 {
        assert_eq!(
            code(phone.sign("000000", &session, &tbs).await),
            "wrong_pin"
        );
    }

    let restarted = TestService::start_with(config(&broker, dir.path())).await;
    let status = restarted
        .client()
        .await
        .key_status(ADMIN_TOKEN, &phone.file.key_id)
        .await
        .unwrap();
    assert_eq!(status.failures, 2);
}

#[tokio::test]
async fn wrong_pins_without_a_live_session_do_not_count() {
    let (_broker, _service, phone) = enrol_a_phone().await;
    // Whoever knows the key id but holds no session of this phone cannot lock it.
    let unknown = Context::Session(bzt_cosigner::wire::SessionRef {
        id: "nope".into(),
        phone_token: "t".into(),
        delegate: None,
    });
    for _ in 0..6 {
        assert_eq!(
            code(phone.sign("000000", &unknown, b"x").await),
            "not_requested"
        );
    }
    assert_eq!(phone.failures().await, 0);
}

#[tokio::test]
async fn parallel_guesses_get_five_checks_in_all() {
    let broker = TestBroker::start().await;
    let service = TestService::start(&broker).await;
    let phone = std::sync::Arc::new(Phone::enrol(&service).await);
    let (tbs, session) = scan_a_login(&broker);
    // A slow broker lines every guess up past the "is it locked?" check
    // before any of them is checked.
    broker.answer_after(std::time::Duration::from_millis(300));
    let guess = |pin: String| {
        let (phone, session, tbs) = (phone.clone(), session.clone(), tbs.clone());
        tokio::spawn(async move { phone.sign(&pin, &session, &tbs).await.map(|_| ()) })
    };
    let before = broker.asked.load(std::sync::atomic::Ordering::SeqCst);
    let wrong: Vec<_> = (0..19).map(|i| guess(format!("{i:06}"))).collect();
    // Send the right PIN once all nineteen wait at the broker, not yet counted.
    while broker.asked.load(std::sync::atomic::Ordering::SeqCst) < before + 19 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let right = guess(PIN.to_owned());
    let mut codes = Vec::new();
    for g in wrong {
        codes.push(code(g.await.unwrap()));
    }
    let wrong_pin = codes.iter().filter(|c| *c == "wrong_pin").count();
    assert_eq!(wrong_pin, 4, "{codes:?}");
    // The right PIN came twentieth: checked, it would have been a sixth guess.
    assert_eq!(code(right.await.unwrap()), "locked");
}

#[tokio::test]
async fn a_right_pin_resets_the_count_of_wrong_ones() {
    let (broker, _service, phone) = enrol_a_phone().await;
    let (tbs, session) = scan_a_login(&broker);
    for _ in 0..4 {
        assert_eq!(
            code(phone.sign("000000", &session, &tbs).await),
            "wrong_pin"
        );
    }
    phone.sign(PIN, &session, &tbs).await.unwrap();
    assert_eq!(phone.failures().await, 0);
}

#[tokio::test]
async fn a_frozen_key_is_refused_and_works_again_after_unfreezing() {
    let (broker, _service, phone) = enrol_a_phone().await;
    let (tbs, session) = scan_a_login(&broker);

    phone.admin("freeze").await.unwrap();
    assert_eq!(code(phone.sign(PIN, &session, &tbs).await), "frozen");
    let ct = phone.seal_to_joint_key(b"content-key-16B!");
    let dsession = broker.scanned("decrypt", &challenge("decrypt"), None);
    assert_eq!(code(phone.decrypt(PIN, &dsession, &ct).await), "frozen");

    phone.admin("unfreeze").await.unwrap();
    phone.sign(PIN, &session, &tbs).await.unwrap();
    assert_eq!(
        phone.decrypt(PIN, &dsession, &ct).await.unwrap(),
        b"content-key-16B!"
    );
}

#[tokio::test]
async fn a_revoked_key_never_works_again_and_its_share_is_gone_from_the_store() {
    let (broker, service, phone) = enrol_a_phone().await;
    let (tbs, session) = scan_a_login(&broker);

    let status = phone.admin("revoke").await.unwrap();
    assert_eq!(status.state, "revoked");
    assert_eq!(code(phone.sign(PIN, &session, &tbs).await), "revoked");
    for action in ["unfreeze", "unlock", "freeze", "revoke"] {
        assert_eq!(code(phone.admin(action).await), "revoked");
    }
    // A new enrolment is a new key: the old one stays dead.
    let again = Phone::enrol(&service).await;
    assert_ne!(again.file.key_id, phone.file.key_id);
    assert_eq!(code(phone.sign(PIN, &session, &tbs).await), "revoked");
    // The store keeps a tombstone without the share.
    let store: serde_json::Value =
        serde_json::from_slice(&std::fs::read(service.config.store_path()).unwrap()).unwrap();
    assert!(store["keys"][&phone.file.key_id]["sealed_share"].is_null());
    assert!(store["keys"][&again.file.key_id]["sealed_share"].is_string());
}

#[tokio::test]
async fn co_decryption_happens_only_inside_the_opening_window() {
    let (broker, _service, phone) = enrol_a_phone().await;
    let ct = phone.seal_to_joint_key(b"content-key-16B!");
    let now = OffsetDateTime::now_utc();
    let window = |from: Duration, to: Duration| {
        Some(Opening {
            not_before: rfc3339(now + from),
            not_after: rfc3339(now + to),
        })
    };

    let early = broker.scanned(
        "decrypt",
        &challenge("decrypt"),
        window(Duration::hours(1), Duration::hours(2)),
    );
    assert_eq!(
        code(phone.decrypt(PIN, &early, &ct).await),
        "outside_opening_window"
    );
    let late = broker.scanned(
        "decrypt",
        &challenge("decrypt"),
        window(Duration::hours(-2), Duration::hours(-1)),
    );
    assert_eq!(
        code(phone.decrypt(PIN, &late, &ct).await),
        "outside_opening_window"
    );
    let open = broker.scanned(
        "decrypt",
        &challenge("decrypt"),
        window(Duration::minutes(-1), Duration::hours(1)),
    );
    assert_eq!(
        phone.decrypt(PIN, &open, &ct).await.unwrap(),
        b"content-key-16B!"
    );
    // One co-decryption per decrypt session.
    assert_eq!(code(phone.decrypt(PIN, &open, &ct).await), "already_used");
    // A login session cannot be used to decrypt.
    let login = broker.scanned("login", &challenge("login"), None);
    assert_eq!(code(phone.decrypt(PIN, &login, &ct).await), "not_requested");
}

#[tokio::test]
async fn a_window_the_hall_registered_binds_even_when_the_broker_omits_it() {
    let (broker, _service, phone) = enrol_a_phone().await;
    let ct = phone.seal_to_joint_key(b"content-key-16B!");
    let header_sm3 = hex::encode([7u8; 32]);
    let now = OffsetDateTime::now_utc();
    let window = OpeningWindow {
        envelope_sm3: header_sm3.clone(),
        not_before: rfc3339(now + Duration::hours(1)),
        not_after: rfc3339(now + Duration::hours(2)),
    };
    assert_eq!(
        code(phone.client.register_opening("not-the-hall", &window).await),
        "unauthorized"
    );
    phone
        .client
        .register_opening(HALL_TOKEN, &window)
        .await
        .unwrap();

    let mut tbs = challenge("decrypt");
    tbs.extend_from_slice(format!("\nenvelope:{header_sm3}").as_bytes());
    // A (compromised) broker says nothing of a window.
    let session = broker.scanned("decrypt", &tbs, None);
    assert_eq!(
        code(phone.decrypt(PIN, &session, &ct).await),
        "outside_opening_window"
    );
}

#[tokio::test]
async fn the_joint_key_co_signs_its_own_certificate_request_only_for_itself() {
    use x509_cert::der::Encode;
    let (_broker, service, phone) = enrol_a_phone().await;
    let other = Phone::enrol(&service).await;
    let info_for = |public_hex: &str| {
        let spki = x509_cert::spki::SubjectPublicKeyInfoOwned::from_key(
            &sm2::PublicKey::from_sec1_bytes(&hex::decode(public_hex).unwrap()).unwrap(),
        )
        .unwrap();
        x509_cert::request::CertReqInfo {
            version: x509_cert::request::Version::V1,
            subject: "CN=split".parse().unwrap(),
            public_key: spki,
            attributes: Default::default(),
        }
        .to_der()
        .unwrap()
    };
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let mine = info_for(&phone.file.public_key);
    let csr = Context::Csr(CsrRef {
        tbs_b64: b64(&mine),
    });
    let sig = phone.sign(PIN, &csr, &mine).await.unwrap();
    assert!(phone.verifying_key().verify(&mine, &sig).is_ok());

    let theirs = info_for(&other.file.public_key);
    let csr = Context::Csr(CsrRef {
        tbs_b64: b64(&theirs),
    });
    assert_eq!(code(phone.sign(PIN, &csr, &theirs).await), "not_requested");
}

#[tokio::test]
async fn the_service_refuses_points_off_the_curve_before_using_its_share() {
    use bzt_cosigner::wire::{channel_aad, PinProofWire, SealedBody, SignRequest};
    let (broker, service, phone) = enrol_a_phone().await;
    let (_tbs, session) = scan_a_login(&broker);
    let service_key = bzt_crypto::two_party::point_from_hex(&phone.file.service_key).unwrap();
    let generator = bzt_crypto::two_party::encode_point(&sm2::ProjectivePoint::GENERATOR);
    let mut off_curve = generator.clone();
    off_curve[64] ^= 1;
    for (name, q1) in [
        ("off the curve", hex::encode(&off_curve)),
        ("identity", "00".to_owned()),
        ("compressed", hex::encode(&generator[..33])),
    ] {
        let request = SignRequest {
            context: session.clone(),
            q1,
            pin_proof: PinProofWire {
                nonce: "00".repeat(16),
                issued_at: OffsetDateTime::now_utc().unix_timestamp(),
                proof: "00".repeat(97),
            },
            seal_tbs_b64: None,
        };
        let path = format!("/v1/keys/{}/sign", phone.file.key_id);
        let (sealed, _) = bzt_crypto::two_party::channel::seal_request(
            &service_key,
            &channel_aad("POST", &path),
            &serde_json::to_vec(&request).unwrap(),
        )
        .unwrap();
        let resp = reqwest::Client::new()
            .post(format!("{}{path}", service.url))
            .json(&SealedBody::from_sealed(&sealed))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{name}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_request", "{name}");
    }
    // None of them counted as a wrong PIN.
    assert_eq!(phone.failures().await, 0);
}
