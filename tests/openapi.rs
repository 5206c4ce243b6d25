//! The generated OpenAPI document (`bzt::http::openapi::document()`, served
//! at `GET /openapi.json` and committed as `docs/openapi.json`) kept honest
//! against the real broker:
//!
//! - Every path and method of the document is routed: a request to it does
//!   not fall through to the router's `404 no such endpoint` or `405`, and its
//!   status is one the document lists for that operation.
//! - Every route of [`bzt::http::ROUTES`] is in the document, and nothing else.
//! - Real answers (create, session views, claim, complete, snapshots and
//!   events over WebSocket and SSE, errors, admin, ops, conversations, audit)
//!   validate against the document's schemas with an independent JSON Schema
//!   implementation (Python `jsonschema`, Draft 2020-12), strictly: every
//!   object schema is closed first, so a field the server sends that the
//!   schema does not declare fails too.
//! - The error-code enum and its statuses match [`bzt_core::ErrorCode`].
//!
//! The document is generated from the handlers' `#[utoipa::path]` and the
//! wire types of `bzt-wire`; there is no hand-kept copy.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bzt::clock::SystemClock;
use bzt::config::{AppConfig, TrustDomainConfig};
use bzt::{Application, Config};
use bzt_core::ErrorCode;
use bzt_devca::{DevCa, LeafSpec};
use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};
use tokio_tungstenite::tungstenite::Message;

const API_KEY: &str = "openapi-test-api-key";
const ADMIN_TOKEN: &str = "openapi-test-admin-token";
const ALLOWED_ORIGIN: &str = "http://rp.example";
const HTTP_METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

// ---- The document -----------------------------------------------------------

struct Doc {
    root: Value,
}

fn doc() -> &'static Doc {
    static DOC: OnceLock<Doc> = OnceLock::new();
    DOC.get_or_init(|| Doc {
        root: bzt::http::openapi::document(),
    })
}

impl Doc {
    /// `(method, path)` of every operation, method in lowercase.
    fn operations(&self) -> BTreeSet<(String, String)> {
        let paths = self.root["paths"].as_object().expect("`paths` is a map");
        let mut out = BTreeSet::new();
        for (path, item) in paths {
            for (key, _) in item.as_object().expect("a path item is a map") {
                if HTTP_METHODS.contains(&key.as_str()) {
                    out.insert((key.clone(), path.clone()));
                }
            }
        }
        out
    }

    fn operation(&self, method: &str, path: &str) -> &Value {
        &self.root["paths"][path][method]
    }

    /// Follows `$ref` chains (local references only).
    fn resolve<'a>(&'a self, mut v: &'a Value) -> &'a Value {
        for _ in 0..16 {
            match v.get("$ref").and_then(Value::as_str) {
                Some(r) => v = self.pointer(r),
                None => return v,
            }
        }
        panic!("$ref chain too long at {v}");
    }

    fn pointer(&self, reference: &str) -> &Value {
        let ptr = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("only local $ref are used: {reference}"));
        self.root
            .pointer(ptr)
            .unwrap_or_else(|| panic!("$ref {reference} does not resolve"))
    }

    fn schema(&self, name: &str) -> &Value {
        let s = &self.root["components"]["schemas"][name];
        assert!(!s.is_null(), "no schema {name} in the document");
        s
    }

    /// The documented response of an operation for `status`, resolved.
    fn response(&self, method: &str, path: &str, status: u16) -> Option<&Value> {
        let responses = &self.operation(method, path)["responses"];
        responses
            .get(status.to_string())
            .or_else(|| responses.get("default"))
            .map(|r| self.resolve(r))
    }

    /// Documented error codes and their statuses.
    fn error_statuses(&self) -> BTreeMap<String, u64> {
        let code = self.schema("ErrorCode");
        let statuses = code["x-http-status"]
            .as_object()
            .expect("ErrorCode has x-http-status");
        let enumerated: BTreeSet<String> = code["enum"]
            .as_array()
            .expect("ErrorCode has an enum")
            .iter()
            .map(|c| c.as_str().unwrap().to_owned())
            .collect();
        let mapped: BTreeSet<String> = statuses.keys().cloned().collect();
        assert_eq!(
            enumerated, mapped,
            "ErrorCode enum and x-http-status differ"
        );
        statuses
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
            .collect()
    }

    /// Validates `value` against `schema` strictly; panics with every finding.
    fn assert_valid(&self, schema: &Value, value: &Value, what: &str) {
        let errors = validate(schema, value);
        assert!(
            errors.is_empty(),
            "{what} does not match the document:\n  {}\nvalue: {value:#}",
            errors.join("\n  ")
        );
    }

    fn assert_valid_named(&self, name: &str, value: &Value, what: &str) {
        self.assert_valid(
            &json!({ "$ref": format!("#/components/schemas/{name}") }),
            value,
            what,
        );
    }

    /// Property names an object schema declares, through `allOf` and `$ref`.
    fn declared(&self, schema: &Value, out: &mut BTreeSet<String>) {
        let schema = self.resolve(schema);
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            out.extend(props.keys().cloned());
        }
        for member in schema
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.declared(member, out);
        }
    }
}

// ---- The validator: Python `jsonschema`, one process for the whole test binary ----

/// Reads the document's components once, closes every object schema
/// (`additionalProperties: false`; a schema that composes others with `allOf`
/// is closed with `unevaluatedProperties: false` instead, and the schemas it
/// composes stay open, with the alternatives they offer: the audit record
/// composes its body, whose `oneOf` is an operation or a checkpoint), then answers one line per `[schema, instance]` line:
/// the list of findings, empty when valid.
const VALIDATOR: &str = r##"
import json, sys
import jsonschema
components = json.loads(sys.stdin.readline())
def composed(node, out):
    if isinstance(node, dict):
        for member in node.get("allOf", []):
            if isinstance(member, dict) and "$ref" in member:
                out.add(member["$ref"].rsplit("/", 1)[-1])
        for v in node.values(): composed(v, out)
    elif isinstance(node, list):
        for v in node: composed(v, out)
open_names = set(); composed(components, open_names)
def close(s, member=False):
    if isinstance(s, dict):
        if not member:
            if s.get("type") == "object" and "properties" in s:
                s.setdefault("additionalProperties", False)
            if "allOf" in s and "additionalProperties" not in s:
                s.setdefault("unevaluatedProperties", False)
        for k, v in s.items():
            if k == "allOf":
                for m in v: close(m, member=True)
            elif k in ("properties", "$defs", "schemas"):
                for x in v.values(): close(x, member=False)
            elif k in ("items", "additionalProperties", "not", "if", "then", "else"):
                close(v)
            elif k in ("oneOf", "anyOf"):
                for m in v: close(m, member=member)
    return s
for name, schema in components.get("schemas", {}).items():
    close(schema, member=name in open_names)
