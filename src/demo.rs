//! The development demo: static pages (`web-demo/`, `sdk-js/dist/`) and the
//! demo relying party's backend.
//!
//! This is an RP like any other: it holds the demo app's API key and talks
//! to the broker over HTTP, exactly as a trading platform's server would. It
//! is mounted only in development mode and is not part of the broker proper.

use crate::config::Config;
use crate::dev::DevSecrets;
use crate::error::ApiError;
use crate::http::{ApiJson, AppState};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;
use tower_http::services::ServeDir;

struct DemoRp {
    http: reqwest::Client,
    /// Where the broker answers (itself).
    broker_url: String,
    api_key: String,
}

/// Finds a directory of the source tree (`web-demo`, `sdk-js/dist`): next to
/// the working directory, else where the crate was built.
fn asset_dir(rel: &str) -> PathBuf {
    let local = PathBuf::from(rel);
    if local.is_dir() {
        return local;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

pub fn routes(config: &Config, secrets: &DevSecrets) -> Router<AppState> {
    let rp = Arc::new(DemoRp {
        http: reqwest::Client::new(),
        broker_url: local_url(config),
        api_key: secrets.demo_api_key.clone(),
    });
    let api = Router::new()
        .route("/demo/api/sessions", post(create))
        .route("/demo/api/sessions/{id}", get(wait).delete(cancel))
        .with_state(rp);
    Router::new()
        .route("/", get(|| async { Redirect::temporary("/demo/") }))
        .merge(api)
        .nest_service("/demo", ServeDir::new(asset_dir("web-demo")))
        .nest_service("/sdk", ServeDir::new(asset_dir("sdk-js/dist")))
}

/// The broker's own address for the RP backend's calls (loopback when bound to all interfaces).
fn local_url(config: &Config) -> String {
    let listen = config.listen.replace("0.0.0.0", "127.0.0.1");
    if config.public_base_url.is_some() {
        config.public_base_url()
    } else {
        format!("http://{listen}")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DemoCreate {
    kind: String,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    ttl_s: Option<u32>,
    #[serde(default)]
    tbs_text: Option<String>,
    #[serde(default)]
    number_match: Option<bool>,
    #[serde(default)]
    rotate_s: Option<u32>,
}

impl DemoRp {
    async fn call(&self, req: reqwest::RequestBuilder) -> Result<Response, ApiError> {
        let resp = req.bearer_auth(&self.api_key).send().await.map_err(|e| {
            tracing::warn!(error = %e.without_url(), "demo RP cannot reach the broker");
            ApiError::new(
                bzt_core::ErrorCode::Unavailable,
                "the demo backend cannot reach the broker",
            )
        })?;
        let status =
            StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        Ok((status, Json(body)).into_response())
    }
}

async fn create(
    State(rp): State<Arc<DemoRp>>,
    ApiJson(req): ApiJson<DemoCreate>,
) -> Result<Response, ApiError> {
    let title = req.title.unwrap_or_else(|| match req.kind.as_str() {
        "login" => "登录 示例交易平台".into(),
        "bind" => "绑定证书到当前账号".into(),
        "sign" => "签署投标文件".into(),
        _ => "示例操作".into(),
    });
    let mut body = json!({
        "kind": req.kind,
        "display": { "title": title, "detail": "来自 bzt 开发演示" },
    });
    if let Some(t) = req.ttl_s {
        body["ttl_s"] = json!(t);
    }
    if let Some(text) = req.tbs_text {
        body["tbs_b64"] = json!(bzt_core::codec::encode(text.as_bytes()));
    }
    if let Some(n) = req.number_match {
        body["number_match"] = json!(n);
    }
    if let Some(r) = req.rotate_s {
        body["rotate_s"] = json!(r);
    }
    rp.call(
        rp.http
            .post(format!("{}/v1/sessions", rp.broker_url))
            .json(&body),
    )
    .await
}

#[derive(Deserialize)]
struct WaitQuery {
    wait: Option<u32>,
    version: Option<u64>,
}

async fn wait(
    State(rp): State<Arc<DemoRp>>,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
) -> Result<Response, ApiError> {
    let mut url = format!("{}/v1/sessions/{}", rp.broker_url, urlencode(&id));
    if let Some(w) = q.wait {
        url.push_str(&format!("?wait={}", w.min(25)));
        if let Some(v) = q.version {
            url.push_str(&format!("&version={v}"));
        }
    }
    rp.call(rp.http.get(url)).await
}

async fn cancel(
    State(rp): State<Arc<DemoRp>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    rp.call(
        rp.http
            .delete(format!("{}/v1/sessions/{}", rp.broker_url, urlencode(&id))),
    )
    .await
}

fn urlencode(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}
