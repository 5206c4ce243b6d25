//! The phone simulator page's way to the co-signing service (密钥拆分).
//!
//! The page is served by the broker, the development service listens on another port, and the
//! service sends no CORS headers (its callers are phones and servers, not web pages). So in
//! development mode the demo relays the phone's calls — `GET /v1/info`, `POST /v1/keys`,
//! `POST /v1/keys/{id}/sign|decrypt`, and for 企业证书授权 the administrator's
//! `POST /v1/keys/{id}/grants` and the member's `POST /v1/grants/{id}/accept` — byte for byte under
//! `/demo/cosigner/`. The relay sees what any proxy in front of the service sees: bodies sealed to
//! the service's channel key (pinned by the page at enrolment), which it can neither read nor alter
//! unnoticed; a grant request is further co-signed by the administrator's share. The service's
//! admin routes (`/v1/admin/…`, the operator's grant list and reclaim), audit and opening routes are
//! not relayed: they take the service's admin or relying-party tokens, never a phone's.

use crate::error::ApiError;
use crate::http::AppState;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;

struct Relay {
    http: reqwest::Client,
    /// `[cosigner] url` (the development child service), if any.
    service_url: Option<String>,
}

pub fn routes(service_url: Option<String>) -> Router<AppState> {
    let relay = Arc::new(Relay {
        http: reqwest::Client::new(),
        service_url: service_url.map(|u| u.trim_end_matches('/').to_owned()),
    });
    Router::new()
        .route("/demo/cosigner/v1/info", get(info))
        .route("/demo/cosigner/v1/keys", post(enrol))
        .route("/demo/cosigner/v1/keys/{key_id}/{operation}", post(operate))
        .route(
            "/demo/cosigner/v1/grants/{grant_id}/accept",
            post(accept_grant),
        )
        .route("/demo/cosigner/certificate-info", post(certificate_info))
        .with_state(relay)
}

#[derive(serde::Deserialize)]
struct CertificateInfoRequest {
    certificate_pem: String,
}

/// Serial, subject and issuer of a certificate as the broker and envelopes write them: a member's
/// page receives only the company certificate's PEM with a grant (the offer of
/// docs/key-splitting.md) and needs these to show it and to find its entry in an envelope header.
/// Not the co-signing service's: a page helper of the demo, beside the relay.
async fn certificate_info(
    axum::Json(req): axum::Json<CertificateInfoRequest>,
) -> Result<Response, ApiError> {
    let cert = bzt_core::pki::parse_pem(&req.certificate_pem)
        .map_err(|e| ApiError::invalid(format!("certificate_pem: {}", e.message)))?;
    Ok(axum::Json(serde_json::json!({
        "serial": bzt_core::pki::serial_hex(&cert),
        "subject": bzt_core::pki::subject_string(&cert),
        "issuer": bzt_core::pki::issuer_string(&cert),
    }))
    .into_response())
}

async fn info(State(relay): State<Arc<Relay>>) -> Result<Response, ApiError> {
    relay.forward("/v1/info", None, None).await
}

async fn enrol(
    State(relay): State<Arc<Relay>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    relay
        .forward("/v1/keys", Some(body), bearer(&headers))
        .await
}

async fn operate(
    State(relay): State<Arc<Relay>>,
    Path((key_id, operation)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    if !["sign", "decrypt", "grants"].contains(&operation.as_str()) {
        return Err(ApiError::not_found(
            "the relay to the co-signing service knows only sign, decrypt and grants",
        ));
    }
    check_id(&key_id, "not a key id of the co-signing service")?;
    relay
        .forward(&format!("/v1/keys/{key_id}/{operation}"), Some(body), None)
        .await
}

async fn accept_grant(
    State(relay): State<Arc<Relay>>,
    Path(grant_id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_id(&grant_id, "not a grant id of the co-signing service")?;
    relay
        .forward(&format!("/v1/grants/{grant_id}/accept"), Some(body), None)
        .await
}

/// Key and grant ids are the service's own (letters, digits, '-', '_'): anything else cannot name
/// one, and must not steer the relay to another path of the service.
fn check_id(id: &str, message: &'static str) -> Result<(), ApiError> {
    if id.is_empty()
        || id.len() > 128
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(ApiError::invalid(message));
    }
    Ok(())
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

impl Relay {
    async fn forward(
        &self,
        path: &str,
        body: Option<Bytes>,
        authorization: Option<String>,
    ) -> Result<Response, ApiError> {
        let Some(base) = &self.service_url else {
            return Err(ApiError::new(
                bzt_core::ErrorCode::Unavailable,
                "no co-signing service is configured: set [cosigner] url (development mode starts one)",
            ));
        };
        let url = format!("{base}{path}");
        let mut req = match body {
            Some(body) => self
                .http
                .post(url)
                .header("content-type", "application/json")
                .body(body),
            None => self.http.get(url),
        };
        if let Some(auth) = authorization {
            req = req.header("authorization", auth);
        }
        let resp = req.send().await.map_err(|e| {
            tracing::warn!(error = %e.without_url(), "demo relay cannot reach the co-signing service");
            ApiError::new(
                bzt_core::ErrorCode::Unavailable,
                "the co-signing service cannot be reached",
            )
        })?;
        let status =
            StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let bytes = resp.bytes().await.map_err(|_| {
            ApiError::new(
                bzt_core::ErrorCode::Unavailable,
                "the co-signing service's answer was cut off",
            )
        })?;
        Ok((status, [("content-type", "application/json")], bytes).into_response())
    }
}