for line in sys.stdin:
    schema, instance = json.loads(line)
    close(schema)
    schema["components"] = components
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in
              jsonschema.Draft202012Validator(schema).iter_errors(instance)]
    print(json.dumps(errors), flush=True)
"##;

struct Validator {
    _child: std::process::Child,
    input: std::process::ChildStdin,
    output: std::io::BufReader<std::process::ChildStdout>,
}

/// Findings of `instance` against `schema` (local `$ref`s into the document).
fn validate(schema: &Value, instance: &Value) -> Vec<String> {
    use std::io::{BufRead, Write};
    static VALIDATOR_PROCESS: OnceLock<std::sync::Mutex<Validator>> = OnceLock::new();
    let process = VALIDATOR_PROCESS.get_or_init(|| {
        let mut child = std::process::Command::new("python3")
            .arg("-c")
            .arg(VALIDATOR)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs (scripts/install-test-deps.sh installs it and jsonschema)");
        let mut input = child.stdin.take().expect("stdin");
        let output = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        writeln!(input, "{}", doc().root["components"]).expect("send the components");
        std::sync::Mutex::new(Validator {
            _child: child,
            input,
            output,
        })
    });
    let mut v = process.lock().unwrap_or_else(|e| e.into_inner());
    writeln!(v.input, "{}", json!([schema, instance])).expect("send to the validator");
    let mut line = String::new();
    v.output
        .read_line(&mut line)
        .expect("the validator answers");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("validator said {line:?}: {e}"))
}

// ---- The broker -------------------------------------------------------------

struct Broker {
    base: String,
    http: reqwest::Client,
    ca: DevCa,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start() -> Broker {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::generate("OpenAPI Test CA", "BZT Test", "platform").unwrap();
    let ca_file = dir.path().join("platform-root.pem");
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();

    let mut config = Config::defaults();
    config.listen = "127.0.0.1:0".into();
    config.data_dir = Some(dir.path().join("data"));
    config.apps = vec![AppConfig {
        id: "app1".into(),
        name: "测试交易平台".into(),
        api_key: Some(API_KEY.into()),
        api_key_sha256: None,
        allowed_origins: vec![ALLOWED_ORIGIN.into()],
        webhook_secret: Some("openapi-test-webhook-secret".into()),
    }];
    // The webhook test's receiver listens on 127.0.0.1.
    config.webhooks.allowed_private_networks = vec!["127.0.0.0/8".into()];
    config.trust_domains = vec![TrustDomainConfig {
        name: "platform".into(),
        ca_pem_files: vec![ca_file],
        ..Default::default()
    }];
    config.admin_token = Some(ADMIN_TOKEN.into());

    let app = Application::build(&config, Arc::new(SystemClock), None)
        .await
        .expect("the broker builds");
    let base = format!("http://127.0.0.1:{}", app.port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run(async move {
        let _ = stopped.await;
    }));
    Broker {
        base,
        http: reqwest::Client::new(),
        ca,
        _dir: dir,
        _stop: stop,
    }
}

/// An answer, read whole.
struct Answer {
    status: u16,
    content_type: Option<String>,
    headers: reqwest::header::HeaderMap,
    bytes: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or_else(|e| {
            panic!(
                "answer {} is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.bytes)
            )
        })
    }

    /// The media type without parameters.
    fn media_type(&self) -> Option<&str> {
        self.content_type
            .as_deref()
            .map(|c| c.split(';').next().unwrap_or("").trim())
    }
}

impl Broker {
    async fn send(&self, req: reqwest::RequestBuilder) -> Answer {
        let resp = req.send().await.expect("the broker answers");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let content_type = headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = resp.bytes().await.unwrap().to_vec();
        Answer {
            status,
            content_type,
            headers,
            bytes,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn create(&self, body: &Value) -> Value {
        doc().assert_valid_named("CreateSessionRequest", body, "the create request");
        let a = self
            .send(
                self.http
                    .post(self.url("/v1/sessions"))
                    .bearer_auth(API_KEY)
                    .json(body),
            )
            .await;
        assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.bytes));
        let v = a.json();
        check_answer(&a, "post", "/v1/sessions");
        v
    }

    async fn get_session(&self, id: &str) -> Value {
        let a = self
            .send(
                self.http
                    .get(self.url(&format!("/v1/sessions/{id}")))
                    .bearer_auth(API_KEY),
            )
            .await;
        assert_eq!(a.status, 200);
        check_answer(&a, "get", "/v1/sessions/{id}");
        a.json()
    }

    async fn claim(&self, qr_text: &str) -> Value {
        let body = json!({ "qr_text": qr_text, "device": { "id": "dev-1", "name": "张三的手机" } });
        doc().assert_valid_named("ClaimRequest", &body, "the claim request");
        let a = self
            .send(self.http.post(self.url("/v1/claim")).json(&body))
            .await;
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.bytes));
        check_answer(&a, "post", "/v1/claim");
        a.json()
    }

    async fn complete(&self, id: &str, phone_token: &str, body: &Value) -> Answer {
        doc().assert_valid_named("CompleteRequest", body, "the complete request");
        let a = self
            .send(
                self.http
                    .post(self.url(&format!("/v1/sessions/{id}/complete")))
                    .bearer_auth(phone_token)
                    .json(body),
            )
            .await;
        check_answer(&a, "post", "/v1/sessions/{id}/complete");
        a
    }
}

/// Checks an answer against the documented response of `method path`: its
/// status is listed, its media type is one the response documents, a JSON
/// body matches the schema, and an error body is exactly `{error: {code,
/// message}}` with a documented code of that status.
fn check_answer(a: &Answer, method: &str, path: &str) {
    let d = doc();
    let response = d.response(method, path, a.status).unwrap_or_else(|| {
        panic!(
            "{} {path} answered {}, which the document does not list: {}",
            method.to_uppercase(),
            a.status,
            String::from_utf8_lossy(&a.bytes)
        )
    });
    if a.status >= 400 {
        assert_error_body(a);
    }
    let Some(content) = response.get("content").and_then(Value::as_object) else {
        return;
    };
    let media = a
        .media_type()
        .unwrap_or_else(|| panic!("{method} {path} {}: no Content-Type", a.status));
    let documented = content.get(media).unwrap_or_else(|| {
        panic!(
            "{method} {path} {} answered {media}, documented: {:?}",
            a.status,
            content.keys().collect::<Vec<_>>()
        )
    });
    if media == "application/json" {
        if let Some(schema) = documented.get("schema") {
            d.assert_valid(
                schema,
                &a.json(),
                &format!("{} {path} {}", method.to_uppercase(), a.status),
            );
        }
    }
}

