//! The key store contract (src/store/mod.rs), written once and run against
//! the file store and the Redis store (a real `redis-server`).

mod support;

use bzt_cosigner::store::file::FileStore;
use bzt_cosigner::store::redis::RedisStore;
use bzt_cosigner::store::{GrantEntry, KeyRecord, KeyState, KeyStore, StoreError};
use bzt_cosigner::wire::{
    AuditRecord, Authorisation, CertificateInfo, Delegate, Grant, OpeningWindow, ReclaimRecord,
};
use support::redis::RedisServer;

fn record(id: &str) -> KeyRecord {
    KeyRecord {
        key_id: id.into(),
        label: "label".into(),
        sealed_p1: "sealed-p1".into(),
        public_key: "04ab".into(),
        sealed_share: Some("sealed-share".into()),
        state: KeyState::Active,
        created_at: 1_700_000_000,
    }
}

async fn conformance(store: &dyn KeyStore) {
    // create is insert-only
    store.create(&record("k1")).await.unwrap();
    assert!(matches!(
        store.create(&record("k1")).await,
        Err(StoreError::Exists)
    ));
    assert_eq!(store.get("k1").await.unwrap(), Some(record("k1")));
    assert_eq!(store.get("nope").await.unwrap(), None);

    // put replaces; a revoked record stays revoked and shareless
    let frozen = KeyRecord {
        state: KeyState::Frozen,
        ..record("k1")
    };
    store.put(&frozen).await.unwrap();
    assert_eq!(
        store.get("k1").await.unwrap().unwrap().state,
        KeyState::Frozen
    );
    let revoked = KeyRecord {
        state: KeyState::Revoked,
        sealed_share: None,
        ..record("k1")
    };
    store.put(&revoked).await.unwrap();
    assert!(matches!(
        store.put(&record("k1")).await,
        Err(StoreError::Revoked)
    ));
    assert_eq!(store.get("k1").await.unwrap(), Some(revoked));

    // failures count up, are kept and reset
    assert_eq!(store.failures("k2").await.unwrap(), 0);
    for n in 1..=3 {
        assert_eq!(store.add_failure("k2").await.unwrap(), n);
    }
    store.keep_failures("k2").await.unwrap();
    assert_eq!(store.failures("k2").await.unwrap(), 3);
    store.reset_failures("k2").await.unwrap();
    assert_eq!(store.failures("k2").await.unwrap(), 0);
    // two wrong attempts kept for a reopen to find
    for n in 1..=2 {
        assert_eq!(store.add_failure("k3").await.unwrap(), n);
        store.keep_failures("k3").await.unwrap();
    }

    // use_once: true the first time only
    assert!(store.use_once("nonce:a", 60).await.unwrap());
    assert!(!store.use_once("nonce:a", 60).await.unwrap());
    assert!(store.use_once("nonce:b", 60).await.unwrap());

    // the first channel key stored wins
    assert_eq!(store.channel_key("first").await.unwrap(), "first");
    assert_eq!(store.channel_key("second").await.unwrap(), "first");

    // openings
    let window = OpeningWindow {
        envelope_sm3: "ab".repeat(32),
        not_before: "2030-01-01T00:00:00Z".into(),
        not_after: "2030-01-02T00:00:00Z".into(),
    };
    store.put_opening(&window).await.unwrap();
    assert_eq!(
        store.opening(&window.envelope_sm3).await.unwrap(),
        Some(window)
    );
    assert_eq!(store.opening(&"cd".repeat(32)).await.unwrap(), None);

    // audit keeps order and the last `limit`
    for i in 0..5 {
        let r = AuditRecord {
            at: format!("t{i}"),
            node: "n".into(),
            key_id: "k1".into(),
            operation: "sign".into(),
            context: "session:s".into(),
            tbs_sm3: None,
            outcome: "ok".into(),
            delegate: None,
        };
        store.append_audit(&r).await.unwrap();
    }
    let last: Vec<String> = store
        .audit(2)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.at)
        .collect();
    assert_eq!(last, vec!["t3", "t4"]);

    grants_conformance(store).await;
}

fn grant(id: &str, end: &str) -> GrantEntry {
    GrantEntry {
        grant: Grant {
            grant_id: id.into(),
            granted_by: "admin".into(),
            public_key: "04ab".into(),
            certificate: CertificateInfo {
                serial: "0a".into(),
                ca: "CA".into(),
                certificate_type: "SM2".into(),
            },
            member: Delegate {
                name: "李四".into(),
                device: "d".into(),
            },
            start: "2026-01-01T00:00:00Z".into(),
            end: end.into(),
            status: "active".into(),
            lender_state: None,
            authorisation: Authorisation {
                request_b64: "AA==".into(),
                signature_b64: "AA==".into(),
            },
        },
        pending: None,
    }
}

