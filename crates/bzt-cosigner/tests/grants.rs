//! 企业证书授权 against a real service: an administrator grants the company
//! certificate to a member, who signs and decrypts with it from its own
//! share until the grant is taken back (解除授权, the operator, or the end
//! time by an injected clock); exactly one 收回 record names who took it back.

mod support;

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bzt_cosigner::config::StoreConfig;
use bzt_cosigner::grants::{Action, GrantRequest, ManualClock};
use bzt_cosigner::wire::{
    CertificateInfo, Context, Delegate, GrantCall, GrantList, GrantPackage, GrantRef, ReclaimRecord,
};
use bzt_cosigner::{CosignerClient, SplitKeyFile};
use bzt_crypto::two_party::ChannelKey;
use sm2::dsa::signature::Verifier;
use support::redis::RedisServer;
use support::*;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

const ADMIN_PIN: &str = "135790";
const MEMBER_PIN: &str = "864200";

/// A phone holding one split key (the administrator's, or a member's).
struct Phone {
    client: CosignerClient,
    file: SplitKeyFile,
    pin: &'static str,
}

impl Phone {
    async fn administrator(service: &TestService) -> Self {
        let client = service.client().await;
        let enrollment = client
            .enroll("示例建设有限公司", Some(ENROLMENT_TOKEN))
            .await
            .unwrap();
        let file = SplitKeyFile::with_iterations(&enrollment, &client, ADMIN_PIN, 1000).unwrap();
        Self {
            client,
            file,
            pin: ADMIN_PIN,
        }
    }

    fn share(&self) -> (sm2::NonZeroScalar, sm2::ProjectivePoint) {
        (
            self.file.unmask(self.pin).unwrap(),
            self.file.joint_public_key().unwrap(),
        )
    }

    /// Grants the certificate to 李四 until `end`; the member's phone
    /// accepts with its receiving key and masks its share under its own PIN.
    async fn grant_to_member(&self, end: &str) -> (Phone, String) {
        let receiving = ChannelKey::generate().unwrap();
        let (list, package) = self.grant_to_li_si(end, &receiving).await.unwrap();
        assert_eq!(list.grant.as_ref().unwrap().status, "pending");
        let enrollment = CosignerClient::accept_grant(&package, &receiving)
            .await
            .unwrap();
        let client = CosignerClient::new(&package.cosigner_url, &package.service_key).unwrap();
        let file = SplitKeyFile::with_iterations(&enrollment, &client, MEMBER_PIN, 1000).unwrap();
        (
            Phone {
                client,
                file,
                pin: MEMBER_PIN,
            },
            package.grant_id,
        )
    }

    async fn sign(
        &self,
        broker: &TestBroker,
    ) -> Result<sm2::dsa::Signature, bzt_cosigner::ClientError> {
        let tbs = challenge("sign");
        let session = broker.scanned("sign", &tbs, None);
        let (d1, joint) = self.share();
        let sig = self
            .client
            .sign(&self.file.key_id, &d1, &joint, &session, &tbs)
            .await?;
        assert!(company_key(&self.file).verify(&tbs, &sig).is_ok());
        Ok(sig)
    }

    async fn decrypt(&self, broker: &TestBroker) -> Result<Vec<u8>, bzt_cosigner::ClientError> {
        let key =
            sm2::PublicKey::from_sec1_bytes(&hex::decode(&self.file.public_key).unwrap()).unwrap();
        let ct = sm2::pke::EncryptingKey::new(key)
            .encrypt_der(&mut getrandom::SysRng, b"content-key-16B!")
            .unwrap();
        let session = broker.scanned("decrypt", &challenge("decrypt"), None);
        let (d1, _) = self.share();
        self.client
            .decrypt(&self.file.key_id, &d1, &session, &ct)
            .await
    }

    /// 添加被授权人: asks the service to grant the certificate to 李四 until `end`, the share
    /// sealed to `receiving`.
    async fn grant_to_li_si(
        &self,
        end: &str,
        receiving: &ChannelKey,
    ) -> Result<(GrantList, GrantPackage), bzt_cosigner::ClientError> {
        let (d1, joint) = self.share();
        self.client
            .grant(
                &self.file.key_id,
                &d1,
                &joint,
                li_si(),
                certificate(),
                end,
                receiving.public(),
            )
            .await
    }