/// The protocol's error body, exactly.
fn assert_error_body(a: &Answer) {
    let v = a.json();
    let obj = v.as_object().expect("error body is an object");
    assert_eq!(
        obj.keys().collect::<Vec<_>>(),
        ["error"],
        "error body has exactly `error`: {v}"
    );
    let err = v["error"].as_object().expect("`error` is an object");
    let keys: BTreeSet<&str> = err.keys().map(String::as_str).collect();
    assert_eq!(keys, BTreeSet::from(["code", "message"]), "{v}");
    let code = err["code"].as_str().expect("code is a string");
    assert!(
        err["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{v}"
    );
    let statuses = doc().error_statuses();
    let documented = statuses
        .get(code)
        .unwrap_or_else(|| panic!("error code {code} is not in the document's enum"));
    assert_eq!(
        *documented, a.status as u64,
        "code {code} answered with status {}",
        a.status
    );
    assert_eq!(
        a.headers
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok()),
        Some("no-store"),
        "error answers carry Cache-Control: no-store"
    );
}

fn assert_error(a: &Answer, status: u16, code: &str) {
    assert_eq!(a.status, status, "{}", String::from_utf8_lossy(&a.bytes));
    assert_error_body(a);
    assert_eq!(a.json()["error"]["code"], code);
}

fn fill_path(path: &str) -> String {
    let re = regex_lite::Regex::new(r"\{([a-z_]+)\}").unwrap();
    re.replace_all(path, |c: &regex_lite::Captures<'_>| match &c[1] {
        "id" => "AAAAAAAAAAAAAAAAAAAAAA".to_owned(),
        "serial" => "0a1b".to_owned(),
        other => format!("dummy-{other}"),
    })
    .into_owned()
}

// ---- The document itself ------------------------------------------------------

/// Every `$ref` anywhere in `v`.
fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("$ref", Value::String(r)) => out.push(r),
                    _ => refs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[test]
fn the_document_is_openapi_3_1_and_self_consistent() {
    let d = doc();
    assert_eq!(d.root["openapi"], "3.1.0");
    assert!(d.root["info"]["title"].is_string());
    assert!(d.root["info"]["version"].is_string());

    let mut all = Vec::new();
    refs(&d.root, &mut all);
    assert!(!all.is_empty());
    for r in all {
        d.pointer(r);
    }

    let schemes = d.root["components"]["securitySchemes"]
        .as_object()
        .expect("security schemes");
    let mut ids = BTreeSet::new();
    for (method, path) in d.operations() {
        let op = d.operation(&method, &path);
        let id = op["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
        assert!(ids.insert(id.to_owned()), "operationId {id} twice");
        assert!(
            op["responses"].as_object().is_some_and(|r| !r.is_empty()),
            "{method} {path} documents no response"
        );
        let security = op["security"]
            .as_array()
            .unwrap_or_else(|| panic!("{method} {path} states no `security` (use [] for none)"));
        for requirement in security {
            for name in requirement.as_object().unwrap().keys() {
                assert!(schemes.contains_key(name), "{method} {path}: scheme {name}");
            }
        }
        // Path parameters are declared, on the path item or the operation.
        let item = &d.root["paths"][&path];
        let declared: BTreeSet<String> = item["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(op["parameters"].as_array().into_iter().flatten())
            .map(|p| d.resolve(p))
            .filter(|p| p["in"] == "path")
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect();
        let re = regex_lite::Regex::new(r"\{([a-z_]+)\}").unwrap();
        let in_path: BTreeSet<String> = re.captures_iter(&path).map(|c| c[1].to_owned()).collect();
        assert_eq!(declared, in_path, "path parameters of {method} {path}");
        // Every error answer documents the Error body.
        for (status, response) in op["responses"].as_object().unwrap() {
            if status.starts_with('4') || status.starts_with('5') {
                let r = d.resolve(response);
                assert_eq!(
                    r["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/Error",
                    "{method} {path} {status} documents the Error body"
                );
            }
        }
    }

    // `required` names declared properties.
    for (name, schema) in d.root["components"]["schemas"].as_object().unwrap() {
        let mut declared = BTreeSet::new();
        d.declared(schema, &mut declared);
        for r in schema["required"].as_array().into_iter().flatten() {
            let r = r.as_str().unwrap();
            assert!(
                declared.contains(r),
                "schema {name} requires undeclared {r}"
            );
        }
    }
}

#[test]
fn the_error_codes_are_the_servers() {
    use ErrorCode::*;
    let all = ErrorCode::ALL;
    // A new variant fails to compile here until it is handled (and documented).
    for c in all {
        match c {
            InvalidRequest | Unauthorized | Forbidden | NotFound | MethodNotAllowed
            | AlreadyClaimed | Conflict | Expired | PayloadTooLarge | BadSignature
            | UntrustedCertificate | RateLimited | Internal | Unavailable | SealNotAcceptable => {}
        }
    }
    let server: BTreeMap<String, u64> = all
        .iter()
        .map(|c| (c.as_str().to_owned(), u64::from(c.http_status())))
        .collect();
    assert_eq!(doc().error_statuses(), server);
}

// ---- Routes ---------------------------------------------------------------

#[test]
fn every_route_is_documented_and_nothing_else() {
    let routes: BTreeSet<(String, String)> = bzt::http::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        routes.len(),
        bzt::http::ROUTES.len(),
        "ROUTES has duplicates"
    );
    let documented = doc().operations();
    let undocumented: Vec<_> = routes.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routes).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from the generated document (add #[utoipa::path] to the handler and list it in http/openapi.rs): {undocumented:?}"
    );
    assert!(
        unrouted.is_empty(),
        "the generated document has routes that bzt::http::ROUTES lacks: {unrouted:?}"
    );
    assert!(
        documented.iter().all(|(_, p)| !p.starts_with("/demo")),
        "the development demo is not part of the API"
    );
}

#[tokio::test]
async fn every_documented_operation_is_routed() {
    let b = start().await;
    let fallback = json!({ "error": { "code": "not_found", "message": "no such endpoint" } });

    // The fallback itself, so the comparison below means something.
    let a = b.send(b.http.get(b.url("/v1/no-such-thing"))).await;
    assert_error(&a, 404, "not_found");
    assert_eq!(a.json(), fallback);
    let a = b.send(b.http.put(b.url("/v1/sessions"))).await;
    assert_error(&a, 405, "method_not_allowed");

    let ops = doc().operations();
    assert!(ops.len() >= 17, "only {} operations documented", ops.len());
    for (method, path) in ops {
        let url = b.url(&fill_path(&path));
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let a = b.send(b.http.request(m, &url)).await;
        let routed = !(a.status == 404
            && serde_json::from_slice::<Value>(&a.bytes).ok().as_ref() == Some(&fallback))
            && a.status != 405;
        assert!(
            routed,
            "{} {path} is documented but not routed: {} {}",
            method.to_uppercase(),
            a.status,
            String::from_utf8_lossy(&a.bytes)
        );
        check_answer(&a, &method, &path);
    }
}

// ---- Real answers against the schemas -------------------------------------------

/// Reads SSE events until the first one is complete.
async fn first_sse_event(resp: reqwest::Response) -> (String, String, Value) {
    let mut resp = resp;
    let mut buf = String::new();
    let block = loop {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), resp.chunk())
            .await
            .expect("an SSE event in time")
            .unwrap()
            .expect("the stream stays open until the first event");
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        if let Some(end) = buf.find("\n\n") {
            break buf[..end].to_owned();
        }
    };
    let (mut event, mut id, mut data) = (String::new(), String::new(), String::new());
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            event = v.trim().to_owned();
        } else if let Some(v) = line.strip_prefix("id:") {
            id = v.trim().to_owned();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.trim_start());
        }
    }
    (
        event,
        id,
        serde_json::from_str(&data).expect("SSE data is JSON"),
    )
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next JSON text frame, or the close code.
async fn next_frame(ws: &mut Ws) -> Result<Value, Option<u16>> {
    loop {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
            .await
            .expect("a frame in time");
        match msg {
            Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(t.as_str()).unwrap()),
            Some(Ok(Message::Close(frame))) => return Err(frame.map(|f| u16::from(f.code))),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("socket error: {e}"),
            None => return Err(None),
        }
    }
}

