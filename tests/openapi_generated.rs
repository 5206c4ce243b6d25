//! The generated OpenAPI document (`GET /openapi.json`, from the wire structs
//! of `bzt-wire`) kept honest:
//!
//! - the broker serves exactly the committed `docs/openapi.json` (after a
//!   change to the wire types, regenerate it with
//!   `BZT_WRITE_OPENAPI=1 cargo test --test openapi_generated`);
//! - it is a valid OpenAPI document for an independent validator
//!   (`openapi-spec-validator`, PyPI);
//! - real answers and refusals of its operations validate against its schemas
//!   with an independent JSON Schema implementation (Python `jsonschema`),
//!   strictly: a field the broker sends that the schema does not declare
//!   fails;
//! - requests its schema describes are accepted, and a field it does not
//!   declare is refused, as the typed request is strict.

use bzt::clock::SystemClock;
use bzt::config::{AppConfig, TrustDomainConfig};
use bzt::{Application, Config};
use bzt_devca::{DevCa, LeafSpec};
use bzt_phone::{ApproveExtras, Phone, PhoneIdentity, QrText};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

const API_KEY: &str = "openapi-generated-test-api-key";

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json")
}

/// A broker with one app and one trust domain (`platform`), on a free port.
async fn start() -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tempfile::TempDir,
    DevCa,
) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let ca = DevCa::generate("OpenAPI Generated Test CA", "BZT Test", "platform").expect("a CA");
    let ca_file = dir.path().join("platform-root.pem");
    std::fs::write(&ca_file, ca.cert_pem()).expect("write the CA");
    let mut config = Config::defaults();
    config.listen = "127.0.0.1:0".into();
    config.data_dir = Some(dir.path().join("data"));
    config.apps = vec![AppConfig {
        id: "app1".into(),
        name: "测试交易平台".into(),
        api_key: Some(API_KEY.into()),
        api_key_sha256: None,
        allowed_origins: vec![],
        webhook_secret: None,
    }];
    config.trust_domains = vec![TrustDomainConfig {
        name: "platform".into(),
        ca_pem_files: vec![ca_file],
        ..Default::default()
    }];
    let app = Application::build(&config, Arc::new(SystemClock), None)
        .await
        .expect("the broker builds");
    let base = format!("http://127.0.0.1:{}", app.port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run(async move {
        let _ = stopped.await;
    }));
    (base, stop, dir, ca)
}

/// Runs Python with `script`, `args` after it; panics with its output unless it exits 0.
fn python(script: &str, args: &[&str]) -> String {
    let (ok, text) = try_python(script, args);
    assert!(ok, "python failed:\n{text}");
    text
}

