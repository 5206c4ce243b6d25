//! The broker's side of key splitting (密钥拆分, docs/key-splitting.md).
//!
//! A co-signing service holds the second share of split keys and never
//! signs a digest a phone sends: it asks the broker for the bytes the phone
//! is answering. This module answers that question
//! ([`Broker::cosign_context`], served as `POST /v1/cosign/context` to the
//! service's credential only) and drives the service's admin API for the
//! app owner (freeze, unfreeze, revoke, unlock) through [`CosignerAdmin`].

use super::Broker;
use crate::error::ApiError;
use bzt_core::secret::RequestId;
use bzt_core::session::{Delegate, Op, Opening, SealRequest};
use bzt_core::{codec, ErrorCode, Secret, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What the service asks about: the session or conversation request the
/// phone says it is answering, with the phone's token as proof that the
/// phone (relayed by the service) really holds that session.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum ContextRequest {
    Session {
        id: String,
        phone_token: String,
        /// The member whose granted share the service co-signs with
        /// (企业证书授权); absent for the certificate owner's own share.
        #[serde(default)]
        delegate: Option<Delegate>,
    },
    Conversation {
        id: String,
        request_id: String,
        phone_token: String,
        #[serde(default)]
        delegate: Option<Delegate>,
    },
}

impl From<bzt_wire::CosignContextRequest> for ContextRequest {
    fn from(wire: bzt_wire::CosignContextRequest) -> Self {
        let delegate = |d: Option<bzt_wire::Delegate>| {
            d.map(|d| Delegate {
                name: d.name,
                device: d.device,
            })
        };
        match wire {
            bzt_wire::CosignContextRequest::Session(s) => ContextRequest::Session {
                id: s.id,
                phone_token: s.phone_token,
                delegate: delegate(s.delegate),
            },
            bzt_wire::CosignContextRequest::Conversation(c) => ContextRequest::Conversation {
                id: c.id,
                request_id: c.request_id,
                phone_token: c.phone_token,
                delegate: delegate(c.delegate),
            },
        }
    }
}

impl From<CosignContext> for bzt_wire::CosignContext {
    fn from(c: CosignContext) -> Self {
        Self {
            kind: c.kind,
            tbs_b64: c.tbs_b64,
            expires_at: c.expires_at.to_rfc3339(),
            certificate_serial: c.certificate_serial,
            opening: c.opening.map(|o| bzt_wire::OpeningWindow {
                not_before: o.not_before.to_rfc3339(),
                not_after: o.not_after.to_rfc3339(),
            }),
            seal: c.seal.map(|s| bzt_wire::SealAsk {
                data_hash_b64: s.data_hash_b64,
                property_info: s.property_info,
            }),
        }
    }
}

/// The bytes the service may co-sign (or the challenge of the co-decryption
/// it may perform), and until when.
#[derive(Clone, Debug, Serialize)]
pub struct CosignContext {
    /// The session's kind (`login`, `sign`, `decrypt`, ...), or
    /// `conversation` for a conversation request.
    pub kind: String,
    /// Exactly the bytes the phone must sign: the challenge bytes, the RP's
    /// `tbs`, or the conversation request's `tbs`. For `decrypt` the
    /// challenge's last line is the SM3 of the envelope header.
    pub tbs_b64: String,
    pub expires_at: Timestamp,
    /// The only certificate that may answer, when the broker knows it: the
    /// session's `expect_cert`, or the certificate that opened the conversation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_serial: Option<String>,
    /// `decrypt` sessions with an opening window (开标时间).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opening: Option<Opening>,
    /// A seal session or seal request (扫码签章 with a seal): the phone builds `TBS_Sign`
    /// around this hash and its own seal, so the bytes signed are not `tbs` but a `TBS_Sign`
    /// the service checks against this (`dataHash`, `propertyInfo`) before co-signing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seal: Option<SealContext>,
}

/// `seal` of a context answer: what the `TBS_Sign` the phone co-signs must carry.
#[derive(Clone, Debug, Serialize)]
pub struct SealContext {
    pub data_hash_b64: String,
    pub property_info: String,
}

impl From<&SealRequest> for SealContext {
    fn from(seal: &SealRequest) -> Self {
        Self {
            data_hash_b64: codec::encode(&seal.data_hash),
            property_info: seal.property_info.clone(),
        }
    }
}

impl Broker {
    /// The context of a co-signing or co-decryption, only while the session
    /// is `scanned` by the phone holding `phone_token` (or the conversation
    /// request is pending), else the error the phone itself would get.
    pub async fn cosign_context(&self, request: ContextRequest) -> Result<CosignContext, ApiError> {
        match request {
            ContextRequest::Session {
                id,
                phone_token,
                delegate,
            } => {
                let token = presented(&phone_token)?;
                let id = bzt_core::SessionId::parse(&id)
                    .ok_or_else(|| ApiError::from(bzt_core::session::unknown_session_error()))?;
                let session = self.load(&id).await?;
                session.check_completable(&token, self.now())?;
                // Who will sign, as the service says: `result.delegate` and the audit.
                if session.delegate != delegate {
                    self.apply(&session.id, &Op::NoteDelegate(delegate)).await?;
                }
                Ok(CosignContext {
                    kind: session.kind.as_str().to_owned(),
                    tbs_b64: codec::encode(&session.tbs),
                    expires_at: session.expires_at,
                    certificate_serial: session.expect_cert.as_ref().map(|e| e.serial.clone()),
                    opening: session.opening,
                    seal: session.seal.as_ref().map(SealContext::from),
                })
            }
            ContextRequest::Conversation {
                id,
                request_id,
                phone_token,
                delegate,
            } => {
                let id = bzt_core::secret::ConversationId::parse(&id)
                    .ok_or_else(|| ApiError::not_found("no such conversation"))?;
                let conversation = self.conversation_for_phone(&id, Some(&phone_token)).await?;
                let rid = RequestId::parse(&request_id)
                    .ok_or_else(|| ApiError::not_found("no such request"))?;
                let request = conversation.answerable(&rid)?;
                // Who will sign, as the service says: the request's result and audit record.
                if request.delegate != delegate {
                    let noted = self
                        .apply_conversation(
                            &conversation.id,
                            &bzt_core::conversation::ConvOp::NoteDelegate {
                                request_id: rid.clone(),
                                delegate,
                            },
                        )
                        .await?;
                    noted.output?;
                }
                Ok(CosignContext {
                    kind: "conversation".into(),
                    tbs_b64: codec::encode(&request.tbs),
                    expires_at: request.expires_at,
                    certificate_serial: Some(conversation.certificate.serial.clone()),
                    opening: None,
                    seal: request.seal.as_ref().map(SealContext::from),
                })
            }
        }
    }
}

