//! The broker's use cases: what the RP, the browser and the phone can ask
//! for, independent of how they ask (HTTP today; the transports in
//! [`crate::http`] are thin).
//!
//! A closed facade: the stores, the clock and the timers are private, so
//! transport asks the broker ([`Broker::watch_session`],
//! [`Broker::conversation_now`], …) instead of reaching into a store. Ids
//! arrive typed ([`SessionId`], [`ConversationId`]), parsed once at the edge.
//!
//! Every state change goes through the store's atomic update
//! ([`crate::store::RecordStore`], with the domain's `apply` as the change)
//! and then the
//! broker's reaction to the transition (timers, webhooks, metrics), whichever
//! request or timer caused it. The use cases live one file each:
//! [`session`] (scan sessions), `conversation` (会话签章), [`revocations`], [`cosigner`] (the
//! broker's side of key splitting: the context the co-signing service asks for, and its admin
//! API driven for the app owner).

mod conversation;
pub mod cosigner;
pub mod revocations;
pub mod session;

use crate::apps::Apps;
use crate::clock::Clock;
use crate::store::AuditLog;
use crate::store::{RecordStore, StoreError};
use crate::timers::TimerQueue;
use crate::webhook::WebhookSender;
use bzt_core::conversation::Conversation;
use bzt_core::pki::TrustStore;
use bzt_core::secret::ConversationId;
use bzt_core::{Session, SessionId, Timestamp};
pub use conversation::OpenedConversation;
pub use revocations::Revocations;
pub use session::{parse_qr_text, Claimed, Completion};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub const MAX_RECIPIENTS: usize = 50;
pub const MAX_WAIT_S: u64 = 30;

/// What the broker is built from (the start-up code in [`crate::app`] and
/// tests assemble it); once built, only the broker's methods reach them.
pub struct BrokerParts {
    pub store: Arc<dyn RecordStore<Session>>,
    pub conversations: Arc<dyn RecordStore<Conversation>>,
    pub audit: Arc<dyn AuditLog>,
    pub trust: Arc<TrustStore>,
    /// Where chain and signature checks run: off the async workers.
    pub cert_checks: crate::cert_checks::CheckPool,
    /// Trusted seal makers (制章者): a seal signature's seal must be made by one of them.
    pub seal_makers: Arc<Vec<x509_cert::Certificate>>,
    pub revocations: Revocations,
    pub apps: Apps,
    pub clock: Arc<dyn Clock>,
    pub timers: Arc<TimerQueue>,
    pub webhooks: WebhookSender,
    /// Base of the QR text and of every absolute URL handed out.
    pub public_base_url: String,
}

/// The broker: its parts, private (a closed facade; see the module doc).
pub struct Broker {
    parts: BrokerParts,
}

impl Broker {
    pub fn new(parts: BrokerParts) -> Self {
        Self { parts }
    }

    // ---- Read-only parts transport and start-up need ----------------------

    /// The configured apps (API keys, origins, webhook secrets).
    pub fn apps(&self) -> &Apps {
        &self.parts.apps
    }

    /// Base of the QR text and of every absolute URL handed out.
    pub fn public_base_url(&self) -> &str {
        &self.parts.public_base_url
    }

    /// Now, on the broker's clock (injectable in tests).
    pub fn now(&self) -> Timestamp {
        self.parts.clock.now()
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.parts.clock
    }

    pub fn trust(&self) -> &Arc<TrustStore> {
        &self.parts.trust
    }

    /// Run-time revocations (the admin API adds and removes them).
    pub fn revocations(&self) -> &Revocations {
        &self.parts.revocations
    }

    /// The audit trail of certificate use.
    pub fn audit(&self) -> &Arc<dyn AuditLog> {
        &self.parts.audit
    }

    /// Whether webhook deliveries wait in the shared store, so that every
    /// node must call [`Broker::retry_due_webhooks`] regularly.
    pub fn webhooks_queued(&self) -> bool {
        self.parts.webhooks.is_queued()
    }

