//! Malformed and unauthorised requests: every one answers the protocol's
//! error body `{"error": {"code", "message"}}` with the right status.

use crate::helpers::*;
use serde_json::json;

#[tokio::test]
async fn malformed_json_is_invalid_request() {
    let app = TestApp::spawn().await;
    for path in ["/v1/sessions", "/v1/claim"] {
        let resp = app
            .http
            .post(app.url(path))
            .bearer_auth(API_KEY)
            .header("content-type", "application/json")
            .body(r#"{"kind": "login", "display": "#)
            .send()
            .await
            .unwrap();
        assert_error(resp, 400, "invalid_request").await;
    }
    // Not JSON at all, without a content type.
    let resp = app
        .http
        .post(app.url("/v1/sessions"))
        .bearer_auth(API_KEY)
        .body("kind=login")
        .send()
        .await
        .unwrap();
    assert_error(resp, 400, "invalid_request").await;
}

#[tokio::test]
async fn unknown_fields_are_rejected_and_named() {
    let app = TestApp::spawn().await;
    let resp = app
        .post_session(&json!({"kindd": "login", "display": {"title": "t"}}))
        .await;
    let message = assert_error(resp, 400, "invalid_request").await;
    assert!(message.contains("kindd"), "{message}");

    let resp = app
        .post_session(&json!({"kind": "login", "display": {"title": "t", "subtitle": "x"}}))
        .await;
    let message = assert_error(resp, 400, "invalid_request").await;
    assert!(message.contains("subtitle"), "{message}");

    let created = app.create_login().await;
    let resp = app
        .claim_raw(
            &json!({"qr_text": created.qr_text, "device": {"id": "a", "name": "b"}, "pin": "1234"}),
        )
        .await;
    let message = assert_error(resp, 400, "invalid_request").await;
    assert!(message.contains("pin"), "{message}");

    let phone = app.phone("platform", "p");
    let claimed = phone.claim(&created).await;
    let mut body = phone.completion_over(&claimed.tbs);
    body["signature"] = json!("x");
    let resp = app
        .complete_raw(&created.id, claimed.phone_token.expose(), &body)
        .await;
    let message = assert_error(resp, 400, "invalid_request").await;
    assert!(message.contains("signature"), "{message}");
    assert_eq!(app.status_of(&created.id).await, "scanned");

    let resp = app
        .post_session(&json!({"kind": "logon", "display": {"title": "t"}}))
        .await;
    assert_error(resp, 400, "invalid_request").await;
    let resp = app.post_session(&json!({"kind": "login"})).await;
    let message = assert_error(resp, 400, "invalid_request").await;
    assert!(message.contains("display"), "{message}");
}

#[tokio::test]
async fn bodies_over_256_kib_are_payload_too_large() {
    let app = TestApp::spawn().await;
    let big = "x".repeat(256 * 1024 + 1);
    let resp = app
        .post_session(&json!({"kind": "login", "display": {"title": "t", "detail": big}}))
        .await;
    assert_error(resp, 413, "payload_too_large").await;
    let resp = app
        .claim_raw(&json!({"qr_text": big, "device": {"id": "a", "name": "b"}}))
        .await;
    assert_error(resp, 413, "payload_too_large").await;
    // Just under the limit is a normal (400) refusal, not 413.
    let fits = "x".repeat(200 * 1024);
    let resp = app
        .post_session(&json!({"kind": "login", "display": {"title": "t", "detail": fits}}))
        .await;
    assert_error(resp, 400, "invalid_request").await;
}

#[tokio::test]
async fn tbs_is_limited_to_64_kib() {
    let app = TestApp::spawn().await;
    let sign = |len: usize| json!({"kind": "sign", "display": {"title": "t"}, "tbs_b64": b64(&vec![7u8; len])});
    let resp = app.post_session(&sign(64 * 1024 + 1)).await;
    assert_error(resp, 413, "payload_too_large").await;
    app.create_session(sign(64 * 1024)).await;
    app.create_session(sign(1)).await;
    let resp = app.post_session(&sign(0)).await;
    assert_error(resp, 400, "invalid_request").await;
    let resp = app
        .post_session(&json!({"kind": "sign", "display": {"title": "t"}}))
        .await;
    assert_error(resp, 400, "invalid_request").await;
    let resp = app
        .post_session(&json!({"kind": "login", "display": {"title": "t"}, "tbs_b64": "AA=="}))
        .await;
    assert_error(resp, 400, "invalid_request").await;
}

#[tokio::test]
async fn bad_base64_is_invalid_request() {
    let app = TestApp::spawn().await;
    for bad in ["not base64!", "AAA", "AA==AA==", "-_-_"] {
        let resp = app
            .post_session(&json!({"kind": "sign", "display": {"title": "t"}, "tbs_b64": bad}))
            .await;
        let message = assert_error(resp, 400, "invalid_request").await;
        assert!(message.contains("tbs_b64"), "{message}");
    }
}

#[tokio::test]
async fn the_rp_api_needs_the_api_key() {
    let app = TestApp::spawn().await;
    let body = login_body();
    let resp = app
        .http
        .post(app.url("/v1/sessions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "unauthorized").await;
    let resp = app.post_session_as("wrong-key", &body).await;
    assert_error(resp, 401, "unauthorized").await;
    let resp = app
        .http
        .post(app.url("/v1/sessions"))
        .basic_auth(APP_ID, Some(API_KEY))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "unauthorized").await;

    let created = app.create_login().await;
    let get = |key: Option<&'static str>| {
        let mut req = app
            .http
            .get(app.url(&format!("/v1/sessions/{}", created.id)));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        req.send()
    };
    assert_error(get(None).await.unwrap(), 401, "unauthorized").await;
    assert_error(get(Some("wrong-key")).await.unwrap(), 401, "unauthorized").await;
    // Another app's session does not exist for this app.
    assert_error(get(Some(OTHER_API_KEY)).await.unwrap(), 404, "not_found").await;
    let resp = app
        .http
        .delete(app.url(&format!("/v1/sessions/{}", created.id)))
        .bearer_auth(OTHER_API_KEY)
        .send()
        .await
        .unwrap();
    assert_error(resp, 404, "not_found").await;
    let resp = app
        .http
        .delete(app.url(&format!("/v1/sessions/{}", created.id)))
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "unauthorized").await;
    assert_eq!(app.status_of(&created.id).await, "pending");
    // An unknown session is 404.
    let resp = app.get_session_raw("AAAAAAAAAAAAAAAAAAAAAA", "").await;
    assert_error(resp, 404, "not_found").await;
}

