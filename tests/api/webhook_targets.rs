//! Issue 13: webhook URLs come from whoever holds an API key, so by default
//! the broker refuses to deliver to loopback, link-local, private and
//! unique-local addresses, checked on the addresses it actually connects to
//! (after DNS), with an allow-list for RPs inside the broker's network; and
//! URLs with no host are refused when the session is created.

use crate::helpers::*;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A receiver on loopback that counts the requests it gets.
async fn counting_receiver() -> (u16, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let router = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (port, hits)
}

/// Creates a login session with `webhook_url`, approves it, and gives the
/// broker time for every attempt it would make (backoff 20..200 ms).
async fn approve_with_webhook(app: &TestApp, webhook_url: &str) {
    let created = app
        .create_session(json!({"kind": "login", "display": {"title": "登录"},
            "webhook_url": webhook_url}))
        .await;
    let phone = app.phone("platform", "p");
    let claimed = phone.claim(&created).await;
    phone.approve(&claimed).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
}

#[tokio::test]
async fn loopback_targets_are_refused_by_default_whether_named_or_literal() {
    let app = TestApp::spawn_with(|c| {
        c.webhooks.allowed_private_networks.clear();
        c.webhooks.max_attempts = 3;
    })
    .await;
    let (port, hits) = counting_receiver().await;
    for url in [
        format!("http://127.0.0.1:{port}/hook"),
        format!("http://[::ffff:127.0.0.1]:{port}/hook"),
        // A name: refused by the resolver, on the address it resolves to.
        format!("http://localhost:{port}/hook"),
    ] {
        approve_with_webhook(&app, &url).await;
        assert_eq!(hits.load(Ordering::SeqCst), 0, "{url} was delivered");
    }

    // The same receiver, allowed by the configuration, is delivered to.
    let allowed = TestApp::spawn_with(|c| {
        c.webhooks.allowed_private_networks = vec!["127.0.0.1/32".into(), "::1".into()];
    })
    .await;
    approve_with_webhook(&allowed, &format!("http://localhost:{port}/hook")).await;
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn webhook_urls_without_a_host_are_refused_at_create() {
    let app = TestApp::spawn().await;
    for (url, says) in [
        ("http://", "webhook_url"),
        ("http://:0/", "webhook_url"),
        ("https://example.com:0/hook", "port 0"),
    ] {
        let answer = app
            .post_session(&json!({"kind": "login", "display": {"title": "t"}, "webhook_url": url}))
            .await;
        let message = assert_error(answer, 400, "invalid_request").await;
        assert!(message.contains(says), "{url}: {message}");
    }
}

#[tokio::test]
async fn a_bad_allow_list_entry_stops_the_broker_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = base_config(dir.path(), &TestCas::generate());
    config.webhooks.allowed_private_networks = vec!["10.1/16".into()];
    let clock = bzt::clock::ManualClock::starting_now();
    let Err(e) = bzt::Application::build(&config, Arc::new(clock), None).await else {
        panic!("the broker started with a bad allow-list");
    };
    assert!(
        format!("{e:#}").contains("webhooks.allowed_private_networks: \"10.1/16\""),
        "{e:#}"
    );
}
