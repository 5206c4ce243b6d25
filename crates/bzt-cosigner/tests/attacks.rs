//! The attackers of docs/key-splitting.md, played for real against captured
//! traffic, the phone's file and the service's store. Each attack is first
//! shown to work where the design says it would (messages without the
//! channel encryption, decryption without blinding), so a pass means the
//! defence held, not that the attack was toothless.

mod support;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bzt_cosigner::sealing::MasterKey;
use bzt_cosigner::wire::{
    channel_aad, DecryptAnswer, DecryptRequest, EnrolAnswer, SealedAnswer, SealedBody, SignAnswer,
    SignRequest,
};
use bzt_cosigner::{CosignerClient, SplitKeyFile};
use bzt_crypto::two_party::{
    decode_scalar, der_c1, encode_scalar, open_der_with_shared_point, point_from_hex, ChannelKey,
    PinProof, PinStatement, SchnorrProof, ServiceShare,
};
use sm2::elliptic_curve::ops::Invert;
use sm2::elliptic_curve::Group;
use sm2::{NonZeroScalar, ProjectivePoint, Scalar};
use support::*;

const PIN: &str = "735194";

/// Every log line of this test binary (service and client alike), for the
/// search for secrets.
fn captured_logs() -> &'static std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    use std::sync::{Arc, Mutex, OnceLock};
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || LogWriter(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("one subscriber per test binary");
        logs
    })
}