#[tokio::test]
async fn browser_endpoints_need_the_browser_token() {
    let app = TestApp::spawn().await;
    let created = app.create_login().await;
    let other = app.create_login().await;
    for (what, token) in [
        ("wrong", "t=wrong-token".to_string()),
        ("another session's", format!("t={}", other.browser_token)),
        ("missing", String::new()),
    ] {
        for endpoint in ["events", "qr.svg", "qr.png"] {
            let url = app.url(&format!("/v1/sessions/{}/{endpoint}?{token}", created.id));
            let resp = app.http.get(url).send().await.unwrap();
            assert_eq!(resp.status().as_u16(), 401, "{what} token on {endpoint}");
            assert_error(resp, 401, "unauthorized").await;
        }
        let ws_url = format!(
            "{}/v1/sessions/{}/ws?{token}",
            app.address.replacen("http", "ws", 1),
            created.id
        );
        let err = Browser::connect(&ws_url, None)
            .await
            .err()
            .unwrap_or_else(|| panic!("the socket opened with a {what} token"));
        let (status, body) = ws_refusal(err);
        assert_eq!(status, 401, "{what} token on ws");
        assert_error_body(&body, "unauthorized");
    }
}

#[tokio::test]
async fn completion_needs_the_phone_token() {
    let app = TestApp::spawn().await;
    let created = app.create_login().await;
    let phone = app.phone("platform", "p");
    let claimed = phone.claim(&created).await;
    let body = phone.completion_over(&claimed.tbs);
    let resp = app.complete_raw(&created.id, "wrong-token", &body).await;
    assert_error(resp, 401, "unauthorized").await;
    let resp = app
        .http
        .post(app.url(&format!("/v1/sessions/{}/complete", created.id)))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "unauthorized").await;
    // The browser token is not a phone token either.
    let resp = app
        .complete_raw(&created.id, &created.browser_token, &body)
        .await;
    assert_error(resp, 401, "unauthorized").await;
    // None of this counted against the session.
    let view = app.get_session(&created.id).await;
    assert_eq!(view["status"], "scanned");
    phone.approve(&claimed).await.unwrap();
}

