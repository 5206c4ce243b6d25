//! The browser side: origins and CORS, reconnects, Server-Sent Events,
//! long-polling, QR images and the scan landing page.

use crate::helpers::*;
use futures_util::SinkExt;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const EVIL_ORIGIN: &str = "https://evil.example.com";

fn acao(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get("access-control-allow-origin")
        .map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn browser_endpoints_check_the_origin() {
    let app = TestApp::spawn().await;
    let created = app.create_login().await;

    for url in [
        &created.qr_svg_url,
        &created.qr_png_url,
        &created.events_url,
    ] {
        for origin in [EVIL_ORIGIN, OTHER_ORIGIN] {
            let resp = app
                .http
                .get(url)
                .header("origin", origin)
                .send()
                .await
                .unwrap();
            assert_eq!(acao(&resp), None);
            assert_error(resp, 403, "forbidden").await;
        }
    }
    let err = Browser::connect(&created.ws_url, Some(EVIL_ORIGIN))
        .await
        .err()
        .expect("a socket from a disallowed origin must be refused");
    let (status, body) = ws_refusal(err);
    assert_eq!(status, 403);
    assert_error_body(&body, "forbidden");
    let cancel = format!(
        "{}/v1/sessions/{}?t={}",
        app.address, created.id, created.browser_token
    );
    let resp = app
        .http
        .delete(&cancel)
        .header("origin", EVIL_ORIGIN)
        .send()
        .await
        .unwrap();
    assert_error(resp, 403, "forbidden").await;
    assert_eq!(app.status_of(&created.id).await, "pending");

    // The allowed origin passes and gets CORS.
    let resp = app
        .http
        .get(&created.qr_svg_url)
        .header("origin", ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(acao(&resp).as_deref(), Some(ORIGIN));
    let resp = app
        .http
        .get(&created.events_url)
        .header("origin", ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(acao(&resp).as_deref(), Some(ORIGIN));
    drop(resp);
    let mut browser = Browser::connect(&created.ws_url, Some(ORIGIN))
        .await
        .unwrap();
    assert_eq!(browser.next_event().await["type"], "snapshot");
    // No Origin (a non-browser client) passes without CORS headers.
    let resp = app.http.get(&created.qr_png_url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(acao(&resp), None);
}

#[tokio::test]
async fn an_allowed_page_can_read_cors_answers_and_errors() {
    let app = TestApp::spawn().await;
    let created = app.create_login().await;

    // Preflight of the page's DELETE ?t=.
    let resp = app
        .http
        .request(
            reqwest::Method::OPTIONS,
            app.url(&format!("/v1/sessions/{}", created.id)),
        )
        .header("origin", ORIGIN)
        .header("access-control-request-method", "DELETE")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(acao(&resp).as_deref(), Some(ORIGIN));
    let methods = resp.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap();
    assert!(methods.contains("DELETE"), "{methods}");
    let resp = app
        .http
        .request(
            reqwest::Method::OPTIONS,
            app.url(&format!("/v1/sessions/{}", created.id)),
        )
        .header("origin", EVIL_ORIGIN)
        .header("access-control-request-method", "DELETE")
        .send()
        .await
        .unwrap();
    assert_eq!(acao(&resp), None);

    // Once scanned, the QR image is refused, and the page can read why.
    let phone = app.phone("platform", "p");
    phone.claim(&created).await;
    let resp = app
        .http
        .get(&created.qr_png_url)
        .header("origin", ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(acao(&resp).as_deref(), Some(ORIGIN));
    assert_error(resp, 409, "conflict").await;
    app.advance(Duration::from_secs(181));
    assert_eq!(app.await_change(&created.id, 2).await["status"], "expired");
    let resp = app
        .http
        .get(&created.qr_svg_url)
        .header("origin", ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(acao(&resp).as_deref(), Some(ORIGIN));
    assert_error(resp, 410, "expired").await;
}

#[tokio::test]
async fn the_rp_api_answers_no_cors() {
    let app = TestApp::spawn().await;
    let resp = app
        .http
        .post(app.url("/v1/sessions"))
        .bearer_auth(API_KEY)
        .header("origin", ORIGIN)
        .json(&login_body())
        .send()
        .await
        .unwrap();
    assert_eq!(acao(&resp), None);
    let created: Value = resp.json().await.unwrap();
    let id = created["id"].as_str().unwrap();
    let resp = app
        .http
        .get(app.url(&format!("/v1/sessions/{id}")))
        .bearer_auth(API_KEY)
        .header("origin", ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(acao(&resp), None);
    for h in resp.headers().keys() {
        assert!(!h.as_str().starts_with("access-control-"), "{h}");
    }
    let resp = app
        .http
        .delete(app.url(&format!("/v1/sessions/{id}")))
        .bearer_auth(API_KEY)
        .header("origin", ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(acao(&resp), None);
}

#[tokio::test]
async fn a_browser_that_reconnects_after_the_result_still_gets_it() {
    let app = TestApp::spawn().await;
    let created = app.create_login().await;
    let mut browser = app.browser(&created).await;
    assert_eq!(browser.next_event().await["type"], "snapshot");
    drop(browser);

    let phone = app.phone("platform", "张三的手机");
    let claimed = phone.claim(&created).await;
    phone.approve(&claimed).await.unwrap();

    let view = app.get_session(&created.id).await;
    for _ in 0..2 {
        let mut browser = app.browser(&created).await;
        let snapshot = browser.next_event().await;
        assert_eq!(snapshot["type"], "snapshot");
        assert_eq!(snapshot["session"]["status"], "approved");
        assert_eq!(snapshot["session"]["version"], 3);
        assert_eq!(snapshot["session"]["result"], view["result"]);
        assert!(snapshot["session"].get("qr_text").is_none(), "{snapshot}");
        assert_eq!(u16::from(browser.expect_close().await.code), 1000);
    }
}

#[tokio::test]
async fn a_browser_that_reconnects_while_scanned_gets_the_device() {
    let app = TestApp::spawn().await;
    let created = app.create_login().await;
    let phone = app.phone("platform", "张三的手机");
    let claimed = phone.claim(&created).await;
    let mut browser = app.browser(&created).await;
    let snapshot = browser.next_event().await;
    assert_eq!(snapshot["session"]["status"], "scanned");
    assert_eq!(snapshot["session"]["version"], 2);
    assert_eq!(snapshot["session"]["device"], json!({"name": "张三的手机"}));
    assert!(snapshot["session"].get("qr_text").is_none(), "{snapshot}");
    phone.approve(&claimed).await.unwrap();
    let result = browser.next_event().await;
    assert_eq!(result["status"], "approved");
    assert_eq!(u16::from(browser.expect_close().await.code), 1000);
}

/// Reads Server-Sent Events from a streaming answer.
struct Sse {
    resp: reqwest::Response,
    buffer: String,
}

#[derive(Debug)]
struct SseEvent {
    event: String,
    id: String,
    data: Value,
}

impl Sse {
    async fn open(app: &TestApp, url: &str) -> Self {
        let resp = app.http.get(url).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        Self {
            resp,
            buffer: String::new(),
        }
    }

    /// The next event (comments and keep-alives skipped); `None` at the end of the stream.
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut event, mut id, mut data) = (String::new(), String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim_start().to_owned();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim_start().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if data.is_empty() {
                    continue;
                }
                let data = serde_json::from_str(&data)
                    .unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {data}"));
                return Some(SseEvent { event, id, data });
            }
            let chunk = tokio::time::timeout(EVENT_TIMEOUT, self.resp.chunk())
                .await
                .expect("timed out waiting for an SSE event")
                .unwrap();
            match chunk {
                Some(bytes) => self.buffer.push_str(
                    &String::from_utf8(bytes.to_vec())
                        .unwrap()
                        .replace("\r\n", "\n"),
                ),
                None => return None,
            }
        }
    }
}

#[tokio::test]
async fn server_sent_events_carry_the_same_events() {
    let app = TestApp::spawn().await;
    let created = app.create_login().await;
    let mut sse = Sse::open(&app, &created.events_url).await;
    let mut browser = app.browser(&created).await;

    let snapshot = sse.next().await.unwrap();
    assert_eq!(
        (snapshot.event.as_str(), snapshot.id.as_str()),
        ("snapshot", "1")
    );
    assert_eq!(snapshot.data["type"], "snapshot");
    assert_eq!(
        snapshot.data["session"]["qr_text"],
        created.qr_text.as_str()
    );
    let ws_snapshot = browser.next_event().await;
    assert_eq!(snapshot.data, ws_snapshot);

    let phone = app.phone("platform", "张三的手机");
    let claimed = phone.claim(&created).await;
    phone.approve(&claimed).await.unwrap();

    let status = sse.next().await.unwrap();
    assert_eq!((status.event.as_str(), status.id.as_str()), ("status", "2"));
    assert_eq!(status.data, browser.next_event().await);
    assert_eq!(status.data["device"]["name"], "张三的手机");
    let result = sse.next().await.unwrap();
    assert_eq!((result.event.as_str(), result.id.as_str()), ("result", "3"));
    assert_eq!(result.data, browser.next_event().await);
    assert_eq!(result.data["status"], "approved");
    assert_eq!(
        result.data["result"],
        app.get_session(&created.id).await["result"]
    );
    // The stream ends after the result.
    assert!(sse.next().await.is_none());

    // Connecting after the end gives the snapshot with the result, then ends.
    let mut sse = Sse::open(&app, &created.events_url).await;
    let snapshot = sse.next().await.unwrap();
    assert_eq!(
        (snapshot.event.as_str(), snapshot.id.as_str()),
        ("snapshot", "3")
    );
    assert_eq!(snapshot.data["session"]["result"], result.data["result"]);
    assert!(sse.next().await.is_none());
}

#[tokio::test]
async fn long_poll_answers_when_the_phone_claims() {
    let app = TestApp::spawn().await;
    let created = app.create_login().await;

    // Nothing happens: the wait runs out and answers the unchanged session.
    let started = Instant::now();
    let resp = app.get_session_raw(&created.id, "?wait=1&version=1").await;
    assert_eq!(resp.status().as_u16(), 200);
    let view: Value = resp.json().await.unwrap();
    assert_eq!(view["version"], 1);
    assert!(started.elapsed() >= Duration::from_millis(900), "it waited");

    // A different version answers at once.
    let started = Instant::now();
    let resp = app.get_session_raw(&created.id, "?wait=30&version=7").await;
    assert_eq!(resp.json::<Value>().await.unwrap()["version"], 1);
    assert!(started.elapsed() < Duration::from_secs(5));

    let poll = {
        let http = app.http.clone();
        let url = app.url(&format!("/v1/sessions/{}?wait=5&version=1", created.id));
        tokio::spawn(async move {
            let started = Instant::now();
            let resp = http.get(url).bearer_auth(API_KEY).send().await.unwrap();
            assert_eq!(resp.status().as_u16(), 200);
            (resp.json::<Value>().await.unwrap(), started.elapsed())
        })
    };
    // The poll is held while nothing changes...
    let mut poll = poll;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut poll)
            .await
            .is_err(),
        "the long-poll answered before anything changed"
    );
    // ...and answers promptly when the phone claims.
    let phone = app.phone("platform", "p");
    phone.claim(&created).await;
    let (view, elapsed) = tokio::time::timeout(Duration::from_secs(3), poll)
        .await
        .expect("the long-poll did not answer promptly")
        .unwrap();
    assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
    assert_eq!(view["status"], "scanned");
    assert_eq!(view["version"], 2);
}

#[tokio::test]
async fn long_poll_without_version_waits_for_the_next_change() {
    let app = TestApp::spawn().await;
    let created = app.create_login().await;
    let mut poll = {
        let http = app.http.clone();
        let url = app.url(&format!("/v1/sessions/{}?wait=10", created.id));
        tokio::spawn(async move {
            let resp = http.get(url).bearer_auth(API_KEY).send().await.unwrap();
            resp.json::<Value>().await.unwrap()
        })
    };
    assert!(tokio::time::timeout(Duration::from_millis(300), &mut poll)
        .await
        .is_err());
    app.cancel_session(&created.id).await;
    let view = tokio::time::timeout(Duration::from_secs(3), poll)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view["status"], "cancelled");
}

#[tokio::test]
async fn qr_images_and_the_landing_page() {
    let app = TestApp::spawn().await;
    let created = app.create_login().await;

    let resp = app.http.get(&created.qr_svg_url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("image/svg+xml"));
    let svg = resp.text().await.unwrap();
    assert!(svg.contains("<svg"), "{}", &svg[..svg.len().min(200)]);

    let resp = app.http.get(&created.qr_png_url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "image/png");
    let png = resp.bytes().await.unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");

    let resp = app
        .http
        .get(app.url(&format!("/q/{}", created.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = resp.text().await.unwrap();
    assert!(html.contains("lang=\"zh-CN\""), "{html}");
    assert!(
        html.contains("扫"),
        "the page tells the user to scan: {html}"
    );
}

#[tokio::test]
async fn the_requester_comes_from_the_create_call_first() {
    let app = TestApp::spawn().await;
    let created = app
        .create_session(json!({
            "kind": "login",
            "display": {"title": "t"},
            "requester": {"ip": "203.0.113.7", "user_agent": "Mozilla/5.0 (RP)"},
        }))
        .await;
    let mut browser = Browser::connect(&created.ws_url, Some(ORIGIN))
        .await
        .unwrap();
    browser.next_event().await;
    let phone = app.phone("platform", "p");
    let claimed = phone.claim(&created).await;
    let requester = claimed.requester.unwrap();
    assert_eq!(requester.ip.as_deref(), Some("203.0.113.7"));
    assert_eq!(requester.user_agent.as_deref(), Some("Mozilla/5.0 (RP)"));

    // Without one, the browser's first request (here: the QR image) says who asks.
    let created = app.create_login().await;
    app.http
        .get(&created.qr_svg_url)
        .header("origin", ORIGIN)
        .header("user-agent", "Mozilla/5.0 (browser)")
        .send()
        .await
        .unwrap();
    let claimed = phone.claim(&created).await;
    let requester = claimed.requester.unwrap();
    assert_eq!(requester.ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(
        requester.user_agent.as_deref(),
        Some("Mozilla/5.0 (browser)")
    );
    assert_eq!(requester.origin.as_deref(), Some(ORIGIN));

    // And with neither, it is null.
    let created = app.create_login().await;
    let resp = app
        .claim_raw(&json!({"qr_text": created.qr_text, "device": {"id": "a", "name": "b"}}))
        .await;
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["session"]["requester"], Value::Null);
}

#[tokio::test]
async fn a_binary_frame_gets_an_error_and_close_1003() {
    let app = TestApp::spawn().await;
    let created = app.create_login().await;
    let mut browser = app.browser(&created).await;
    assert_eq!(browser.next_event().await["type"], "snapshot");

    browser
        .ws
        .send(Message::Binary(br#"{"type":"cancel"}"#.to_vec().into()))
        .await
        .unwrap();
    let error = browser.next_event().await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["error"]["code"], "invalid_request", "{error}");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("binary"), "{message}");
    let close = browser.expect_close().await;
    assert_eq!(u16::from(close.code), 1003);
    assert!(close.reason.contains("binary"), "{}", close.reason);
    // A binary frame is not a cancel.
    assert_eq!(app.status_of(&created.id).await, "pending");
}

#[tokio::test]
async fn an_oversized_frame_is_closed_with_1009() {
    let app = TestApp::spawn().await;
    let created = app.create_login().await;
    for size in [4097, 64 * 1024] {
        let mut browser = app.browser(&created).await;
        assert_eq!(browser.next_event().await["type"], "snapshot");
        let padding = "x".repeat(size);
        browser
            .send(json!({"type": "cancel", "pad": padding}))
            .await;
        let close = browser.expect_close().await;
        assert_eq!(u16::from(close.code), 1009, "{size} bytes");
        assert!(close.reason.contains("4096"), "{}", close.reason);
    }
    // A frame at the limit is read (and answered as an unknown message).
    let mut browser = app.browser(&created).await;
    assert_eq!(browser.next_event().await["type"], "snapshot");
    let at_limit = json!({"type": "hello", "pad": ""}).to_string().len();
    let padding = "x".repeat(4096 - at_limit);
    browser.send(json!({"type": "hello", "pad": padding})).await;
    assert_eq!(
        browser.next_event().await["error"]["code"],
        "invalid_request"
    );
    assert_eq!(app.status_of(&created.id).await, "pending");
}
