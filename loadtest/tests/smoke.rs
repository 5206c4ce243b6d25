//! A tiny load run that must complete without errors: 50 login flows at a
//! low rate, a few idle sockets pushed to, and a conversation, against a
//! broker process started here; and 30 flows across 3 nodes sharing a
//! `redis-server` (the `cluster` scenario's setup). No timing is asserted.

use bzt_loadtest::broker::{spawn_redis, Cosigner, Fixture, Node, Store};
use bzt_loadtest::flows::{open_loop, Ctx};
use bzt_loadtest::{conversation, idle};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The broker binary: `$BZT_LOAD_BIN`, else built here (debug) with the cargo running this test.
fn broker_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BZT_LOAD_BIN") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = std::process::Command::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", "bzt", "--bin", "bzt"])
        .current_dir(&root)
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build --bin bzt failed");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    target.join("debug/bzt")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_run_completes_without_errors() {
    let fx = Fixture::new(4).unwrap();
    let node = Node::spawn(&broker_bin(), &fx, "smoke", &Store::Memory)
        .await
        .unwrap();
    let ctx = Arc::new(Ctx::new(vec![node.base.clone()], fx.identities.clone(), 2).unwrap());
    let pids = [node.pid()];

    let st = open_loop(
        ctx.clone(),
        &pids,
        25.0,
        Duration::ZERO,
        Duration::from_secs(2),
        1000,
    )
    .await;
    assert_eq!(st["completed"], 50, "{st}");
    assert_eq!(st["errors"], serde_json::json!({}), "{st}");

    let idle = idle::broker_idle(ctx.clone(), node.pid(), 20).await;
    assert_eq!(idle["sockets_open"], 20, "{idle}");
    assert_eq!(idle["push_all"]["received"], 20, "{idle}");
    assert_eq!(idle["errors"], serde_json::json!({}), "{idle}");

    let conv = conversation::run(ctx, &pids, 2, 2, Duration::ZERO, Duration::from_secs(1)).await;
    assert_eq!(conv["conversations_open"], 2, "{conv}");
    assert_eq!(conv["errors"], serde_json::json!({}), "{conv}");
    assert!(conv["completed"].as_u64().unwrap() > 0, "{conv}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_cluster_run_completes_without_errors() {
    let fx = Fixture::new(4).unwrap();
    let (_redis, url) = spawn_redis(fx.dir.path()).unwrap();
    let store = Store::Redis {
        url,
        prefix: "smoke".into(),
    };
    let bin = broker_bin();
    let mut nodes = Vec::new();
    for i in 1..=3 {
        nodes.push(
            Node::spawn(&bin, &fx, &format!("node{i}"), &store)
                .await
                .unwrap(),
        );
    }
    // Each flow creates and waits on one node and completes on the next.
    let bases = nodes.iter().map(|n| n.base.clone()).collect();
    let ctx = Arc::new(Ctx::new(bases, fx.identities.clone(), 2).unwrap());
    let pids: Vec<u32> = nodes.iter().map(Node::pid).collect();
    let st = open_loop(
        ctx,
        &pids,
        15.0,
        Duration::ZERO,
        Duration::from_secs(2),
        1000,
    )
    .await;
    assert_eq!(st["completed"], 30, "{st}");
    assert_eq!(st["errors"], serde_json::json!({}), "{st}");
}

/// The co-signed scenario's setup: a broker and a co-signing service as processes, split keys
/// enrolled and certified, login flows co-signed without errors, the service's CPU sampled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn co_signed_logins_complete_without_errors() {
    let fx = Fixture::new(2).unwrap();
    let bin = broker_bin();
    let node = Node::spawn_with(
        &bin,
        &fx,
        "cosign",
        &Store::Memory,
        &Cosigner::broker_toml(),
    )
    .await
    .unwrap();
    let service = Cosigner::spawn(&bin, &fx, &node.base).await.unwrap();
    let keys = bzt_loadtest::cosign::enrol(&service.url, &fx, 2)
        .await
        .unwrap();
    let ctx = Arc::new(
        Ctx::new(vec![node.base.clone()], fx.identities.clone(), 2)
            .unwrap()
            .with_split(keys, service.pid()),
    );
    let st = open_loop(
        ctx,
        &[node.pid()],
        10.0,
        Duration::ZERO,
        Duration::from_secs(2),
        1000,
    )
    .await;
    assert_eq!(st["completed"], 20, "{st}");
    assert_eq!(st["errors"], serde_json::json!({}), "{st}");
    assert!(st["cosigner_cpu"]["cores"].is_number(), "{st}");
}
