//! 扫码签章 with an electronic seal (GB/T 38540): a `sign` session created with `seal`, the phone
//! stamping with one of its seals, and the broker's refusals of seals it must not accept.

use crate::helpers::*;
use bzt_devca::{DevCa, IssuedCert};
use bzt_phone::{ApproveExtras, SealWallet};
use bzt_seal::{Picture, Seal, SealSignature, SealSpec, SealType};
use serde_json::{json, Value};
use sm3::{Digest, Sm3};
use time::{Duration, OffsetDateTime};
use x509_cert::der::{Decode, Encode};

const PROPERTY_INFO: &str = "/Doc_0/Signs/Sign_0/Signature.xml";
/// Stands in for the stamp's PNG: the broker passes the picture through.
const PICTURE: &[u8] = b"\x89PNG\r\n\x1a\n-seal-picture-";

/// A broker whose trusted seal maker is the platform test CA.
async fn seal_broker() -> TestApp {
    TestApp::spawn_with(|c| {
        c.seals.trusted_makers_pem_files = c.trust_domains[0].ca_pem_files.clone();
    })
    .await
}

fn cert_der(leaf: &IssuedCert) -> Vec<u8> {
    leaf.certificate().unwrap().to_der().unwrap()
}

/// A company seal made by `maker`, bound to `owner`, valid in `[start, end]`.
fn make_seal(
    maker: &DevCa,
    owner: &IssuedCert,
    start: OffsetDateTime,
    end: OffsetDateTime,
) -> Vec<u8> {
    let spec = SealSpec {
        es_id: "91110000TEST0001".into(),
        seal_type: SealType::Company,
        name: "示例建设有限公司".into(),
        owner_certs: vec![cert_der(owner)],
        created: start,
        valid_start: start,
        valid_end: end,
        picture: Picture {
            picture_type: "PNG".into(),
            data: PICTURE.to_vec(),
            width_mm: 40,
            height_mm: 40,
        },
    };
    bzt_seal::make_seal(
        &spec,
        &maker.certificate().to_der().unwrap(),
        maker.signing_key(),
    )
    .unwrap()
}

fn valid_seal(maker: &DevCa, owner: &IssuedCert) -> Vec<u8> {
    let now = OffsetDateTime::now_utc();
    make_seal(
        maker,
        owner,
        now - Duration::days(1),
        now + Duration::days(365),
    )
}

fn seal_session_body(document: &[u8]) -> Value {
    json!({
        "kind": "sign",
        "display": {"title": "投标文件签章", "detail": "第 1 页"},
        "seal": {"data_hash_b64": b64(&Sm3::digest(document)), "property_info": PROPERTY_INFO},
    })
}

async fn expect_refusal(resp: reqwest::Response, code: &str) -> String {
    assert_error(resp, 422, code).await
}

