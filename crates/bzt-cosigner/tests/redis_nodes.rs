//! Several service nodes on one real Redis (`redis-server` started by the
//! test): a share enrolled on one node co-signs on another, and the PIN
//! counter, the used nonces and revocation are shared.

mod support;

use bzt_cosigner::{CosignerClient, SplitKeyFile};
use sm2::dsa::signature::Verifier;
use support::redis::RedisServer;
use support::*;

async fn node(
    broker: &TestBroker,
    redis: &RedisServer,
    dir: &std::path::Path,
    name: &str,
) -> TestService {
    let mut config = config(broker, dir);
    config.node_name = Some(name.into());
    config.store = redis_store(redis, "cosigner-test:");
    TestService::start_with(config).await
}

#[tokio::test]
async fn either_node_co_signs_for_a_share_enrolled_on_the_other() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start().await;
    let a = node(&broker, &redis, dir.path(), "node-a").await;
    let b = node(&broker, &redis, dir.path(), "node-b").await;

    // Both nodes share the channel key through the store.
    let via_a = a.client().await;
    let via_b = b.client().await;
    assert_eq!(via_a.service_key_hex(), via_b.service_key_hex());

    let enrollment = via_a
        .enroll("on node a", Some(ENROLMENT_TOKEN))
        .await
        .unwrap();
    let file = SplitKeyFile::with_iterations(&enrollment, &via_a, "1357", 1000).unwrap();
    let joint = file.joint_public_key().unwrap();
    let key = sm2::dsa::VerifyingKey::from_sec1_bytes(
        "1234567812345678",
        &hex::decode(&file.public_key).unwrap(),
    )
    .unwrap();

    // The phone's file names node a; it reaches node b with the same pinned key.
    let on_b = CosignerClient::new(&b.url, &file.service_key).unwrap();
    let tbs = challenge("login");
    let session = broker.scanned("login", &tbs, None);
    let sig = on_b
        .sign(
            &file.key_id,
            &file.unmask("1357").unwrap(),
            &joint,
            &session,
            &tbs,
        )
        .await
        .unwrap();
    assert!(key.verify(&tbs, &sig).is_ok());

    // Wrong PINs counted on both nodes lock the key on both.
    let wrong = file.unmask("0000").unwrap();
    for client in [&via_a, &on_b, &via_a, &on_b, &via_a] {
        let _ = client
            .sign(&file.key_id, &wrong, &joint, &session, &tbs)
            .await
            .unwrap_err();
    }
    let err = on_b
        .sign(
            &file.key_id,
            &file.unmask("1357").unwrap(),
            &joint,
            &session,
            &tbs,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("locked"));
    via_a
        .admin(ADMIN_TOKEN, &file.key_id, "unlock")
        .await
        .unwrap();

    // Revoked on b: refused on a.
    on_b.admin(ADMIN_TOKEN, &file.key_id, "revoke")
        .await
        .unwrap();
    let err = via_a
        .sign(
            &file.key_id,
            &file.unmask("1357").unwrap(),
            &joint,
            &session,
            &tbs,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("revoked"));

    // The audit trail of both nodes is one.
    let nodes: std::collections::BTreeSet<String> = via_a
        .audit(ADMIN_TOKEN)
        .await
        .unwrap()
        .records
        .into_iter()
        .map(|r| r.node)
        .collect();
    assert!(
        nodes.contains("node-a") && nodes.contains("node-b"),
        "{nodes:?}"
    );
}

#[tokio::test]
async fn a_pin_proof_used_on_one_node_is_refused_on_the_other() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start().await;
    let a = node(&broker, &redis, dir.path(), "node-a").await;
    let b = node(&broker, &redis, dir.path(), "node-b").await;
    let proxy = RecordingProxy::start(&a.url).await;
    let client = CosignerClient::discover(&proxy.url).await.unwrap();
    let enrollment = client
        .enroll("replay", Some(ENROLMENT_TOKEN))
        .await
        .unwrap();
    let tbs = challenge("login");
    let session = broker.scanned("login", &tbs, None);
    client
        .sign(
            &enrollment.key_id,
            &enrollment.d1,
            &enrollment.joint_public_key,
            &session,
            &tbs,
        )
        .await
        .unwrap();
    let replay = proxy.replay_last("/sign", &b.url).await;
    assert_eq!(replay.status(), 409);
}