/// The `type`s a frame union of the document (`oneOf` of tagged objects) declares.
fn frame_types(union: &Value) -> BTreeSet<String> {
    let d = doc();
    let union = d.resolve(union);
    let mut out = BTreeSet::new();
    for variant in union["oneOf"].as_array().expect("a frame union is a oneOf") {
        let variant = d.resolve(variant);
        let members: Vec<&Value> = match variant["allOf"].as_array() {
            Some(all) => all.iter().collect(),
            None => vec![variant],
        };
        for m in members {
            for t in m["properties"]["type"]["enum"]
                .as_array()
                .into_iter()
                .flatten()
            {
                out.insert(t.as_str().expect("a type name").to_owned());
            }
        }
    }
    out
}

fn assert_ws_frame(frame: &Value, expected_type: &str) {
    assert_socket_frame(
        "/v1/sessions/{id}/ws",
        "server-messages",
        frame,
        expected_type,
    );
}

/// Claims and approves `session` with a fresh certificate of the test CA.
async fn claim_and_approve(b: &Broker, created: &Value, extra: Value) -> (Value, Answer) {
    let claimed = b.claim(created["qr_text"].as_str().unwrap()).await;
    let tbs = B64
        .decode(claimed["tbs_b64"].as_str().unwrap())
        .expect("tbs_b64 is base64");
    let leaf = b.ca.issue(&LeafSpec::new("张三", "测试投标公司")).unwrap();
    let key = bzt_devca::key_from_pem(&leaf.key_pem, None).unwrap();
    let signer = bzt_devca::signing_key(&key).unwrap();
    let signature = bzt_devca::sign_der(&signer, &tbs).unwrap();
    let mut body = json!({
        "certificate_pem": leaf.cert_pem,
        "signature_b64": B64.encode(signature),
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let a = b
        .complete(
            created["id"].as_str().unwrap(),
            claimed["phone_token"].as_str().unwrap(),
            &body,
        )
        .await;
    (claimed, a)
}

#[tokio::test]
async fn browser_and_phone_answers_match_the_schemas() {
    let b = start().await;
    let d = doc();

    let created = b
        .create(&json!({
            "kind": "login",
            "display": { "title": "登录 示例交易平台", "detail": "项目 2026-001" },
            "ttl_s": 120,
            "accept": ["platform"],
            "number_match": true,
        }))
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let t = created["browser_token"].as_str().unwrap().to_owned();
    assert_eq!(created["ttl_s"], 120);

    let pending = b.get_session(&id).await;
    assert_eq!(pending["status"], "pending");

    // QR images.
    for (path, media) in [("qr.svg", "image/svg+xml"), ("qr.png", "image/png")] {
        let a = b
            .send(
                b.http
                    .get(b.url(&format!("/v1/sessions/{id}/{path}?t={t}"))),
            )
            .await;
        assert_eq!(a.status, 200);
        assert_eq!(a.media_type(), Some(media));
        check_answer(&a, "get", &format!("/v1/sessions/{{id}}/{path}"));
    }
    let a = b
        .send(b.http.get(b.url(&format!("/v1/sessions/{id}/qr.png"))))
        .await;
    assert_error(&a, 401, "unauthorized");
    check_answer(&a, "get", "/v1/sessions/{id}/qr.png");
    let a = b
        .send(
            b.http
                .get(b.url(&format!("/v1/sessions/{id}/qr.svg?t={t}")))
                .header("Origin", "http://evil.example"),
        )
        .await;
    assert_error(&a, 403, "forbidden");

    // SSE: the first event is the snapshot, id = version.
    let resp = b
        .http
        .get(created["events_url"].as_str().unwrap())
        .header("Origin", ALLOWED_ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        ALLOWED_ORIGIN
    );
    let (event, sse_id, data) = first_sse_event(resp).await;
    assert_eq!((event.as_str(), sse_id.as_str()), ("snapshot", "1"));
    let sse_schema = &d.operation("get", "/v1/sessions/{id}/events")["x-sse-events"];
    assert!(frame_types(sse_schema).contains("snapshot"));
    d.assert_valid(sse_schema, &data, "SSE snapshot");
    assert!(data["session"]["qr_text"].is_string());

    // WebSocket: snapshot, then an error frame for an unknown message.
    let (mut ws, _) = tokio_tungstenite::connect_async(created["ws_url"].as_str().unwrap())
        .await
        .expect("the WebSocket upgrades");
    let snapshot = next_frame(&mut ws).await.unwrap();
    assert_ws_frame(&snapshot, "snapshot");
    ws.send(Message::Text(r#"{"type":"hello"}"#.into()))
        .await
        .unwrap();
    let error = next_frame(&mut ws).await.unwrap();
    assert_ws_frame(&error, "error");
    assert_eq!(error["error"]["code"], "invalid_request");

    // A plain GET of the socket with a valid token is not an upgrade.
    let a = b
        .send(b.http.get(b.url(&format!("/v1/sessions/{id}/ws?t={t}"))))
        .await;
    assert_error(&a, 400, "invalid_request");
    check_answer(&a, "get", "/v1/sessions/{id}/ws");

    // Claim (with number matching), the browser's status event, the scanned view.
    let claimed = b.claim(created["qr_text"].as_str().unwrap()).await;
    assert_eq!(claimed["match_choices"].as_array().unwrap().len(), 3);
    let status = next_frame(&mut ws).await.unwrap();
    assert_ws_frame(&status, "status");
    let code = status["match_code"].as_str().unwrap().to_owned();
    let scanned = b.get_session(&id).await;
    assert_eq!(scanned["status"], "scanned");

    // A second claim.
    let again = b
        .send(b.http.post(b.url("/v1/claim")).json(&json!({
            "qr_text": created["qr_text"], "device": { "id": "dev-2", "name": "李四的手机" }
        })))
        .await;
    assert_error(&again, 409, "already_claimed");
    check_answer(&again, "post", "/v1/claim");

    // Completion errors: no token, a bad signature (counted, session stays scanned).
    let phone_token = claimed["phone_token"].as_str().unwrap();
    let a = b
        .send(
            b.http
                .post(b.url(&format!("/v1/sessions/{id}/complete")))
                .json(&json!({ "reject": { "reason": "no" } })),
        )
        .await;
    assert_error(&a, 401, "unauthorized");
    let leaf = b.ca.issue(&LeafSpec::new("张三", "测试投标公司")).unwrap();
    let a = b
        .complete(
            &id,
            phone_token,
            &json!({
                "certificate_pem": leaf.cert_pem,
                "signature_b64": B64.encode(b"not a signature"),
                "match_code": code,
            }),
        )
        .await;
    assert_eq!(a.status, 422);

    // The phone rejects: answer, result event, close 1000, rejected view.
    let a = b
        .complete(
            &id,
            phone_token,
            &json!({ "reject": { "reason": "不是我发起的" } }),
        )
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["status"], "rejected");
    let result = next_frame(&mut ws).await.unwrap();
    assert_ws_frame(&result, "result");
    assert_eq!(result["result"]["reason"], "不是我发起的");
    assert_eq!(next_frame(&mut ws).await, Err(Some(1000)));
    let rejected = b.get_session(&id).await;
    assert_eq!(rejected["status"], "rejected");
    assert_eq!(rejected["result"], result["result"]);

    // A terminal session's socket: the snapshot carries the result, then 1000.
    let (mut ws, _) = tokio_tungstenite::connect_async(created["ws_url"].as_str().unwrap())
        .await
        .unwrap();
    let snapshot = next_frame(&mut ws).await.unwrap();
    assert_ws_frame(&snapshot, "snapshot");
    assert_eq!(snapshot["session"]["result"], result["result"]);
    assert_eq!(next_frame(&mut ws).await, Err(Some(1000)));

    // The QR of a finished session.
    let a = b
        .send(
            b.http
                .get(b.url(&format!("/v1/sessions/{id}/qr.svg?t={t}"))),
        )
        .await;
    assert_error(&a, 409, "conflict");
    check_answer(&a, "get", "/v1/sessions/{id}/qr.svg");

    // Completing a finished session.
    let a = b
        .complete(
            &id,
            phone_token,
            &json!({ "reject": { "reason": "again" } }),
        )
        .await;
    assert_error(&a, 409, "conflict");

    // Approvals: login, and encrypt (recipients) with a rotating QR.
    let created = b
        .create(&json!({ "kind": "login", "display": { "title": "扫码登录" } }))
        .await;
    let (claimed, a) = claim_and_approve(&b, &created, json!({})).await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.bytes));
    assert!(claimed.get("match_choices").is_none());
    let approved = b.get_session(created["id"].as_str().unwrap()).await;
    assert_eq!(approved["status"], "approved");
    assert_eq!(approved["result"]["certificate"]["domain"], "platform");

    let created = b
        .create(&json!({
            "kind": "encrypt",
            "display": { "title": "生成投标文件" },
            "rotate_s": 30,
            "requester": { "ip": "203.0.113.9", "user_agent": "Mozilla/5.0" },
        }))
        .await;
    let colleague = b.ca.issue(&LeafSpec::new("李四", "测试投标公司")).unwrap();
    let (claimed, a) = claim_and_approve(
        &b,
        &created,
        json!({ "recipients_pem": [colleague.cert_pem] }),
    )
    .await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.bytes));
    assert_eq!(claimed["session"]["requester"]["ip"], "203.0.113.9");
    let approved = b.get_session(created["id"].as_str().unwrap()).await;
    assert_eq!(
        approved["result"]["recipients"].as_array().unwrap().len(),
        1
    );

    // Sign and decrypt claims carry their extras.
    let created = b
        .create(&json!({
            "kind": "sign",
            "display": { "title": "签章" },
            "tbs_b64": B64.encode("合同正文"),
            "conversation": { "max_requests": 10 },
        }))
        .await;
    let claimed = b.claim(created["qr_text"].as_str().unwrap()).await;
    assert_eq!(claimed["conversation_allowed"], true);
    let created = b
        .create(&json!({
            "kind": "decrypt",
            "display": { "title": "开标解密" },
            "envelope_header_b64": B64.encode(r#"{"v":1}"#),
            // The SM2 base point: a point on the curve, as the broker requires.
            "reply_key": "0432c4ae2c1f1981195f9904466a39c9948fe30bbff2660be1715a4589334c74c7bc3736a2f4f6779c59bdcee36b692153d0a9877cc62a474002df32e52139f0a0",
        }))
        .await;
    let claimed = b.claim(created["qr_text"].as_str().unwrap()).await;
    assert!(claimed["envelope_header_b64"].is_string());
}

