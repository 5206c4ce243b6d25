//! 企业证书授权 through the broker: an administrator (张三) grants the company certificate to a
//! member (李四), whose phone signs a session with its own share; OpenSSL verifies the
//! signature against the company certificate, the session's `result.delegate` and the audit
//! trail name 李四, `GET /v1/audit?delegate=` filters, and after the operator reclaims the
//! grant through the broker the member can no longer sign while the administrator still can.

use crate::helpers::*;
use crate::split_key::{
    approve_requests_with_split_key, open_conversation_with_one_scan, start, PIN,
};
use bzt_cosigner::wire::GrantList;
use bzt_phone::grants::GrantOffer;
use bzt_phone::split::SplitIdentity;
use bzt_phone::{ApproveExtras, Device, SessionStatus};
use serde_json::{json, Value};

const MEMBER_PIN: &str = "975310";

fn in_an_hour() -> String {
    let t = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

async fn audit(app: &TestApp, query: &[(&str, &str)]) -> Vec<Value> {
    let resp = app
        .http
        .get(app.url("/v1/audit"))
        .query(query)
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    body["records"].as_array().unwrap().clone()
}

/// 添加被授权人: the member's phone (李四, `dev-lisi`) invites, the administrator grants the
/// company certificate for an hour, and the member accepts with [`MEMBER_PIN`]; returns the
/// administrator's grant list, the offer and the member's identity.
async fn invite_grant_and_accept_lisi(
    app: &TestApp,
    admin: &SplitIdentity,
) -> (GrantList, GrantOffer, SplitIdentity) {
    let member_dir = app.dir.path().join("lisi");
    let member_device = Device {
        id: "dev-lisi".into(),
        name: "李四的手机".into(),
    };
    let invite = bzt_phone::grants::invite(&member_dir, "李四", member_device).unwrap();
    let (list, offer) = admin
        .unlock(PIN)
        .unwrap()
        .grant(&invite, &in_an_hour())
        .await
        .unwrap();
    let member = bzt_phone::grants::accept(&member_dir, &offer, MEMBER_PIN)
        .await
        .unwrap();
    (list, offer, member)
}

/// The operator lists every grant through the broker (admin token).
async fn operator_grants(app: &TestApp) -> Value {
    app.rp_get_as(ADMIN_TOKEN, "/v1/admin/cosigner/grants")
        .await
}

/// Creates a sign session and has `identity` approve it; returns the session view.
async fn sign_with(
    world: &crate::split_key::SplitWorld,
    identity: &SplitIdentity,
    pin: &str,
    tbs: &[u8],
) -> Result<Value, bzt_phone::Error> {
    let app = &world.app;
    let created = app
        .create_session(json!({
            "kind": "sign",
            "display": { "title": "签署投标函" },
            "tbs_b64": b64(tbs),
        }))
        .await;
    let phone = world.phone();
    let claimed = phone
        .claim_as(&created.qr(), identity.device())
        .await
        .unwrap();
    let key = identity.unlock(pin).unwrap();
    let answer = phone
        .approve_split(&claimed, &key, ApproveExtras::default())
        .await?;
    assert_eq!(answer.status, SessionStatus::Approved.as_str());
    Ok(app.get_session(&created.id).await)
}

#[tokio::test]
async fn a_member_signs_with_the_company_certificate_and_the_result_and_audit_name_the_delegate() {
    let world = start().await;
    let app = &world.app;
    let admin = world.enrol("张三").await;

    // 添加被授权人: the member's phone invites, the administrator grants, the member accepts.
    let (list, offer, member) = invite_grant_and_accept_lisi(app, &admin).await;
    assert_eq!(list.grants.len(), 1);
    assert_eq!(member.device().id, "dev-lisi");
    assert_eq!(member.serial_hex(), admin.serial_hex());
    assert_ne!(member.key_id(), admin.key_id());

    // The member signs; OpenSSL verifies against the company certificate; the result names 李四.
    let tbs = "投标函：李四代表示例建设有限公司签署".as_bytes();
    let view = sign_with(&world, &member, MEMBER_PIN, tbs).await.unwrap();
    let result = &view["result"];
    assert_eq!(
        result["delegate"],
        json!({"name": "李四", "device": "dev-lisi"})
    );
    let signature = unb64(result["signature_b64"].as_str().unwrap());
    assert!(openssl_verifies(
        app.dir.path(),
        result["certificate"]["pem"].as_str().unwrap(),
        tbs,
        &signature
    ));

    // The administrator's own signature carries no delegate, and verifies too.
    let view = sign_with(&world, &admin, PIN, b"admin bytes")
        .await
        .unwrap();
    assert!(view["result"].get("delegate").is_none(), "{view}");
    let signature = unb64(view["result"]["signature_b64"].as_str().unwrap());
    assert!(openssl_verifies(
        app.dir.path(),
        view["result"]["certificate"]["pem"].as_str().unwrap(),
        b"admin bytes",
        &signature
    ));

    // The audit trail names the delegate, and filters by name or device.
    let by_lisi = audit(app, &[("delegate", "李四")]).await;
    assert_eq!(by_lisi.len(), 1, "{by_lisi:?}");
    assert_eq!(
        by_lisi[0]["delegate"],
        json!({"name": "李四", "device": "dev-lisi"})
    );
    assert_eq!(
        by_lisi[0]["cert_subject"],
        "CN=张三,O=示例建设有限公司,C=CN"
    );
    assert_eq!(audit(app, &[("delegate", "dev-lisi")]).await.len(), 1);
    assert!(audit(app, &[("delegate", "王五")]).await.is_empty());
    assert_eq!(audit(app, &[]).await.len(), 2);

    // The operator reclaims through the broker (admin token); the member cannot sign any more.
    let grant_id = offer.package.grant_id.clone();
    let listed = operator_grants(app).await;
    assert_eq!(listed["grants"][0]["status"], "active", "{listed}");
    let resp = app
        .http
        .post(app.url(&format!("/v1/admin/cosigner/grants/{grant_id}/reclaim")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let reclaimed: Value = resp.json().await.unwrap();
    assert_eq!(reclaimed["reclaims"][0]["actor"], "operator", "{reclaimed}");
    let refused = sign_with(&world, &member, MEMBER_PIN, b"after").await;
    let err = refused.unwrap_err();
    match &err {
        bzt_phone::Error::Cosigner(e) => assert_eq!(e.code(), Some("reclaimed"), "{err}"),
        other => panic!("expected the service's refusal, got {other}"),
    }
    sign_with(&world, &admin, PIN, b"admin still signs")
        .await
        .unwrap();
    // Without the admin token the broker refuses.
    let resp = app
        .http
        .get(app.url("/v1/admin/cosigner/grants"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

/// 会话签章 with a granted certificate: each request the member signs names the delegate in its
/// result (as a session's `result.delegate`) and in its audit record, which
/// `GET /v1/audit?delegate=` finds; the administrator's own requests name nobody.
#[tokio::test]
async fn a_member_signs_conversation_requests_and_each_result_and_audit_record_name_the_delegate() {
    let world = start().await;
    let app = &world.app;
    let admin = world.enrol("张三").await;
    let (_, _, member) = invite_grant_and_accept_lisi(app, &admin).await;
    let lisi = json!({"name": "李四", "device": "dev-lisi"});

    // Each opens a conversation with one scan and answers one request in it.
    let mut answered = Vec::new();
    for (identity, pin) in [(&member, MEMBER_PIN), (&admin, PIN)] {
        let created = app
            .create_session(json!({
                "kind": "sign",
                "display": { "title": "签署投标文件" },
                "tbs_b64": b64(b"opening"),
                "conversation": crate::conversation::policy(5, 600, 7200),
            }))
            .await;
        let key = identity.unlock(pin).unwrap();
        let grant = open_conversation_with_one_scan(&world.phone(), &created, identity, &key).await;
        let request_id = app
            .send_conversation_request(
                &grant.id,
                json!({ "tbs_b64": b64("第1页".as_bytes()), "display": { "title": "第1页" } }),
            )
            .await;
        let summary = approve_requests_with_split_key(app, &grant, &key, None, 1, false).await;
        assert_eq!(summary.approved, 1, "{summary:?}");
        let result = app
            .conversation_request_result(&grant.id, &request_id)
            .await;
        assert_eq!(result["status"], "approved", "{result}");
        let view = app.get_session(&created.id).await;
        let signature = unb64(result["signature_b64"].as_str().unwrap());
        assert!(openssl_verifies(
            app.dir.path(),
            view["result"]["certificate"]["pem"].as_str().unwrap(),
            "第1页".as_bytes(),
            &signature
        ));
        answered.push((request_id, result));
    }
    let (member_request, member_result) = &answered[0];
    let (admin_request, admin_result) = &answered[1];
    assert_eq!(member_result["delegate"], lisi, "{member_result}");
    assert!(admin_result.get("delegate").is_none(), "{admin_result}");

    // The audit trail: 李四's opening session and request, and only those, name him.
    let by_lisi = audit(app, &[("delegate", "李四")]).await;
    let kinds: Vec<&str> = by_lisi
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.len(), 2, "{by_lisi:?}");
    let request_record = by_lisi
        .iter()
        .find(|r| r["kind"] == "conversation_request")
        .expect("the member's conversation request is in the audit trail");
    assert_eq!(request_record["request_id"], member_request.as_str());
    assert_eq!(request_record["delegate"], lisi);
    assert_eq!(request_record["outcome"], "approved");
    let all = audit(app, &[]).await;
    let admin_record = all
        .iter()
        .find(|r| r["request_id"] == admin_request.as_str())
        .expect("the administrator's request is in the audit trail");
    assert!(admin_record.get("delegate").is_none(), "{admin_record}");
}

/// Runs `bzt` in `dir` off the async runtime (the phone commands run their own).
async fn cli(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    let dir = dir.to_path_buf();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_bzt"))
            .args(&args)
            .current_dir(&dir)
            .env_remove("BZT_CONFIG")
            .env_remove("BZT_PHONE_PIN")
            .output()
            .expect("run bzt")
    })
    .await
    .unwrap()
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn the_cli_grants_a_member_who_logs_in_as_the_company_until_the_administrator_ungrants() {
    use crate::envelope_flows::start_broker;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let broker = start_broker(d).await;
    let cosigner_url = broker.cosigner_url_in_banner();
    let data = d.join("data");
    let data = data.to_str().unwrap();
    ok(&cli(
        d,
        &[
            "phone",
            "enroll",
            "--cosigner",
            &cosigner_url,
            "--pin",
            PIN,
            "--cn",
            "张三",
            "--org",
            "示例建设有限公司",
            "--out",
            "admin",
            "--data-dir",
            data,
        ],
    )
    .await);

    // 添加被授权人 on the command line: invite, grant, accept.
    ok(&cli(
        d,
        &[
            "phone",
            "grant-invite",
            "--name",
            "李四",
            "--dir",
            "lisi",
            "--out",
            "invite.json",
            "--device-id",
            "dev-lisi",
        ],
    )
    .await);
    ok(&cli(
        d,
        &[
            "phone",
            "grant",
            "--identity",
            "admin",
            "--pin",
            PIN,
            "--invite",
            "invite.json",
            "--until",
            &in_an_hour(),
            "--out",
            "offer.json",
        ],
    )
    .await);
    ok(&cli(
        d,
        &[
            "phone",
            "accept-grant",
            "--dir",
            "lisi",
            "--offer",
            "offer.json",
            "--pin",
            MEMBER_PIN,
        ],
    )
    .await);
    let offer: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("offer.json")).unwrap()).unwrap();
    let grant_id = offer["package"]["grant_id"].as_str().unwrap().to_owned();
    // The member's directory holds no receiving key any more, no whole key, not its PIN.
    assert!(!d.join("lisi/grant-receiving.key").exists());
    for entry in std::fs::read_dir(d.join("lisi")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(!text.contains("PRIVATE KEY") && !text.contains(MEMBER_PIN));
    }

    // 李四 logs in with the company certificate; the result names the delegate.
    let api_key = broker.demo_api_key();
    // The relying party's login session on the development broker: its id and QR text.
    let login = || async {
        let created = broker.create_session(&api_key, &rp_login()).await;
        (created.id, created.qr_text)
    };
    let (id, qr) = login().await;
    ok(&cli(
        d,
        &[
            "phone",
            "approve",
            &qr,
            "--identity",
            "lisi",
            "--pin",
            MEMBER_PIN,
        ],
    )
    .await);
    let view = broker.session(&api_key, &id).await;
    assert_eq!(view["status"], "approved", "{view}");
    assert_eq!(
        view["result"]["delegate"],
        json!({"name": "李四", "device": "dev-lisi"})
    );
    assert!(view["result"]["certificate"]["subject"]
        .as_str()
        .unwrap()
        .contains("CN=张三"));

    // `bzt audit show --delegate` finds 李四's login, and only it.
    let shown = ok(&cli(
        d,
        &[
            "audit",
            "show",
            "--file",
            "data/audit.jsonl",
            "--delegate",
            "李四",
        ],
    )
    .await);
    let lines: Vec<Value> = shown
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{shown}");
    assert_eq!(lines[0]["session_id"], id.as_str());
    assert_eq!(lines[0]["delegate"]["device"], "dev-lisi");

    // `grants` lists it active; `ungrant` takes it back; 李四 can no longer sign.
    let listed: Value = serde_json::from_str(&ok(&cli(
        d,
        &["phone", "grants", "--identity", "admin", "--pin", PIN],
    )
    .await))
    .unwrap();
    assert_eq!(listed["grants"][0]["status"], "active", "{listed}");
    let after: Value = serde_json::from_str(&ok(&cli(
        d,
        &[
            "phone",
            "ungrant",
            "--identity",
            "admin",
            "--pin",
            PIN,
            "--grant",
            &grant_id,
        ],
    )
    .await))
    .unwrap();
    assert_eq!(after["reclaims"][0]["actor"], "administrator", "{after}");
    let (_, qr) = login().await;
    let refused = cli(
        d,
        &[
            "phone",
            "approve",
            &qr,
            "--identity",
            "lisi",
            "--pin",
            MEMBER_PIN,
        ],
    )
    .await;
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("reclaimed"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // The administrator still logs in.
    let (_, qr) = login().await;
    ok(&cli(
        d,
        &["phone", "approve", &qr, "--identity", "admin", "--pin", PIN],
    )
    .await);
}

/// 注销 of a member's key through the broker's key admin route is the operator reclaiming the
/// grant: the grant lists `reclaimed` with one reclaim record (actor `operator`), the member is
/// refused, and the company certificate is not revoked, so the administrator still signs.
#[tokio::test]
async fn revoking_a_members_key_through_the_broker_reclaims_the_grant_and_revokes_no_certificate() {
    let world = start().await;
    let app = &world.app;
    let admin = world.enrol("张三").await;
    let (_, offer, member) = invite_grant_and_accept_lisi(app, &admin).await;
    let grant_id = offer.package.grant_id.clone();
    let revoke = |body: Value| {
        app.http
            .post(app.url(&format!("/v1/admin/cosigner/keys/{grant_id}/revoke")))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
    };

    // Naming the company certificate would revoke it for everyone: refused.
    let resp = revoke(json!({"certificate_serial": admin.serial_hex()}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = revoke(json!({})).await.unwrap();
    assert_eq!(resp.status(), 200);
    let status: Value = resp.json().await.unwrap();
    assert_eq!(status["state"], "revoked", "{status}");
    assert!(status.get("revoked_serial").is_none(), "{status}");

    let listed = operator_grants(app).await;
    assert_eq!(listed["grants"][0]["status"], "reclaimed", "{listed}");
    assert_eq!(listed["reclaims"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["reclaims"][0]["actor"], "operator", "{listed}");
    assert!(sign_with(&world, &member, MEMBER_PIN, b"after")
        .await
        .is_err());
    sign_with(&world, &admin, PIN, b"the company certificate still signs")
        .await
        .unwrap();
}