    /// 解除授权 of `grant_id`.
    async fn ungrant(&self, grant_id: &str) -> Result<GrantList, bzt_cosigner::ClientError> {
        let (d1, joint) = self.share();
        self.client
            .ungrant(&self.file.key_id, &d1, &joint, grant_id)
            .await
    }

    /// Moves `grant_id`'s end time to `end`.
    async fn extend(
        &self,
        grant_id: &str,
        end: &str,
    ) -> Result<GrantList, bzt_cosigner::ClientError> {
        let (d1, joint) = self.share();
        self.client
            .extend(&self.file.key_id, &d1, &joint, grant_id, end)
            .await
    }

    /// The same phone talking to another node of the service at `url`.
    fn through(&self, url: &str) -> Phone {
        Phone {
            client: CosignerClient::new(url, &self.file.service_key).unwrap(),
            file: self.file.clone(),
            pin: self.pin,
        }
    }

    async fn grants(&self) -> Result<GrantList, bzt_cosigner::ClientError> {
        let (d1, joint) = self.share();
        self.client.grants(&self.file.key_id, &d1, &joint).await
    }
}

fn li_si() -> Delegate {
    Delegate {
        name: "李四".into(),
        device: "phone-li-si".into(),
    }
}

fn certificate() -> CertificateInfo {
    CertificateInfo {
        serial: "1a2b".into(),
        ca: "BZT Dev CA".into(),
        certificate_type: "SM2 企业证书".into(),
    }
}

fn company_key(file: &SplitKeyFile) -> sm2::dsa::VerifyingKey {
    sm2::dsa::VerifyingKey::from_sec1_bytes(
        "1234567812345678",
        &hex::decode(&file.public_key).unwrap(),
    )
    .unwrap()
}