fn presented(token: &str) -> Result<Secret, ApiError> {
    Secret::from_presented(token).ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unauthorized,
            "the phone token is not valid for this session",
        )
    })
}

/// The four state changes an app owner can ask of a split key at the service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAction {
    /// 挂失: refuse at once, reversibly.
    Freeze,
    Unfreeze,
    /// 注销: destroy the server share for good.
    Revoke,
    /// Lift the lock that five wrong PIN proofs in a row set.
    Unlock,
}

impl KeyAction {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "freeze" => Self::Freeze,
            "unfreeze" => Self::Unfreeze,
            "revoke" => Self::Revoke,
            "unlock" => Self::Unlock,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Freeze => "freeze",
            Self::Unfreeze => "unfreeze",
            Self::Revoke => "revoke",
            Self::Unlock => "unlock",
        }
    }
}

/// A client of the service's admin API (`/v1/admin/keys/...`), holding the
/// service's admin token. Kept here rather than taken from the service's
/// crate so the broker depends only on the service's HTTP contract.
pub struct CosignerAdmin {
    url: String,
    admin_token: Option<String>,
    http: reqwest::Client,
}

impl CosignerAdmin {
    pub fn new(url: &str, admin_token: Option<String>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Self {
            url: url.trim_end_matches('/').to_owned(),
            admin_token,
            http,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// `GET /v1/admin/keys/{key_id}` at the service.
    pub async fn key(&self, key_id: &str) -> Result<Value, ApiError> {
        let key_id = key_id_segment(key_id)?;
        self.call(reqwest::Method::GET, &format!("/v1/admin/keys/{key_id}"))
            .await
    }

    /// `POST /v1/admin/keys/{key_id}/{action}` at the service.
    pub async fn act(&self, key_id: &str, action: KeyAction) -> Result<Value, ApiError> {
        let key_id = key_id_segment(key_id)?;
        self.call(
            reqwest::Method::POST,
            &format!("/v1/admin/keys/{key_id}/{}", action.as_str()),
        )
        .await
    }

    /// `GET /v1/admin/grants` at the service (企业证书授权, the operator's view).
    pub async fn grants(&self) -> Result<Value, ApiError> {
        self.call(reqwest::Method::GET, "/v1/admin/grants").await
    }

    /// `POST /v1/admin/grants/{grant_id}/reclaim` at the service.
    pub async fn reclaim(&self, grant_id: &str) -> Result<Value, ApiError> {
        let grant_id = key_id_segment(grant_id)?;
        self.call(
            reqwest::Method::POST,
            &format!("/v1/admin/grants/{grant_id}/reclaim"),
        )
        .await
    }

    async fn call(&self, method: reqwest::Method, path: &str) -> Result<Value, ApiError> {
        let token = self.admin_token.as_deref().ok_or_else(|| {
            ApiError::forbidden(
                "the co-signing service's admin token is not configured: set [cosigner] admin_token",
            )
        })?;
        let resp = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, url = %self.url, "co-signing service unreachable");
                ApiError::new(
                    ErrorCode::Unavailable,
                    "the co-signing service cannot be reached; try again later",
                )
            })?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        // Pass on what the service said about the key (not found, already
        // revoked); anything about our own credentials is our configuration.
        let message = body["error"]["message"]
            .as_str()
            .unwrap_or("the co-signing service refused")
            .to_owned();
        let code = match status.as_u16() {
            404 => ErrorCode::NotFound,
            409 => ErrorCode::Conflict,
            410 => ErrorCode::Expired,
            400 => ErrorCode::InvalidRequest,
            401 | 403 => {
                tracing::error!(%status, "the co-signing service refused the broker's admin token");
                return Err(ApiError::new(
                    ErrorCode::Unavailable,
                    "the co-signing service refused the broker's admin token: check [cosigner] admin_token",
                ));
            }
            _ => ErrorCode::Unavailable,
        };
        Err(ApiError::new(
            code,
            format!("co-signing service: {message}"),
        ))
    }
}

/// A key id as a path segment: the service's ids are short and URL-safe;
/// anything else would change the path we call.
fn key_id_segment(key_id: &str) -> Result<&str, ApiError> {
    let ok = !key_id.is_empty()
        && key_id.len() <= 128
        && key_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    ok.then_some(key_id)
        .ok_or_else(|| ApiError::not_found("no such key at the co-signing service"))
}
