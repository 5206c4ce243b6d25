//! Conversation use cases (会话签章): opening one from an approved `sign`
//! session, requests from the requester, answers from the phone, ending.
//!
//! Every change goes through [`Broker::apply_conversation`] and its one
//! reaction point, which schedules the conversation's next deadline and
//! purges it after the retention period. Every signature is checked against
//! the certificate that opened the conversation, re-checked (validity,
//! revocation) at that moment.

use crate::broker::Broker;
use crate::error::ApiError;
use crate::store::StoredRecord;
use crate::timers::Timer;
use bzt_core::conversation::{
    ConvOp, ConvOutput, Conversation, EndedBy, OpenConversation, SignRequest,
};
use bzt_core::pki::{CertificateInfo, CheckContext};
use bzt_core::secret::{ConversationId, RequestId};
use bzt_core::session::{
    validate_display, validate_tbs, ConversationGrant, DisplayText, TERMINAL_RETENTION_S,
};
use bzt_core::{DomainError, ErrorCode, Secret, Session};
use std::time::Duration;

/// What the phone and the requester receive when a conversation opens.
pub struct OpenedConversation {
    /// For the requester (`result.conversation`).
    pub grant: ConversationGrant,
    /// For the phone (the complete answer).
    pub phone_token: Secret,
}

/// The audit record of a conversation request's answer.
fn audit_request(
    c: &Conversation,
    r: &SignRequest,
    outcome: &str,
    reason: Option<String>,
    auto_confirmed: Option<bool>,
) -> bzt_core::audit::Operation {
    bzt_core::audit::Operation {
        app: c.app_id.clone(),
        kind: "conversation_request".into(),
        session_id: c.session_id.to_string(),
        conversation_id: Some(c.id.to_string()),
        request_id: Some(r.id.to_string()),
        cert_serial: c.certificate.serial.clone(),
        cert_issuer: c.certificate.issuer.clone(),
        cert_subject: c.certificate.subject.clone(),
        tbs_sm3: r.tbs_sm3.clone(),
        outcome: outcome.into(),
        reason,
        auto_confirmed,
        device_name: c.device_name.clone(),
        requester_ip: c.requester.as_ref().and_then(|q| q.ip.clone()),
        requester_user_agent: c.requester.as_ref().and_then(|q| q.user_agent.clone()),
        actor: None,
        delegate: r.delegate.clone(),
    }
}

/// The outcome of an op on a conversation.
#[derive(Debug)]
pub struct ConvUpdate {
    pub output: Result<ConvOutput, DomainError>,
    pub conversation: Conversation,
    pub changed: bool,
    /// Requests that reached a final status in this op.
    pub finished: Vec<RequestId>,
    /// Whether this op ended the conversation.
    pub ended_now: bool,
}

/// A phone's answer to a request, by the kind of request.
enum Answer {
    Plain(Vec<u8>),
    Sealed(Vec<u8>),
}

fn unknown_conversation() -> ApiError {
    ApiError::not_found("no such conversation")
}

impl Broker {
    /// Ticks the conversations whose deadline passed, as the shared store hands
    /// them out (see "Due times" in [`crate::store`]): every node
    /// calls this every [`Broker::conversation_poll_interval`], so a
    /// deadline is applied even when the node whose timer held it is gone.
    pub async fn sweep_conversation_deadlines(&self) -> Result<(), ApiError> {
        let broker = self;
        use bzt_core::conversation::ConvOp;
        use futures_util::stream::{self, StreamExt};
        const BATCH: usize = 256;
        loop {
            let ids = broker
                .parts
                .conversations
                .claim_due(Conversation::DEADLINES, broker.parts.clock.now(), BATCH)
                .await?;
            let n = ids.len();
            stream::iter(ids)
                .for_each_concurrent(16, |id| async move {
                    let ticked = match broker.apply_conversation(&id, &ConvOp::Tick).await {
                        Ok(u) => {
                            broker
                                .parts.conversations
                                .deadlines_handled(std::slice::from_ref(&u.conversation))
                                .await
                        }
                        // Gone (purged): forget its deadline too.
                        Err(e) if e.code == bzt_core::ErrorCode::NotFound => {
                            broker.parts.conversations.remove(&id).await
                        }
                        Err(e) => Err(crate::store::StoreError::Unavailable(e.message)),
                    };
                    if let Err(e) = ticked {
                        // Its lease runs out and a later sweep claims it again.
                        tracing::warn!(conversation = %id, error = %e, "conversation deadline failed");
                    }
                })
                .await;
            if n < BATCH {
                return Ok(());
            }
        }
    }