fn at(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .unwrap()
        .format(&Rfc3339)
        .unwrap()
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn code<T: std::fmt::Debug>(result: Result<T, bzt_cosigner::ClientError>) -> String {
    result.unwrap_err().code().unwrap_or("no code").to_owned()
}

/// A service on an injected clock and on `store` (default: its file store in the directory).
async fn service_on(
    broker: &TestBroker,
    clock: Arc<ManualClock>,
    store: Option<StoreConfig>,
) -> (TestService, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(broker, dir.path());
    if let Some(store) = store {
        config.store = store;
    }
    let service = TestService::start_with_clock(config, clock).await;
    (service, dir)
}

/// 添加被授权人 done: a broker, a service on an injected clock started at `start`, and the
/// administrator's grant to 李四 until `start + granted_for_s`, accepted by the member's phone.
struct Granted {
    broker: TestBroker,
    clock: Arc<ManualClock>,
    start: i64,
    service: TestService,
    _dir: tempfile::TempDir,
    admin: Phone,
    member: Phone,
    grant_id: String,
}

async fn a_member_granted_for(granted_for_s: i64) -> Granted {
    a_member_granted_on(None, granted_for_s).await
}

/// [`a_member_granted_for`] with the service on `store` (default: its file store).
async fn a_member_granted_on(store: Option<StoreConfig>, granted_for_s: i64) -> Granted {
    let broker = TestBroker::start().await;
    let start = now();
    let clock = Arc::new(ManualClock::new(start));
    let (service, dir) = service_on(&broker, clock.clone(), store).await;
    let admin = Phone::administrator(&service).await;
    let (member, grant_id) = admin.grant_to_member(&at(start + granted_for_s)).await;
    Granted {
        broker,
        clock,
        start,
        service,
        _dir: dir,
        admin,
        member,
        grant_id,
    }
}

/// The administrator's list holds exactly one 收回 record, by `actor`; returns it.
async fn the_one_reclaim_by(admin: &Phone, actor: &str) -> ReclaimRecord {
    let mut reclaims = admin.grants().await.unwrap().reclaims;
    assert_eq!(reclaims.len(), 1);
    assert_eq!(reclaims[0].actor, actor);
    reclaims.remove(0)
}

#[tokio::test]
async fn a_member_signs_and_decrypts_with_its_own_share_and_the_audit_names_it() {
    let g = a_member_granted_for(3600).await;

    // Same company key, different shares and key ids.
    assert_eq!(g.member.file.public_key, g.admin.file.public_key);
    assert_ne!(g.member.file.masked_share, g.admin.file.masked_share);
    assert_eq!(g.member.file.key_id, g.grant_id);
    g.member.sign(&g.broker).await.unwrap();
    assert_eq!(
        g.member.decrypt(&g.broker).await.unwrap(),
        b"content-key-16B!"
    );
    g.admin.sign(&g.broker).await.unwrap();

    // The member's PIN guards its share: a wrong one is the service's wrong_pin.
    let wrong = Phone {
        pin: "000000",
        client: g.member.client.clone(),
        file: g.member.file.clone(),
    };
    assert_eq!(code(wrong.sign(&g.broker).await), "wrong_pin");

    let list = g.admin.grants().await.unwrap();
    assert_eq!(list.grants.len(), 1);
    let grant = &list.grants[0];
    assert_eq!(
        (grant.status.as_str(), &grant.member, &grant.granted_by),
        ("active", &li_si(), &g.admin.file.key_id)
    );
    // The grant carries the administrator's signed request: it verifies under
    // the company key over exactly those bytes.
    let request = B64.decode(&grant.authorisation.request_b64).unwrap();
    let sig =
        sm2::dsa::Signature::from_der(&B64.decode(&grant.authorisation.signature_b64).unwrap())
            .unwrap();
    assert!(company_key(&g.admin.file).verify(&request, &sig).is_ok());
    assert!(String::from_utf8(request).unwrap().contains("member:李四"));

    let audit = g.admin.client.audit(ADMIN_TOKEN).await.unwrap().records;
    let by_member: Vec<_> = audit
        .iter()
        .filter(|r| r.key_id == g.grant_id && r.outcome == "ok")
        .map(|r| (r.operation.as_str(), r.delegate.clone()))
        .collect();
    assert!(by_member.contains(&("sign", Some(li_si()))));
    assert!(by_member.contains(&("decrypt", Some(li_si()))));
    assert!(audit
        .iter()
        .filter(|r| r.key_id == g.admin.file.key_id)
        .all(|r| r.delegate.is_none()));
}

#[tokio::test]
async fn the_share_the_administrator_dealt_does_not_pass_the_members_pin_proof() {
    // The administrator knows d1·t (it dealt it); the member re-randomised it by u, so the
    // administrator cannot act as the member (and be audited as 李四).
    let broker = TestBroker::start().await;
    let clock = Arc::new(ManualClock::new(now()));
    let (service, _dir) = service_on(&broker, clock, None).await;
    let admin = Phone::administrator(&service).await;
    let receiving = ChannelKey::generate().unwrap();
    let (_, package) = admin
        .grant_to_li_si(&at(now() + 3600), &receiving)
        .await
        .unwrap();
    let (_, joint) = admin.share();
    // What the administrator dealt (the test opens the package as only the member could).
    let sealed = package.share.to_sealed().unwrap();
    let (dealt, _) = receiving
        .open_request(format!("grant:{}", package.grant_id).as_bytes(), &sealed)
        .unwrap();
    let dealt = bzt_crypto::two_party::decode_scalar(&hex::decode(dealt).unwrap()).unwrap();
    // A pending grant has no member key: nothing co-signs for it yet.
    let tbs = challenge("sign");
    let session = broker.scanned("sign", &tbs, None);
    assert_eq!(
        code(
            admin
                .client
                .sign(&package.grant_id, &dealt, &joint, &session, &tbs)
                .await
        ),
        "not_found"
    );
    let enrollment = CosignerClient::accept_grant(&package, &receiving)
        .await
        .unwrap();
    assert_ne!(
        bzt_crypto::two_party::encode_scalar(&dealt),
        bzt_crypto::two_party::encode_scalar(&enrollment.d1)
    );
    let tbs = challenge("sign");
    let session = broker.scanned("sign", &tbs, None);
    let as_member = admin
        .client
        .sign(&package.grant_id, &dealt, &joint, &session, &tbs)
        .await;
    assert_eq!(code(as_member), "wrong_pin");
    // The member's own share does.
    let sig = admin
        .client
        .sign(&package.grant_id, &enrollment.d1, &joint, &session, &tbs)
        .await
        .unwrap();
    assert!(company_key(&admin.file).verify(&tbs, &sig).is_ok());
}

#[tokio::test]
async fn after_ungrant_the_member_cannot_sign_or_decrypt_the_administrator_still_can() {
    let g = a_member_granted_for(3600).await;
    g.member.sign(&g.broker).await.unwrap();

    let list = g.admin.ungrant(&g.grant_id).await.unwrap();
    assert_eq!(list.grant.unwrap().status, "reclaimed");

    assert_eq!(code(g.member.sign(&g.broker).await), "reclaimed");
    assert_eq!(code(g.member.decrypt(&g.broker).await), "reclaimed");
    g.admin.sign(&g.broker).await.unwrap();
    assert_eq!(
        g.admin.decrypt(&g.broker).await.unwrap(),
        b"content-key-16B!"
    );

    // Once: a second 解除授权 and the operator's reclaim find nothing to do.
    assert_eq!(code(g.admin.ungrant(&g.grant_id).await), "reclaimed");
    assert_eq!(
        code(
            g.admin
                .client
                .operator_reclaim(ADMIN_TOKEN, &g.grant_id)
                .await
        ),
        "reclaimed"
    );
    let reclaim = the_one_reclaim_by(&g.admin, "administrator").await;
    assert_eq!(reclaim.certificate, certificate());
    assert_eq!(reclaim.member, li_si());
    // The member's server share is gone from the store.
    let status = g
        .admin
        .client
        .key_status(ADMIN_TOKEN, &g.grant_id)
        .await
        .unwrap();
    assert_eq!(status.state, "revoked");
}

#[tokio::test]
async fn the_end_time_reclaims_automatically_and_extending_before_it_keeps_the_member_working() {
    let g = a_member_granted_for(3600).await;

    // Before the end: extend to two hours.
    g.clock.set(g.start + 1800);
    let list = g
        .admin
        .extend(&g.grant_id, &at(g.start + 7200))
        .await
        .unwrap();
    assert_eq!(list.grant.unwrap().end, at(g.start + 7200));
    // Past the old end, before the new one: still working, and the sweep leaves it.
    g.clock.set(g.start + 3601);
    assert_eq!(g.service.service.sweep_grants().await.unwrap(), 0);
    g.member.sign(&g.broker).await.unwrap();

    // Past the new end: the sweep reclaims it, once.
    g.clock.set(g.start + 7201);
    assert_eq!(g.service.service.sweep_grants().await.unwrap(), 1);
    assert_eq!(g.service.service.sweep_grants().await.unwrap(), 0);
    assert_eq!(code(g.member.sign(&g.broker).await), "reclaimed");
    assert_eq!(code(g.member.decrypt(&g.broker).await), "reclaimed");
    g.admin.sign(&g.broker).await.unwrap();
    the_one_reclaim_by(&g.admin, "automatic").await;
    // Extending after the end does not bring it back.
    assert_eq!(
        code(g.admin.extend(&g.grant_id, &at(g.start + 9000)).await),
        "reclaimed"
    );
}

#[tokio::test]
async fn a_member_found_past_its_end_time_is_refused_even_before_any_sweep() {
    let g = a_member_granted_for(60).await;
    g.clock.set(g.start + 61);
    assert_eq!(code(g.member.sign(&g.broker).await), "reclaimed");
    the_one_reclaim_by(&g.admin, "automatic").await;
    assert_eq!(g.service.service.sweep_grants().await.unwrap(), 0);
}

#[tokio::test]
async fn the_operator_reclaims_with_the_service_admin_token_and_is_recorded_as_operator() {
    let g = a_member_granted_for(3600).await;
    assert_eq!(
        code(g.admin.client.operator_reclaim("wrong", &g.grant_id).await),
        "unauthorized"
    );
    let list = g
        .admin
        .client
        .operator_reclaim(ADMIN_TOKEN, &g.grant_id)
        .await
        .unwrap();
    assert_eq!(list.reclaims.len(), 1);
    assert_eq!(list.reclaims[0].actor, "operator");
    assert_eq!(code(g.member.sign(&g.broker).await), "reclaimed");
    let all = g.admin.client.operator_grants(ADMIN_TOKEN).await.unwrap();
    assert_eq!(all.grants[0].status, "reclaimed");
}

#[tokio::test]
async fn a_grant_not_co_signed_by_the_administrators_share_is_refused_and_a_member_cannot_grant() {
    let g = a_member_granted_for(3600).await;
    let receiving = ChannelKey::generate().unwrap();

    // A member asking to grant with its own share: the service will not co-sign.
    let refused = g.member.grant_to_li_si(&at(now() + 3600), &receiving).await;
    let (d1, joint) = g.member.share();
    assert_eq!(code(refused), "not_requested");
    assert_eq!(code(g.member.grants().await), "not_requested");
    // Nor does a member's share co-sign a certificate request for the company key.
    let csr = Context::Csr(bzt_cosigner::wire::CsrRef {
        tbs_b64: B64.encode(b"any request info"),
    });
    assert_eq!(
        code(
            g.member
                .client
                .sign(
                    &g.member.file.key_id,
                    &d1,
                    &joint,
                    &csr,
                    b"any request info"
                )
                .await
        ),
        "not_requested"
    );
    // Nor through the administrator's key id: a member's share does not pass
    // the administrator's PIN proof.
    let stolen_id = g
        .member
        .client
        .grants(&g.admin.file.key_id, &d1, &joint)
        .await;
    assert_eq!(code(stolen_id), "wrong_pin");

    // A request signed by some other key (here a whole key somebody holds).
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).unwrap();
    secret[0] = 0x01; // below n
    let other = sm2::dsa::SigningKey::from_slice("1234567812345678", &secret).unwrap();
    let request = GrantRequest {
        action: Action::Grant,
        key_id: g.admin.file.key_id.clone(),
        grant_id: Some("forged-grant-1".into()),
        member: Some(li_si()),
        certificate: Some(certificate()),
        not_after: Some(at(now() + 3600)),
        nonce: "11".repeat(16),
        issued_at: now(),
    };
    let text = request.to_text();
    let sig: sm2::dsa::Signature = sm2::dsa::signature::Signer::sign(&other, text.as_bytes());
    let forged = GrantCall {
        request_b64: B64.encode(&text),
        signature_b64: B64.encode(sig.to_der().as_bytes()),
        factor: Some("01".repeat(32)),
    };
    let answer = post_sealed(&g.admin.client, &g.admin.file.key_id, &forged).await;
    assert_eq!(answer, "not_authorised");
    // And with no signature at all.
    let unsigned = GrantCall {
        signature_b64: String::new(),
        ..forged
    };
    assert_eq!(
        post_sealed(&g.admin.client, &g.admin.file.key_id, &unsigned).await,
        "not_authorised"
    );

    // Broker bytes that look like a grant request are never co-signed in a session.
    let session = g.broker.scanned("sign", text.as_bytes(), None);
    let (d1, joint) = g.admin.share();
    let tricked = g
        .admin
        .client
        .sign(&g.admin.file.key_id, &d1, &joint, &session, text.as_bytes())
        .await;
    assert_eq!(code(tricked), "not_requested");
    // Nothing was granted by any of this.
    assert_eq!(g.admin.grants().await.unwrap().grants.len(), 1);
    // The grant context signs only requests about the signing key.
    let about_other = GrantRequest {
        key_id: "someone-else".into(),
        ..request
    };
    let context = Context::Grant(GrantRef {
        tbs_b64: B64.encode(about_other.to_text()),
    });
    let refused = g
        .admin
        .client
        .sign(
            &g.admin.file.key_id,
            &d1,
            &joint,
            &context,
            about_other.to_text().as_bytes(),
        )
        .await;
    assert_eq!(code(refused), "not_requested");
}