#[tokio::test]
async fn a_seal_session_is_stamped_with_the_chosen_seal_and_the_result_carries_the_seal_and_its_picture(
) {
    let app = seal_broker().await;
    let document = "投标文件 第1页".as_bytes();
    let created = app.create_session(seal_session_body(document)).await;
    let mut browser = app.browser(&created).await;
    let phone = app.phone("platform", "张三的手机");

    // The phone keeps two seals: one made for its certificate, one for a colleague's.
    let colleague = app.cas.leaf("platform", "李四");
    let mut wallet = SealWallet::new();
    wallet
        .add_der(&valid_seal(&app.cas.platform, &phone.leaf))
        .unwrap();
    wallet
        .add_der(&valid_seal(&app.cas.platform, &colleague))
        .unwrap();
    let usable = wallet.usable(&phone.identity, OffsetDateTime::now_utc());
    assert_eq!(
        usable.len(),
        1,
        "only the seal bound to this phone's certificate is offered"
    );

    let claimed = phone.claim(&created).await;
    let ask = claimed
        .seal
        .clone()
        .expect("the claim answer carries `seal`");
    assert_eq!(ask.data_hash, Sm3::digest(document).as_slice());
    assert_eq!(ask.property_info, PROPERTY_INFO);
    assert!(
        claimed.describe_zh().contains("电子印章"),
        "{}",
        claimed.describe_zh()
    );
    // A phone that would sign the bare hash is stopped before it sends anything.
    assert!(phone.approve(&claimed).await.is_err());

    phone
        .phone
        .approve_with_seal(
            &claimed,
            &phone.identity,
            usable[0],
            ApproveExtras::default(),
        )
        .await
        .unwrap();

    let result = loop {
        let e = browser.next_event().await;
        if e["type"] == "result" {
            break e;
        }
    };
    let r = &result["result"];
    assert_eq!(r["seal"]["name"], "示例建设有限公司");
    assert_eq!(r["seal"]["type"], "company");
    assert_eq!(r["seal"]["property_info"], PROPERTY_INFO);
    assert_eq!(r["seal"]["data_hash_b64"], b64(&Sm3::digest(document)));
    assert_eq!(
        r["seal"]["picture"],
        json!({"type": "PNG", "data_b64": b64(PICTURE), "width_mm": 40, "height_mm": 40})
    );
    let view = app.get_session(&created.id).await;
    assert_eq!(view["status"], "approved");
    assert_eq!(view["result"], *r);

    // The RP re-checks everything itself: the SES_Signature with the seal crate...
    let ses = unb64(r["seal_signature_b64"].as_str().unwrap());
    let sig = SealSignature::from_der(&ses).unwrap();
    bzt_seal::verify_signature(
        &sig,
        &[app.cas.platform.certificate().clone()],
        &Sm3::digest(document),
        OffsetDateTime::now_utc(),
    )
    .unwrap();
    // ...and `signature_b64` over `tbs_b64` (= DER(TBS_Sign)) with OpenSSL, as for any sign session.
    let tbs = unb64(r["tbs_b64"].as_str().unwrap());
    assert_eq!(tbs, sig.signed_bytes().unwrap());
    let signature = unb64(r["signature_b64"].as_str().unwrap());
    assert!(openssl_verifies(
        app.dir.path(),
        &phone.leaf.cert_pem,
        &tbs,
        &signature
    ));
    assert!(!openssl_verifies(
        app.dir.path(),
        &phone.leaf.cert_pem,
        document,
        &signature
    ));
}

/// An SES_Signature signed by `signer` around a seal that is not bound to it: what a phone that
/// skips its own check could send.
fn forged_signature(seal_der: &[u8], signer: &IssuedCert, data_hash: &[u8]) -> Vec<u8> {
    use bzt_seal::asn1::{SeSeal, SesSignature, TbsSign};
    use x509_cert::der::asn1::{BitString, Ia5String, OctetString};
    let tbs = TbsSign {
        version: 4,
        eseal: SeSeal::from_der(seal_der).unwrap(),
        time_info: bzt_seal::SesTime::from_offset(time::OffsetDateTime::now_utc()).unwrap(),
        data_hash: BitString::from_bytes(data_hash).unwrap(),
        property_info: Ia5String::new(PROPERTY_INFO).unwrap(),
        ext_datas: None,
    };
    let key =
        bzt_devca::signing_key(&bzt_devca::key_from_pem(&signer.key_pem, None).unwrap()).unwrap();
    let signature = bzt_devca::sign_der(&key, &tbs.to_der().unwrap()).unwrap();
    SesSignature {
        to_sign: tbs,
        cert: OctetString::new(cert_der(signer)).unwrap(),
        signature_alg_id: bzt_seal::OID_SM2_WITH_SM3,
        signature: BitString::from_bytes(&signature).unwrap(),
        time_stamp: None,
    }
    .to_der()
    .unwrap()
}

#[tokio::test]
async fn a_seal_made_for_another_certificate_is_refused_with_seal_not_acceptable() {
    let app = seal_broker().await;
    let document = b"page";
    let created = app.create_session(seal_session_body(document)).await;
    let phone = app.phone("platform", "p");
    let colleague = app.cas.leaf("platform", "李四");
    let claimed = phone.claim(&created).await;

    // The phone library refuses to stamp with a colleague's seal...
    let seal = Seal::from_der(&valid_seal(&app.cas.platform, &colleague)).unwrap();
    let e = phone
        .phone
        .approve_with_seal(&claimed, &phone.identity, &seal, ApproveExtras::default())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("another certificate"), "{e}");

    // ...and the broker refuses it from a phone that skips the check.
    let body = json!({
        "certificate_pem": phone.identity.certificate_pem(),
        "seal_signature_b64": b64(&forged_signature(seal.der(), &phone.leaf, &Sm3::digest(document))),
    });
    let resp = app
        .complete_raw(&created.id, claimed.phone_token.expose(), &body)
        .await;
    let message = expect_refusal(resp, "seal_not_acceptable").await;
    assert!(message.contains("SES_ESPropertyInfo.certList"), "{message}");
    assert!(message.contains("another certificate"), "{message}");
    assert_eq!(
        app.status_of(&created.id).await,
        "scanned",
        "a bad completion is counted, not final"
    );
}

