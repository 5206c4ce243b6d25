//! The HTTP side against a mock broker: what the phone sends, and how it reads answers.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bzt_phone::{ApproveExtras, ChallengeError, Error, Kind, Phone, QrText, SessionStatus};
use serde_json::{json, Value};

use crate::common::{openssl_verifies, Canned, Fixture, MockBroker};

const EXPIRES: &str = "2026-11-23T15:43:02.123Z";

fn challenge(kind: &str, session: &str) -> String {
    format!(
        "BZT-CHALLENGE-V1\nkind:{kind}\napp:demo\nsession:{session}\nnonce:AAECAwQFBgcICQoLDA0ODw\nexpires:{EXPIRES}"
    )
}

/// A claim answer for session `s1` of `kind` whose tbs is `tbs`, with fields a newer broker might
/// add that this phone does not know.
fn claim_answer(kind: &str, tbs: &[u8]) -> Value {
    json!({
        "session": {
            "id": "s1", "kind": kind,
            "display": {"title": "登录 示例交易平台", "detail": "投标人登录"},
            "app": {"id": "demo", "name": "示例交易平台"},
            "requester": {"ip": "203.0.113.7", "user_agent": "Mozilla/5.0", "origin": "https://bid.example.cn"},
            "expires_at": EXPIRES,
            "accept": ["platform"],
            "some_future_field": {"x": 1}
        },
        "tbs_b64": STANDARD.encode(tbs),
        "phone_token": "ptok-1",
        "another_future_field": true
    })
}