#[tokio::test]
async fn rp_admin_and_ops_answers_match_the_schemas() {
    let b = start().await;

    // Cancel with the API key, then again: 409.
    let created = b
        .create(&json!({ "kind": "bind", "display": { "title": "绑定证书" } }))
        .await;
    let id = created["id"].as_str().unwrap();
    let path = format!("/v1/sessions/{id}");
    let a = b
        .send(b.http.delete(b.url(&path)).bearer_auth(API_KEY))
        .await;
    assert_eq!(a.status, 200);
    check_answer(&a, "delete", "/v1/sessions/{id}");
    assert_eq!(a.json()["status"], "cancelled");
    assert_eq!(a.json()["result"], Value::Null);
    let a = b
        .send(b.http.delete(b.url(&path)).bearer_auth(API_KEY))
        .await;
    assert_error(&a, 409, "conflict");
    check_answer(&a, "delete", "/v1/sessions/{id}");

    // Cancel from the page (`?t=`), with CORS and its preflight.
    let created = b
        .create(&json!({ "kind": "login", "display": { "title": "登录" } }))
        .await;
    let id = created["id"].as_str().unwrap();
    let t = created["browser_token"].as_str().unwrap();
    let path = format!("/v1/sessions/{id}");
    let a = b
        .send(
            b.http
                .request(Method::OPTIONS, b.url(&path))
                .header("Origin", ALLOWED_ORIGIN)
                .header("Access-Control-Request-Method", "DELETE"),
        )
        .await;
    assert_eq!(a.status, 204);
    check_answer(&a, "options", "/v1/sessions/{id}");
    assert_eq!(a.headers["access-control-allow-origin"], ALLOWED_ORIGIN);
    let a = b
        .send(
            b.http
                .delete(b.url(&format!("{path}?t={t}")))
                .header("Origin", ALLOWED_ORIGIN),
        )
        .await;
    assert_eq!(a.status, 200);
    check_answer(&a, "delete", "/v1/sessions/{id}");
    assert_eq!(a.headers["access-control-allow-origin"], ALLOWED_ORIGIN);

    // Long-poll of a terminal session answers at once.
    let a = b
        .send(
            b.http
                .get(b.url(&format!("{path}?wait=30&version=1")))
                .bearer_auth(API_KEY),
        )
        .await;
    assert_eq!(a.status, 200);
    check_answer(&a, "get", "/v1/sessions/{id}");

    // Request errors.
    for (query, what) in [
        ("?wait=31", "wait over 30"),
        ("?wait=soon", "wait not a number"),
        ("?version=x&wait=1", "version not a number"),
        ("?since=1", "unknown query parameter"),
    ] {
        let a = b
            .send(
                b.http
                    .get(b.url(&format!("{path}{query}")))
                    .bearer_auth(API_KEY),
            )
            .await;
        assert_eq!(a.status, 400, "{what}");
        check_answer(&a, "get", "/v1/sessions/{id}");
    }
    let a = b
        .send(
            b.http
                .get(b.url("/v1/sessions/AAAAAAAAAAAAAAAAAAAAAA"))
                .bearer_auth(API_KEY),
        )
        .await;
    assert_error(&a, 404, "not_found");
    let a = b.send(b.http.get(b.url(&path)).bearer_auth("wrong")).await;
    assert_error(&a, 401, "unauthorized");
    for (body, status, code) in [
        (
            json!({ "kind": "login", "display": { "title": "x" }, "colour": "red" }),
            400,
            "invalid_request",
        ),
        (
            json!({ "kind": "login", "display": { "title": "x" }, "ttl_s": 29 }),
            400,
            "invalid_request",
        ),
        (
            json!({ "kind": "login", "display": { "title": "x" }, "rotate_s": 61 }),
            400,
            "invalid_request",
        ),
        (
            json!({ "kind": "login", "display": { "title": "x".repeat(201) } }),
            400,
            "invalid_request",
        ),
        (
            json!({ "kind": "login", "display": { "title": "x" }, "tbs_b64": "AA==" }),
            400,
            "invalid_request",
        ),
        (
            json!({ "kind": "sign", "display": { "title": "x" }, "tbs_b64": B64.encode(vec![0u8; 64 * 1024 + 1]) }),
            413,
            "payload_too_large",
        ),
    ] {
        // The document rejects what the server rejects (except the 64 KiB rule on decoded bytes).
        if status == 400 {
            let errors = validate(
                &json!({ "$ref": "#/components/schemas/CreateSessionRequest" }),
                &body,
            );
            assert!(!errors.is_empty(), "the document accepts {body}");
        }
        let a = b
            .send(
                b.http
                    .post(b.url("/v1/sessions"))
                    .bearer_auth(API_KEY)
                    .json(&body),
            )
            .await;
        assert_error(&a, status, code);
        check_answer(&a, "post", "/v1/sessions");
    }
    let a = b
        .send(
            b.http
                .post(b.url("/v1/sessions"))
                .bearer_auth(API_KEY)
                .header("content-type", "application/json")
                .body(vec![b' '; 300 * 1024]),
        )
        .await;
    assert_error(&a, 413, "payload_too_large");

    // Admin.
    let a = b.send(b.http.get(b.url("/v1/admin/revocations"))).await;
    assert_error(&a, 401, "unauthorized");
    let a = b
        .send(
            b.http
                .post(b.url("/v1/admin/revocations"))
                .bearer_auth(ADMIN_TOKEN)
                .json(&json!({ "serial": "00:0A:1B" })),
        )
        .await;
    assert_eq!(a.status, 201);
    check_answer(&a, "post", "/v1/admin/revocations");
    assert_eq!(a.json()["serial"], "a1b");
    let a = b
        .send(
            b.http
                .get(b.url("/v1/admin/revocations"))
                .bearer_auth(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(a.status, 200);
    check_answer(&a, "get", "/v1/admin/revocations");
    assert_eq!(a.json()["runtime"], json!(["a1b"]));
    for expected in [200, 404] {
        let a = b
            .send(
                b.http
                    .delete(b.url("/v1/admin/revocations/A1B"))
                    .bearer_auth(ADMIN_TOKEN),
            )
            .await;
        assert_eq!(a.status, expected);
        check_answer(&a, "delete", "/v1/admin/revocations/{serial}");
    }

    // Ops and the landing page.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let a = b.send(b.http.get(b.url(path))).await;
        assert_eq!(a.status, 200, "{path}");
        check_answer(&a, "get", path);
    }
    let a = b.send(b.http.get(b.url(&format!("/q/{id}")))).await;
    assert_eq!(a.status, 200);
    check_answer(&a, "get", "/q/{id}");
    assert!(String::from_utf8_lossy(&a.bytes).contains("lang=\"zh-CN\""));
}

/// A frame of a documented socket, against the union of frames the document
/// names for that direction (`x-websocket.server-messages` or
/// `client-messages`), which must declare its `type`.
fn assert_socket_frame(path: &str, direction: &str, frame: &Value, expected_type: &str) {
    assert_eq!(frame["type"], expected_type, "{frame}");
    let schema = &doc().operation("get", path)["x-websocket"][direction];
    assert!(
        !schema.is_null() && frame_types(schema).contains(expected_type),
        "{path}: {direction} frame {expected_type} is not documented"
    );
    doc().assert_valid(schema, frame, &format!("{path} {expected_type} frame"));
}

const REQUESTER_WS: &str = "/v1/conversations/{id}/ws";
const PHONE_WS: &str = "/v1/conversations/{id}/phone";

#[tokio::test]
async fn conversation_and_audit_answers_match_the_schemas() {
    let b = start().await;
    let d = doc();
    let leaf = b.ca.issue(&LeafSpec::new("张三", "测试投标公司")).unwrap();
    let signer =
        bzt_devca::signing_key(&bzt_devca::key_from_pem(&leaf.key_pem, None).unwrap()).unwrap();
    let sign = |tbs: &[u8]| B64.encode(bzt_devca::sign_der(&signer, tbs).unwrap());

    // A `sign` session approved with `open_conversation: true`.
    let created = b
        .create(&json!({
            "kind": "sign",
            "display": { "title": "签署投标文件" },
            "tbs_b64": B64.encode("投标文件 第1页"),
            "conversation": { "max_requests": 10, "idle_s": 300, "max_s": 3600 },
            "requester": { "ip": "203.0.113.9", "user_agent": "Mozilla/5.0" },
        }))
        .await;
    let sid = created["id"].as_str().unwrap().to_owned();
    let claimed = b.claim(created["qr_text"].as_str().unwrap()).await;
    assert_eq!(claimed["conversation_allowed"], true);
    let a = b
        .complete(
            &sid,
            claimed["phone_token"].as_str().unwrap(),
            &json!({
                "certificate_pem": leaf.cert_pem,
                "signature_b64": sign("投标文件 第1页".as_bytes()),
                "open_conversation": true,
            }),
        )
        .await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.bytes));
    let phone_grant = a.json()["conversation"].clone();
    assert!(
        phone_grant.is_object(),
        "the complete answer carries the phone's grant"
    );
    let cid = phone_grant["id"].as_str().unwrap().to_owned();
    let phone_token = phone_grant["phone_token"].as_str().unwrap().to_owned();
    let session = b.get_session(&sid).await;
    let grant = &session["result"]["conversation"];
    assert_eq!(grant["id"], cid.as_str());
    let token = grant["token"].as_str().unwrap().to_owned();

    // The conversation view.
    let path = format!("/v1/conversations/{cid}");
    let a = b.send(b.http.get(b.url(&path)).bearer_auth(API_KEY)).await;
    assert_eq!(a.status, 200);
    check_answer(&a, "get", "/v1/conversations/{id}");
    assert_eq!(a.json()["status"], "open");

    // Both sockets.
    let ws_base = b.base.replacen("http", "ws", 1);
    let (mut requester, _) =
        tokio_tungstenite::connect_async(format!("{ws_base}{path}/ws?t={token}"))
            .await
            .expect("the requester socket upgrades");
    let (mut phone, _) =
        tokio_tungstenite::connect_async(format!("{ws_base}{path}/phone?t={phone_token}"))
            .await
            .expect("the phone socket upgrades");

    // A request: 202, pending view, the phone's sign_request.
    let post = |tbs: &str| {
        let body = json!({ "tbs_b64": B64.encode(tbs), "display": { "title": "签署附件", "detail": tbs } });
        d.assert_valid_named("ConversationRequestInput", &body, "the request body");
        b.send(
            b.http
                .post(b.url(&format!("{path}/requests")))
                .bearer_auth(API_KEY)
                .json(&body),
        )
    };
    let a = post("附件一").await;
    assert_eq!(a.status, 202, "{}", String::from_utf8_lossy(&a.bytes));
    check_answer(&a, "post", "/v1/conversations/{id}/requests");
    let r1 = a.json()["request_id"].as_str().unwrap().to_owned();
    let request_path = |rid: &str, query: &str| format!("{path}/requests/{rid}{query}");
    let a = b
        .send(
            b.http
                .get(b.url(&request_path(&r1, "?wait=0")))
                .bearer_auth(API_KEY),
        )
        .await;
    assert_eq!(a.status, 200);
    check_answer(&a, "get", "/v1/conversations/{id}/requests/{rid}");
    assert_eq!(a.json()["status"], "pending");
    let frame = next_frame(&mut phone).await.unwrap();
    assert_socket_frame(PHONE_WS, "server-messages", &frame, "sign_request");

    // Approved with auto-confirm: ack, request_result, approved view.
    let answer = json!({ "type": "sign_response", "request_id": r1, "signature_b64": sign("附件一".as_bytes()), "auto_confirmed": true });
    assert_socket_frame(PHONE_WS, "client-messages", &answer, "sign_response");
    phone
        .send(Message::Text(answer.to_string().into()))
        .await
        .unwrap();
    let ack = next_frame(&mut phone).await.unwrap();
    assert_socket_frame(PHONE_WS, "server-messages", &ack, "ack");
    assert_eq!(ack["status"], "approved");
    let result = next_frame(&mut requester).await.unwrap();
    assert_socket_frame(REQUESTER_WS, "server-messages", &result, "request_result");
    assert_eq!(result["status"], "approved");
    let a = b
        .send(
            b.http
                .get(b.url(&request_path(&r1, "?wait=5")))
                .bearer_auth(API_KEY),
        )
        .await;
    check_answer(&a, "get", "/v1/conversations/{id}/requests/{rid}");
    assert_eq!(a.json()["auto_confirmed"], true);

    // Declined: ack, rejected result.
    let a = post("附件二").await;
    let r2 = a.json()["request_id"].as_str().unwrap().to_owned();
    let frame = next_frame(&mut phone).await.unwrap();
    assert_socket_frame(PHONE_WS, "server-messages", &frame, "sign_request");
    let answer = json!({ "type": "sign_reject", "request_id": r2, "reason": "内容不对" });
    assert_socket_frame(PHONE_WS, "client-messages", &answer, "sign_reject");
    phone
        .send(Message::Text(answer.to_string().into()))
        .await
        .unwrap();
    let ack = next_frame(&mut phone).await.unwrap();
    assert_socket_frame(PHONE_WS, "server-messages", &ack, "ack");
    assert_eq!(ack["status"], "rejected");
    let result = next_frame(&mut requester).await.unwrap();
    assert_socket_frame(REQUESTER_WS, "server-messages", &result, "request_result");
    assert_eq!(result["reason"], "内容不对");

    // A bad signature, an answer to an answered request, a malformed frame: error frames.
    let a = post("附件三").await;
    let r3 = a.json()["request_id"].as_str().unwrap().to_owned();
    next_frame(&mut phone).await.unwrap();
    for (answer, code) in [
        (
            json!({ "type": "sign_response", "request_id": r3, "signature_b64": sign(b"other") }),
            "bad_signature",
        ),
        (
            json!({ "type": "sign_response", "request_id": r1, "signature_b64": sign("附件一".as_bytes()) }),
            "conflict",
        ),
        (json!({ "type": "hello" }), "invalid_request"),
    ] {
        phone
            .send(Message::Text(answer.to_string().into()))
            .await
            .unwrap();
        let error = next_frame(&mut phone).await.unwrap();
        assert_socket_frame(PHONE_WS, "server-messages", &error, "error");
        assert_eq!(error["error"]["code"], code, "{error}");
    }
    let result = next_frame(&mut requester).await.unwrap();
    assert_socket_frame(REQUESTER_WS, "server-messages", &result, "request_result");
    assert_eq!(result["reason"], "bad_signature");
    requester
        .send(Message::Text(r#"{"type":"cancel"}"#.into()))
        .await
        .unwrap();
    let error = next_frame(&mut requester).await.unwrap();
    assert_socket_frame(REQUESTER_WS, "server-messages", &error, "error");

    // Request errors.
    let a = b
        .send(
            b.http
                .get(b.url(&request_path(&r1, "?wait=31")))
                .bearer_auth(API_KEY),
        )
        .await;
    assert_error(&a, 400, "invalid_request");
    check_answer(&a, "get", "/v1/conversations/{id}/requests/{rid}");
    let a = b
        .send(
            b.http
                .get(b.url(&request_path("AAAAAAAAAAAAAAAAAAAAAA", "")))
                .bearer_auth(API_KEY),
        )
        .await;
    assert_error(&a, 404, "not_found");
    check_answer(&a, "get", "/v1/conversations/{id}/requests/{rid}");
    for (body, status) in [
        (
            json!({ "tbs_b64": B64.encode("x"), "display": { "title": "x" }, "colour": "red" }),
            400,
        ),
        (json!({ "tbs_b64": "", "display": { "title": "x" } }), 400),
        (
            json!({ "tbs_b64": B64.encode(vec![0u8; 64 * 1024 + 1]), "display": { "title": "x" } }),
            413,
        ),
    ] {
        let a = b
            .send(
                b.http
                    .post(b.url(&format!("{path}/requests")))
                    .bearer_auth(API_KEY)
                    .json(&body),
            )
            .await;
        assert_eq!(a.status, status, "{}", String::from_utf8_lossy(&a.bytes));
        check_answer(&a, "post", "/v1/conversations/{id}/requests");
    }
    for (socket, t) in [("ws", phone_token.as_str()), ("phone", token.as_str())] {
        let a = b
            .send(b.http.get(b.url(&format!("{path}/{socket}?t={t}"))))
            .await;
        assert_error(&a, 401, "unauthorized");
        check_answer(&a, "get", &format!("/v1/conversations/{{id}}/{socket}"));
    }
    let a = b
        .send(b.http.get(b.url(&format!("{path}/ws?t={token}"))))
        .await;
    assert_error(&a, 400, "invalid_request");
    check_answer(&a, "get", REQUESTER_WS);

    // The requester ends it (`?t=`): the view, `ended` on both sockets, close 1000.
    let a = b
        .send(b.http.delete(b.url(&format!("{path}?t={token}"))))
        .await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.bytes));
    check_answer(&a, "delete", "/v1/conversations/{id}");
    assert_eq!(a.json()["ended_by"], "requester");
    let ended = next_frame(&mut requester).await.unwrap();
    assert_socket_frame(REQUESTER_WS, "server-messages", &ended, "ended");
    assert_eq!(next_frame(&mut requester).await, Err(Some(1000)));
    let ended = next_frame(&mut phone).await.unwrap();
    assert_socket_frame(PHONE_WS, "server-messages", &ended, "ended");
    assert_eq!(next_frame(&mut phone).await, Err(Some(1000)));
    let a = b
        .send(b.http.delete(b.url(&path)).bearer_auth(API_KEY))
        .await;
    assert_error(&a, 410, "expired");
    check_answer(&a, "delete", "/v1/conversations/{id}");
    let a = post("附件四").await;
    assert_error(&a, 410, "expired");
    check_answer(&a, "post", "/v1/conversations/{id}/requests");
    let a = b.send(b.http.get(b.url(&path)).bearer_auth(API_KEY)).await;
    check_answer(&a, "get", "/v1/conversations/{id}");
    assert_eq!(a.json()["status"], "ended");

    // The audit trail: the session and the three answered requests.
    let audit = |query: &'static str| {
        b.send(
            b.http
                .get(b.url(&format!("/v1/audit{query}")))
                .bearer_auth(API_KEY),
        )
    };
    let a = audit("").await;
    assert_eq!(a.status, 200);
    check_answer(&a, "get", "/v1/audit");
    let records = a.json()["records"].as_array().unwrap().clone();
    let kinds: Vec<&str> = records
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "sign",
            "conversation_request",
            "conversation_request",
            "conversation_request"
        ]
    );
    let serial = session["result"]["certificate"]["serial"].as_str().unwrap();
    let a = b
        .send(
            b.http
                .get(b.url("/v1/audit"))
                .query(&[("serial", serial), ("limit", "2")])
                .bearer_auth(API_KEY),
        )
        .await;
    check_answer(&a, "get", "/v1/audit");
    assert_eq!(a.json()["records"].as_array().unwrap().len(), 2);
    for query in ["?limit=0", "?since=soon", "?serial=xyz", "?kind=sign"] {
        let a = audit(query).await;
        assert_error(&a, 400, "invalid_request");
        check_answer(&a, "get", "/v1/audit");
    }
}