/// Sends a hand-made grant call through the channel and returns the error code.
async fn post_sealed(client: &CosignerClient, key_id: &str, call: &GrantCall) -> String {
    let path = format!("/v1/keys/{key_id}/grants");
    let aad = bzt_cosigner::wire::channel_aad("POST", &path);
    let service_key = bzt_crypto::two_party::point_from_hex(&client.service_key_hex()).unwrap();
    let (sealed, _) = bzt_crypto::two_party::channel::seal_request(
        &service_key,
        &aad,
        &serde_json::to_vec(call).unwrap(),
    )
    .unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{}{path}", client.base_url()))
        .json(&bzt_cosigner::wire::SealedBody::from_sealed(&sealed))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = resp.json().await.unwrap();
    body["error"]["code"].as_str().unwrap_or("none").to_owned()
}

#[tokio::test]
async fn two_nodes_on_one_redis_agree_and_reclaim_exactly_once() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start().await;
    let start = now();
    let clock = Arc::new(ManualClock::new(start));
    let node = |name: &str| {
        let mut config = config(&broker, dir.path());
        config.node_name = Some(name.into());
        config.store = redis_store(&redis, "grants-test:");
        TestService::start_with_clock(config, clock.clone())
    };
    let a = node("node-a").await;
    let b = node("node-b").await;

    // Granted on node a; the member's phone reaches node b.
    let admin = Phone::administrator(&a).await;
    let (member, grant_id) = admin.grant_to_member(&at(start + 600)).await;
    let on_b = member.through(&b.url);
    on_b.sign(&broker).await.unwrap();
    member.sign(&broker).await.unwrap();

    // Both nodes sweep at once past the end time: one reclaims.
    clock.set(start + 601);
    let (ra, rb) = tokio::join!(a.service.sweep_grants(), b.service.sweep_grants());
    assert_eq!(ra.unwrap() + rb.unwrap(), 1);
    assert_eq!(code(member.sign(&broker).await), "reclaimed");
    assert_eq!(code(on_b.sign(&broker).await), "reclaimed");
    let all = a.client().await.operator_grants(ADMIN_TOKEN).await.unwrap();
    assert_eq!(all.reclaims.len(), 1);
    assert_eq!(all.reclaims[0].grant_id, grant_id);
    assert_eq!(all.reclaims[0].actor, "automatic");
    // The administrator still signs through either node.
    admin.sign(&broker).await.unwrap();
    admin.through(&b.url).sign(&broker).await.unwrap();
}