    /// Opens the conversation of a `sign` session being approved.
    pub(crate) async fn open_conversation(
        &self,
        session: &Session,
        certificate: &CertificateInfo,
        chain_pem: &[String],
    ) -> Result<OpenedConversation, ApiError> {
        let policy = session.conversation_policy.ok_or_else(|| {
            ApiError::invalid(
                "this session was created without `conversation`, so it cannot open one",
            )
        })?;
        let requester_token = Secret::generate();
        let phone_token = Secret::generate();
        let conversation = Conversation::open(
            OpenConversation {
                id: ConversationId::generate(),
                app_id: session.app_id.clone(),
                session_id: session.id.clone(),
                certificate: certificate.clone(),
                chain_pem: chain_pem.to_vec(),
                device_name: session
                    .device
                    .as_ref()
                    .map(|d| d.name.clone())
                    .unwrap_or_default(),
                requester: session.requester.clone(),
                requester_token: requester_token.hash(),
                phone_token: phone_token.hash(),
                policy,
            },
            self.parts.clock.now(),
        );
        self.parts.conversations.insert(&conversation).await?;
        self.schedule_conversation(&conversation);
        metrics::counter!("bzt_conversations_opened_total").increment(1);
        tracing::info!(conversation = %conversation.id, session = %session.id, "conversation opened");
        Ok(OpenedConversation {
            grant: ConversationGrant {
                id: conversation.id.clone(),
                token: requester_token,
                expires_at: conversation.expires_at,
            },
            phone_token,
        })
    }

    async fn load_conversation(&self, id: &ConversationId) -> Result<Conversation, ApiError> {
        self.parts
            .conversations
            .get(id)
            .await?
            .ok_or_else(unknown_conversation)
    }

    /// The conversation with what is due applied first (request TTLs, idle,
    /// max lifetime), as sessions do: a read never shows a request `pending`
    /// past its TTL because this node's timer has not fired yet (or the timer
    /// lives on another node).
    async fn load_current(&self, id: &ConversationId) -> Result<Conversation, ApiError> {
        let c = self.load_conversation(id).await?;
        if c.is_ended()
            || c.next_deadline()
                .is_none_or(|at| at > self.parts.clock.now())
        {
            return Ok(c);
        }
        Ok(self
            .apply_conversation(&c.id, &ConvOp::Tick)
            .await?
            .conversation)
    }

    /// The conversation if it belongs to `app_id`; another app's is `not_found`.
    pub async fn conversation_for_app(
        &self,
        app_id: &str,
        id: &ConversationId,
    ) -> Result<Conversation, ApiError> {
        let c = self.load_current(id).await?;
        if c.app_id != app_id {
            return Err(unknown_conversation());
        }
        Ok(c)
    }

    /// The conversation if `token` is its requester token (`?t=`).
    pub async fn conversation_for_requester(
        &self,
        id: &ConversationId,
        token: Option<&str>,
    ) -> Result<Conversation, ApiError> {
        self.conversation_with_token(id, token, "conversation", |c| &c.requester_token)
            .await
    }

    /// The conversation if `token` is its phone token.
    pub async fn conversation_for_phone(
        &self,
        id: &ConversationId,
        token: Option<&str>,
    ) -> Result<Conversation, ApiError> {
        self.conversation_with_token(id, token, "phone", |c| &c.phone_token)
            .await
    }

    /// The conversation if `token` hashes to the one `expected` picks from it.
    async fn conversation_with_token(
        &self,
        id: &ConversationId,
        token: Option<&str>,
        which: &str,
        expected: impl Fn(&Conversation) -> &bzt_core::secret::SecretHash,
    ) -> Result<Conversation, ApiError> {
        let c = self.load_current(id).await?;
        let token = token
            .and_then(Secret::from_presented)
            .ok_or_else(|| ApiError::unauthorized(format!("the {which} token (?t=) is missing")))?;
        if !expected(&c).verify(&token) {
            return Err(ApiError::unauthorized(format!(
                "the {which} token (?t=) is not valid"
            )));
        }
        Ok(c)
    }