/// Runs Python with `script`; whether it exited 0, and its output.
fn try_python(script: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs (scripts/install-test-deps.sh installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Checks `instance` against `components.schemas.<name>` of `doc` with Python
/// `jsonschema` (Draft 2020-12, OpenAPI 3.1's dialect), every object schema
/// closed (`additionalProperties: false`) so an undeclared field fails.
fn assert_valid(doc: &Value, name: &str, instance: &Value) {
    let (ok, text) = validate(doc, name, instance);
    assert!(ok, "{name} does not match its schema:\n{text}\n{instance}");
}

fn validate(doc: &Value, name: &str, instance: &Value) -> (bool, String) {
    const SCRIPT: &str = r##"
import json, sys
import jsonschema
doc = json.loads(sys.argv[1]); name = sys.argv[2]; instance = json.loads(sys.argv[3])
def close(s):
    if isinstance(s, dict):
        if s.get("type") == "object" and "properties" in s:
            s.setdefault("additionalProperties", False)
        for v in s.values(): close(v)
    elif isinstance(s, list):
        for v in s: close(v)
close(doc)
schema = {"$ref": "#/components/schemas/" + name, "components": doc["components"]}
errors = list(jsonschema.Draft202012Validator(schema).iter_errors(instance))
for e in errors: print(list(e.absolute_path), e.message)
sys.exit(1 if errors else 0)
"##;
    try_python(SCRIPT, &[&doc.to_string(), name, &instance.to_string()])
}

#[tokio::test]
async fn the_served_document_is_the_committed_one() {
    let (base, _stop, _dir, _ca) = start().await;
    let served: Value = reqwest::get(format!("{base}/openapi.json"))
        .await
        .expect("GET /openapi.json")
        .json()
        .await
        .expect("JSON");
    assert_eq!(served, bzt::http::openapi::document());
    if std::env::var_os("BZT_WRITE_OPENAPI").is_some() {
        let text = serde_json::to_string_pretty(&served).expect("JSON") + "\n";
        std::fs::write(committed_path(), text).expect("write docs/openapi.json");
    }
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(committed_path()).expect("read docs/openapi.json"),
    )
    .expect("docs/openapi.json is JSON");
    assert_eq!(
        served, committed,
        "docs/openapi.json is not the generated document: regenerate it with \
         BZT_WRITE_OPENAPI=1 cargo test --test openapi_generated"
    );
}

#[test]
fn the_committed_document_is_valid_openapi() {
    let path = committed_path();
    let out = python(
        "import sys\nfrom openapi_spec_validator import validate\nfrom openapi_spec_validator.readers import read_from_filename\nspec, _ = read_from_filename(sys.argv[1])\nvalidate(spec)\nprint('valid', spec['openapi'])",
        &[path.to_str().expect("a UTF-8 path")],
    );
    assert!(out.contains("valid 3.1"), "{out}");
}

#[test]
fn the_validator_refuses_a_broken_document() {
    // The check above can fail: a document whose schema reference leads nowhere is refused.
    let mut doc = bzt::http::openapi::document();
    doc["components"]["schemas"]
        .as_object_mut()
        .expect("the schemas")
        .remove("CreateSessionResponse");
    let out = Command::new("python3")
        .arg("-c")
        .arg("import json, sys\nfrom openapi_spec_validator import validate\nvalidate(json.loads(sys.argv[1]))")
        .arg(doc.to_string())
        .output()
        .expect("python3 runs");
    assert!(
        !out.status.success(),
        "a document with a dangling $ref passed"
    );
}

#[tokio::test]
async fn create_answers_and_refusals_match_the_generated_schemas() {
    let doc = bzt::http::openapi::document();
    let (base, _stop, _dir, _ca) = start().await;
    let http = reqwest::Client::new();
    let create = |body: Value| {
        http.post(format!("{base}/v1/sessions"))
            .bearer_auth(API_KEY)
            .json(&body)
            .send()
    };

    // A request that uses every field the schema declares for kind sign.
    let request = json!({
        "kind": "sign",
        "ttl_s": 120,
        "display": { "title": "投标文件签章", "detail": "第 1 标段" },
        "accept": ["platform"],
        "expect_cert": { "serial": "0A:1B", "issuer": "CN=BZT 开发测试 平台 CA" },
        "requester": { "ip": "203.0.113.7", "user_agent": "Mozilla/5.0", "origin": null },
        "tbs_b64": "5oqV5qCH",
        "conversation": { "max_requests": 10 },
        "rotate_s": 10,
        "number_match": true
    });
    assert_valid(&doc, "CreateSessionRequest", &request);
    let created = create(request).await.expect("create");
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.expect("JSON");
    assert_valid(&doc, "CreateSessionResponse", &created);
    assert_eq!(created["status"], "pending");
    // The check can fail: a field the schema does not declare does.
    let mut extended = created.clone();
    extended["undeclared"] = json!(1);
    let (ok, text) = validate(&doc, "CreateSessionResponse", &extended);
    assert!(!ok && text.contains("undeclared"), "{text}");

    // A decrypt session with an opening window.
    let now = bzt_core::Timestamp::now_utc();
    let decrypt = json!({
        "kind": "decrypt",
        "display": { "title": "开标解密" },
        "envelope_header_b64": "e30=",
        "reply_key": format!("04{}", "32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7BC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0"),
        "opening": { "not_before": now.plus_secs(3600), "not_after": now.plus_secs(2 * 3600) }
    });
    assert_valid(&doc, "CreateSessionRequest", &decrypt);
    let created = create(decrypt).await.expect("create");
    assert_eq!(created.status(), 201, "{:?}", created.text().await);

    // Refusals carry the Error body; an undeclared field is refused by the typed request.
    let unknown = json!({ "kind": "login", "display": { "title": "登录" }, "colour": "red" });
    let refused = create(unknown).await.expect("create");
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.expect("JSON");
    assert_valid(&doc, "Error", &body);
    assert_eq!(body["error"]["code"], "invalid_request");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("colour"),
        "{body}"
    );

    let unauthorized = http
        .post(format!("{base}/v1/sessions"))
        .json(&json!({ "kind": "login", "display": { "title": "登录" } }))
        .send()
        .await
        .expect("create");
    assert_eq!(unauthorized.status(), 401);
    assert_valid(&doc, "Error", &unauthorized.json().await.expect("JSON"));
}