/// 注销 of a member's key through the key admin route (`POST /v1/admin/keys/<grant id>/revoke`)
/// is the operator taking the grant back: the grant lists as `reclaimed`, exactly one reclaim
/// record names the operator, and neither a second 注销 nor a reclaim adds another.
async fn revoking_a_members_key_reclaims_its_grant(store: Option<StoreConfig>) {
    let g = a_member_granted_on(store, 3600).await;
    g.member.sign(&g.broker).await.unwrap();

    let status = g
        .admin
        .client
        .admin(ADMIN_TOKEN, &g.grant_id, "revoke")
        .await
        .unwrap();
    assert_eq!(status.state, "revoked");
    let all = g.admin.client.operator_grants(ADMIN_TOKEN).await.unwrap();
    assert_eq!(all.grants.len(), 1);
    assert_eq!(all.grants[0].status, "reclaimed");
    assert_eq!(all.reclaims.len(), 1);
    assert_eq!(all.reclaims[0].grant_id, g.grant_id);
    assert_eq!(all.reclaims[0].actor, "operator");
    assert_eq!(all.reclaims[0].member, li_si());
    // The administrator's own list says the same.
    assert_eq!(
        g.admin.grants().await.unwrap().grants[0].status,
        "reclaimed"
    );
    assert_eq!(code(g.member.sign(&g.broker).await), "reclaimed");
    g.admin.sign(&g.broker).await.unwrap();

    // Once: 注销 again, the operator's reclaim and 解除授权 find nothing to do.
    assert_eq!(
        code(
            g.admin
                .client
                .admin(ADMIN_TOKEN, &g.grant_id, "revoke")
                .await
        ),
        "revoked"
    );
    assert_eq!(
        code(
            g.admin
                .client
                .operator_reclaim(ADMIN_TOKEN, &g.grant_id)
                .await
        ),
        "reclaimed"
    );
    assert_eq!(code(g.admin.ungrant(&g.grant_id).await), "reclaimed");
    let all = g.admin.client.operator_grants(ADMIN_TOKEN).await.unwrap();
    assert_eq!(all.reclaims.len(), 1, "{:?}", all.reclaims);
}

