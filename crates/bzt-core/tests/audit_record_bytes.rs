//! The exact bytes of audit record lines, pinned. Existing logs stay
//! verifiable only while a record serialises to the same bytes it was hashed
//! over, so any change to `bzt_core::audit::Record`'s shape (field order,
//! names, which optional fields are left out, escaping) fails here.
//!
//! The three lines below are a fixed log. Their hashes were computed with
//! `openssl dgst -sm3` over each line without its `hash`, and the checkpoint
//! was signed by an OpenSSL-made SM2 key (`openssl pkeyutl -sign -rawin
//! -digest sm3 -pkeyopt distid:1234567812345678`), not by this crate.

use bzt_core::audit::{verify_lines, Checkpoint, Event, Operation, Record, RecordBody, GENESIS};
use bzt_core::session::Delegate;
use bzt_core::Timestamp;

/// An operation with every optional field present (and text that needs escaping).
const FULL: &str = r#"{"seq":1,"time":"2026-11-30T00:53:20.123Z","prev":"0000000000000000000000000000000000000000000000000000000000000000","type":"operation","app":"bidding-portal","kind":"conversation_request","session_id":"s-1","conversation_id":"c-1","request_id":"r-1","cert_serial":"1a2b","cert_issuer":"CN=测试CA,O=bzt","cert_subject":"CN=张三,O=某某建设有限公司","tbs_sm3":"66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0","outcome":"approved","reason":"signed \"as shown\"\n","auto_confirmed":true,"device_name":"华为 Mate","requester_ip":"10.0.0.7","requester_user_agent":"Mozilla/5.0","actor":"ops","delegate":{"name":"李四","device":"d-9"},"hash":"e491a0bb3e6d2c1705125c9a5b4c0030f3f0a02f828dae48c10cbb9279f9b8b2"}"#;

/// An operation with every optional field absent (left out, not `null`).
const MINIMAL: &str = r#"{"seq":2,"time":"2026-11-30T00:53:21.000Z","prev":"e491a0bb3e6d2c1705125c9a5b4c0030f3f0a02f828dae48c10cbb9279f9b8b2","type":"operation","app":"bidding-portal","kind":"login","session_id":"s-2","cert_serial":"","cert_issuer":"","cert_subject":"","tbs_sm3":"","outcome":"rejected","device_name":"phone","hash":"63d7d87e5cdd6b650473f43be1672b68fb959e9aa51f42cc62ed8fa9c725f154"}"#;

/// A checkpoint over the head after `MINIMAL`.
const CHECKPOINT: &str = r#"{"seq":3,"time":"2026-11-30T00:53:22.000Z","prev":"63d7d87e5cdd6b650473f43be1672b68fb959e9aa51f42cc62ed8fa9c725f154","type":"checkpoint","public_key":"04c9eafb4f3b9b8f6fa09bb4c70ad6d4c9ade9aa7bc8894db9bc5e4581d391b73738bf149b5285c40a2665ad459046de7f362e06228d1a0130fc74416613eccb47","signature_b64":"MEUCIEp2tPyHbakMxyMQ9NJ0T0MczI2PX0XrGFKN9CBRP5dGAiEA68GBxZCSZn/GRCM0sbWePCpdkUxwy4mc9f8Y0jd5kvM=","hash":"b1d0dbf2ddffb5f546be2d9db8979539d29eec5c51ed52c37f4310defb7c9b42"}"#;

const OPENSSL_KEY: &str = "04c9eafb4f3b9b8f6fa09bb4c70ad6d4c9ade9aa7bc8894db9bc5e4581d391b73738bf149b5285c40a2665ad459046de7f362e06228d1a0130fc74416613eccb47";

fn full() -> RecordBody {
    RecordBody {
        seq: 1,
        time: Timestamp::from_unix_millis(1_796_000_000_123),
        prev: GENESIS.to_owned(),
        event: Event::Operation(Operation {
            app: "bidding-portal".into(),
            kind: "conversation_request".into(),
            session_id: "s-1".into(),
            conversation_id: Some("c-1".into()),
            request_id: Some("r-1".into()),
            cert_serial: "1a2b".into(),
            cert_issuer: "CN=测试CA,O=bzt".into(),
            cert_subject: "CN=张三,O=某某建设有限公司".into(),
            tbs_sm3: "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0".into(),
            outcome: "approved".into(),
            reason: Some("signed \"as shown\"\n".into()),
            auto_confirmed: Some(true),
            device_name: "华为 Mate".into(),
            requester_ip: Some("10.0.0.7".into()),
            requester_user_agent: Some("Mozilla/5.0".into()),
            actor: Some("ops".into()),
            delegate: Some(Delegate {
                name: "李四".into(),
                device: "d-9".into(),
            }),
        }),
    }
}

fn minimal(prev: &str) -> RecordBody {
    RecordBody {
        seq: 2,
        time: Timestamp::from_unix_millis(1_796_000_001_000),
        prev: prev.to_owned(),
        event: Event::Operation(Operation {
            app: "bidding-portal".into(),
            kind: "login".into(),
            session_id: "s-2".into(),
            conversation_id: None,
            request_id: None,
            cert_serial: String::new(),
            cert_issuer: String::new(),
            cert_subject: String::new(),
            tbs_sm3: String::new(),
            outcome: "rejected".into(),
            reason: None,
            auto_confirmed: None,
            device_name: "phone".into(),
            requester_ip: None,
            requester_user_agent: None,
            actor: None,
            delegate: None,
        }),
    }
}

#[test]
fn records_are_sealed_and_written_to_the_pinned_bytes() {
    let first = full().seal();
    assert_eq!(first.to_line(), FULL);
    let second = minimal(&first.hash).seal();
    assert_eq!(second.to_line(), MINIMAL);
    let checkpoint = RecordBody {
        seq: 3,
        time: Timestamp::from_unix_millis(1_796_000_002_000),
        prev: second.hash.clone(),
        event: Event::Checkpoint(Checkpoint {
            public_key: OPENSSL_KEY.into(),
            signature_b64: "MEUCIEp2tPyHbakMxyMQ9NJ0T0MczI2PX0XrGFKN9CBRP5dGAiEA68GBxZCSZn/GRCM0sbWePCpdkUxwy4mc9f8Y0jd5kvM=".into(),
        }),
    }
    .seal();
    assert_eq!(checkpoint.to_line(), CHECKPOINT);
}

#[test]
fn pinned_lines_read_back_to_the_same_bytes() {
    for line in [FULL, MINIMAL, CHECKPOINT] {
        let record: Record = serde_json::from_str(line).expect("a pinned line parses");
        assert_eq!(record.to_line(), line);
        assert_eq!(record.body.digest(), record.hash, "OpenSSL's SM3 of {line}");
    }
}

#[test]
fn the_pinned_log_verifies_with_the_openssl_key() {
    let verified = verify_lines([FULL, MINIMAL, CHECKPOINT], Some(OPENSSL_KEY)).expect("verifies");
    assert_eq!(
        (
            verified.records,
            verified.checkpoints,
            verified.unsigned_tail
        ),
        (3, 1, 0)
    );
    assert_eq!(
        verified.head,
        "b1d0dbf2ddffb5f546be2d9db8979539d29eec5c51ed52c37f4310defb7c9b42"
    );
}
