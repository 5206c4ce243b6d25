//! The development demo: static pages (`web-demo/`, `sdk-js/dist/`) and the
//! demo relying party's backend.
//!
//! This is an RP like any other: it holds the demo app's API key and talks
//! to the broker over HTTP, exactly as a trading platform's server would. It
//! is mounted only in development mode and is not part of the broker proper.
//!
//! - this file: sessions for the login page and the bid tool's 会话签章, conversations,
//!   the phone simulator's development certificates;
//! - `files`: uploads and results, bounded temporary files;
//! - `cosigner`: the phone page's relay to the co-signing service (密钥拆分);
//! - `bidfile`: 生成投标文件 (seal an upload to the recipients the phone picked) and
//!   开标大厅 (open a sealed file through a `decrypt` session).

mod bidfile;
mod cosigner;
mod files;
mod ofd;
mod seals;

use crate::config::Config;
use crate::dev::DevSecrets;
use crate::error::ApiError;
use crate::http::{ApiJson, AppState};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use bzt_rp_client::{
    ConversationLimits, ConversationRequest, CreateSession, Display, Kind, RpClient, RpError,
    SealInput,
};
use serde::Deserialize;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use tower_http::services::ServeDir;

struct DemoRp {
    /// The broker's relying-party API (itself, over HTTP) with the demo app's key.
    broker: RpClient,
    /// The demo app's id (the `app:` line of its challenges).
    app_id: String,
    /// The development data directory (the dev CAs live there).
    data_dir: PathBuf,
    /// Uploaded bid files and sealed / opened results.
    files: files::FileStore,
    /// The opening hall's client (one-time keys, `decrypt` sessions).
    hall: crate::hall::HallClient,
    /// Bid-file sessions in progress.
    jobs: bidfile::Jobs,
    /// The bid tool's OFD documents waiting for, or carrying, a seal signature.
    ofds: ofd::Documents,
    /// The seal makers this relying party trusts (the broker's, in development mode).
    seal_makers: Vec<x509_cert::Certificate>,
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
    let http = reqwest::Client::new();
    let broker_url = local_url(config);
    let rp = Arc::new(DemoRp {
        hall: crate::hall::HallClient::new(http.clone(), &broker_url, &secrets.demo_api_key),
        broker: RpClient::new(http, &broker_url, &secrets.demo_api_key),
        app_id: crate::dev::DEMO_APP_ID.to_owned(),
        data_dir: crate::dev::data_dir(config),
        files: files::FileStore::new(),
        jobs: bidfile::Jobs::default(),
        ofds: ofd::Documents::default(),
        seal_makers: crate::app::load_seal_makers(config).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "the demo's OFD signing trusts no seal maker");
            Vec::new()
        }),
    });
    let api = Router::new()
        .route("/demo/api/sessions", post(create))
        .route("/demo/api/sessions/{id}", get(wait).delete(cancel))
        .route("/demo/api/phone-certificate", post(phone_certificate))
        .route("/demo/api/conversations/{id}", delete(end_conversation))
        .route(
            "/demo/api/conversations/{id}/requests",
            post(conversation_request),
        )
        .route(
            "/demo/api/conversations/{id}/requests/{rid}",
            get(conversation_request_wait),
        )
        .merge(bidfile::routes())
        .merge(seals::routes())
        .merge(ofd::routes())
        .with_state(rp)
        .merge(cosigner::routes(config.cosigner.url.clone()));
    Router::new()
        .route("/", get(|| async { Redirect::temporary("/demo/") }))
        .merge(api)
        .nest_service("/demo", ServeDir::new(asset_dir("web-demo")))
        .nest_service("/sdk", ServeDir::new(asset_dir("sdk-js/dist")))
}