    /// The requester asks for one more signature.
    pub async fn add_request(
        &self,
        app_id: &str,
        id: &ConversationId,
        display: DisplayText,
        tbs: Option<Vec<u8>>,
        seal: Option<bzt_core::session::SealRequest>,
    ) -> Result<SignRequest, ApiError> {
        validate_display(&display)?;
        match (&tbs, &seal) {
            (Some(t), None) => validate_tbs(t)?,
            (None, Some(s)) => s.validate()?,
            (None, None) => {
                return Err(ApiError::invalid(
                    "`tbs_b64` is required (or `seal` for a seal signature)",
                ))
            }
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid(
                    "send `tbs_b64` or `seal`, not both: a seal signature signs TBS_Sign around `seal.data_hash_b64`",
                ))
            }
        }
        let c = self.conversation_for_app(app_id, id).await?;
        if !c.is_ended() {
            // A certificate revoked or expired since the conversation opened stops it.
            if let Err(e) = self.check_opener(&c) {
                self.apply_conversation(
                    &c.id,
                    &ConvOp::End {
                        by: EndedBy::Certificate,
                    },
                )
                .await?;
                return Err(ApiError::new(
                    ErrorCode::Expired,
                    format!("the conversation has ended: {}", e.message),
                ));
            }
        }
        let request_id = RequestId::generate();
        let update = self
            .apply_conversation(
                &c.id,
                &match seal {
                    Some(seal) => ConvOp::AddSealRequest {
                        id: request_id.clone(),
                        display,
                        seal,
                    },
                    None => ConvOp::AddRequest {
                        id: request_id.clone(),
                        display,
                        tbs: tbs.unwrap_or_default(),
                    },
                },
            )
            .await?;
        match update.output? {
            ConvOutput::Added { .. } => {}
            _ => return Err(ApiError::internal()),
        }
        metrics::counter!("bzt_conversation_requests_total").increment(1);
        update
            .conversation
            .request(&request_id)
            .cloned()
            .ok_or_else(ApiError::internal)
    }

    /// Long-poll a request until it finishes (or `wait` passes).
    pub async fn wait_request(
        &self,
        app_id: &str,
        id: &ConversationId,
        request_id: &str,
        wait: Duration,
    ) -> Result<SignRequest, ApiError> {
        let c = self.conversation_for_app(app_id, id).await?;
        let rid =
            RequestId::parse(request_id).ok_or_else(|| ApiError::not_found("no such request"))?;
        let find = |c: &Conversation| {
            c.request(&rid)
                .cloned()
                .ok_or_else(|| ApiError::not_found("no such request"))
        };
        let first = find(&c)?;
        if first.is_finished() || wait.is_zero() {
            return Ok(first);
        }
        let Some(mut changes) = self.parts.conversations.subscribe(&c.id).await? else {
            return Err(unknown_conversation());
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Tick so a request past its TTL reads as expired, timer or not.
            let current = self
                .apply_conversation(&c.id, &ConvOp::Tick)
                .await?
                .conversation;
            let r = find(&current)?;
            if r.is_finished() {
                return Ok(r);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return Err(unknown_conversation()),
                Err(_) => return Ok(r),
            }
        }
    }

    /// The phone's signature for a request: verified against the opening
    /// certificate, then recorded (approved), or recorded as rejected.
    /// Answers the error the phone should see, if any.
    pub async fn respond(
        &self,
        c: &Conversation,
        request_id: &str,
        signature: Option<Vec<u8>>,
        seal_signature: Option<Vec<u8>>,
        auto_confirmed: bool,
    ) -> Result<(), ApiError> {
        let rid =
            RequestId::parse(request_id).ok_or_else(|| ApiError::not_found("no such request"))?;
        // Refuse what cannot be answered (already answered, expired, ended)
        // before anything is written to the audit trail.
        let current = self.load_current(&c.id).await?;
        let request = current.answerable(&rid)?;
        let answer = match (&request.seal, signature, seal_signature) {
            (None, Some(sig), None) => Answer::Plain(sig),
            (Some(_), None, Some(ses)) => Answer::Sealed(ses),
            (Some(_), _, _) => return Err(ApiError::invalid(
                "this request asks for a seal signature: answer with `seal_signature_b64` alone",
            )),
            (None, _, _) => {
                return Err(ApiError::invalid(
                    "answer with `signature_b64` (`seal_signature_b64` only for seal requests)",
                ))
            }
        };
        let key = match self.check_opener(&current) {
            Ok(key) => key,
            Err(e) => {
                let record = audit_request(
                    &current,
                    request,
                    "rejected",
                    Some(bzt_core::reason::CERTIFICATE_NOT_ACCEPTABLE.into()),
                    Some(auto_confirmed),
                );
                // The conversation ends whatever became of this answer.
                let answered = self
                    .audited_answer(
                        record,
                        &c.id,
                        &ConvOp::Respond {
                            request_id: rid.clone(),
                            verdict: Err(bzt_core::reason::CERTIFICATE_NOT_ACCEPTABLE.into()),
                            auto_confirmed,
                        },
                    )
                    .await;
                self.apply_conversation(
                    &c.id,
                    &ConvOp::End {
                        by: EndedBy::Certificate,
                    },
                )
                .await?;
                answered?;
                return Err(e.into());
            }
        };
        let signature = match answer {
            Answer::Plain(signature) => signature,
            Answer::Sealed(ses) => {
                return self
                    .respond_sealed(&current, request, rid, &ses, auto_confirmed)
                    .await
            }
        };
        let verdict = bzt_core::pki::verify_signature(&key, &request.tbs, &signature);
        let error = verdict.as_ref().err().cloned();
        let (outcome, reason) = match &error {
            None => ("approved", None),
            Some(_) => ("rejected", Some(bzt_core::reason::BAD_SIGNATURE.to_owned())),
        };
        let record = audit_request(&current, request, outcome, reason, Some(auto_confirmed));
        let op = ConvOp::Respond {
            request_id: rid,
            verdict: verdict
                .map(|_| signature)
                .map_err(|_| bzt_core::reason::BAD_SIGNATURE.to_owned()),
            auto_confirmed,
        };
        self.audited_answer(record, &c.id, &op).await?;
        match error {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// A seal request's answer: the seal signature checked like a seal session's, with the
    /// opening certificate as the signer and the request's time as the earliest stamp.
    async fn respond_sealed(
        &self,
        current: &Conversation,
        request: &SignRequest,
        rid: RequestId,
        ses: &[u8],
        auto_confirmed: bool,
    ) -> Result<(), ApiError> {
        let wanted = request.seal.as_ref().ok_or_else(ApiError::internal)?;
        let signer_der = bzt_core::pki::pem_to_der(&current.certificate.pem)?;
        let checked = crate::seals::check_seal_signature(
            ses,
            wanted,
            &signer_der,
            &self.parts.seal_makers,
            request.created_at,
            self.parts.clock.now(),
        );
        let (outcome, reason, op, error) = match checked {
            Ok(c) => (
                "approved",
                None,
                ConvOp::RespondSealed {
                    request_id: rid,
                    signature: c.signature,
                    seal: Box::new(c.approval),
                    auto_confirmed,
                },
                None,
            ),
            Err(e) => {
                let reason = e.code.as_str().to_owned();
                (
                    "rejected",
                    Some(reason.clone()),
                    ConvOp::Respond {
                        request_id: rid,
                        verdict: Err(reason),
                        auto_confirmed,
                    },
                    Some(e),
                )
            }
        };
        let record = audit_request(current, request, outcome, reason, Some(auto_confirmed));
        self.audited_answer(record, &current.id, &op).await?;
        match error {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    pub async fn decline(
        &self,
        c: &Conversation,
        request_id: &str,
        reason: String,
    ) -> Result<(), ApiError> {
        let rid =
            RequestId::parse(request_id).ok_or_else(|| ApiError::not_found("no such request"))?;
        let current = self.load_current(&c.id).await?;
        let request = current.answerable(&rid)?;
        let record = audit_request(
            &current,
            request,
            "rejected",
            Some(reason.clone()),
            Some(false),
        );
        let op = ConvOp::Decline {
            request_id: rid,
            reason,
        };
        self.audited_answer(record, &c.id, &op).await?;
        Ok(())
    }

    /// Appends the audit record of an answer, then applies the answer: the
    /// record is durable before the requester can learn the outcome. If the
    /// answer then does not happen (answered or ended meanwhile), an
    /// `aborted` record follows, as for sessions.
    async fn audited_answer(
        &self,
        record: bzt_core::audit::Operation,
        id: &ConversationId,
        op: &ConvOp,
    ) -> Result<ConvUpdate, ApiError> {
        self.parts
            .audit
            .append(record.clone(), self.parts.clock.now())
            .await?;
        let applied = self
            .apply_conversation(id, op)
            .await
            .and_then(|u| match &u.output {
                Ok(_) => Ok(u),
                Err(e) => Err(ApiError::from(e.clone())),
            });
        if applied.is_err() {
            let aborted = bzt_core::audit::Operation {
                outcome: "aborted".into(),
                ..record
            };
            if let Err(e) = self
                .parts
                .audit
                .append(aborted, self.parts.clock.now())
                .await
            {
                tracing::error!(conversation = %id, error = %e, "could not record an aborted answer");
            }
        }
        applied
    }

    pub async fn end_conversation(
        &self,
        id: &ConversationId,
        by: EndedBy,
    ) -> Result<Conversation, ApiError> {
        let update = self.apply_conversation(id, &ConvOp::End { by }).await?;
        update.output?;
        Ok(update.conversation)
    }

    pub(crate) async fn tick_conversation(&self, id: &ConversationId) -> Result<(), ApiError> {
        self.apply_conversation(id, &ConvOp::Tick).await.map(|_| ())
    }

    /// The opening certificate, checked again now (validity, revocation).
    fn check_opener(
        &self,
        c: &Conversation,
    ) -> Result<std::sync::Arc<bzt_core::pki::KeptKey>, DomainError> {
        let is_revoked = |serial: &str| self.parts.revocations.contains(serial);
        let accept = [c.certificate.domain.clone()];
        let ctx = CheckContext {
            usage: bzt_core::pki::KeyUse::Sign,
            now: self.parts.clock.now(),
            accept: &accept,
            expect: None,
            is_revoked: &is_revoked,
        };
        self.parts
            .trust
            .check(&c.certificate.pem, &c.chain_pem, &ctx)
            .map(|checked| checked.key)
    }

    /// Applies an op and reacts to it; `not_found` if the conversation is gone.
    pub async fn apply_conversation(
        &self,
        id: &ConversationId,
        op: &ConvOp,
    ) -> Result<ConvUpdate, ApiError> {
        let now = self.parts.clock.now();
        let updated = self
            .parts
            .conversations
            .update(id, now, |c: &mut Conversation| {
                let was_ended = c.is_ended();
                (c.apply(op, now), was_ended)
            })
            .await?
            .ok_or_else(unknown_conversation)?;
        let (applied, was_ended) = updated.output;
        let update = ConvUpdate {
            output: applied.output,
            ended_now: !was_ended && updated.record.is_ended(),
            changed: updated.changed,
            finished: applied.finished,
            conversation: updated.record,
        };
        if update.changed {
            self.schedule_conversation(&update.conversation);
            for rid in &update.finished {
                if let Some(r) = update.conversation.request(rid) {
                    metrics::counter!("bzt_conversation_results_total", "status" => r.status.as_str()).increment(1);
                }
            }
        }
        if update.ended_now {
            let c = &update.conversation;
            let by = c.ended.map(|(by, _)| by.as_str()).unwrap_or("?");
            tracing::info!(conversation = %c.id, by, "conversation ended");
            if let Some((_, at)) = c.ended {
                self.parts.timers.schedule(
                    at.plus_secs(TERMINAL_RETENTION_S),
                    Timer::PurgeConversation(c.id.clone()),
                );
            }
        }
        Ok(update)
    }

    fn schedule_conversation(&self, c: &Conversation) {
        if let Some(at) = c.next_deadline() {
            self.parts
                .timers
                .schedule(at, Timer::Conversation(c.id.clone()));
        }
    }
}
