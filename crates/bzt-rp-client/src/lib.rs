//! A typed client of the broker's relying-party API (PROTOCOL.md "RP backend API" and
//! "Conversations"), the Rust twin of `sdk-js/node`:
//!
//! - [`RpClient`]: create a session, read it, long-poll it, cancel it; send conversation
//!   requests, read them, end a conversation.
//! - [`webhook`]: check (and, for tests, make) the `Bzt-Signature` header of a webhook.
//! - [`hall`]: the opening hall's side of 扫码解密 ([`hall::HallClient`]), used by
//!   `bzt hall decrypt`.
//!
//! `https:` and `wss:` trust the Web PKI plus any CA given to [`ClientTls`] (re-exported from
//! the phone crate, whose WebSocket connector this crate shares).
//!
//! Requests and answers are the broker's own wire types (crate `bzt-wire`): requests strict,
//! answers read leniently (a field this client does not know is ignored), so a newer broker
//! does not break an older client.

pub mod hall;
pub mod webhook;

pub use bzt_phone::net::{connect_ws, ClientTls, TlsSetupError, WsStream};

use serde_json::Value;
use std::time::Duration;

/// Longest long-poll the broker holds (`?wait=N`, N ≤ 30).
pub const MAX_WAIT_S: u32 = 30;

/// A failed call. The broker's own refusals carry its protocol error code.
#[derive(Debug, thiserror::Error)]
pub enum RpError {
    /// The broker refused the request with a protocol error.
    #[error("the broker answered HTTP {status} {code}: {message}")]
    Broker {
        /// HTTP status.
        status: u16,
        /// The protocol's error code (`invalid_request`, `not_found`, `conflict`, ...).
        code: String,
        /// The broker's message.
        message: String,
        /// `Retry-After` of a 429 or 503.
        retry_after: Option<Duration>,
    },
    /// The broker could not be reached, or the connection broke.
    #[error("cannot talk to the broker: {0}")]
    Transport(String),
    /// The broker answered something the protocol does not allow.
    #[error("unexpected answer from the broker: {0}")]
    Protocol(String),
}

