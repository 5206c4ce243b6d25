//! Conversations (会话签章): after approving a `sign` session with `open_conversation`, the
//! phone stays connected and answers the requester's further signing requests without a new
//! scan, by tap or automatically (自动确认).
//!
//! The phone's socket is `GET /v1/conversations/<cid>/phone?t=<phone_token>` (WebSocket). The
//! broker sends, as JSON text frames:
//! - `{"type": "sign_request", "request_id", "seq", "display", "tbs_b64", "expires_at"}`: every
//!   pending request, in `seq` order; after a reconnect, all pending ones again;
//! - `{"type": "ack", "request_id", "status": "approved|rejected"}` for each accepted answer, or
//!   `{"type": "error", "error": {"code", "message"}, "request_id"?}` for a refused one;
//! - `{"type": "ended", "by", "at"}`, then a close with code 1000.
//!
//! The phone sends `{"type": "sign_response", "request_id", "signature_b64", "auto_confirmed"}`,
//! `{"type": "sign_reject", "request_id", "reason"}` or `{"type": "end"}`.
//!
//! [`ConversationSocket`] is one connection plus what must survive a reconnect: the ids of the
//! requests it has handed out, so a request the broker sends again is never handed out twice.
//! [`ConversationSocket::run`] and [`ConversationSocket::run_auto_confirm`] are the whole loop:
//! answer every request, reconnect when the connection breaks, stop when the conversation ends.
//!
//! ```no_run
//! # async fn demo(claimed: bzt_phone::Claimed, done: bzt_phone::CompleteAnswer,
//! #               identity: bzt_phone::PhoneIdentity) -> Result<(), bzt_phone::ConversationError> {
//! use std::ops::ControlFlow;
//! use bzt_phone::ConversationSocket;
//!
//! let grant = done.conversation.expect("opened with open_conversation: true");
//! let mut socket = ConversationSocket::connect(&claimed.base_url, &grant).await?;
//! let summary = socket
//!     .run_auto_confirm(&identity, |request, outcome| {
//!         println!("自动确认 #{} {}: {outcome:?}", request.seq, request.display.title);
//!         ControlFlow::Continue(())
//!     })
//!     .await?;
//! println!("ended by {}, {} signed", summary.ended.by, summary.approved);
//! # Ok(()) }
//! ```

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::ops::ControlFlow;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use reqwest::Url;
use serde::Deserialize;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::macros::{format_description, offset};
use time::OffsetDateTime;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::net::ClientTls;

use crate::claim::clean;
use crate::error::BrokerError;
use crate::identity::{sign, PhoneIdentity};
use crate::session::{PhoneConversation, SessionDisplay};

/// Largest frame accepted from the broker: a request carries at most 64 KiB of bytes to sign
/// (about 87 KiB as base64) plus its display text.
const MAX_FRAME_BYTES: usize = 1 << 20;
/// The broker pings every 25 s; this long without any frame means the connection is dead.
const DEFAULT_READ_IDLE: Duration = Duration::from_secs(75);
/// How long an answer may wait for its `ack` or `error`.
const DEFAULT_ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest reason sent with `sign_reject` (the broker keeps 500 characters).
const MAX_REASON_CHARS: usize = 500;

/// One signing request, as the phone receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignRequest {
    /// The request id; answers name it.
    pub request_id: String,
    /// 1-based position in the conversation; requests arrive in this order.
    pub seq: u32,
    /// What the requester asked to show (title, detail).
    pub display: SessionDisplay,
    /// The bytes to sign.
    pub tbs: Vec<u8>,
    /// When the broker stops accepting an answer (60 s after the request), verbatim.
    pub expires_at: String,
    /// A seal request: stamp with the socket's seal ([`ConversationSocket::with_seal`]).
    pub seal: Option<crate::seals::SealAsk>,
}

impl SignRequest {
    /// The title, cleaned of control and bidi-override characters: safe on one terminal line.
    pub fn clean_title(&self) -> String {
        clean(&self.display.title)
    }

    /// The lines a phone shows before signing (第 N 个签章请求, 标题, 详情, size, deadline), with
    /// broker-supplied text cleaned of control and bidi-override characters.
    pub fn describe_zh(&self) -> String {
        let mut lines = vec![
            format!("会话签章请求 #{}", self.seq),
            format!("标题：{}", clean(&self.display.title)),
        ];
        if let Some(detail) = self.display.detail.as_deref().filter(|d| !d.is_empty()) {
            lines.push(format!("详情：{}", clean(detail)));
        }
        if self.seal.is_some() {
            lines.push("签章方式：电子印章".into());
        } else {
            lines.push(format!("签章内容：{} 字节", self.tbs.len()));
        }
        let expires = OffsetDateTime::parse(&self.expires_at, &Rfc3339)
            .ok()
            .and_then(|t| {
                t.to_offset(offset!(+8))
                    .format(format_description!(
                        "[year]-[month]-[day] [hour]:[minute]:[second]"
                    ))
                    .ok()
            })
            .map(|t| format!("{t}（北京时间）"))
            .unwrap_or_else(|| clean(&self.expires_at));
        lines.push(format!("有效期至：{expires}"));
        lines.join("\n")
    }
}