fn ok_complete() -> Canned {
    Canned::json(200, json!({"id": "s1", "status": "approved", "version": 3}))
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

async fn setup(claim: Value, complete: Canned) -> (Fixture, MockBroker, Phone, QrText) {
    let fx = Fixture::new();
    let broker = MockBroker::start(Canned::json(200, claim), complete).await;
    let qr = QrText::parse(&format!("{}/q/s1#c1aim-secret", broker.base_url())).unwrap();
    (fx, broker, Phone::new(reqwest::Client::new()), qr)
}

#[tokio::test]
async fn login_with_number_matching() {
    let mut answer = claim_answer("login", challenge("login", "s1").as_bytes());
    answer["match_choices"] = json!(["12", "34", "56"]);
    let (fx, broker, phone, qr) = setup(answer, ok_complete()).await;
    let identity = fx.identity.clone().with_device("dev-1", "张三的手机");

    let claimed = phone.claim(&qr, &identity).await.unwrap();
    assert_eq!(claimed.session_id, "s1");
    assert_eq!(claimed.kind, Kind::Login);
    assert_eq!(claimed.app.name, "示例交易平台");
    assert_eq!(claimed.display.detail.as_deref(), Some("投标人登录"));
    let requester = claimed.requester.clone().unwrap();
    assert_eq!(requester.ip.as_deref(), Some("203.0.113.7"));
    assert_eq!(requester.origin.as_deref(), Some("https://bid.example.cn"));
    assert_eq!(claimed.expires_at, EXPIRES);
    assert_eq!(claimed.accept, vec!["platform"]);
    assert_eq!(claimed.phone_token.expose(), "ptok-1");
    assert_eq!(claimed.match_choices.as_deref().unwrap().len(), 3);
    assert!(!claimed.conversation_allowed);
    assert_eq!(claimed.base_url, broker.base_url());
    assert!(claimed.describe_zh().contains("操作：扫码登录"));
    assert!(
        !format!("{claimed:?}").contains("ptok-1"),
        "Debug must hide the token"
    );

    // Without a pick, nothing is sent.
    let err = phone
        .approve(&claimed, &identity, ApproveExtras::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Refused(_)), "{err:?}");
    let err = phone
        .approve(
            &claimed,
            &identity,
            ApproveExtras {
                match_code: Some("99".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Refused(_)), "{err:?}");
    assert_eq!(broker.seen().len(), 1, "only the claim reached the broker");

    let done = phone
        .approve(
            &claimed,
            &identity,
            ApproveExtras {
                match_code: Some("34".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(done.id, "s1");
    assert_eq!(done.status, SessionStatus::Approved.as_str());
    assert_eq!(done.version, 3);
    assert!(done.conversation.is_none());

    let seen = broker.seen();
    assert_eq!(seen.len(), 2);
    // The claim body is exactly the protocol's: the broker rejects unknown fields.
    assert_eq!(seen[0].target, "claim");
    assert_eq!(
        seen[0].body,
        json!({"qr_text": qr.as_str(), "device": {"id": "dev-1", "name": "张三的手机"}})
    );
    assert_eq!(seen[0].authorization, None);
    // The completion goes to the session, with the phone token, and only the fields that apply.
    let complete = &seen[1];
    assert_eq!(complete.target, "s1");
    assert_eq!(complete.authorization.as_deref(), Some("Bearer ptok-1"));
    assert_eq!(
        keys(&complete.body),
        ["certificate_pem", "match_code", "signature_b64"]
    );
    assert_eq!(complete.body["match_code"], "34");
    assert_eq!(complete.body["certificate_pem"], fx.leaf.cert_pem.as_str());
    let sig = STANDARD
        .decode(complete.body["signature_b64"].as_str().unwrap())
        .unwrap();
    let tbs = challenge("login", "s1");
    assert!(openssl_verifies(
        fx.dir.path(),
        "phone.pem",
        tbs.as_bytes(),
        &sig
    ));
}

#[tokio::test]
async fn a_challenge_for_another_session_is_not_signed() {
    let answer = claim_answer("bind", challenge("bind", "s2").as_bytes());
    let (fx, broker, phone, qr) = setup(answer, ok_complete()).await;
    let claimed = phone.claim(&qr, &fx.identity).await.unwrap();
    let err = phone
        .approve(&claimed, &fx.identity, ApproveExtras::default())
        .await
        .unwrap_err();
    match err {
        Error::Challenge(ChallengeError::Mismatch { field, .. }) => assert_eq!(field, "session"),
        other => panic!("expected a session mismatch, got {other:?}"),
    }
    assert_eq!(broker.seen().len(), 1, "nothing but the claim was sent");

    // The user can still decline it.
    phone.reject(&claimed, "挑战不匹配").await.unwrap();
    let seen = broker.seen();
    assert_eq!(seen[1].body, json!({"reject": {"reason": "挑战不匹配"}}));
    assert_eq!(seen[1].authorization.as_deref(), Some("Bearer ptok-1"));
}

#[tokio::test]
async fn sign_with_a_conversation() {
    let tbs = b"%PDF-1.7 bid document bytes \x00\xff";
    let mut answer = claim_answer("sign", tbs);
    answer["conversation_allowed"] = json!(true);
    let complete = Canned::json(
        200,
        json!({"id": "s1", "status": "approved", "version": 3,
               "conversation": {"id": "c1", "phone_token": "cp-1", "expires_at": EXPIRES}}),
    );
    let (fx, broker, phone, qr) = setup(answer, complete).await;
    let claimed = phone.claim(&qr, &fx.identity).await.unwrap();
    assert_eq!(claimed.tbs, tbs);
    assert!(claimed.conversation_allowed);
    let done = phone
        .approve(
            &claimed,
            &fx.identity,
            ApproveExtras {
                open_conversation: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let conversation = done.conversation.unwrap();
    assert_eq!(conversation.id, "c1");
    assert_eq!(conversation.phone_token, "cp-1");
    let body = &broker.seen()[1].body;
    assert_eq!(
        keys(body),
        ["certificate_pem", "open_conversation", "signature_b64"]
    );
    let sig = STANDARD
        .decode(body["signature_b64"].as_str().unwrap())
        .unwrap();
    assert!(openssl_verifies(fx.dir.path(), "phone.pem", tbs, &sig));
}

#[tokio::test]
async fn kind_extras_are_checked_before_sending() {
    // encrypt: recipients are required and must be certificates.
    let (fx, broker, phone, qr) = setup(
        claim_answer("encrypt", challenge("encrypt", "s1").as_bytes()),
        ok_complete(),
    )
    .await;
    let claimed = phone.claim(&qr, &fx.identity).await.unwrap();
    let refused = |r: Result<_, Error>| matches!(r, Err(Error::Refused(_)));
    assert!(refused(
        phone
            .approve(&claimed, &fx.identity, ApproveExtras::default())
            .await
    ));
    let garbage = ApproveExtras {
        recipients_pem: vec!["not pem".into()],
        ..Default::default()
    };
    assert!(refused(
        phone.approve(&claimed, &fx.identity, garbage).await
    ));
    let wrong_kind = ApproveExtras {
        recipients_pem: vec![fx.leaf.cert_pem.clone()],
        open_conversation: true,
        ..Default::default()
    };
    assert!(refused(
        phone.approve(&claimed, &fx.identity, wrong_kind).await
    ));
    assert_eq!(broker.seen().len(), 1);
    let extras = ApproveExtras {
        recipients_pem: vec![fx.leaf.cert_pem.clone(), fx.ca.cert_pem().to_string()],
        ..Default::default()
    };
    phone.approve(&claimed, &fx.identity, extras).await.unwrap();
    let body = &broker.seen()[1].body;
    assert_eq!(
        keys(body),
        ["certificate_pem", "recipients_pem", "signature_b64"]
    );
    assert_eq!(body["recipients_pem"].as_array().unwrap().len(), 2);

    // login: no wrapped key, no recipients.
    let (fx, _broker, phone, qr) = setup(
        claim_answer("login", challenge("login", "s1").as_bytes()),
        ok_complete(),
    )
    .await;
    let claimed = phone.claim(&qr, &fx.identity).await.unwrap();
    let extras = ApproveExtras {
        wrapped_key_b64: Some("AAAA".into()),
        ..Default::default()
    };
    assert!(refused(phone.approve(&claimed, &fx.identity, extras).await));

    // An unknown kind can only be rejected.
    let (fx, _broker, phone, qr) = setup(claim_answer("teleport", b"x"), ok_complete()).await;
    let claimed = phone.claim(&qr, &fx.identity).await.unwrap();
    assert_eq!(claimed.kind, Kind::Unknown);
    assert!(refused(
        phone
            .approve(&claimed, &fx.identity, ApproveExtras::default())
            .await
    ));
    phone.reject(&claimed, "unsupported").await.unwrap();
}

#[tokio::test]
async fn broker_errors_are_typed() {
    let fx = Fixture::new();
    let phone = Phone::new(reqwest::Client::new());
    let claim_with = |canned: Canned| {
        let phone = phone.clone();
        let identity = fx.identity.clone();
        async move {
            let broker = MockBroker::start(canned, ok_complete()).await;
            let qr = QrText::parse(&format!("{}/q/s1#secret", broker.base_url())).unwrap();
            phone.claim(&qr, &identity).await
        }
    };

    let err = claim_with(Canned::json(
        409,
        json!({"error": {"code": "already_claimed", "message": "会话已被扫码"}}),
    ))
    .await
    .unwrap_err();
    let broker_err = err.broker().expect("a broker error").clone();
    assert_eq!(broker_err.status, 409);
    assert_eq!(broker_err.code, "already_claimed");
    assert_eq!(broker_err.message, "会话已被扫码");
    assert!(broker_err.is("already_claimed"));
    assert_eq!(broker_err.retry_after, None);

    let mut limited = Canned::json(
        429,
        json!({"error": {"code": "rate_limited", "message": "slow down"}}),
    );
    limited.headers.push(("retry-after", "7".into()));
    let err = claim_with(limited).await.unwrap_err();
    assert_eq!(
        err.broker().unwrap().retry_after,
        Some(std::time::Duration::from_secs(7))
    );

    let html = Canned {
        status: 502,
        headers: vec![("content-type", "text/html".into())],
        body: "<html>Bad Gateway</html>".into(),
    };
    match claim_with(html).await.unwrap_err() {
        Error::UnexpectedAnswer { status, detail } => {
            assert_eq!(status, 502);
            assert!(detail.contains("Bad Gateway"), "{detail}");
        }
        other => panic!("expected an unexpected answer, got {other:?}"),
    }

    // A 200 that is not a claim answer.
    let err = claim_with(Canned::json(200, json!({"session": {}})))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::UnexpectedAnswer { status: 200, .. }),
        "{err:?}"
    );

    // Nobody listening.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let qr = QrText::parse(&format!("http://{addr}/q/s1#secret")).unwrap();
    assert!(matches!(
        phone.claim(&qr, &fx.identity).await,
        Err(Error::Transport(_))
    ));
}

#[tokio::test]
async fn an_unusable_claim_answer_is_rejected_at_once() {
    let mut bad_tbs = claim_answer("login", b"x");
    bad_tbs["tbs_b64"] = json!("%%% not base64 %%%");
    let mut no_app = claim_answer("login", b"x");
    no_app["session"].as_object_mut().unwrap().remove("app");
    for answer in [bad_tbs, no_app] {
        let (fx, broker, phone, qr) = setup(answer, ok_complete()).await;
        let err = phone.claim(&qr, &fx.identity).await.unwrap_err();
        assert!(
            matches!(err, Error::UnexpectedAnswer { status: 200, .. }),
            "{err:?}"
        );
        let seen = broker.seen();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1].target, "s1");
        assert_eq!(seen[1].authorization.as_deref(), Some("Bearer ptok-1"));
        assert_eq!(
            seen[1].body,
            json!({"reject": {"reason": "unusable claim answer"}})
        );
    }
}

#[tokio::test]
async fn completion_errors_are_typed_and_raw_bodies_pass_through() {
    let complete = Canned::json(
        422,
        json!({"error": {"code": "bad_signature", "message": "signature does not verify"}}),
    );
    let (fx, broker, phone, qr) = setup(
        claim_answer("login", challenge("login", "s1").as_bytes()),
        complete,
    )
    .await;
    let claimed = phone.claim(&qr, &fx.identity).await.unwrap();
    let body = json!({"certificate_pem": fx.leaf.cert_pem, "signature_b64": "MAA="});
    let err = phone.complete_raw(&claimed, &body).await.unwrap_err();
    let broker_err = err.broker().unwrap();
    assert_eq!(
        (broker_err.status, broker_err.code.as_str()),
        (422, "bad_signature")
    );
    assert_eq!(broker.seen()[1].body, body);
}