fn reclaim_record(id: &str, actor: &str) -> ReclaimRecord {
    ReclaimRecord {
        grant_id: id.into(),
        certificate: grant(id, "x").grant.certificate,
        member: grant(id, "x").grant.member,
        at: "2026-01-02T00:00:00Z".into(),
        actor: actor.into(),
        reason: None,
        node: "n".into(),
    }
}

async fn grants_conformance(store: &dyn KeyStore) {
    let end = "2026-02-01T00:00:00Z";
    store.create_grant(&grant("g1", end)).await.unwrap();
    assert!(matches!(
        store.create_grant(&grant("g1", end)).await,
        Err(StoreError::Exists)
    ));
    // A grant id may not take an existing key's id.
    assert!(matches!(
        store.create_grant(&grant("k1", end)).await,
        Err(StoreError::Exists)
    ));
    let extended = grant("g1", "2026-03-01T00:00:00Z");
    store.put_grant(&extended).await.unwrap();
    assert_eq!(store.get_grant("g1").await.unwrap(), Some(extended.clone()));

    // A sweep that read the old end time loses to the extension.
    let mut done = extended.clone();
    done.grant.status = "reclaimed".into();
    let tombstone = KeyRecord {
        state: KeyState::Revoked,
        sealed_share: None,
        ..record("g1")
    };
    let by = reclaim_record("g1", "automatic");
    assert!(!store
        .reclaim_grant(&done, &tombstone, &by, Some(end))
        .await
        .unwrap());
    // Reclaim happens once: the second caller, on any node, loses.
    assert!(store
        .reclaim_grant(&done, &tombstone, &by, Some("2026-03-01T00:00:00Z"))
        .await
        .unwrap());
    let by_admin = reclaim_record("g1", "administrator");
    assert!(!store
        .reclaim_grant(&done, &tombstone, &by_admin, None)
        .await
        .unwrap());
    assert_eq!(store.reclaims().await.unwrap(), vec![by]);
    assert_eq!(store.get("g1").await.unwrap(), Some(tombstone));
    // A reclaimed grant stays reclaimed, and its member key stays revoked.
    assert!(matches!(
        store.put_grant(&extended).await,
        Err(StoreError::Revoked)
    ));
    assert!(matches!(
        store.put(&record("g1")).await,
        Err(StoreError::Revoked)
    ));
    store.create_grant(&grant("g2", end)).await.unwrap();
    let ids: Vec<String> = store
        .grants()
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.grant.grant_id)
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&"g1".to_owned()) && ids.contains(&"g2".to_owned()));
}

#[tokio::test]
async fn the_file_store_keeps_the_contract_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.json");
    conformance(&FileStore::open(&path).unwrap()).await;
    let reopened = FileStore::open(&path).unwrap();
    assert_eq!(
        reopened.get("k1").await.unwrap().unwrap().state,
        KeyState::Revoked
    );
    assert!(matches!(
        reopened.put(&record("k1")).await,
        Err(StoreError::Revoked)
    ));
    assert_eq!(reopened.channel_key("other").await.unwrap(), "first");
    assert_eq!(reopened.failures("k3").await.unwrap(), 2);
    assert!(reopened.forgets_nonces_on_restart());
}

/// What a restart would find: the count in the file as it is now.
async fn failures_in_file(path: &std::path::Path, key_id: &str) -> u32 {
    FileStore::open(path)
        .unwrap()
        .failures(key_id)
        .await
        .unwrap()
}

/// Each write is an fsync; two per co-signature made the disk the ceiling of
/// co-signed logins. A right attempt writes nothing; a wrong one is in the
/// file before it is answered, and so is the reset of a count the file holds.
#[tokio::test]
async fn the_file_store_writes_a_pin_attempt_only_once_it_turned_out_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.json");
    let store = FileStore::open(&path).unwrap();
    store.create(&record("k")).await.unwrap();

    // A right attempt: counted while it is checked, then cleared.
    assert_eq!(store.add_failure("k").await.unwrap(), 1);
    assert_eq!(failures_in_file(&path, "k").await, 0);
    std::fs::remove_file(&path).unwrap();
    store.reset_failures("k").await.unwrap();
    assert!(
        !path.exists(),
        "a right attempt after none wrong wrote the file"
    );
    store.put(&record("k")).await.unwrap();

    // A wrong attempt: kept, so a restart still counts it.
    assert_eq!(store.add_failure("k").await.unwrap(), 1);
    store.keep_failures("k").await.unwrap();
    assert_eq!(failures_in_file(&path, "k").await, 1);

    // A right attempt after it clears the count in the file too.
    assert_eq!(store.add_failure("k").await.unwrap(), 2);
    store.reset_failures("k").await.unwrap();
    assert_eq!(failures_in_file(&path, "k").await, 0);
}

#[tokio::test]
async fn the_redis_store_keeps_the_contract() {
    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url(), "conformance:")
        .await
        .unwrap();
    conformance(&store).await;
    assert!(!store.forgets_nonces_on_restart());
}