#[tokio::test]
async fn wrong_methods_and_unknown_paths() {
    let app = TestApp::spawn().await;
    let created = app.create_login().await;
    let id = &created.id;
    let cases = [
        (reqwest::Method::PUT, "/v1/sessions".to_string()),
        (reqwest::Method::GET, "/v1/sessions".to_string()),
        (reqwest::Method::GET, "/v1/claim".to_string()),
        (reqwest::Method::POST, format!("/v1/sessions/{id}")),
        (reqwest::Method::PATCH, format!("/v1/sessions/{id}")),
        (reqwest::Method::POST, format!("/v1/sessions/{id}/qr.svg")),
        (reqwest::Method::GET, format!("/v1/sessions/{id}/complete")),
        (reqwest::Method::POST, "/healthz".to_string()),
    ];
    for (method, path) in cases {
        let resp = app
            .http
            .request(method.clone(), app.url(&path))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 405, "{method} {path}");
        assert_error(resp, 405, "method_not_allowed").await;
    }
    for path in ["/v2/sessions", "/v1/session", "/v1/sessions/x/y/z", "/"] {
        let resp = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 404, "{path}");
        assert_error(resp, 404, "not_found").await;
    }
}

#[tokio::test]
async fn ttl_must_be_between_30_and_600_seconds() {
    let app = TestApp::spawn().await;
    for ttl in [
        json!(29),
        json!(601),
        json!(0),
        json!(-1),
        json!("60"),
        json!(60.5),
    ] {
        let resp = app
            .post_session(&json!({"kind": "login", "display": {"title": "t"}, "ttl_s": ttl}))
            .await;
        assert_error(resp, 400, "invalid_request").await;
    }
    for ttl in [30, 600] {
        let created = app
            .create_session(json!({"kind": "login", "display": {"title": "t"}, "ttl_s": ttl}))
            .await;
        assert_eq!(created.raw["ttl_s"], ttl);
    }
}

#[tokio::test]
async fn other_create_fields_are_validated() {
    let app = TestApp::spawn().await;
    let long = "长".repeat(201);
    let bad = [
        json!({"kind": "login", "display": {"title": ""}}),
        json!({"kind": "login", "display": {"title": long}}),
        json!({"kind": "login", "display": {"title": "t", "detail": long}}),
        json!({"kind": "login", "display": {"title": "t"}, "rotate_s": 4}),
        json!({"kind": "login", "display": {"title": "t"}, "rotate_s": 61}),
        json!({"kind": "login", "display": {"title": "t"}, "accept": []}),
        json!({"kind": "login", "display": {"title": "t"}, "expect_cert": {"serial": "xyz"}}),
        json!({"kind": "login", "display": {"title": "t"}, "webhook_url": "ftp://x"}),
    ];
    for body in bad {
        let resp = app.post_session(&body).await;
        assert_eq!(resp.status().as_u16(), 400, "{body}");
        assert_error(resp, 400, "invalid_request").await;
    }
    app.create_session(json!({"kind": "login", "display": {"title": "长".repeat(200)}}))
        .await;
}

#[tokio::test]
async fn long_poll_limits() {
    let app = TestApp::spawn().await;
    let created = app.create_login().await;
    for q in ["?wait=31", "?wait=-1", "?wait=abc", "?wait=5&version=x"] {
        let resp = app.get_session_raw(&created.id, q).await;
        assert_eq!(resp.status().as_u16(), 400, "{q}");
        assert_error(resp, 400, "invalid_request").await;
    }
}