impl RpError {
    /// The protocol error code of a broker refusal.
    pub fn code(&self) -> Option<&str> {
        match self {
            RpError::Broker { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// The create request and answer are the broker's own wire types (crate
/// `bzt-wire`), under the names this client has always used.
pub use bzt_wire::{
    ConversationPolicyInput as ConversationLimits, CreateSessionRequest as CreateSession,
    CreateSessionResponse as CreatedSession, DisplayText as Display, ExpectCertInput as ExpectCert,
    Kind, OpeningInput, RequesterInput as Requester, SealInput,
};

/// An opening window (开标时间 .. decryption deadline), RFC 3339 times: the wire's `opening`.
pub use bzt_wire::OpeningInput as OpeningWindow;

/// The session view (`GET /v1/sessions/<id>`, long-poll, cancel, webhooks) and its `result`:
/// the broker's own wire types.
pub use bzt_wire::{ApprovedResult, ReasonResult, SessionResult, SessionView};

/// True once a session in `status` can no longer change (an unknown status is not terminal).
pub fn is_terminal(status: &str) -> bool {
    serde_json::from_value::<bzt_wire::Status>(Value::String(status.to_owned()))
        .is_ok_and(|s| s.is_terminal())
}

/// `POST /v1/conversations/<cid>/requests`: `tbs_b64` or `seal`, and what the phone shows
/// (the broker's own wire type).
pub use bzt_wire::ConversationRequestInput as ConversationRequest;

/// `POST /v1/conversations/<cid>/requests` answer (202): the broker's own wire type.
pub use bzt_wire::ConversationRequestAccepted as SentRequest;

/// A conversation request's state (`GET /v1/conversations/<cid>/requests/<rid>`): the
/// broker's own wire type.
pub use bzt_wire::ConversationRequestView;

/// A relying party's backend talking to one broker with one app's API key. Cheap to clone.
#[derive(Clone, Debug)]
pub struct RpClient {
    http: reqwest::Client,
    /// No trailing slash.
    base_url: String,
    api_key: String,
}

impl RpClient {
    /// A client of the broker at `base_url` (e.g. `https://bzt.example`) with `api_key`.
    /// Configure timeouts and TLS roots on `http` ([`ClientTls::http_client`]).
    pub fn new(http: reqwest::Client, base_url: &str, api_key: &str) -> Self {
        Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            api_key: api_key.to_owned(),
        }
    }

    /// The broker's base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The HTTP client (shared pool).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// `POST /v1/sessions`.
    pub async fn create_session(&self, body: &CreateSession) -> Result<CreatedSession, RpError> {
        let req = self.http.post(self.url("/v1/sessions")).json(body);
        self.call(req).await
    }

    /// `GET /v1/sessions/<id>`.
    pub async fn get_session(&self, id: &str) -> Result<SessionView, RpError> {
        let req = self
            .http
            .get(self.url(&format!("/v1/sessions/{}", seg(id))));
        self.call(req).await
    }

    /// Long-poll: answers when the session's version differs from `version` (or, without one,
    /// at its next change), when it is terminal, or after `wait_s` seconds (at most 30).
    pub async fn wait_session(
        &self,
        id: &str,
        version: Option<u64>,
        wait_s: u32,
    ) -> Result<SessionView, RpError> {
        let mut query = vec![("wait", wait_s.min(MAX_WAIT_S).to_string())];
        if let Some(v) = version {
            query.push(("version", v.to_string()));
        }
        let req = self
            .http
            .get(self.url(&format!("/v1/sessions/{}", seg(id))))
            .query(&query);
        self.call(req).await
    }

    /// `DELETE /v1/sessions/<id>`: a session already terminal is `conflict` (409).
    pub async fn cancel_session(&self, id: &str) -> Result<SessionView, RpError> {
        let req = self
            .http
            .delete(self.url(&format!("/v1/sessions/{}", seg(id))));
        self.call(req).await
    }

    /// `POST /v1/conversations/<cid>/requests`: asks the phone to sign `tbs`.
    pub async fn send_conversation_request(
        &self,
        conversation_id: &str,
        tbs: &[u8],
        display: &Display,
    ) -> Result<SentRequest, RpError> {
        use base64::Engine;
        let body = ConversationRequest {
            tbs_b64: Some(base64::engine::general_purpose::STANDARD.encode(tbs)),
            seal: None,
            display: display.clone(),
        };
        self.post_conversation_request(conversation_id, &body).await
    }

    /// `POST /v1/conversations/<cid>/requests` with the whole request (a seal request, or
    /// `tbs_b64` already encoded).
    pub async fn post_conversation_request(
        &self,
        conversation_id: &str,
        body: &ConversationRequest,
    ) -> Result<SentRequest, RpError> {
        let req = self
            .http
            .post(self.url(&format!(
                "/v1/conversations/{}/requests",
                seg(conversation_id)
            )))
            .json(body);
        self.call(req).await
    }

    /// `GET /v1/conversations/<cid>/requests/<rid>`, long-polled for `wait_s` seconds if given.
    pub async fn get_conversation_request(
        &self,
        conversation_id: &str,
        request_id: &str,
        wait_s: Option<u32>,
    ) -> Result<ConversationRequestView, RpError> {
        let mut req = self.http.get(self.url(&format!(
            "/v1/conversations/{}/requests/{}",
            seg(conversation_id),
            seg(request_id)
        )));
        if let Some(w) = wait_s {
            req = req.query(&[("wait", w.min(MAX_WAIT_S))]);
        }
        self.call(req).await
    }

    /// `DELETE /v1/conversations/<cid>`: ends the conversation.
    pub async fn end_conversation(&self, conversation_id: &str) -> Result<Value, RpError> {
        let req = self
            .http
            .delete(self.url(&format!("/v1/conversations/{}", seg(conversation_id))));
        self.call(req).await
    }

    /// Sends with the API key and reads a 2xx JSON answer, or the protocol error.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, RpError> {
        let resp = req
            .bearer_auth(&self.api_key)
            .send()
            .await
            .map_err(|e| RpError::Transport(error_chain(&e)))?;
        read_answer(resp).await
    }
}

/// An error with its causes ("error sending request: ...: invalid peer certificate: ..."):
/// reqwest's own message alone does not say why a connection failed.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// A path segment, percent-encoded (ids are URL-safe base64 today; this keeps a stray `/` or
/// `?` from changing the request).
fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A 2xx answer's JSON as `T`, or the broker's protocol error.
pub(crate) async fn read_answer<T: serde::de::DeserializeOwned>(
    resp: reqwest::Response,
) -> Result<T, RpError> {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let text = resp
        .text()
        .await
        .map_err(|e| RpError::Transport(e.to_string()))?;
    if (200..300).contains(&status) {
        serde_json::from_str(&text).map_err(|e| {
            RpError::Protocol(format!(
                "HTTP {status}: the body is not the expected JSON: {e}"
            ))
        })
    } else {
        Err(error_from_body(status, &text, retry_after))
    }
}

/// The protocol error of a non-2xx answer (`{"error": {"code", "message"}}`).
pub(crate) fn error_from_body(status: u16, body: &str, retry_after: Option<Duration>) -> RpError {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    match (v["error"]["code"].as_str(), v["error"]["message"].as_str()) {
        (Some(code), message) => RpError::Broker {
            status,
            code: code.to_owned(),
            message: message.unwrap_or_default().to_owned(),
            retry_after,
        },
        _ => RpError::Protocol(format!(
            "HTTP {status} without a protocol error body: {}",
            body.chars().take(200).collect::<String>()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_body_sends_only_what_is_set() {
        let mut body = CreateSession::new(Kind::Decrypt, "开标解密");
        body.reply_key = Some("04ab".into());
        body.number_match = Some(true);
        let v = serde_json::to_value(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "kind": "decrypt",
                "display": {"title": "开标解密"},
                "reply_key": "04ab",
                "number_match": true,
            })
        );
        let plain = serde_json::to_value(CreateSession::new(Kind::Login, "t")).unwrap();
        assert!(plain.get("number_match").is_none(), "{plain}");
    }

    #[test]
    fn views_read_fields_they_do_not_know() {
        let v: SessionView = serde_json::from_value(serde_json::json!({
            "id": "s1", "kind": "login", "status": "approved", "version": 3,
            "display": {"title": "登录"}, "created_at": "a", "expires_at": "b",
            "result": {"reason": "x"}, "future_field": 7
        }))
        .unwrap();
        assert!(is_terminal(&v.status));
        assert!(!is_terminal("scanned") && !is_terminal("a_status_added_later"));
        assert!(matches!(v.result, Some(Some(SessionResult::Reason(_)))));
    }

    #[test]
    fn a_relayed_view_keeps_absent_fields_absent() {
        let sent = serde_json::json!({
            "id": "s1", "kind": "sign", "status": "pending", "version": 1,
            "display": {"title": "签署"}, "created_at": "a", "expires_at": "b",
            "qr_text": "q"
        });
        let view: SessionView = serde_json::from_value(sent.clone()).unwrap();
        assert_eq!(serde_json::to_value(&view).unwrap(), sent);

        let sent = serde_json::json!({
            "request_id": "r1", "status": "approved", "expires_at": "c",
            "seal_signature_b64": "MEUC", "tbs_b64": "MA=="
        });
        let request: ConversationRequestView = serde_json::from_value(sent.clone()).unwrap();
        assert_eq!(request.seal_signature_b64.as_deref(), Some("MEUC"));
        assert_eq!(serde_json::to_value(&request).unwrap(), sent);
    }

    #[test]
    fn broker_errors_are_read_from_the_body() {
        match error_from_body(
            429,
            r#"{"error":{"code":"rate_limited","message":"slow down"}}"#,
            Some(Duration::from_secs(2)),
        ) {
            RpError::Broker {
                status,
                code,
                retry_after,
                ..
            } => {
                assert_eq!((status, code.as_str()), (429, "rate_limited"));
                assert_eq!(retry_after, Some(Duration::from_secs(2)));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            error_from_body(502, "<html>", None),
            RpError::Protocol(_)
        ));
        assert_eq!(seg("a/b?c"), "a%2Fb%3Fc");
    }
}