/// Who or what ended a conversation; `ended.by` carries its wire name as text, so a cause this
/// phone does not know still reads (see [`ended_by_label_zh`]).
pub use bzt_wire::EndedBy;

/// The `ended` frame: `by` (text, compare with [`EndedBy::as_str`]) and `at` (RFC 3339, when the
/// broker said).
pub use bzt_wire::Ended;

/// What an `ack` says the answer did; `ack.status` carries its wire name as text.
pub use bzt_wire::RequestStatus as AckStatus;

/// The broker accepted an answer: the request answered and what became of it.
pub use bzt_wire::Ack;

/// The reason a conversation ended (`ended.by`), on a Chinese screen; a cause this phone does not
/// know reads 未知原因.
pub fn ended_by_label_zh(by: &str) -> &'static str {
    match by {
        "phone" => "手机端结束",
        "requester" => "请求方结束",
        "idle" => "空闲超时",
        "limit" => "达到会话上限",
        "certificate" => "证书已失效",
        _ => "未知原因",
    }
}

/// An `error` frame: the broker refused an answer (`bad_signature`, `conflict` for a request
/// already answered, `expired`, `untrusted_certificate`, ...) or a frame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the broker refused{}: {code}: {message}", .request_id.as_deref().map(|r| format!(" the answer to {r}")).unwrap_or_default())]
pub struct FrameError {
    /// The protocol's snake_case code.
    pub code: String,
    /// The broker's human text.
    pub message: String,
    /// The request the refused answer named, when it named one.
    pub request_id: Option<String>,
}

impl FrameError {
    /// True when the code is `code`.
    pub fn is(&self, code: &str) -> bool {
        self.code == code
    }
}

/// Everything a conversation operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ConversationError {
    /// The broker refused the answer or frame (an `error` frame).
    #[error(transparent)]
    Refused(#[from] FrameError),
    /// The broker refused the socket itself (HTTP answer to the upgrade: `unauthorized` for a
    /// wrong token, `not_found` for an unknown or purged conversation, ...).
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The conversation ended (it may have ended before the operation was sent).
    #[error("the conversation has ended (by {})", .0.by)]
    Ended(Ended),
    /// The socket closed without `ended`: reconnect.
    #[error("the conversation socket closed{}", .code.map(|c| format!(" with code {c}")).unwrap_or_default())]
    Closed {
        /// The close code, if the broker sent a close frame.
        code: Option<u16>,
        /// Its reason text.
        reason: String,
    },
    /// The connection broke or could not be made.
    #[error("conversation socket: {0}")]
    Transport(#[source] Box<tungstenite::Error>),
    /// Nothing arrived in time (an answer's ack, or any frame for a while): the connection is
    /// probably dead; reconnect.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// The broker sent something the protocol does not allow.
    #[error("unexpected frame from the broker: {0}")]
    Protocol(String),
    /// The broker URL cannot be turned into the socket's URL.
    #[error("{0}")]
    Url(String),
    /// Signing failed (the identity's key).
    #[error(transparent)]
    Sign(#[from] crate::Error),
}

impl ConversationError {
    /// True when a reconnect may help: the connection broke, closed without `ended` (other than
    /// a normal close), or went silent.
    pub fn is_reconnectable(&self) -> bool {
        match self {
            ConversationError::Transport(_) | ConversationError::Timeout(_) => true,
            ConversationError::Closed { code, .. } => *code != Some(1000),
            ConversationError::Broker(b) => b.is("unavailable") || b.is("rate_limited"),
            _ => false,
        }
    }

    /// The broker's error code (error frame or refused upgrade), when there is one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ConversationError::Refused(f) => Some(&f.code),
            ConversationError::Broker(b) => Some(&b.code),
            _ => None,
        }
    }
}

impl From<tungstenite::Error> for ConversationError {
    fn from(e: tungstenite::Error) -> Self {
        match e {
            tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
                ConversationError::Closed {
                    code: None,
                    reason: String::new(),
                }
            }
            other => ConversationError::Transport(Box::new(other)),
        }
    }
}