#[tokio::test]
async fn conversation_request_answers_match_the_generated_schemas() {
    let doc = bzt::http::openapi::document();
    let (base, _stop, _dir, ca) = start().await;
    let http = reqwest::Client::new();

    // A sign session whose phone opens a conversation.
    let created: Value = http
        .post(format!("{base}/v1/sessions"))
        .bearer_auth(API_KEY)
        .json(&json!({
            "kind": "sign",
            "display": { "title": "合同签署" },
            "tbs_b64": "5ZCI5ZCM",
            "conversation": {}
        }))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("JSON");
    let leaf = ca
        .issue(&LeafSpec::new("张三", "示例建设有限公司"))
        .expect("a leaf");
    let identity = PhoneIdentity::from_pem(&leaf.cert_pem, &leaf.key_pem, None)
        .expect("an identity")
        .with_device("dev-1", "测试手机");
    let phone = Phone::new(http.clone());
    let qr = QrText::parse(created["qr_text"].as_str().expect("qr_text")).expect("a QR text");
    let claimed = phone.claim(&qr, &identity).await.expect("claim");
    let extras = ApproveExtras {
        open_conversation: true,
        ..ApproveExtras::default()
    };
    let answer = phone
        .approve(&claimed, &identity, extras)
        .await
        .expect("approve");
    let cid = answer.conversation.expect("a conversation").id;
    let requests = format!("{base}/v1/conversations/{cid}/requests");

    let request = json!({ "tbs_b64": "56ysMumhtQ==", "display": { "title": "第 2 页" } });
    assert_valid(&doc, "ConversationRequestInput", &request);
    let accepted = http
        .post(&requests)
        .bearer_auth(API_KEY)
        .json(&request)
        .send()
        .await
        .expect("post a request");
    assert_eq!(accepted.status(), 202);
    let accepted: Value = accepted.json().await.expect("JSON");
    assert_valid(&doc, "ConversationRequestAccepted", &accepted);

    // Refusals: an undeclared field, and a conversation that does not exist.
    let refused = http
        .post(&requests)
        .bearer_auth(API_KEY)
        .json(&json!({ "tbs_b64": "YQ==", "display": { "title": "t" }, "page": 3 }))
        .send()
        .await
        .expect("post");
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.expect("JSON");
    assert_valid(&doc, "Error", &body);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("page"),
        "{body}"
    );
    let unknown = http
        .post(format!(
            "{base}/v1/conversations/no-such-conversation/requests"
        ))
        .bearer_auth(API_KEY)
        .json(&request)
        .send()
        .await
        .expect("post");
    assert_eq!(unknown.status(), 404);
    assert_valid(&doc, "Error", &unknown.json().await.expect("JSON"));
}