#[tokio::test]
async fn an_expired_seal_is_refused_with_seal_not_acceptable() {
    let app = seal_broker().await;
    let created = app.create_session(seal_session_body(b"page")).await;
    let phone = app.phone("platform", "p");
    let now = OffsetDateTime::now_utc();
    let expired = make_seal(
        &app.cas.platform,
        &phone.leaf,
        now - Duration::days(30),
        now - Duration::days(1),
    );
    let mut wallet = SealWallet::new();
    let seal = wallet.add_der(&expired).unwrap().clone();
    assert!(
        wallet.usable(&phone.identity, now).is_empty(),
        "an expired seal is not offered"
    );

    let claimed = phone.claim(&created).await;
    let e = phone
        .phone
        .approve_with_seal(&claimed, &phone.identity, &seal, ApproveExtras::default())
        .await
        .unwrap_err();
    let e = broker_error(e);
    assert_eq!(
        (e.status, e.code.as_str()),
        (422, "seal_not_acceptable"),
        "{e}"
    );
    assert!(e.message.contains("SES_ESPropertyInfo.validEnd"), "{e}");
    assert!(e.message.contains("expired"), "{e}");
}

#[tokio::test]
async fn a_seal_whose_maker_is_not_trusted_is_refused_with_seal_not_acceptable() {
    let app = seal_broker().await;
    let created = app.create_session(seal_session_body(b"page")).await;
    let phone = app.phone("platform", "p");
    // The national CA issued the phone's colleague certificates, but it is no seal maker here.
    let seal = Seal::from_der(&valid_seal(&app.cas.national, &phone.leaf)).unwrap();
    let claimed = phone.claim(&created).await;
    let e = phone
        .phone
        .approve_with_seal(&claimed, &phone.identity, &seal, ApproveExtras::default())
        .await
        .unwrap_err();
    let e = broker_error(e);
    assert_eq!(
        (e.status, e.code.as_str()),
        (422, "seal_not_acceptable"),
        "{e}"
    );
    assert!(e.message.contains("SESeal.cert"), "{e}");
    assert!(e.message.contains("not a trusted seal maker"), "{e}");
}