    /// Attempts the webhook deliveries of the shared store that are due
    /// (their node may be gone), signed with this node's app secrets.
    pub async fn retry_due_webhooks(&self) -> Result<usize, StoreError> {
        self.parts
            .webhooks
            .retry_due(|app| {
                self.parts
                    .apps
                    .by_id(app)
                    .and_then(|a| a.webhook_secret.clone())
            })
            .await
    }

    /// Appends `record`, then runs the transition it records: the record is
    /// durable before anyone can learn the outcome. If the transition then
    /// fails (the session or conversation moved on meanwhile), an `aborted`
    /// copy follows, so the log never claims an outcome that did not happen.
    async fn audited_transition<T>(
        &self,
        record: bzt_core::audit::Operation,
        transition: impl std::future::Future<Output = Result<T, crate::error::ApiError>>,
    ) -> Result<T, crate::error::ApiError> {
        self.parts
            .audit
            .append(record.clone(), self.parts.clock.now())
            .await?;
        let applied = transition.await;
        if applied.is_err() {
            let aborted = bzt_core::audit::Operation {
                outcome: "aborted".into(),
                ..record
            };
            let session = aborted.session_id.clone();
            let conversation = aborted.conversation_id.clone();
            if let Err(e) = self
                .parts
                .audit
                .append(aborted, self.parts.clock.now())
                .await
            {
                tracing::error!(%session, ?conversation, error = %e, "could not record an aborted operation");
            }
        }
        applied
    }

    // ---- Watching ----------------------------------------------------------

    /// A receiver that ticks whenever the session changes; `None` when it is
    /// gone. Transport re-reads the session on each tick.
    pub async fn watch_session(
        &self,
        id: &SessionId,
    ) -> Result<Option<watch::Receiver<u64>>, StoreError> {
        self.parts.store.subscribe(id).await
    }

    /// A receiver that ticks whenever the conversation changes; `None` when
    /// it is gone.
    pub async fn watch_conversation(
        &self,
        id: &ConversationId,
    ) -> Result<Option<watch::Receiver<u64>>, StoreError> {
        self.parts.conversations.subscribe(id).await
    }

    /// The conversation as stored now, without a token check (for sockets
    /// that checked their token when they opened).
    pub async fn conversation_now(
        &self,
        id: &ConversationId,
    ) -> Result<Option<Conversation>, StoreError> {
        self.parts.conversations.get(id).await
    }

    /// [`Self::conversation_now`] for a woken socket: perhaps this node's
    /// copy, never a version older than `at_least`, the one it was woken for
    /// (see `RecordStore::get_recent`).
    pub async fn conversation_at(
        &self,
        id: &ConversationId,
        at_least: u64,
    ) -> Result<Option<Conversation>, StoreError> {
        self.parts.conversations.get_recent(id, at_least).await
    }

    // ---- Readiness and background work -------------------------------------

    /// `Ok(store kind)` when the session store answers.
    pub async fn store_ready(&self) -> Result<&'static str, StoreError> {
        self.parts
            .store
            .ping()
            .await
            .map(|()| self.parts.store.kind())
    }

    /// Runs the timer queue (expiries, rotations, conversation deadlines)
    /// until the process stops.
    pub async fn run_timers(self: Arc<Self>) {
        let broker = self.clone();
        self.parts
            .timers
            .clone()
            .run(self.parts.clock.clone(), move |timer| {
                let broker = broker.clone();
                async move { broker.on_timer(timer).await }
            })
            .await
    }

    /// How often a shared session store wants expiries swept; `None`: never.
    pub fn expiry_poll_interval(&self) -> Option<Duration> {
        self.parts.store.poll_interval()
    }

    /// How often a shared conversation store wants deadlines swept.
    pub fn conversation_poll_interval(&self) -> Option<Duration> {
        self.parts.conversations.poll_interval()
    }

    /// Signs the audit chain's head if an operation is still unsigned.
    pub async fn checkpoint_audit_if_unsigned(&self) -> Result<(), crate::error::ApiError> {
        self.parts
            .audit
            .checkpoint_if_unsigned(self.parts.clock.now())
            .await
            .map(|_| ())
            .map_err(Into::into)
    }
}