#[test]
fn the_validator_finds_what_the_document_does_not_declare() {
    // The checks above can fail: an undeclared field, in a plain object and in
    // a frame composed with `allOf`, a wrong type, a missing field.
    let error = json!({ "error": { "code": "not_found", "message": "m" } });
    assert!(validate(&json!({ "$ref": "#/components/schemas/Error" }), &error).is_empty());
    let mut extra = error.clone();
    extra["error"]["hint"] = json!("x");
    assert!(!validate(&json!({ "$ref": "#/components/schemas/Error" }), &extra).is_empty());
    let unknown_code = json!({ "error": { "code": "teapot", "message": "m" } });
    assert!(!validate(
        &json!({ "$ref": "#/components/schemas/Error" }),
        &unknown_code
    )
    .is_empty());

    let union = json!({ "$ref": "#/components/schemas/BrowserFrame" });
    let status =
        json!({ "type": "status", "status": "scanned", "version": 2, "device": { "name": "p" } });
    assert_eq!(validate(&union, &status), Vec::<String>::new());
    let mut extra = status.clone();
    extra["colour"] = json!("red");
    assert!(!validate(&union, &extra).is_empty());
    let mut missing = status.clone();
    missing.as_object_mut().unwrap().remove("version");
    assert!(!validate(&union, &missing).is_empty());
    let mut wrong = status;
    wrong["version"] = json!("2");
    assert!(!validate(&union, &wrong).is_empty());
}