struct LogWriter(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One exchange as JSON: path, request body, answer body.
#[derive(Clone)]
struct Message {
    path: String,
    request: serde_json::Value,
    answer: serde_json::Value,
}

fn as_messages(exchanges: &[Exchange]) -> Vec<Message> {
    exchanges
        .iter()
        .map(|e| Message {
            path: e.path.clone(),
            request: serde_json::from_slice(&e.request).unwrap_or_default(),
            answer: serde_json::from_slice(&e.response).unwrap_or_default(),
        })
        .collect()
}

/// What the service (or anyone with its store and master key) can read.
struct ServiceSecrets {
    channel: ChannelKey,
    d2: ServiceShare,
}

fn service_secrets(service: &TestService, key_id: &str) -> ServiceSecrets {
    let store: serde_json::Value =
        serde_json::from_slice(&std::fs::read(service.config.store_path()).unwrap()).unwrap();
    let master = MasterKey::from_hex(MASTER_KEY).unwrap();
    let channel = master
        .open(b"channel-key", store["channel_key"].as_str().unwrap())
        .unwrap();
    let share = store["keys"][key_id]["sealed_share"].as_str().unwrap();
    let d2 = master
        .open(format!("share:{key_id}").as_bytes(), share)
        .unwrap();
    ServiceSecrets {
        channel: ChannelKey::from_bytes(&channel).unwrap(),
        d2: ServiceShare::from_bytes(&d2).unwrap(),
    }
}

/// The captured messages with the channel encryption taken off: what the
/// traffic would be without it.
fn unsealed(messages: &[Message], channel: &ChannelKey) -> Vec<Message> {
    messages
        .iter()
        .filter_map(|m| {
            let body: SealedBody = serde_json::from_value(m.request.clone()).ok()?;
            let aad = channel_aad("POST", &m.path);
            let (plain, keys) = channel.open_request(&aad, &body.to_sealed()?).ok()?;
            let answer: SealedAnswer = serde_json::from_value(m.answer.clone()).ok()?;
            let answer = keys.open_response(&aad, &answer.to_sealed()?).ok()?;
            Some(Message {
                path: m.path.clone(),
                request: serde_json::from_slice(&plain).ok()?,
                answer: serde_json::from_slice(&answer).ok()?,
            })
        })
        .collect()
}

/// The offline PIN test: which candidates does some captured message confirm?
/// A candidate PIN unmasks to a candidate `d1`; it is confirmed by
/// (a) a PIN proof that verifies for `d1⁻¹·G`, (b) an enrolment answer's `P2`
/// with `d1⁻¹·P2 − G` = the public key, (c) a signing round `(Q1, r, s1)`
/// plus the public signature `s` with `((s + r)/d1 − s1)·G = Q1`.
fn confirmed_pins(
    file: &SplitKeyFile,
    messages: &[Message],
    signatures: &[sm2::dsa::Signature],
    candidates: &[(String, NonZeroScalar)],
) -> Vec<String> {
    let joint = file.joint_public_key().unwrap();
    candidates
        .iter()
        .filter(|(_, d1)| {
            let d1 = *d1;
            let p1 = ProjectivePoint::mul_by_generator(&*d1.invert());
            messages.iter().any(|m| {
                let key_id = m.path.split('/').nth(3).unwrap_or_default();
                if let Ok(answer) = serde_json::from_value::<EnrolAnswer>(m.answer.clone()) {
                    if let Ok(p2) = point_from_hex(&answer.p2) {
                        if p2 * *d1.invert() - ProjectivePoint::generator() == joint {
                            return true;
                        }
                    }
                }
                let (op, context, point, proof) = if let Ok(r) =
                    serde_json::from_value::<SignRequest>(m.request.clone())
                {
                    if let Ok(a) = serde_json::from_value::<SignAnswer>(m.answer.clone()) {
                        let q1 = point_from_hex(&r.q1).unwrap();
                        let (rr, s1) = (
                            decode_scalar(&hex::decode(&a.r).unwrap()).unwrap(),
                            decode_scalar(&hex::decode(&a.s1).unwrap()).unwrap(),
                        );
                        for sig in signatures {
                            let w1 = (*sig.s() + *rr) * *d1.invert() - *s1;
                            if ProjectivePoint::mul_by_generator(&w1) == q1 {
                                return true;
                            }
                        }
                    }
                    ("sign", r.context, r.q1, r.pin_proof)
                } else if let Ok(r) = serde_json::from_value::<DecryptRequest>(m.request.clone()) {
                    ("decrypt", r.context, r.t1, r.pin_proof)
                } else {
                    return false;
                };
                let canonical = context.canonical();
                let point = point_from_hex(&point).unwrap();
                let statement = PinStatement {
                    key_id,
                    operation: op,
                    context: &canonical,
                    point: &point,
                };
                let proof = PinProof {
                    nonce: hex::decode(&proof.nonce).unwrap().try_into().unwrap(),
                    issued_at: proof.issued_at,
                    proof: SchnorrProof::from_hex(&proof.proof).unwrap(),
                };
                proof.verify(&p1, &statement).is_ok()
            })
        })
        .map(|(pin, _)| pin.clone())
        .collect()
}

/// Enrols a phone through the recording proxy, signs a login and decrypts a
/// key, as a thief's capture would see it.
async fn phone_session_through_proxy() -> (
    TestBroker,
    TestService,
    RecordingProxy,
    SplitKeyFile,
    Vec<sm2::dsa::Signature>,
    Vec<u8>,
) {
    let broker = TestBroker::start().await;
    let service = TestService::start(&broker).await;
    let proxy = RecordingProxy::start(&service.url).await;
    let client = CosignerClient::discover(&proxy.url).await.unwrap();
    let enrollment = client
        .enroll("thief target", Some(ENROLMENT_TOKEN))
        .await
        .unwrap();
    let file = SplitKeyFile::with_iterations(&enrollment, &client, PIN, 1000).unwrap();
    let d1 = file.unmask(PIN).unwrap();
    let joint = file.joint_public_key().unwrap();

    let tbs = challenge("login");
    let login = broker.scanned("login", &tbs, None);
    let sig = client
        .sign(&file.key_id, &d1, &joint, &login, &tbs)
        .await
        .unwrap();

    let key = sm2::PublicKey::from_sec1_bytes(&hex::decode(&file.public_key).unwrap()).unwrap();
    let wrapped = sm2::pke::EncryptingKey::new(key)
        .encrypt_der(&mut getrandom::SysRng, b"bid-content-key!")
        .unwrap();
    let decrypt = broker.scanned("decrypt", &challenge("decrypt"), None);
    assert_eq!(
        client
            .decrypt(&file.key_id, &d1, &decrypt, &wrapped)
            .await
            .unwrap(),
        b"bid-content-key!"
    );
    (broker, service, proxy, file, vec![sig], wrapped)
}

/// 200 guesses, the right one among them, each with the share it unmasks.
fn pin_candidates(file: &SplitKeyFile) -> Vec<(String, NonZeroScalar)> {
    let mut pins: Vec<String> = (0..200u32)
        .map(|i| format!("{:06}", i * 2_447 % 1_000_000))
        .collect();
    pins[137] = PIN.to_owned();
    pins.into_iter()
        .map(|pin| {
            let d1 = file.unmask(&pin).unwrap();
            (pin, d1)
        })
        .collect()
}

#[tokio::test]
async fn a_capture_plus_the_phone_file_does_not_let_a_thief_test_pins() {
    let (_broker, service, proxy, file, signatures, _) = phone_session_through_proxy().await;
    let captured = as_messages(&proxy.exchanges());
    let candidates = pin_candidates(&file);

    // Without the channel encryption each kind of message would give the PIN away…
    let secrets = service_secrets(&service, &file.key_id);
    let clear = unsealed(&captured, &secrets.channel);
    assert_eq!(clear.len(), 3, "enrolment, sign and decrypt");
    for message in &clear {
        assert_eq!(
            confirmed_pins(
                &file,
                std::slice::from_ref(message),
                &signatures,
                &candidates
            ),
            vec![PIN.to_owned()],
            "{}",
            message.path
        );
    }
    // …but what actually crossed the wire confirms no candidate.
    assert!(confirmed_pins(&file, &captured, &signatures, &candidates).is_empty());
}

#[tokio::test]
async fn no_message_log_line_or_phone_file_holds_d_d2_or_the_pin() {
    let logs = captured_logs();
    let (_broker, service, proxy, file, _, _) = phone_session_through_proxy().await;
    let secrets = service_secrets(&service, &file.key_id);
    let d1 = file.unmask(PIN).unwrap();
    let d2 = decode_scalar(&secrets.d2.to_bytes()).unwrap();
    // Only a test may compute d: (1 + d)⁻¹ = d1·d2.
    let d = Option::<Scalar>::from((*d1 * *d2).invert()).unwrap() - Scalar::ONE;

    let mut needles: Vec<(String, Vec<u8>)> = vec![("PIN".into(), PIN.as_bytes().to_vec())];
    for (name, scalar) in [("d", d), ("d1", *d1), ("d2", *d2)] {
        let raw = encode_scalar(&scalar);
        needles.push((format!("{name} raw"), raw.to_vec()));
        needles.push((format!("{name} hex"), hex::encode(raw).into_bytes()));
        needles.push((format!("{name} HEX"), hex::encode_upper(raw).into_bytes()));
        needles.push((format!("{name} base64"), B64.encode(raw).into_bytes()));
    }
    let phone_file = serde_json::to_vec_pretty(&file).unwrap();
    let wire = proxy.all_bytes();
    assert!(wire.len() > 1000, "the capture holds the exchanges");
    let log = logs.lock().unwrap().clone();
    assert!(
        String::from_utf8_lossy(&log).contains("co-signing service operation"),
        "the logs were captured"
    );
    for (name, needle) in &needles {
        for (place, haystack) in [
            ("the captured messages", &wire),
            ("the phone's file", &phone_file),
            ("the logs", &log),
        ] {
            assert!(
                !haystack
                    .windows(needle.len())
                    .any(|w| w == needle.as_slice()),
                "{name} found in {place}"
            );
        }
    }
    // The service's store, read without the master key, holds neither d2 nor
    // P1 (which, with the phone file, would test PIN guesses).
    let store = std::fs::read(service.config.store_path()).unwrap();
    let p1 = hex::encode(bzt_crypto::two_party::encode_point(
        &ProjectivePoint::mul_by_generator(&*d1.invert()),
    ));
    let mut store_needles: Vec<(String, Vec<u8>)> = needles
        .iter()
        .filter(|(n, _)| n.starts_with("d2") || n == "PIN")
        .cloned()
        .collect();
    store_needles.push(("P1 hex".into(), p1.clone().into_bytes()));
    store_needles.push(("P1 x".into(), p1.as_bytes()[2..66].to_vec()));
    for (name, needle) in &store_needles {
        assert!(
            !store.windows(needle.len()).any(|w| w == needle.as_slice()),
            "{name} found in the service's store"
        );
    }
    // The search can find what is there: the store does hold the joint key,
    assert!(store.windows(130).any(|w| w == file.public_key.as_bytes()));
    // and the file its masked share.
    assert!(phone_file
        .windows(64)
        .any(|w| w == file.masked_share.as_bytes()));
}

#[tokio::test]
async fn the_services_view_of_a_decryption_and_the_bid_file_do_not_open_it() {
    let (_broker, service, proxy, file, _, wrapped) = phone_session_through_proxy().await;
    let secrets = service_secrets(&service, &file.key_id);
    let seen = unsealed(&as_messages(&proxy.exchanges()), &secrets.channel);
    let decryption = seen.iter().find(|m| m.path.ends_with("/decrypt")).unwrap();
    let request: DecryptRequest = serde_json::from_value(decryption.request.clone()).unwrap();
    let answer: DecryptAnswer = serde_json::from_value(decryption.answer.clone()).unwrap();
    let t1 = point_from_hex(&request.t1).unwrap();
    let t2 = point_from_hex(&answer.t2).unwrap();
    let c1 = der_c1(&wrapped).unwrap();
    let d2 = decode_scalar(&secrets.d2.to_bytes()).unwrap();

    // Everything the service can form from T1, T2, C1 and d2 as a guess at d·C1.
    let attack = |t1: ProjectivePoint, t2: ProjectivePoint| -> bool {
        let d2_inv = *d2.invert();
        let guesses = [
            t2 - c1,
            t1 - c1,
            c1 * d2_inv - c1,
            c1 * *d2 - c1,
            t1 * d2_inv - c1,
            t2 * d2_inv - c1,
            t2 * *d2 - c1,
            t2 - t1,
            t2,
            t1,
        ];
        guesses
            .iter()
            .any(|g| open_der_with_shared_point(&wrapped, g).is_ok())
    };
    assert!(
        !attack(t1, t2),
        "the blinded transcript opened the bid file"
    );

    // The same attack opens it if the phone had not blinded (T1 = d1⁻¹·C1).
    let d1: NonZeroScalar = file.unmask(PIN).unwrap();
    let unblinded_t1 = c1 * *d1.invert();
    let unblinded_t2 = unblinded_t1 * *d2.invert();
    assert!(
        attack(unblinded_t1, unblinded_t2),
        "control: the unblinded variant leaks"
    );
}