#[tokio::test]
async fn claims_with_a_bad_qr_text_or_device_are_invalid() {
    let app = TestApp::spawn().await;
    let created = app.create_login().await;
    let bad = [
        json!({"qr_text": "hello", "device": {"id": "a", "name": "b"}}),
        json!({"qr_text": created.qr_text.split('#').next().unwrap(), "device": {"id": "a", "name": "b"}}),
        json!({"qr_text": created.qr_text, "device": {"id": "", "name": "b"}}),
        json!({"qr_text": created.qr_text, "device": {"id": "a"}}),
        json!({"qr_text": created.qr_text}),
    ];
    for body in bad {
        let resp = app.claim_raw(&body).await;
        assert_eq!(resp.status().as_u16(), 400, "{body}");
        assert_error(resp, 400, "invalid_request").await;
    }
    assert_eq!(app.status_of(&created.id).await, "pending");
}

#[tokio::test]
async fn the_framework_own_rejections_use_the_error_body_too() {
    let app = TestApp::spawn().await;
    let created = app.create_login().await;
    let id = &created.id;
    let t = &created.browser_token;
    // (Path ids that are not UTF-8 are 404s: see
    // `a_path_id_that_is_not_utf8_is_an_unknown_id`.)
    let cases = [
        (
            reqwest::Method::DELETE,
            format!("/v1/sessions/{id}?t={t}&t={t}"),
        ),
        (
            reqwest::Method::GET,
            format!("/v1/sessions/{id}/events?t={t}&t={t}"),
        ),
        (
            reqwest::Method::GET,
            format!("/v1/sessions/{id}/qr.png?t={t}&t={t}"),
        ),
        (
            reqwest::Method::GET,
            format!("/v1/sessions/{id}/ws?t={t}&t={t}"),
        ),
        (
            reqwest::Method::GET,
            format!("/v1/sessions/{id}?wait=1&wait=2"),
        ),
    ];
    for (method, path) in cases {
        let resp = app
            .http
            .request(method.clone(), app.url(&path))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{method} {path}");
        assert_error(resp, 400, "invalid_request").await;
    }
    // A plain GET of the socket URL (no upgrade) is refused in the same format.
    let resp = app
        .http
        .get(created.ws_url.replacen("ws://", "http://", 1))
        .send()
        .await
        .unwrap();
    assert_error(resp, 400, "invalid_request").await;
    assert_eq!(app.status_of(id).await, "pending");
}

#[tokio::test]
async fn a_path_id_that_is_not_utf8_is_an_unknown_id() {
    // docs/protocol.md: anything that is not 1..64 characters of
    // `[A-Za-z0-9_-]` answers `404 not_found`, bytes that decode to no text included.
    let app = TestApp::spawn().await;
    let created = app.create_login().await;
    let cases = [
        (reqwest::Method::GET, "/v1/sessions/%FF"),
        (reqwest::Method::GET, "/v1/sessions/%C3%28"),
        (reqwest::Method::DELETE, "/v1/sessions/%FF"),
        (reqwest::Method::GET, "/v1/sessions/%FF/qr.svg?t=x"),
        (reqwest::Method::GET, "/v1/sessions/%FF/events?t=x"),
        (reqwest::Method::GET, "/v1/sessions/%FF/ws?t=x"),
        (reqwest::Method::POST, "/v1/sessions/%80abc/complete"),
        (reqwest::Method::GET, "/q/%FF"),
        (reqwest::Method::GET, "/v1/conversations/%FE%FF"),
        (reqwest::Method::GET, "/v1/conversations/abc/requests/%FF"),
        (reqwest::Method::DELETE, "/v1/admin/revocations/%FF"),
    ];
    for (method, path) in cases {
        let resp = app
            .http
            .request(method.clone(), app.url(path))
            .bearer_auth(API_KEY)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 404, "{method} {path}");
        assert_error(resp, 404, "not_found").await;
    }
    // Percent-encoded UTF-8 still reaches the handler (and is an unknown id there).
    let resp = app
        .http
        .get(app.url("/v1/sessions/%E4%B8%AD"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_error(resp, 404, "not_found").await;
    assert_eq!(app.status_of(&created.id).await, "pending");
}