#[tokio::test]
async fn a_webhook_delivery_matches_the_documented_webhook() {
    // A receiver on port 0 that hands over the first delivery.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Option<String>, Vec<u8>)>();
    let router = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let tx = tx.clone();
                async move {
                    let signature = headers
                        .get("bzt-signature")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let _ = tx.send((signature, body.to_vec()));
                    axum::http::StatusCode::OK
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });

    let b = start().await;
    let created = b
        .create(&json!({ "kind": "login", "display": { "title": "登录" }, "webhook_url": url }))
        .await;
    let id = created["id"].as_str().unwrap();
    let a = b
        .send(
            b.http
                .delete(b.url(&format!("/v1/sessions/{id}")))
                .bearer_auth(API_KEY),
        )
        .await;
    assert_eq!(a.status, 200);

    let (signature, body) = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
        .await
        .expect("a delivery in time")
        .expect("the receiver runs");
    let webhook = &doc().root["webhooks"]["sessionTerminal"]["post"];
    let schema = &webhook["requestBody"]["content"]["application/json"]["schema"];
    let view: Value = serde_json::from_slice(&body).expect("the body is JSON");
    assert_eq!(view["status"], "cancelled");
    doc().assert_valid(schema, &view, "the webhook body");
    let header = webhook["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "Bzt-Signature")
        .expect("Bzt-Signature is documented");
    assert!(
        validate(&header["schema"], &json!(signature.expect("a signature"))).is_empty(),
        "Bzt-Signature matches its documented pattern"
    );
}