#[tokio::test]
async fn revoking_a_members_key_reclaims_its_grant_once_with_the_file_store() {
    revoking_a_members_key_reclaims_its_grant(None).await;
}

#[tokio::test]
async fn revoking_a_members_key_reclaims_its_grant_once_with_the_redis_store() {
    let redis = RedisServer::start();
    revoking_a_members_key_reclaims_its_grant(Some(redis_store(&redis, "revoke-test:"))).await;
}

/// The administrator's key lends the company certificate: frozen (挂失), its members cannot
/// co-sign until it is unfrozen and the listing says the lender is frozen; revoked (注销), every
/// grant it made is taken back at once (one 收回 record each, actor `operator`, reason
/// `lender_revoked`) and the member can neither sign nor decrypt.
#[tokio::test]
async fn a_frozen_lender_suspends_its_grants_and_a_revoked_one_ends_them_with_the_file_store() {
    a_frozen_lender_suspends_its_grants_and_a_revoked_one_ends_them(None).await;
}

#[tokio::test]
async fn a_frozen_lender_suspends_its_grants_and_a_revoked_one_ends_them_with_the_redis_store() {
    let redis = RedisServer::start();
    a_frozen_lender_suspends_its_grants_and_a_revoked_one_ends_them(Some(redis_store(
        &redis,
        "lender-test:",
    )))
    .await;
}