#[tokio::test]
async fn a_broker_without_seal_makers_accepts_no_seal() {
    let app = TestApp::spawn().await;
    let created = app.create_session(seal_session_body(b"page")).await;
    let phone = app.phone("platform", "p");
    let seal = Seal::from_der(&valid_seal(&app.cas.platform, &phone.leaf)).unwrap();
    let claimed = phone.claim(&created).await;
    let e = broker_error(
        phone
            .phone
            .approve_with_seal(&claimed, &phone.identity, &seal, ApproveExtras::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, "seal_not_acceptable", "{e}");
}

#[tokio::test]
async fn a_seal_signature_over_another_hash_or_with_a_flipped_byte_is_a_bad_signature() {
    let app = seal_broker().await;
    let created = app.create_session(seal_session_body(b"page")).await;
    let phone = app.phone("platform", "p");
    let seal = valid_seal(&app.cas.platform, &phone.leaf);
    let claimed = phone.claim(&created).await;
    let token = claimed.phone_token.expose().to_owned();

    let other_hash = forged_signature(&seal, &phone.leaf, &Sm3::digest(b"another page"));
    let resp = app
        .complete_raw(
            &created.id,
            &token,
            &json!({"certificate_pem": phone.identity.certificate_pem(), "seal_signature_b64": b64(&other_hash)}),
        )
        .await;
    let message = expect_refusal(resp, "bad_signature").await;
    assert!(message.contains("TBS_Sign.dataHash"), "{message}");

    // A flipped byte in the picture breaks the signer's signature over TBS_Sign.
    let mut flipped = forged_signature(&seal, &phone.leaf, &Sm3::digest(b"page"));
    let at = flipped
        .windows(PICTURE.len())
        .position(|w| w == PICTURE)
        .unwrap();
    flipped[at + 10] ^= 1;
    let resp = app
        .complete_raw(
            &created.id,
            &token,
            &json!({"certificate_pem": phone.identity.certificate_pem(), "seal_signature_b64": b64(&flipped)}),
        )
        .await;
    let message = expect_refusal(resp, "bad_signature").await;
    assert!(message.contains("SES_Signature.signature"), "{message}");
}

#[tokio::test]
async fn seal_fields_are_checked_at_create_and_complete() {
    let app = seal_broker().await;
    let hash = b64(&Sm3::digest(b"x"));
    for (body, needle) in [
        (
            json!({"kind": "sign", "display": {"title": "t"}, "seal": {"data_hash_b64": b64(b"short"), "property_info": "p"}}),
            "32 bytes",
        ),
        (
            json!({"kind": "sign", "display": {"title": "t"}, "seal": {"data_hash_b64": hash, "property_info": "签名.xml"}}),
            "printable ASCII",
        ),
        (
            json!({"kind": "sign", "display": {"title": "t"}, "tbs_b64": b64(b"x"), "seal": {"data_hash_b64": hash, "property_info": "p"}}),
            "not both",
        ),
        (
            json!({"kind": "login", "display": {"title": "t"}, "seal": {"data_hash_b64": hash, "property_info": "p"}}),
            "only allowed for kind sign",
        ),
    ] {
        let message = assert_error(app.post_session(&body).await, 400, "invalid_request").await;
        assert!(message.contains(needle), "{message}");
    }

    // A seal session wants the SES_Signature; a plain sign session does not take one.
    let phone = app.phone("platform", "p");
    let created = app.create_session(seal_session_body(b"x")).await;
    let claimed = phone.claim(&created).await;
    let resp = app
        .complete_raw(
            &created.id,
            claimed.phone_token.expose(),
            &phone.completion_over(&claimed.tbs),
        )
        .await;
    let message = assert_error(resp, 400, "invalid_request").await;
    assert!(message.contains("seal_signature_b64"), "{message}");
    let plain = app
        .create_session(json!({"kind": "sign", "display": {"title": "t"}, "tbs_b64": b64(b"x")}))
        .await;
    let claimed = phone.claim(&plain).await;
    assert!(claimed.seal.is_none());
    let mut body = phone.completion_over(b"x");
    body["seal_signature_b64"] = json!(b64(b"x"));
    let resp = app
        .complete_raw(&plain.id, claimed.phone_token.expose(), &body)
        .await;
    let message = assert_error(resp, 400, "invalid_request").await;
    assert!(
        message.contains("only allowed when the session was created with `seal`"),
        "{message}"
    );
}

/// Runs the `bzt` binary; returns (success, stdout + stderr).
async fn bzt(dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_bzt"))
        .args(args)
        .current_dir(dir)
        .env_remove("BZT_CONFIG")
        .env_remove("BZT_DATA_DIR")
        .env_remove("BZT_PHONE_PIN")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run bzt");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn the_cli_makes_a_seal_the_cli_phone_stamps_with_it_and_bzt_seal_verify_checks_the_document()
{
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let data = d.join("data");
    let data_s = data.to_str().unwrap();
    assert!(bzt(d, &["dev-ca", "init", "--data-dir", data_s]).await.0);
    let cas = std::sync::Arc::new(TestCas {
        platform: DevCa::load(&bzt::dev::ca_dir(&data, "platform")).unwrap(),
        national: DevCa::load(&bzt::dev::ca_dir(&data, "national")).unwrap(),
    });
    let app = TestApp::spawn_with_cas(cas, |c| {
        c.seals.trusted_makers_pem_files = c.trust_domains[0].ca_pem_files.clone();
    })
    .await;

    let (ok, out) = bzt(
        d,
        &[
            "dev-ca",
            "issue",
            "--data-dir",
            data_s,
            "--cn",
            "示例建设有限公司",
            "--org",
            "示例建设有限公司",
            "--out",
            "co",
        ],
    )
    .await;
    assert!(ok, "{out}");
    image::RgbaImage::from_pixel(8, 8, image::Rgba([200, 0, 0, 255]))
        .save(d.join("seal.png"))
        .unwrap();
    std::fs::create_dir(d.join("seals")).unwrap();
    let (ok, out) = bzt(
        d,
        &[
            "dev-ca",
            "make-seal",
            "--data-dir",
            data_s,
            "--owner-cert",
            "co/cert.pem",
            "--name",
            "示例建设有限公司",
            "--picture",
            "seal.png",
            "--out",
            "seals/company.seal",
        ],
    )
    .await;
    assert!(ok, "{out}");
    assert!(
        out.contains("made company seal \"示例建设有限公司\""),
        "{out}"
    );
    let (ok, out) = bzt(
        d,
        &[
            "dev-ca",
            "make-seal",
            "--data-dir",
            data_s,
            "--owner-cert",
            "co/cert.pem",
            "--name",
            "x",
            "--picture",
            "co/cert.pem",
            "--out",
            "bad.seal",
        ],
    )
    .await;
    assert!(
        !ok && out.contains("is not a PNG, JPG, GIF, BMP or SVG picture"),
        "{out}"
    );

    let document = "投标文件：示例工程施工投标".as_bytes();
    std::fs::write(d.join("bid.txt"), document).unwrap();
    let created = app.create_session(seal_session_body(document)).await;
    let (ok, out) = bzt(
        d,
        &[
            "phone",
            "approve",
            &created.qr_text,
            "--cert",
            "co/cert.pem",
            "--key",
            "co/key.pem",
            "--seals",
            "seals",
        ],
    )
    .await;
    assert!(ok, "{out}");
    assert!(out.contains("使用印章：示例建设有限公司（公章"), "{out}");
    let view = app.get_session(&created.id).await;
    assert_eq!(view["status"], "approved", "{view}");
    let picture = unb64(
        view["result"]["seal"]["picture"]["data_b64"]
            .as_str()
            .unwrap(),
    );
    assert_eq!(picture, std::fs::read(d.join("seal.png")).unwrap());
    std::fs::write(
        d.join("sig.der"),
        unb64(view["result"]["seal_signature_b64"].as_str().unwrap()),
    )
    .unwrap();

    let (ok, out) = bzt(
        d,
        &[
            "seal",
            "verify",
            "sig.der",
            "--data",
            "bid.txt",
            "--data-dir",
            data_s,
        ],
    )
    .await;
    assert!(ok, "{out}");
    assert!(out.starts_with("OK: stamped"), "{out}");
    std::fs::write(d.join("bid.txt"), "投标文件：另一份".as_bytes()).unwrap();
    let (ok, out) = bzt(
        d,
        &[
            "seal",
            "verify",
            "sig.der",
            "--data",
            "bid.txt",
            "--data-dir",
            data_s,
        ],
    )
    .await;
    assert!(!ok, "{out}");
    assert!(out.contains("does NOT verify: TBS_Sign.dataHash"), "{out}");
    // Another installation's makers do not vouch for this seal.
    let other = d.join("other");
    assert!(
        bzt(
            d,
            &["dev-ca", "init", "--data-dir", other.to_str().unwrap()]
        )
        .await
        .0
    );
    let (ok, out) = bzt(
        d,
        &[
            "seal",
            "verify",
            "seals/company.seal",
            "--data-dir",
            other.to_str().unwrap(),
        ],
    )
    .await;
    assert!(!ok && out.contains("not a trusted seal maker"), "{out}");

    // The same seal stamps a one-page OFD; its SignedValue.dat protects its Signature.xml.
    let (ok, out) = bzt(
        d,
        &[
            "seal",
            "ofd",
            "--seal",
            "seals/company.seal",
            "--cert",
            "co/cert.pem",
            "--key",
            "co/key.pem",
            "--line",
            "投标报价：壹仟贰佰叁拾肆万元整",
            "--out",
            "bid.ofd",
        ],
    )
    .await;
    assert!(ok, "{out}");
    let unzip = std::process::Command::new("python3")
        .args(["-c", "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); [open(n.split('/')[-1], 'wb').write(z.read(n)) for n in ('Doc_0/Signs/Sign_0/Signature.xml', 'Doc_0/Signs/Sign_0/SignedValue.dat')]"])
        .arg("bid.ofd")
        .current_dir(d)
        .output()
        .unwrap();
    assert!(
        unzip.status.success(),
        "{}",
        String::from_utf8_lossy(&unzip.stderr)
    );
    let (ok, out) = bzt(
        d,
        &[
            "seal",
            "verify",
            "SignedValue.dat",
            "--data",
            "Signature.xml",
            "--data-dir",
            data_s,
        ],
    )
    .await;
    assert!(ok, "{out}");
    assert!(
        out.contains("propertyInfo /Doc_0/Signs/Sign_0/Signature.xml"),
        "{out}"
    );

    // A phone without a usable seal declines rather than leave the session hanging.
    let created = app.create_session(seal_session_body(document)).await;
    let (ok, out) = bzt(
        d,
        &[
            "phone",
            "approve",
            &created.qr_text,
            "--cert",
            "co/cert.pem",
            "--key",
            "co/key.pem",
            "--seals",
            "seals",
            "--seal",
            "no-such-seal",
        ],
    )
    .await;
    assert!(!ok && out.contains("no usable seal"), "{out}");
    assert_eq!(app.status_of(&created.id).await, "rejected");
}

/// 会话签章 with a seal, the phone's first step: one scan of the seal session `created`,
/// stamped with `seal` and asking to open a conversation; returns the conversation.
async fn open_conversation_with_a_seal(
    phone: &TestPhone,
    created: &Created,
    seal: &Seal,
) -> bzt_phone::PhoneConversation {
    let claimed = phone.claim(created).await;
    phone
        .phone
        .approve_with_seal(
            &claimed,
            &phone.identity,
            seal,
            ApproveExtras {
                open_conversation: true,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .conversation
        .expect("the seal session opened a conversation")
}

#[tokio::test]
async fn a_conversation_opened_with_a_seal_stamps_a_seal_on_each_page_with_auto_confirm() {
    const PAGES: usize = 20;
    let app = seal_broker().await;
    let mut body = seal_session_body("投标文件 封面".as_bytes());
    body["conversation"] = json!({"max_requests": PAGES + 1});
    let created = app.create_session(body).await;
    let phone = app.phone("platform", "张三的手机");
    let seal = Seal::from_der(&valid_seal(&app.cas.platform, &phone.leaf)).unwrap();
    let grant = open_conversation_with_a_seal(&phone, &created, &seal).await;
    let view = app.get_session(&created.id).await;
    assert_eq!(view["result"]["seal"]["name"], "示例建设有限公司");

    // The requester asks for a seal on each page, then one plain signature.
    let page = |n: usize| format!("投标文件 第{n}页").into_bytes();
    let post = |body: Value| {
        app.http
            .post(app.url(&format!("/v1/conversations/{}/requests", grant.id)))
            .bearer_auth(API_KEY)
            .json(&body)
            .send()
    };
    let mut ids = Vec::new();
    for n in 1..=PAGES {
        ids.push(
            app.send_conversation_request(
                &grant.id,
                json!({
                    "display": {"title": format!("第{n}页")},
                    "seal": {"data_hash_b64": b64(&Sm3::digest(page(n))), "property_info": format!("/Doc_0/Pages/Page_{n}")},
                }),
            )
            .await,
        );
    }
    let plain_id = app
        .send_conversation_request(
            &grant.id,
            json!({"display": {"title": "确认函"}, "tbs_b64": b64(b"plain")}),
        )
        .await;
    let resp = post(json!({"display": {"title": "x"}, "tbs_b64": b64(b"x"), "seal": {"data_hash_b64": b64(&Sm3::digest(b"x")), "property_info": "p"}}))
        .await
        .unwrap();
    assert_error(resp, 400, "invalid_request").await;

    // The phone stamps every page with the seal the user chose once (自动确认).
    let mut socket = bzt_phone::ConversationSocket::connect(&app.address, &grant)
        .await
        .unwrap()
        .with_seal(seal.clone());
    let mut answered = 0;
    let summary = socket
        .run_auto_confirm(&phone.identity, |_, outcome| {
            assert!(
                matches!(
                    outcome,
                    bzt_phone::Outcome::Approved {
                        auto_confirmed: true
                    }
                ),
                "{outcome:?}"
            );
            answered += 1;
            if answered == PAGES + 1 {
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        })
        .await
        .unwrap();
    assert_eq!(summary.approved, PAGES as u64 + 1);

    let makers = [app.cas.platform.certificate().clone()];
    for (i, rid) in ids.iter().enumerate() {
        let r: Value = app.conversation_request_result(&grant.id, rid).await;
        assert_eq!(r["status"], "approved", "{r}");
        assert_eq!(r["auto_confirmed"], true);
        assert_eq!(
            r["seal"]["property_info"],
            format!("/Doc_0/Pages/Page_{}", i + 1)
        );
        assert_eq!(r["seal"]["picture"]["data_b64"], b64(PICTURE));
        let sig =
            SealSignature::from_der(&unb64(r["seal_signature_b64"].as_str().unwrap())).unwrap();
        bzt_seal::verify_signature(
            &sig,
            &makers,
            &Sm3::digest(page(i + 1)),
            OffsetDateTime::now_utc(),
        )
        .unwrap();
        // Each page's stamp protects that page only.
        assert!(bzt_seal::verify_signature(
            &sig,
            &makers,
            &Sm3::digest(page(i + 2)),
            OffsetDateTime::now_utc()
        )
        .is_err());
        let signature = unb64(r["signature_b64"].as_str().unwrap());
        let tbs = unb64(r["tbs_b64"].as_str().unwrap());
        assert_eq!(tbs, sig.signed_bytes().unwrap());
        if i == 0 {
            assert!(openssl_verifies(
                app.dir.path(),
                &phone.leaf.cert_pem,
                &tbs,
                &signature
            ));
        }
    }
    let r: Value = app.conversation_request_result(&grant.id, &plain_id).await;
    assert_eq!(r["status"], "approved");
    assert!(r.get("seal").is_none(), "{r}");
    assert!(openssl_verifies(
        app.dir.path(),
        &phone.leaf.cert_pem,
        b"plain",
        &unb64(r["signature_b64"].as_str().unwrap())
    ));
}

#[tokio::test]
async fn a_phone_without_a_seal_declines_seal_requests_and_a_bare_signature_is_refused() {
    let app = seal_broker().await;
    let created = app
        .create_session(json!({
            "kind": "sign", "display": {"title": "开启会话"}, "tbs_b64": b64(b"open"),
            "conversation": {"max_requests": 5},
        }))
        .await;
    let phone = app.phone("platform", "p");
    let claimed = phone.claim(&created).await;
    let grant = phone
        .approve_opening_conversation(&claimed)
        .await
        .unwrap()
        .conversation
        .unwrap();
    let post_seal = || {
        app.http
            .post(app.url(&format!("/v1/conversations/{}/requests", grant.id)))
            .bearer_auth(API_KEY)
            .json(&json!({"display": {"title": "第1页"}, "seal": {"data_hash_b64": b64(&Sm3::digest(b"p1")), "property_info": "p1"}}))
            .send()
    };
    let r1: Value = post_seal().await.unwrap().json().await.unwrap();
    let r2: Value = post_seal().await.unwrap().json().await.unwrap();

    let mut socket = bzt_phone::ConversationSocket::connect(&app.address, &grant)
        .await
        .unwrap();
    // A bare SM2 signature over the hash is not an answer to a seal request.
    let first = socket.next_request().await.unwrap().unwrap();
    assert!(first.seal.is_some());
    let sig = bzt_phone::sign(&phone.identity, &first.tbs).unwrap();
    let e = socket
        .respond_raw(&first.request_id, &sig, false)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("invalid_request"), "{e}");
    // The request stays pending after the refusal; the user declines it.
    let ack = socket.reject(&first, "手机未选择印章").await.unwrap();
    assert_eq!(ack.status, bzt_phone::AckStatus::Rejected.as_str());
    // Without a seal chosen, the library declines the next one instead of leaving it to expire.
    let mut seen = 0;
    socket
        .run_auto_confirm(&phone.identity, |_, outcome| {
            assert!(
                matches!(outcome, bzt_phone::Outcome::Rejected { .. }),
                "{outcome:?}"
            );
            seen += 1;
            if seen == 1 {
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        })
        .await
        .unwrap();
    for r in [r1, r2] {
        let v: Value = app
            .conversation_request_result(&grant.id, r["request_id"].as_str().unwrap())
            .await;
        assert_eq!(v["status"], "rejected", "{v}");
        assert_eq!(v["reason"], "手机未选择印章");
    }
}

#[tokio::test]
async fn a_stale_or_future_stamp_or_another_property_info_is_a_bad_signature() {
    let app = seal_broker().await;
    let now = OffsetDateTime::now_utc();
    // A certificate valid well before the stale stamp, so the stamp's time is what is refused.
    let leaf = app
        .cas
        .platform
        .issue(
            &bzt_devca::LeafSpec::new("张三", "示例建设有限公司")
                .with_validity(now - Duration::days(2), now + Duration::days(30)),
        )
        .unwrap();
    let phone = app.phone_with(leaf, "p");
    let seal = valid_seal(&app.cas.platform, &phone.leaf);
    let key = bzt_devca::signing_key(&bzt_devca::key_from_pem(&phone.leaf.key_pem, None).unwrap())
        .unwrap();
    for (at, property_info, part) in [
        (now - Duration::hours(1), PROPERTY_INFO, "TBS_Sign.timeInfo"),
        (now + Duration::hours(1), PROPERTY_INFO, "TBS_Sign.timeInfo"),
        (
            now,
            "/Doc_0/Signs/Sign_9/Signature.xml",
            "TBS_Sign.propertyInfo",
        ),
    ] {
        let created = app.create_session(seal_session_body(b"page")).await;
        let claimed = phone.claim(&created).await;
        let ses = bzt_seal::sign_with_seal(
            &seal,
            &cert_der(&phone.leaf),
            &key,
            &Sm3::digest(b"page"),
            property_info,
            at,
        )
        .unwrap();
        let body = json!({"certificate_pem": phone.identity.certificate_pem(), "seal_signature_b64": b64(&ses)});
        let resp = app
            .complete_raw(&created.id, claimed.phone_token.expose(), &body)
            .await;
        let message = expect_refusal(resp, "bad_signature").await;
        assert!(message.starts_with(part), "{message}");
    }
}

/// A seal answer on the phone's conversation socket carries the whole seal with its picture:
/// the socket takes what a seal completion may carry, not only a bare signature.
#[tokio::test]
async fn a_conversation_seal_answer_with_a_40_kib_picture_is_accepted() {
    let app = seal_broker().await;
    let mut body = seal_session_body("投标文件 封面".as_bytes());
    body["conversation"] = json!({"max_requests": 2});
    let created = app.create_session(body).await;
    let phone = app.phone("platform", "张三的手机");
    let now = OffsetDateTime::now_utc();
    let spec = SealSpec {
        es_id: "91110000BIGPIC01".into(),
        seal_type: SealType::Company,
        name: "示例建设有限公司".into(),
        owner_certs: vec![cert_der(&phone.leaf)],
        created: now,
        valid_start: now - Duration::days(1),
        valid_end: now + Duration::days(30),
        picture: Picture {
            picture_type: "PNG".into(),
            data: vec![0x5a; 40 * 1024],
            width_mm: 40,
            height_mm: 40,
        },
    };
    let maker = &app.cas.platform;
    let seal = Seal::from_der(
        &bzt_seal::make_seal(
            &spec,
            &maker.certificate().to_der().unwrap(),
            maker.signing_key(),
        )
        .unwrap(),
    )
    .unwrap();
    let grant = open_conversation_with_a_seal(&phone, &created, &seal).await;
    let rid = app
        .send_conversation_request(
            &grant.id,
            json!({
                "display": {"title": "第2页"},
                "seal": {"data_hash_b64": b64(&Sm3::digest(b"page 2")), "property_info": PROPERTY_INFO},
            }),
        )
        .await;
    let mut socket = bzt_phone::ConversationSocket::connect(&app.address, &grant)
        .await
        .unwrap()
        .with_seal(seal);
    // Bounded: a socket that drops the answer makes the phone reconnect and wait for ever.
    let summary = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        socket.run_auto_confirm(&phone.identity, |_, _| std::ops::ControlFlow::Break(())),
    )
    .await
    .expect("the answer is acknowledged")
    .unwrap();
    assert_eq!(summary.approved, 1, "{summary:?}");
    let r: Value = app.conversation_request_result(&grant.id, &rid).await;
    assert_eq!(r["status"], "approved", "{r}");
    assert!(r["seal_signature_b64"].as_str().unwrap().len() > 40 * 1024 * 4 / 3);
}
