//! Relay defences: number matching and the rotating QR code.

use crate::helpers::*;
use serde_json::{json, Value};
use std::time::Duration;

fn number_match_login() -> Value {
    json!({"kind": "login", "display": {"title": "t"}, "number_match": true})
}

/// A number-matching login the browser shows and a phone claimed, the code the browser shows
/// and one of the phone's choices that is not it.
struct WrongPick {
    created: Created,
    browser: Browser,
    phone: TestPhone,
    claimed: bzt_phone::Claimed,
    /// The code the browser shows.
    code: String,
    wrong: String,
}

async fn a_claimed_number_match_login_and_a_wrong_pick(app: &TestApp) -> WrongPick {
    let created = app.create_session(number_match_login()).await;
    let mut browser = app.browser(&created).await;
    browser.next_event().await;
    let phone = app.phone("platform", "p");
    let claimed = phone.claim(&created).await;
    let code = browser.next_event().await["match_code"]
        .as_str()
        .unwrap()
        .to_owned();
    let wrong = claimed
        .match_choices
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| **c != code)
        .unwrap()
        .clone();
    WrongPick {
        created,
        browser,
        phone,
        claimed,
        code,
        wrong,
    }
}

#[tokio::test]
async fn number_matching_with_the_right_pick_approves() {
    let app = TestApp::spawn().await;
    let created = app.create_session(number_match_login()).await;
    let mut browser = app.browser(&created).await;
    browser.next_event().await;
    let phone = app.phone("platform", "张三的手机");
    let claimed = phone.claim(&created).await;

    let status = browser.next_event().await;
    assert_eq!(status["status"], "scanned");
    let code = status["match_code"]
        .as_str()
        .expect("scanned carries match_code")
        .to_owned();
    assert!(
        code.len() == 2 && code.chars().all(|c| c.is_ascii_digit()),
        "{code}"
    );
    let choices = claimed
        .match_choices
        .clone()
        .expect("claim carries match_choices");
    assert_eq!(choices.len(), 3);
    assert!(choices.contains(&code), "{choices:?} lacks {code}");
    for c in &choices {
        assert!(c.len() == 2 && c.chars().all(|d| d.is_ascii_digit()), "{c}");
    }
    let mut distinct = choices.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "{choices:?}");

    // A reconnecting browser gets the code in its snapshot.
    let mut again = app.browser(&created).await;
    assert_eq!(
        again.next_event().await["session"]["match_code"],
        code.as_str()
    );

    // Without a pick the completion is invalid (and nothing changes).
    let body = phone.completion_over(&claimed.tbs);
    let resp = app
        .complete_raw(&created.id, claimed.phone_token.expose(), &body)
        .await;
    assert_error(resp, 400, "invalid_request").await;
    assert_eq!(app.status_of(&created.id).await, "scanned");

    phone.approve_picking(&claimed, code).await.unwrap();
    assert_eq!(browser.next_event().await["status"], "approved");
}

#[tokio::test]
async fn number_matching_with_a_wrong_pick_rejects() {
    let app = TestApp::spawn().await;
    let WrongPick {
        created,
        mut browser,
        phone,
        claimed,
        code,
        wrong,
    } = a_claimed_number_match_login_and_a_wrong_pick(&app).await;

    let err = broker_error(phone.approve_picking(&claimed, wrong).await.unwrap_err());
    assert_eq!((err.status, err.code.as_str()), (403, "forbidden"));

    let result = browser.next_event().await;
    assert_eq!(
        result,
        json!({"type": "result", "status": "rejected", "version": 3, "result": {"reason": "match_failed"}})
    );
    let view = app.get_session(&created.id).await;
    assert_eq!(view["status"], "rejected");
    assert_eq!(view["result"], json!({"reason": "match_failed"}));
    // A mismatch is what a relayed QR looks like: it is in the audit trail.
    let audit: Value = app.rp_get_as(API_KEY, "/v1/audit").await;
    let records = audit["records"].as_array().unwrap();
    let record = records
        .iter()
        .find(|r| r["session_id"] == created.id.as_str())
        .expect("the wrong pick is recorded");
    assert_eq!(
        (record["outcome"].as_str(), record["reason"].as_str()),
        (Some("rejected"), Some("match_failed"))
    );
    assert_eq!(record["device_name"], "p");
    // The right code afterwards is too late.
    let err = broker_error(phone.approve_picking(&claimed, code).await.unwrap_err());
    assert_eq!((err.status, err.code.as_str()), (409, "conflict"));
}

fn claim_body(qr_text: &str) -> Value {
    json!({"qr_text": qr_text, "device": {"id": "d", "name": "d"}})
}