async fn a_frozen_lender_suspends_its_grants_and_a_revoked_one_ends_them(
    store: Option<StoreConfig>,
) {
    let g = a_member_granted_on(store, 3600).await;
    let lender = g.admin.file.key_id.clone();
    g.member.sign(&g.broker).await.unwrap();

    g.admin
        .client
        .admin(ADMIN_TOKEN, &lender, "freeze")
        .await
        .unwrap();
    assert_eq!(code(g.member.sign(&g.broker).await), "frozen");
    assert_eq!(code(g.member.decrypt(&g.broker).await), "frozen");
    let all = g.admin.client.operator_grants(ADMIN_TOKEN).await.unwrap();
    assert_eq!(all.grants[0].status, "active");
    assert_eq!(all.grants[0].lender_state.as_deref(), Some("frozen"));

    g.admin
        .client
        .admin(ADMIN_TOKEN, &lender, "unfreeze")
        .await
        .unwrap();
    g.member.sign(&g.broker).await.unwrap();
    let all = g.admin.client.operator_grants(ADMIN_TOKEN).await.unwrap();
    assert_eq!(all.grants[0].lender_state, None);

    g.admin
        .client
        .admin(ADMIN_TOKEN, &lender, "revoke")
        .await
        .unwrap();
    assert_eq!(code(g.member.sign(&g.broker).await), "reclaimed");
    assert_eq!(code(g.member.decrypt(&g.broker).await), "reclaimed");
    let all = g.admin.client.operator_grants(ADMIN_TOKEN).await.unwrap();
    assert_eq!(all.grants[0].grant_id, g.grant_id);
    assert_eq!(all.grants[0].status, "reclaimed");
    assert_eq!(all.grants[0].lender_state.as_deref(), Some("revoked"));
    assert_eq!(all.reclaims.len(), 1);
    assert_eq!(all.reclaims[0].grant_id, g.grant_id);
    assert_eq!(all.reclaims[0].actor, "operator");
    assert_eq!(all.reclaims[0].reason.as_deref(), Some("lender_revoked"));
    let member_key = g
        .admin
        .client
        .key_status(ADMIN_TOKEN, &g.grant_id)
        .await
        .unwrap();
    assert_eq!(member_key.state, "revoked");
}