/// The broker's own address for the RP backend's calls (loopback when bound to all interfaces).
/// The demo backend lives in the broker's process, so it calls the listen address directly, never
/// `public_base_url`: behind a TLS proxy (docs/deploy.md) that name may carry a certificate this
/// process does not trust, and the detour would only add a hop.
fn local_url(config: &Config) -> String {
    let listen = config
        .listen
        .replace("0.0.0.0", "127.0.0.1")
        .replace("[::]", "[::1]");
    format!("http://{listen}")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DemoCreate {
    kind: Kind,
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
    /// kind=sign: the bytes to sign as base64 (instead of `tbs_text`).
    #[serde(default)]
    tbs_b64: Option<String>,
    /// kind=sign: allow a conversation (会话签章).
    #[serde(default)]
    conversation: Option<ConversationLimits>,
    #[serde(default)]
    detail: Option<String>,
    /// kind=sign: ask for a seal signature (`{data_hash_b64, property_info}`).
    #[serde(default)]
    seal: Option<SealInput>,
    /// Trust domains whose certificates may complete the session (the login page's tabs:
    /// 本平台证书 / 全国互认证书); absent: every configured domain.
    #[serde(default)]
    accept: Option<Vec<String>>,
}

/// A broker refusal keeps its code, message and `Retry-After`; a broker out of reach, or one
/// answering outside the protocol, is `unavailable` (the details go to the log).
fn broker_error(e: RpError) -> ApiError {
    match e {
        RpError::Broker {
            status,
            code,
            message,
            retry_after,
        } => {
            let error = ApiError::new(bidfile::code_of(&code, status), message);
            match retry_after {
                Some(after) => error.with_retry_after(after.as_secs()),
                None => error,
            }
        }
        RpError::Transport(detail) => {
            tracing::warn!(%detail, "demo RP cannot reach the broker");
            ApiError::new(
                bzt_core::ErrorCode::Unavailable,
                "the demo backend cannot reach the broker",
            )
        }
        RpError::Protocol(why) => bidfile::bad_broker(&why),
    }
}

/// A typed answer of the broker, relayed to the page with `status`.
fn relay<T: serde::Serialize>(
    status: StatusCode,
    answer: Result<T, RpError>,
) -> Result<Response, ApiError> {
    Ok((status, Json(answer.map_err(broker_error)?)).into_response())
}

async fn create(
    State(rp): State<Arc<DemoRp>>,
    ApiJson(req): ApiJson<DemoCreate>,
) -> Result<Response, ApiError> {
    let title = req.title.unwrap_or_else(|| match req.kind {
        Kind::Login => "登录 示例交易平台".into(),
        Kind::Bind => "绑定证书到当前账号".into(),
        Kind::Sign => "签署投标文件".into(),
        _ => "示例操作".into(),
    });
    let mut body = CreateSession::new(req.kind, title);
    body.display.detail = Some(req.detail.unwrap_or_else(|| "来自 bzt 开发演示".into()));
    body.ttl_s = req.ttl_s;
    body.tbs_b64 = req.tbs_b64.or_else(|| {
        req.tbs_text
            .map(|text| bzt_core::codec::encode(text.as_bytes()))
    });
    body.conversation = req.conversation;
    body.seal = req.seal;
    body.number_match = req.number_match;
    body.rotate_s = req.rotate_s;
    body.accept = req.accept;
    relay(StatusCode::CREATED, rp.broker.create_session(&body).await)
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
    let answer = match q.wait {
        // The demo's pages poll through here; 25 s stays under their own request timeouts.
        Some(wait) => rp.broker.wait_session(&id, q.version, wait.min(25)).await,
        None => rp.broker.get_session(&id).await,
    };
    relay(StatusCode::OK, answer)
}

async fn cancel(
    State(rp): State<Arc<DemoRp>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    relay(StatusCode::OK, rp.broker.cancel_session(&id).await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PhoneCertRequest {
    /// SM2 public key, uncompressed: hex `04||X||Y` (130 digits) or `X||Y` (128, as sm-crypto
    /// may give it).
    public_key_hex: String,
    cn: String,
    org: String,
    #[serde(default)]
    domain: Option<String>,
    /// 统一社会信用代码 (organizationIdentifier), checked by the dev CA; empty or absent: none.
    #[serde(default)]
    uscc: Option<String>,
}

/// Development only: the dev CA certifies a public key generated in the phone simulator's page,
/// whose private key never leaves the page.
async fn phone_certificate(
    State(rp): State<Arc<DemoRp>>,
    ApiJson(req): ApiJson<PhoneCertRequest>,
) -> Result<Response, ApiError> {
    let domain = req.domain.unwrap_or_else(|| "platform".into());
    if !crate::dev::DOMAINS.iter().any(|(d, _)| *d == domain) {
        return Err(ApiError::invalid(
            "domain must be one of the development trust domains (platform, national)",
        ));
    }
    let cn = req.cn.trim().to_string();
    let org = req.org.trim().to_string();
    if cn.is_empty() || org.is_empty() || cn.chars().count() > 64 || org.chars().count() > 64 {
        return Err(ApiError::invalid("cn and org: 1..64 characters each"));
    }
    let hex_key = req.public_key_hex.trim().to_ascii_lowercase();
    let hex_key = if hex_key.len() == 128 {
        format!("04{hex_key}")
    } else {
        hex_key
    };
    let bytes =
        hex::decode(&hex_key).map_err(|_| ApiError::invalid("public_key_hex is not hex"))?;
    if bytes.len() != 65 {
        return Err(ApiError::invalid(
            "public_key_hex: an uncompressed SM2 point (04||X||Y) is expected",
        ));
    }
    let public = sm2::PublicKey::from_sec1_bytes(&bytes)
        .map_err(|_| ApiError::invalid("public_key_hex is not a point on the SM2 curve"))?;
    let uscc = req
        .uscc
        .map(|u| u.trim().to_ascii_uppercase())
        .filter(|u| !u.is_empty());
    if let Some(u) = &uscc {
        bzt_devca::names::validate_uscc(u).map_err(|e| ApiError::invalid(e.to_string()))?;
    }
    let data_dir = rp.data_dir.clone();
    let issued = tokio::task::spawn_blocking(move || {
        let ca = crate::dev::dev_ca(&data_dir, &domain)?;
        let mut spec = bzt_devca::LeafSpec::new(cn, org);
        spec.uscc = uscc;
        let (cert_pem, serial) = ca.issue_for_public_key(&spec, &public)?;
        anyhow::Ok((cert_pem, serial, ca.cert_pem().to_string(), domain))
    })
    .await
    .map_err(|e| anyhow::anyhow!("certificate task: {e}"))
    .and_then(|r| r)
    .map_err(|e| {
        tracing::warn!(error = %e, "demo phone certificate not issued");
        ApiError::new(
            bzt_core::ErrorCode::Internal,
            "the development CA could not issue the certificate",
        )
    })?;
    let (cert_pem, serial, ca_pem, domain) = issued;
    // Subject and issuer as the broker and the envelope write them (the phone simulator finds
    // its entry in an envelope header by serial and issuer).
    let cert = bzt_core::pki::parse_pem(&cert_pem).map_err(|e| {
        tracing::warn!(error = %e.message, "demo phone certificate does not parse");
        ApiError::internal()
    })?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "certificate_pem": cert_pem,
            "serial": serial,
            "subject": bzt_core::pki::subject_string(&cert),
            "issuer": bzt_core::pki::issuer_string(&cert),
            "ca_pem": ca_pem,
            "domain": domain,
        })),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DemoConversationRequest {
    #[serde(default)]
    tbs_b64: Option<String>,
    #[serde(default)]
    tbs_text: Option<String>,
    title: String,
    #[serde(default)]
    detail: Option<String>,
    /// A seal request (`{data_hash_b64, property_info}`) instead of `tbs_*`.
    #[serde(default)]
    seal: Option<SealInput>,
}

async fn conversation_request(
    State(rp): State<Arc<DemoRp>>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<DemoConversationRequest>,
) -> Result<Response, ApiError> {
    let (tbs_b64, seal) = match (req.tbs_b64, req.tbs_text, req.seal) {
        (Some(b), None, None) => (Some(b), None),
        (None, Some(t), None) => (Some(bzt_core::codec::encode(t.as_bytes())), None),
        (None, None, Some(seal)) => (None, Some(seal)),
        _ => {
            return Err(ApiError::invalid(
                "give exactly one of tbs_b64, tbs_text, seal",
            ))
        }
    };
    let body = ConversationRequest {
        tbs_b64,
        seal,
        display: Display {
            title: req.title,
            detail: req.detail,
        },
    };
    relay(
        StatusCode::ACCEPTED,
        rp.broker.post_conversation_request(&id, &body).await,
    )
}

#[derive(Deserialize)]
struct RequestWaitQuery {
    wait: Option<u32>,
}

async fn conversation_request_wait(
    State(rp): State<Arc<DemoRp>>,
    Path((id, rid)): Path<(String, String)>,
    Query(q): Query<RequestWaitQuery>,
) -> Result<Response, ApiError> {
    let wait = q.wait.map(|w| w.min(25));
    relay(
        StatusCode::OK,
        rp.broker.get_conversation_request(&id, &rid, wait).await,
    )
}

async fn end_conversation(
    State(rp): State<Arc<DemoRp>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    relay(StatusCode::OK, rp.broker.end_conversation(&id).await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bzt_core::ErrorCode;
    use std::time::Duration;

    #[test]
    fn a_broker_refusal_reaches_the_page_with_its_code_message_and_retry_after() {
        let refused = broker_error(RpError::Broker {
            status: 429,
            code: "rate_limited".into(),
            message: "slow down".into(),
            retry_after: Some(Duration::from_secs(3)),
        });
        assert_eq!(
            (refused.code, refused.message.as_str(), refused.retry_after),
            (ErrorCode::RateLimited, "slow down", Some(3))
        );
        assert_eq!(refused.status(), 429);
        let gone = broker_error(RpError::Broker {
            status: 409,
            code: "conflict".into(),
            message: "already terminal".into(),
            retry_after: None,
        });
        assert_eq!((gone.status(), gone.retry_after), (409, None));
        let unreachable = broker_error(RpError::Transport("connection refused".into()));
        assert_eq!(unreachable.code, ErrorCode::Unavailable);
        assert!(
            !unreachable.message.contains("refused"),
            "details stay in the log"
        );
    }
}