/// What to do with one request ([`ConversationSocket::run`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Sign it; `auto_confirmed` tells the requester whether a person confirmed it.
    Approve {
        /// True when signed without asking (自动确认).
        auto_confirmed: bool,
    },
    /// Decline it with this reason.
    Reject(String),
    /// End the conversation (the request is left to expire with it).
    End,
}

/// How one request was answered ([`ConversationSocket::run`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Signed, and the broker accepted the signature.
    Approved {
        /// As sent in the response.
        auto_confirmed: bool,
    },
    /// Declined, and the broker recorded it.
    Rejected {
        /// As sent.
        reason: String,
    },
    /// The broker refused the answer (`bad_signature`, `expired`, `untrusted_certificate`, ...).
    Refused(FrameError),
    /// The answer was sent, the connection broke before its ack, and after reconnecting the
    /// broker said the request was already answered (`conflict`): the first send landed.
    AnsweredBeforeReconnect,
}

/// What a [`ConversationSocket::run`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunSummary {
    /// How the conversation ended.
    pub ended: Ended,
    /// Requests signed and accepted.
    pub approved: u64,
    /// Requests declined.
    pub rejected: u64,
    /// Answers the broker refused.
    pub refused: u64,
    /// Reconnects made.
    pub reconnects: u32,
}

/// How [`ConversationSocket::run`] reconnects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reconnect {
    /// Attempts after one failure before giving up (0: never reconnect).
    pub attempts: u32,
    /// Delay before the first attempt; doubles up to `max_delay`.
    pub initial_delay: Duration,
    /// Longest delay between attempts.
    pub max_delay: Duration,
}

impl Default for Reconnect {
    fn default() -> Self {
        Self {
            attempts: 8,
            initial_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
        }
    }
}

/// A conversation socket, over plain TCP or TLS.
type Ws = crate::net::WsStream;

/// A frame from the broker, as sent. Unknown types are ignored (a newer broker may add some).
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Incoming {
    SignRequest(bzt_wire::SignRequestFrame),
    Ended(Ended),
    Ack(Ack),
    Error(bzt_wire::FrameError),
    #[serde(other)]
    Other,
}

/// What one read from the socket gave.
enum Frame {
    Request(SignRequest),
    Ended(Ended),
    Ack(Ack),
    Error(FrameError),
}

/// What signs a conversation's requests: the phone's whole key, or a split key co-signing
/// with its service (which fetches each request's bytes from the broker itself, proving the
/// conversation with the phone's token).
pub enum ConversationSigner<'k> {
    Whole(&'k PhoneIdentity),
    Split {
        key: &'k crate::split::UnlockedSplit<'k>,
        /// The conversation's phone token (the grant's `phone_token`).
        phone_token: String,
    },
}

impl<'k> From<&'k PhoneIdentity> for ConversationSigner<'k> {
    fn from(identity: &'k PhoneIdentity) -> Self {
        Self::Whole(identity)
    }
}

impl ConversationSigner<'_> {
    async fn sign(
        &self,
        conversation_id: &str,
        request: &SignRequest,
    ) -> Result<Vec<u8>, crate::Error> {
        match self {
            Self::Whole(identity) => sign(identity, &request.tbs),
            Self::Split { key, phone_token } => {
                key.sign_conversation_request(conversation_id, phone_token, request)
                    .await
            }
        }
    }
}

/// The phone's side of one conversation: a WebSocket plus the request ids already handed out.
pub struct ConversationSocket {
    /// `ws[s]://.../v1/conversations/<cid>/phone?t=<token>`: holds the token, so never printed.
    url: Url,
    /// The conversation id, for messages.
    conversation_id: String,
    ws: Ws,
    /// The roots `wss:` trusts, kept for reconnects.
    tls: ClientTls,
    /// Request ids handed out by [`ConversationSocket::next_request`], across reconnects: the
    /// broker sends pending requests again after each reconnect.
    seen: HashSet<String>,
    /// Requests that arrived while an answer waited for its ack, not yet handed out.
    queue: VecDeque<SignRequest>,
    /// Set once `ended` arrived; nothing more happens after it.
    ended: Option<Ended>,
    /// See [`ConversationSocket::with_timeouts`].
    answer_timeout: Duration,
    read_idle: Duration,
    reconnect: Reconnect,
    /// The seal that seal requests are stamped with (see [`ConversationSocket::with_seal`]).
    seal: Option<bzt_seal::Seal>,
}

