//! The phone simulator page's way to the co-signing service (密钥拆分).
//!
//! The page is served by the broker, the development service listens on another port, and the
//! service sends no CORS headers (its callers are phones and servers, not web pages). So in
//! development mode the demo relays the phone's four calls — `GET /v1/info`, `POST /v1/keys`,
//! `POST /v1/keys/{id}/sign|decrypt` — byte for byte under `/demo/cosigner/`. The relay sees what
//! any proxy in front of the service sees: bodies sealed to the service's channel key (pinned by
//! the page at enrolment), which it can neither read nor alter unnoticed. The admin, audit and
//! opening routes are not relayed.

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
        .with_state(relay)
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
    if operation != "sign" && operation != "decrypt" {
        return Err(ApiError::not_found(
            "the relay to the co-signing service knows only sign and decrypt",
        ));
    }
    // Key ids are the service's own (letters, digits, '-', '_'): anything else cannot name a key,
    // and must not steer the relay to another path of the service.
    if key_id.is_empty()
        || !key_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(ApiError::invalid("not a key id of the co-signing service"));
    }
    relay
        .forward(&format!("/v1/keys/{key_id}/{operation}"), Some(body), None)
        .await
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