#[tokio::test]
async fn a_rotating_qr_code_changes_its_secret_with_a_grace_period() {
    let app = TestApp::spawn().await;
    let body = json!({"kind": "login", "display": {"title": "t"}, "rotate_s": 5});
    let a = app.create_session(body.clone()).await;
    let b = app.create_session(body).await;
    let mut browser = app.browser(&a).await;
    assert_eq!(
        browser.next_event().await["session"]["qr_text"],
        a.qr_text.as_str()
    );
    let mut browser_b = app.browser(&b).await;
    assert_eq!(browser_b.next_event().await["session"]["qr_seq"], 0);

    app.advance(Duration::from_millis(4_999));
    app.advance(Duration::from_millis(1));
    let rotated = browser.next_event().await;
    assert_eq!(rotated["type"], "qr", "{rotated}");
    assert_eq!(rotated["seq"], 1);
    assert_eq!(
        rotated["version"], 1,
        "a rotation does not change the version"
    );
    let new_text = rotated["qr_text"].as_str().unwrap();
    assert_ne!(new_text, a.qr_text);
    assert!(new_text.starts_with(&format!("{}/q/{}#", app.address, a.id)));
    assert_eq!(app.get_session(&a.id).await["version"], 1);
    let rotated_b = browser_b.next_event().await;
    assert_eq!(rotated_b["seq"], 1);

    // Within the 3 s grace the superseded code still claims.
    app.advance(Duration::from_secs(2));
    let resp = app.claim_raw(&claim_body(&a.qr_text)).await;
    assert_eq!(
        resp.status().as_u16(),
        200,
        "{}",
        resp.text().await.unwrap()
    );
    assert_eq!(browser.next_event().await["status"], "scanned");

    // After it, the superseded code is as good as an unknown one.
    app.advance(Duration::from_millis(1_500));
    let resp = app.claim_raw(&claim_body(&b.qr_text)).await;
    assert_error(resp, 404, "not_found").await;
    // A reconnecting browser gets the current code, which claims.
    let mut again = app.browser(&b).await;
    let snapshot = again.next_event().await;
    assert_eq!(snapshot["session"]["qr_seq"], 1);
    let current = snapshot["session"]["qr_text"].as_str().unwrap();
    assert_eq!(current, rotated_b["qr_text"].as_str().unwrap());
    let resp = app.claim_raw(&claim_body(current)).await;
    assert_eq!(resp.status().as_u16(), 200);
}

/// Reads the raw SSE text until it contains `needle`.
async fn read_until(resp: &mut reqwest::Response, text: &mut String, needle: &str) {
    while !text.contains(needle) {
        let chunk = tokio::time::timeout(EVENT_TIMEOUT, resp.chunk())
            .await
            .expect("timed out reading SSE")
            .unwrap()
            .expect("stream ended");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

#[tokio::test]
async fn rotation_reaches_sse_with_a_dotted_id_and_stops_once_scanned() {
    let app = TestApp::spawn().await;
    let created = app
        .create_session(json!({"kind": "login", "display": {"title": "t"}, "rotate_s": 5}))
        .await;
    let mut resp = app.http.get(&created.events_url).send().await.unwrap();
    let mut text = String::new();
    read_until(&mut resp, &mut text, "event: snapshot").await;
    app.advance(Duration::from_secs(5));
    read_until(&mut resp, &mut text, "id: 1.1").await;
    assert!(text.contains("event: qr"), "{text}");
    app.advance(Duration::from_secs(5));
    read_until(&mut resp, &mut text, "id: 1.2").await;

    let mut browser = app.browser(&created).await;
    let current = browser.next_event().await["session"]["qr_text"]
        .as_str()
        .unwrap()
        .to_owned();
    let resp = app.claim_raw(&claim_body(&current)).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(browser.next_event().await["status"], "scanned");
    app.advance(Duration::from_secs(5));
    app.cancel_session(&created.id).await;
    // The next event after `scanned` is the result: no rotation once scanned.
    assert_eq!(browser.next_event().await["type"], "result");
}

#[tokio::test]
async fn racing_wrong_picks_leave_exactly_one_audit_record() {
    let app = TestApp::spawn().await;
    // The browser stays connected through the race.
    let WrongPick {
        created,
        browser: _browser,
        phone,
        claimed,
        wrong,
        ..
    } = a_claimed_number_match_login_and_a_wrong_pick(&app).await;
    let mut body = phone.completion_over(&claimed.tbs);
    body["match_code"] = json!(wrong);

    // A relay retrying, or a double tap: sixteen wrong picks at once.
    let token = claimed.phone_token.expose();
    let answers = futures_util::future::join_all(
        (0..16).map(|_| app.complete_raw(&created.id, token, &body)),
    )
    .await;
    // The picks that got past the first check answer 403; those that came
    // after the session was rejected answer 409, as any late completion does.
    let mut forbidden = 0;
    for resp in answers {
        match resp.status().as_u16() {
            403 => {
                assert_error(resp, 403, "forbidden").await;
                forbidden += 1;
            }
            _ => drop(assert_error(resp, 409, "conflict").await),
        }
    }
    assert!(forbidden >= 1, "no wrong pick was refused as one");
    assert_eq!(app.status_of(&created.id).await, "rejected");

    let audit: Value = app.rp_get_as(API_KEY, "/v1/audit").await;
    let records: Vec<&Value> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["session_id"] == created.id.as_str())
        .collect();
    assert_eq!(records.len(), 1, "one session, one record: {records:#?}");
    assert_eq!(
        (
            records[0]["outcome"].as_str(),
            records[0]["reason"].as_str()
        ),
        (Some("rejected"), Some("match_failed"))
    );
}