impl std::fmt::Debug for ConversationSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConversationSocket")
            .field("conversation_id", &self.conversation_id)
            .field("seen", &self.seen.len())
            .field("queued", &self.queue.len())
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl ConversationSocket {
    /// Connects to `GET /v1/conversations/<id>/phone?t=<phone_token>` on the broker at
    /// `base_url` (`http:` → `ws:`, `https:` → `wss:` with the Web PKI roots).
    ///
    /// A refused upgrade is [`ConversationError::Broker`] (`unauthorized`, `not_found`, ...).
    pub async fn connect(
        base_url: &str,
        grant: &PhoneConversation,
    ) -> Result<Self, ConversationError> {
        Self::connect_with_tls(base_url, grant, ClientTls::web_pki()).await
    }

    /// [`ConversationSocket::connect`] trusting `tls`'s roots (the Web PKI and any extra CA)
    /// for `wss:`.
    pub async fn connect_with_tls(
        base_url: &str,
        grant: &PhoneConversation,
        tls: ClientTls,
    ) -> Result<Self, ConversationError> {
        let url = socket_url(base_url, &grant.id, &grant.phone_token)?;
        let ws = open(&url, &tls).await?;
        Ok(Self {
            url,
            conversation_id: grant.id.clone(),
            ws,
            tls,
            seen: HashSet::new(),
            queue: VecDeque::new(),
            ended: None,
            answer_timeout: DEFAULT_ANSWER_TIMEOUT,
            read_idle: DEFAULT_READ_IDLE,
            reconnect: Reconnect::default(),
            seal: None,
        })
    }

    /// Replaces how long an answer waits for its ack (default 30 s) and how long the socket may
    /// stay silent before it counts as dead (default 75 s; the broker pings every 25 s).
    pub fn with_timeouts(mut self, answer: Duration, read_idle: Duration) -> Self {
        self.answer_timeout = answer;
        self.read_idle = read_idle;
        self
    }

    /// Replaces the reconnect policy of [`ConversationSocket::run`].
    pub fn with_reconnect(mut self, reconnect: Reconnect) -> Self {
        self.reconnect = reconnect;
        self
    }

    /// The conversation id.
    pub fn conversation_id(&self) -> &str {
        &self.conversation_id
    }

    /// How the conversation ended, once an `ended` frame arrived.
    pub fn ended(&self) -> Option<&Ended> {
        self.ended.as_ref()
    }

    /// Replaces the connection with a new one. Requests already handed out are not handed out
    /// again when the broker re-sends them; a request handed out but not answered can still be
    /// answered on the new connection.
    pub async fn reconnect(&mut self) -> Result<(), ConversationError> {
        let ws = open(&self.url, &self.tls).await?;
        let mut old = std::mem::replace(&mut self.ws, ws);
        // What was queued is still pending at the broker, which sends it again.
        self.queue.clear();
        // Best effort: the old connection is usually already broken.
        let _ = tokio::time::timeout(Duration::from_millis(200), old.close(None)).await;
        Ok(())
    }

    /// [`ConversationSocket::reconnect`], retried with backoff per the reconnect policy, while
    /// the failure is one a retry may cure.
    pub async fn reconnect_with_backoff(&mut self) -> Result<(), ConversationError> {
        let mut delay = self.reconnect.initial_delay;
        let mut attempt = 0;
        loop {
            tokio::time::sleep(delay).await;
            attempt += 1;
            match self.reconnect().await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_reconnectable() && attempt < self.reconnect.attempts => {
                    delay = (delay * 2).min(self.reconnect.max_delay);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The next request not handed out before, in the broker's order; `None` once the
    /// conversation has ended (see [`ConversationSocket::ended`]).
    ///
    /// Cancel-safe: dropping the future loses no request.
    pub async fn next_request(&mut self) -> Result<Option<SignRequest>, ConversationError> {
        loop {
            if self.ended.is_some() {
                // What was still queued expired with the conversation.
                self.queue.clear();
                return Ok(None);
            }
            if let Some(r) = self.queue.pop_front() {
                if self.seen.insert(r.request_id.clone()) {
                    return Ok(Some(r));
                }
                continue;
            }
            match self.read_frame(self.read_idle).await? {
                Frame::Request(r) => self.enqueue(r),
                Frame::Ended(e) => self.ended = Some(e),
                // Late answers to something that already timed out.
                Frame::Ack(_) | Frame::Error(_) => {}
            }
        }
    }

    /// Stamps seal requests (a seal on each page) with `seal`, chosen once by the user; without
    /// one, [`ConversationSocket::run`] declines seal requests.
    pub fn with_seal(mut self, seal: bzt_seal::Seal) -> Self {
        self.seal = Some(seal);
        self
    }

    /// The `sign_response` frame for `request`: a signature over `tbs`, or for a seal request an
    /// SES_Signature made with the socket's seal.
    fn response_frame(
        &self,
        request: &SignRequest,
        identity: &PhoneIdentity,
        auto_confirmed: bool,
    ) -> Result<serde_json::Value, ConversationError> {
        if request.seal.is_some() {
            let seal = self.seal.as_ref().ok_or_else(|| {
                ConversationError::from(crate::Error::Refused(
                    "this request asks for a seal: choose one with with_seal".into(),
                ))
            })?;
            return Ok(crate::seals::seal_response_frame(
                request,
                identity,
                seal,
                auto_confirmed,
            )?);
        }
        let signature = sign(identity, &request.tbs)?;
        Ok(json!({
            "type": "sign_response",
            "request_id": request.request_id,
            "signature_b64": STANDARD.encode(signature),
            "auto_confirmed": auto_confirmed,
        }))
    }

    /// Signs `request.tbs` with `identity` and sends it; waits for the broker's ack.
    ///
    /// A refused signature is [`ConversationError::Refused`] (`bad_signature` when `identity` is
    /// not the certificate that opened the conversation; `conflict` when the request was already
    /// answered; `expired`).
    pub async fn approve(
        &mut self,
        request: &SignRequest,
        identity: &PhoneIdentity,
        auto_confirmed: bool,
    ) -> Result<Ack, ConversationError> {
        let frame = self.response_frame(request, identity, auto_confirmed)?;
        self.answer(&request.request_id, &frame).await
    }

    /// Sends `signature` (DER) as the answer to `request_id`, unchecked: for tests of the
    /// broker's checks. Waits for the ack.
    pub async fn respond_raw(
        &mut self,
        request_id: &str,
        signature: &[u8],
        auto_confirmed: bool,
    ) -> Result<Ack, ConversationError> {
        let frame = json!({
            "type": "sign_response",
            "request_id": request_id,
            "signature_b64": STANDARD.encode(signature),
            "auto_confirmed": auto_confirmed,
        });
        self.answer(request_id, &frame).await
    }

    /// Declines `request` with `reason` (at most 500 characters are sent); waits for the ack.
    pub async fn reject(
        &mut self,
        request: &SignRequest,
        reason: &str,
    ) -> Result<Ack, ConversationError> {
        let reason: String = reason.chars().take(MAX_REASON_CHARS).collect();
        let frame = json!({
            "type": "sign_reject",
            "request_id": request.request_id,
            "reason": reason,
        });
        self.answer(&request.request_id, &frame).await
    }

    /// Ends the conversation (`end`) and waits for the broker's `ended`. If it had already
    /// ended, answers how.
    pub async fn end(&mut self) -> Result<Ended, ConversationError> {
        if let Some(e) = &self.ended {
            return Ok(e.clone());
        }
        self.send(&json!({ "type": "end" })).await?;
        loop {
            match self.read_frame(self.answer_timeout).await {
                Ok(Frame::Ended(e)) => {
                    self.ended = Some(e.clone());
                    return Ok(e);
                }
                Ok(Frame::Request(r)) => self.enqueue(r),
                Ok(Frame::Ack(_)) => {}
                Ok(Frame::Error(e)) if e.request_id.is_none() => return Err(e.into()),
                Ok(Frame::Error(_)) => {}
                Err(ConversationError::Timeout(_)) => {
                    return Err(ConversationError::Timeout("no `ended` after `end`"))
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Answers every request with `decide` until the conversation ends, reconnecting (per
    /// [`ConversationSocket::with_reconnect`]) when the connection breaks. After each answer,
    /// `on_answered` sees the request and its [`Outcome`]; [`ControlFlow::Break`] ends the
    /// conversation (`end`), as does [`Decision::End`].
    ///
    /// An answer whose ack was lost to a broken connection is sent again after reconnecting;
    /// the broker accepts one answer per request, so nothing is signed twice.
    pub async fn run<'k, D, F, H>(
        &mut self,
        signer: impl Into<ConversationSigner<'k>>,
        mut decide: D,
        mut on_answered: H,
    ) -> Result<RunSummary, ConversationError>
    where
        D: FnMut(&SignRequest) -> F,
        F: Future<Output = Decision>,
        H: FnMut(&SignRequest, &Outcome) -> ControlFlow<()>,
    {
        let signer = signer.into();
        let mut summary = RunSummary {
            // Replaced by the broker's `ended` before every successful return.
            ended: Ended {
                by: String::new(),
                at: None,
            },
            approved: 0,
            rejected: 0,
            refused: 0,
            reconnects: 0,
        };
        loop {
            let request = match self.next_request().await {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) if e.is_reconnectable() => {
                    self.reconnect_with_backoff().await?;
                    summary.reconnects += 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let decision = if request.seal.is_some() && self.seal.is_none() {
                // Nothing to stamp with: decline rather than leave the request to expire.
                Decision::Reject("手机未选择印章".into())
            } else {
                decide(&request).await
            };
            let (frame, accepted) = match decision {
                Decision::End => break,
                Decision::Approve { auto_confirmed } => {
                    let frame = match &signer {
                        ConversationSigner::Whole(identity) => {
                            self.response_frame(&request, identity, auto_confirmed)?
                        }
                        ConversationSigner::Split { key, phone_token }
                            if request.seal.is_some() =>
                        {
                            let seal = self.seal.as_ref().ok_or_else(|| {
                                ConversationError::from(crate::Error::Refused(
                                    "this request asks for a seal: choose one with with_seal"
                                        .into(),
                                ))
                            })?;
                            let ses = key
                                .stamp_conversation_request(
                                    &self.conversation_id,
                                    phone_token,
                                    &request,
                                    seal,
                                )
                                .await?;
                            json!({
                                "type": "sign_response",
                                "request_id": request.request_id,
                                "seal_signature_b64": STANDARD.encode(ses),
                                "auto_confirmed": auto_confirmed,
                            })
                        }
                        ConversationSigner::Split { .. } => {
                            let signature = signer.sign(&self.conversation_id, &request).await?;
                            json!({
                                "type": "sign_response",
                                "request_id": request.request_id,
                                "signature_b64": STANDARD.encode(signature),
                                "auto_confirmed": auto_confirmed,
                            })
                        }
                    };
                    (frame, Outcome::Approved { auto_confirmed })
                }
                Decision::Reject(reason) => {
                    let reason: String = reason.chars().take(MAX_REASON_CHARS).collect();
                    let frame = json!({
                        "type": "sign_reject",
                        "request_id": request.request_id,
                        "reason": reason,
                    });
                    (frame, Outcome::Rejected { reason })
                }
            };
            let mut retried = false;
            let outcome = loop {
                match self.answer(&request.request_id, &frame).await {
                    Ok(_) => break accepted,
                    Err(ConversationError::Refused(f)) if retried && f.is("conflict") => {
                        break Outcome::AnsweredBeforeReconnect
                    }
                    Err(ConversationError::Refused(f)) => break Outcome::Refused(f),
                    Err(ConversationError::Ended(e)) => {
                        summary.ended = e;
                        return Ok(summary);
                    }
                    Err(e) if e.is_reconnectable() => {
                        self.reconnect_with_backoff().await?;
                        summary.reconnects += 1;
                        retried = true;
                    }
                    Err(e) => return Err(e),
                }
            };
            match &outcome {
                Outcome::Approved { .. } => summary.approved += 1,
                Outcome::Rejected { .. } => summary.rejected += 1,
                Outcome::Refused(_) => summary.refused += 1,
                Outcome::AnsweredBeforeReconnect => {}
            }
            if on_answered(&request, &outcome).is_break() {
                break;
            }
        }
        summary.ended = match self.ended.clone() {
            Some(e) => e,
            None => self.end_retrying(&mut summary.reconnects).await?,
        };
        Ok(summary)
    }

    /// [`ConversationSocket::run`] signing every request without asking (自动确认,
    /// `auto_confirmed: true`): what a load generator or an unattended signer runs.
    pub async fn run_auto_confirm<'k, H>(
        &mut self,
        signer: impl Into<ConversationSigner<'k>>,
        on_answered: H,
    ) -> Result<RunSummary, ConversationError>
    where
        H: FnMut(&SignRequest, &Outcome) -> ControlFlow<()>,
    {
        self.run(
            signer,
            |_| {
                std::future::ready(Decision::Approve {
                    auto_confirmed: true,
                })
            },
            on_answered,
        )
        .await
    }

    /// `end`, reconnecting when the connection is broken. A conversation that ended meanwhile
    /// answers its `ended` on the reconnect, which is just as good.
    async fn end_retrying(&mut self, reconnects: &mut u32) -> Result<Ended, ConversationError> {
        loop {
            match self.end().await {
                Err(e) if e.is_reconnectable() => {
                    self.reconnect_with_backoff().await?;
                    *reconnects += 1;
                }
                other => return other,
            }
        }
    }

    /// Sends an answer for `request_id` and waits for its ack or error; requests arriving
    /// meanwhile are queued.
    async fn answer(&mut self, request_id: &str, frame: &Value) -> Result<Ack, ConversationError> {
        if let Some(e) = &self.ended {
            return Err(ConversationError::Ended(e.clone()));
        }
        self.send(frame).await?;
        let deadline = tokio::time::Instant::now() + self.answer_timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let frame = match self.read_frame(left).await {
                Err(ConversationError::Timeout(_)) => {
                    return Err(ConversationError::Timeout("no ack for the answer"))
                }
                other => other?,
            };
            match frame {
                Frame::Ack(ack) if ack.request_id == request_id => return Ok(ack),
                Frame::Error(e) if e.request_id.as_deref() == Some(request_id) => {
                    return Err(e.into())
                }
                // An error naming no request refers to the frame just sent (it did not parse).
                Frame::Error(e) if e.request_id.is_none() => return Err(e.into()),
                Frame::Ack(_) | Frame::Error(_) => {}
                Frame::Request(r) => self.enqueue(r),
                Frame::Ended(e) => {
                    self.ended = Some(e.clone());
                    return Err(ConversationError::Ended(e));
                }
            }
        }
    }

    fn enqueue(&mut self, r: SignRequest) {
        let queued = self.queue.iter().any(|q| q.request_id == r.request_id);
        if !queued && !self.seen.contains(&r.request_id) {
            self.queue.push_back(r);
        }
    }

    async fn send(&mut self, v: &Value) -> Result<(), ConversationError> {
        self.ws.send(Message::Text(v.to_string().into())).await?;
        Ok(())
    }

    /// The next meaningful frame; pings and unknown frame types are skipped.
    async fn read_frame(&mut self, idle: Duration) -> Result<Frame, ConversationError> {
        loop {
            let msg = match tokio::time::timeout(idle, self.ws.next()).await {
                Err(_) => return Err(ConversationError::Timeout("the broker went silent")),
                Ok(None) => {
                    return Err(ConversationError::Closed {
                        code: None,
                        reason: String::new(),
                    })
                }
                Ok(Some(msg)) => msg?,
            };
            let text = match msg {
                Message::Text(t) => t,
                Message::Close(frame) => {
                    return Err(ConversationError::Closed {
                        code: frame.as_ref().map(|f| u16::from(f.code)),
                        reason: frame.map(|f| f.reason.to_string()).unwrap_or_default(),
                    })
                }
                // Pings are answered by tungstenite; binary frames are not part of the protocol.
                _ => continue,
            };
            let incoming: Incoming = serde_json::from_str(text.as_str()).map_err(|e| {
                ConversationError::Protocol(format!("{e}: {}", excerpt(text.as_str())))
            })?;
            return Ok(match incoming {
                Incoming::SignRequest(bzt_wire::SignRequestFrame {
                    request_id,
                    seq,
                    display,
                    tbs_b64,
                    expires_at,
                    seal,
                }) => {
                    let tbs = STANDARD.decode(&tbs_b64).map_err(|e| {
                        ConversationError::Protocol(format!(
                            "sign_request {request_id}: tbs_b64 is not base64: {e}"
                        ))
                    })?;
                    let seal = seal
                        .map(crate::seals::SealAsk::from_wire)
                        .transpose()
                        .map_err(|e| {
                            ConversationError::Protocol(format!("sign_request {request_id}: {e}"))
                        })?;
                    Frame::Request(SignRequest {
                        request_id,
                        seq,
                        display,
                        tbs,
                        expires_at,
                        seal,
                    })
                }
                Incoming::Ended(e) => Frame::Ended(e),
                Incoming::Ack(ack) => Frame::Ack(ack),
                Incoming::Error(bzt_wire::FrameError { error, request_id }) => {
                    Frame::Error(FrameError {
                        code: error.code,
                        message: error.message,
                        request_id,
                    })
                }
                Incoming::Other => continue,
            });
        }
    }
}

/// `<base_url>/v1/conversations/<id>/phone?t=<token>` with the scheme `ws:` or `wss:`.
fn socket_url(base_url: &str, id: &str, token: &str) -> Result<Url, ConversationError> {
    let bad = |why: &str| {
        ConversationError::Url(format!("{base_url:?} is not a usable broker URL: {why}"))
    };
    let mut url = Url::parse(base_url).map_err(|e| bad(&e.to_string()))?;
    let scheme = match url.scheme() {
        "http" | "ws" => "ws",
        "https" | "wss" => "wss",
        _ => return Err(bad("expected http: or https:")),
    };
    url.set_scheme(scheme)
        .map_err(|_| bad("cannot switch to a WebSocket scheme"))?;
    url.path_segments_mut()
        .map_err(|_| bad("it cannot carry a path"))?
        .pop_if_empty()
        .extend(["v1", "conversations", id, "phone"]);
    url.set_fragment(None);
    url.query_pairs_mut().clear().append_pair("t", token);
    Ok(url)
}

/// Connects and upgrades; a refused upgrade becomes the broker's error.
async fn open(url: &Url, tls: &ClientTls) -> Result<Ws, ConversationError> {
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES));
    match crate::net::connect_ws(url.as_str(), tls, config).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(resp)) => Err(refusal(&resp)),
        Err(e) => Err(e.into()),
    }
}

/// The broker's HTTP refusal of the upgrade, as its protocol error when it has one.
fn refusal(resp: &tungstenite::http::Response<Option<Vec<u8>>>) -> ConversationError {
    let status = resp.status().as_u16();
    let body = resp.body().as_deref().unwrap_or_default();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    match serde_json::from_slice::<bzt_wire::ErrorBody>(body) {
        Ok(bzt_wire::ErrorBody { error }) => BrokerError {
            status,
            code: error.code,
            message: error.message,
            retry_after,
        }
        .into(),
        Err(_) => ConversationError::Protocol(format!(
            "the upgrade was refused with HTTP {status} and no protocol error body: {}",
            excerpt(&String::from_utf8_lossy(body))
        )),
    }
}

/// The first 200 characters, for error messages.
fn excerpt(text: &str) -> String {
    let mut out: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_urls_switch_scheme_and_keep_the_base_path() {
        let url = socket_url("http://127.0.0.1:8700", "c1", "tok").unwrap();
        assert_eq!(
            url.as_str(),
            "ws://127.0.0.1:8700/v1/conversations/c1/phone?t=tok"
        );
        let url = socket_url("https://h.example/bzt/", "c 1", "a+b").unwrap();
        assert_eq!(
            url.as_str(),
            "wss://h.example/bzt/v1/conversations/c%201/phone?t=a%2Bb"
        );
        assert!(socket_url("ftp://h.example", "c", "t").is_err());
        assert!(socket_url("not a url", "c", "t").is_err());
    }

    #[test]
    fn frames_parse_and_unknown_ones_are_ignored() {
        let f: Incoming = serde_json::from_str(
            r#"{"type":"sign_request","request_id":"r1","seq":3,"display":{"title":"第1页"},"tbs_b64":"AQI=","expires_at":"x"}"#,
        )
        .unwrap();
        assert!(matches!(
            f,
            Incoming::SignRequest(bzt_wire::SignRequestFrame { seq: 3, .. })
        ));
        let f: Incoming =
            serde_json::from_str(r#"{"type":"ended","by":"certificate","at":"t"}"#).unwrap();
        assert!(matches!(
            f,
            Incoming::Ended(Ended { by, .. }) if by == EndedBy::Certificate.as_str()
        ));
        let f: Incoming = serde_json::from_str(r#"{"type":"ended","by":"meteor"}"#).unwrap();
        assert!(matches!(
            f,
            Incoming::Ended(Ended { ref by, at: None }) if ended_by_label_zh(by) == "未知原因"
        ));
        let f: Incoming =
            serde_json::from_str(r#"{"type":"ack","request_id":"r","status":"later"}"#).unwrap();
        assert!(matches!(f, Incoming::Ack(Ack { status, .. }) if status == "later"));
        let f: Incoming = serde_json::from_str(r#"{"type":"hello","x":1}"#).unwrap();
        assert!(matches!(f, Incoming::Other));
    }

    #[test]
    fn describe_zh_cleans_broker_text() {
        let r = SignRequest {
            request_id: "r".into(),
            seq: 2,
            display: SessionDisplay {
                title: "第2页\n操作：扫码解密".into(),
                detail: Some("合同".into()),
            },
            tbs: vec![0; 10],
            expires_at: "2030-01-01T00:00:00.000Z".into(),
            seal: None,
        };
        let text = r.describe_zh();
        assert!(
            text.ends_with("有效期至：2030-01-01 08:00:00（北京时间）"),
            "{text}"
        );
        assert!(
            text.starts_with("会话签章请求 #2\n标题：第2页 操作：扫码解密\n详情：合同\n"),
            "{text}"
        );
        assert!(text.contains("签章内容：10 字节"), "{text}");
    }

    #[test]
    fn only_broken_connections_are_reconnectable() {
        let closed = |code| ConversationError::Closed {
            code,
            reason: String::new(),
        };
        assert!(closed(None).is_reconnectable());
        assert!(closed(Some(1011)).is_reconnectable());
        assert!(!closed(Some(1000)).is_reconnectable());
        assert!(ConversationError::Timeout("x").is_reconnectable());
        let refused = ConversationError::Refused(FrameError {
            code: "conflict".into(),
            message: String::new(),
            request_id: None,
        });
        assert!(!refused.is_reconnectable());
        assert_eq!(refused.code(), Some("conflict"));
    }

    fn assert_send<T: Send>(_: &T) {}

    #[allow(dead_code)]
    async fn the_run_loop_is_send(socket: &mut ConversationSocket, identity: &PhoneIdentity) {
        let run = socket.run_auto_confirm(identity, |_, _| ControlFlow::Continue(()));
        assert_send(&run);
    }
}
