//! Scan sessions: what the RP, the browser and the phone can ask of one
//! session (create, read, wait, cancel, claim, reject, complete), and the
//! reaction to its transitions.

use super::{Broker, MAX_RECIPIENTS};
use crate::apps::App;
use crate::error::ApiError;
use crate::store::{StoreError, StoredRecord, Updated};
use crate::timers::Timer;
use bzt_core::pki::{CheckContext, CheckedCertificate, KeyUse, SignatureBudget, VerifiedChain};
use bzt_core::record::SESSION_ROTATIONS;
use bzt_core::session::{
    unknown_session_error, Approval, CancelledBy, Device, NewSession, NewSessionRequest,
    NumberMatch, Op, OpOutput, Requester,
};
use bzt_core::{DomainError, ErrorCode, Kind, Secret, Session, SessionId, Status, Timestamp};
use std::sync::Arc;
use std::time::Duration;

/// A phone's completion, parsed but not yet checked.
#[derive(Debug, Default)]
pub struct Completion {
    pub certificate_pem: String,
    pub chain_pem: Vec<String>,
    pub signature: Vec<u8>,
    /// A seal session's `SES_Signature` (DER), instead of `signature`.
    pub seal_signature: Option<Vec<u8>>,
    pub recipients_pem: Option<Vec<String>>,
    pub wrapped_key: Option<Vec<u8>>,
    pub open_conversation: bool,
    pub match_code: Option<String>,
}

/// What the phone gets back from a claim.
pub struct Claimed {
    pub session: Session,
    pub app: Arc<App>,
    pub phone_token: Secret,
    pub match_choices: Option<Vec<String>>,
}

impl Broker {
    // ---- RP backend -------------------------------------------------------

    pub async fn create_session(
        &self,
        app: &App,
        req: NewSessionRequest,
    ) -> Result<(Session, Secret), ApiError> {
        let wants_webhook = req.webhook_url.is_some();
        let spec = NewSession::validate(req, &self.parts.trust.domain_names())?;
        if let Some(opening) = &spec.opening {
            opening.validate(self.parts.clock.now())?;
        }
        if wants_webhook && app.webhook_secret.is_none() {
            return Err(ApiError::invalid(format!(
                "`webhook_url` needs a webhook_secret configured for app {}",
                app.id
            )));
        }
        let now = self.parts.clock.now();
        let (session, secrets) = Session::create(SessionId::generate(), &app.id, spec, now);
        self.parts.store.insert(&session).await?;
        self.parts
            .timers
            .schedule(session.expires_at, Timer::Expire(session.id.clone()));
        if let Some(at) = session.claim.next_rotation_at(session.created_at) {
            if self.parts.store.poll_interval().is_some() {
                // In the shared store too: any node rotates it if this one dies.
                self.parts
                    .store
                    .schedule(SESSION_ROTATIONS, &[(session.id.clone(), Some(at))])
                    .await?;
            }
            self.parts
                .timers
                .schedule(at, Timer::Rotate(session.id.clone()));
        }
        metrics::counter!("bzt_sessions_created_total", "kind" => session.kind.as_str())
            .increment(1);
        // Debug: at info, each session logs one line, when it ends.
        tracing::debug!(session = %session.id, app = %app.id, kind = session.kind.as_str(), "session created");
        Ok((session, secrets.browser_token))
    }

    /// The session if it belongs to `app`; another app's session is `not_found`.
    pub async fn session_for_app(&self, app: &App, id: &SessionId) -> Result<Session, ApiError> {
        let session = self.load(id).await?;
        if session.app_id != app.id {
            return Err(not_found());
        }
        Ok(session)
    }

    /// Long-poll: waits up to `wait` while the session's version equals
    /// `version` (or, without one, for the next change), then answers the
    /// current state.
    pub async fn wait_session(
        &self,
        app: &App,
        id: &SessionId,
        version: Option<u64>,
        wait: Duration,
    ) -> Result<Session, ApiError> {
        let session = self.session_for_app(app, id).await?;
        let target = version.unwrap_or(session.version);
        if session.version != target || session.is_terminal() || wait.is_zero() {
            return Ok(session);
        }
        let Some(mut changes) = self.parts.store.subscribe(&session.id).await? else {
            return Err(not_found());
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let current = self.load(id).await?;
            if current.version != target || current.is_terminal() {
                return Ok(current);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return Err(not_found()),
                Err(_) => return Ok(current),
            }
        }
    }

    pub async fn cancel(&self, id: &SessionId, by: CancelledBy) -> Result<Session, ApiError> {
        let update = self.apply(id, &Op::Cancel { by }).await?;
        update.output?;
        Ok(update.session)
    }

    // ---- Browser ----------------------------------------------------------

    /// The session named by a browser URL, if `token` is its browser token.
    pub async fn session_for_browser(
        &self,
        id: &SessionId,
        token: Option<&str>,
    ) -> Result<Session, ApiError> {
        let token = browser_token(token)?;
        let session = self.load(id).await?;
        check_browser_token(session, &token)
    }

    /// [`Self::session_for_browser`] for a browser socket, which once
    /// subscribed keeps the session only if it is still the current version:
    /// it may come from this node's copy (the token it checks never changes).
    pub async fn session_for_browser_socket(
        &self,
        id: &SessionId,
        token: Option<&str>,
    ) -> Result<Session, ApiError> {
        let token = browser_token(token)?;
        let session = self.load_recent(id, 0).await?;
        check_browser_token(session, &token)
    }

    /// Records who is asking, the first time a browser shows up, unless the
    /// RP said; answers the session as it is afterwards.
    pub async fn note_requester(
        &self,
        session: Session,
        requester: Requester,
    ) -> Result<Session, ApiError> {
        if session.requester.is_none() && !session.is_terminal() {
            let update = self
                .apply_on(&session, &Op::NoteRequester(requester))
                .await?;
            return Ok(update.session);
        }
        Ok(session)
    }

    // ---- Phone ------------------------------------------------------------

    pub async fn claim(&self, qr_text: &str, device: Device) -> Result<Claimed, ApiError> {
        // A QR code that names another host (a phishing page that copied a
        // real session's id and secret) is not this broker's.
        let expected = format!("{}/q/", self.parts.public_base_url.trim_end_matches('/'));
        let issued_here = qr_text
            .trim()
            .get(..expected.len())
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case(&expected));
        if !issued_here {
            return Err(ApiError::invalid(format!(
                "`qr_text` is not a QR code of this broker: it must start with {expected}"
            )));
        }
        let (id, secret) = parse_qr_text(qr_text)?;
        // A copy serves: the claim is a compare-and-set, re-checked on a read if refused.
        let current = self.load_recent(&id, 0).await?;
        let phone_token = Secret::generate();
        let op = Op::Claim {
            secret,
            device,
            phone_token: phone_token.hash(),
            number_match: current.number_match_required.then(NumberMatch::generate),
        };
        let update = self.apply_on(&current, &op).await?;
        let match_choices = match update.output? {
            OpOutput::Claimed { match_choices } => match_choices,
            _ => None,
        };
        let app = self
            .parts
            .apps
            .by_id(&update.session.app_id)
            .ok_or_else(ApiError::internal)?;
        tracing::debug!(session = %id, "session claimed");
        Ok(Claimed {
            session: update.session,
            app,
            phone_token,
            match_choices,
        })
    }

    /// The phone declines.
    pub async fn reject(
        &self,
        id: &SessionId,
        phone_token: &Secret,
        reason: String,
    ) -> Result<Session, ApiError> {
        let session = self.completable(id, phone_token).await?;
        let record = audit_operation(&session, None, "rejected", Some(reason.clone()));
        self.audited(
            record,
            &session,
            &Op::Reject {
                phone_token: phone_token.clone(),
                reason,
            },
        )
        .await
    }

    /// Appends the audit record, then applies the op it records: the record
    /// is durable before anyone can learn the outcome. If the op then does not
    /// happen (the session ended meanwhile), an `aborted` record follows.
    async fn audited(
        &self,
        record: bzt_core::audit::Operation,
        session: &Session,
        op: &Op,
    ) -> Result<Session, ApiError> {
        self.audited_transition(record, async {
            self.apply_on(session, op)
                .await
                .and_then(|u| u.output.map(|_| u.session).map_err(ApiError::from))
        })
        .await
    }

    /// The phone approves: the checks of docs/protocol.md in its order, then the transition.
    pub async fn complete(
        &self,
        id: &SessionId,
        phone_token: &Secret,
        c: Completion,
    ) -> Result<(Session, Option<super::OpenedConversation>), ApiError> {
        let session = self.completable(id, phone_token).await?;
        // The hall's opening window: no key is re-wrapped outside it. Not a
        // bad completion (the phone did nothing wrong); the session stays scanned.
        if let Some(refused) = session
            .opening
            .and_then(|o| o.refuse_at(self.parts.clock.now()))
        {
            return Err(refused.into());
        }
        let token = phone_token.clone();

        if let Some(expected) = &session.number_match {
            let picked = c.match_code.as_deref().ok_or_else(|| {
                ApiError::invalid("this session uses number matching: send `match_code`")
            })?;
            if picked != expected.code {
                return Err(self.match_failed(&session, token).await);
            }
        }
        validate_kind_extras(&session, &c)?;

        let started = std::time::Instant::now();
        let verified = self.verify_completion(&session, &c).await?;
        metrics::histogram!("bzt_completion_check_seconds").record(started.elapsed().as_secs_f64());
        // Every refusal but a malformed request counts, the costly ones
        // (a hostile chain is `untrusted_certificate`) included.
        let (signer, recipients, seal) = match verified {
            Ok(v) => v,
            Err(e) if e.code == ErrorCode::InvalidRequest => return Err(e.into()),
            Err(e) => return Err(self.count_bad_completion(&session.id, token, e).await),
        };

        let opened = if c.open_conversation {
            Some(
                self.open_conversation(&session, &signer.info, &c.chain_pem)
                    .await?,
            )
        } else {
            None
        };
        let (signature, seal) = match seal {
            Some(checked) => (checked.signature, Some(Box::new(checked.approval))),
            None => (c.signature, None),
        };
        let approval = Approval {
            certificate: signer.info,
            signature,
            seal,
            recipients: recipients.into_iter().map(|r| r.info).collect(),
            wrapped_key: c.wrapped_key,
            conversation: opened.as_ref().map(|o| o.grant.clone()),
        };
        let record = audit_operation(&session, Some(&approval.certificate), "approved", None);
        let approved = self
            .audited(
                record,
                &session,
                &Op::Approve {
                    phone_token: token,
                    approval: Box::new(approval),
                },
            )
            .await;
        match approved {
            Ok(session) => Ok((session, opened)),
            Err(e) => {
                // The session ended meanwhile (expired, cancelled): the
                // conversation it would have opened must not outlive it.
                if let Some(o) = &opened {
                    let _ = self.parts.conversations.remove(&o.grant.id).await;
                }
                Err(e)
            }
        }
    }

    /// The session, if the phone holding `token` may complete (or reject)
    /// it now. This node's copy serves when it passes (usually the copy of
    /// this node's own claim); a refusal is only ever given on a fresh read.
    /// A copy that passes though the session has moved on since (another
    /// node cancelled it) costs only the completion's checks: the
    /// transition itself is a compare-and-set, and refuses then.
    async fn completable(&self, id: &SessionId, token: &Secret) -> Result<Session, ApiError> {
        let copy = self.load_recent(id, 0).await?;
        if copy
            .check_completable(token, self.parts.clock.now())
            .is_ok()
        {
            return Ok(copy);
        }
        let session = self.load(id).await?;
        self.check_completable(&session, token).await?;
        Ok(session)
    }

    async fn check_completable(&self, session: &Session, token: &Secret) -> Result<(), ApiError> {
        if let Err(e) = session.check_completable(token, self.parts.clock.now()) {
            if e.code == ErrorCode::Expired && !session.is_terminal() {
                // Make the expiry visible to waiting browsers now, not at the next timer.
                self.apply_on(session, &Op::Expire).await?;
            }
            return Err(e.into());
        }
        Ok(())
    }

    /// Certificate, signature (or seal signature) and (for `encrypt`)
    /// recipient checks. The costly work (chains, SM2 signatures, the seal)
    /// runs in the check pool within one signature budget for the whole
    /// completion, unless all that is left of it is one signature on a chain
    /// verified before ([`Self::cached_signer`]); the per-use checks (validity, revocation, key usage,
    /// `expect_cert`) are cheap and run here, so errors come in the
    /// protocol's order. The outer error is the broker's own failure.
    #[allow(clippy::type_complexity)]
    async fn verify_completion(
        &self,
        session: &Session,
        c: &Completion,
    ) -> Result<
        Result<
            (
                CheckedCertificate,
                Vec<CheckedCertificate>,
                Option<crate::seals::CheckedSealSignature>,
            ),
            DomainError,
        >,
        ApiError,
    > {
        let now = self.parts.clock.now();
        let (signer, signed, recipient_chains) = match self.cached_signer(session, c) {
            // The chain was verified before (the phone's second login on):
            // what is left is one signature with a kept key, tens of
            // microseconds, less than the two thread hand-offs of the pool.
            Some(signer) => {
                let signed =
                    bzt_core::pki::verify_signature(signer.key(), &session.tbs, &c.signature)
                        .map(|()| None);
                (Ok(signer), Some(signed), Vec::new())
            }
            None => self.pooled_checks(session, c, now).await?,
        };

        let is_revoked = |serial: &str| self.parts.revocations.contains(serial);
        let ctx = CheckContext {
            usage: KeyUse::Sign,
            now,
            accept: &session.accept,
            expect: session.expect_cert.as_ref(),
            is_revoked: &is_revoked,
        };
        let checked = (|| {
            let signer = signer?.check_use(&ctx)?;
            let seal = signed.unwrap_or(Ok(None))?;
            // Recipients are checked like a signer, without `expect_cert`
            // (colleagues' certificates are other certificates by design).
            let rctx = CheckContext {
                usage: KeyUse::Encrypt,
                expect: None,
                ..ctx
            };
            let mut recipients = Vec::new();
            for (i, chain) in recipient_chains.into_iter().enumerate() {
                let r = chain
                    .and_then(|v| v.check_use(&rctx))
                    .map_err(|e| DomainError {
                        code: e.code,
                        message: format!("recipients_pem[{i}]: {}", e.message),
                    })?;
                recipients.push(r);
            }
            Ok((signer, recipients, seal))
        })();
        Ok(checked)
    }

    /// The signer's chain when the completion's only costly check is its
    /// one signature: no seal, no recipients, and this exact chain already
    /// verified (a cache hit costs a hash, no SM2 verification).
    fn cached_signer(&self, session: &Session, c: &Completion) -> Option<VerifiedChain> {
        let cheap =
            session.seal.is_none() && c.seal_signature.is_none() && c.recipients_pem.is_none();
        cheap.then(|| {
            self.parts
                .trust
                .cached_chain(&c.certificate_pem, &c.chain_pem)
        })?
    }

    /// The costly checks of a completion in the check pool, within one
    /// signature budget: chains, the signature or the seal, recipients.
    #[allow(clippy::type_complexity)]
    async fn pooled_checks(
        &self,
        session: &Session,
        c: &Completion,
        now: bzt_core::time::Timestamp,
    ) -> Result<
        (
            Result<VerifiedChain, DomainError>,
            Option<Result<Option<crate::seals::CheckedSealSignature>, DomainError>>,
            Vec<Result<VerifiedChain, DomainError>>,
        ),
        ApiError,
    > {
        let (trust, makers) = (self.parts.trust.clone(), self.parts.seal_makers.clone());
        let (leaf, chain, recipients_pem) = (
            c.certificate_pem.clone(),
            c.chain_pem.clone(),
            c.recipients_pem.clone().unwrap_or_default(),
        );
        let (tbs, signature) = (session.tbs.clone(), c.signature.clone());
        let seal_check = match (&session.seal, &c.seal_signature) {
            (Some(wanted), Some(der)) => Some((wanted.clone(), der.clone())),
            _ => None,
        };
        let created_at = session.created_at;
        self.parts
            .cert_checks
            .run(move || {
                let mut budget = SignatureBudget::for_certificates(1 + recipients_pem.len());
                let signer = trust.verify_chain(&leaf, &chain, &mut budget);
                let signed = signer.as_ref().ok().map(|v| match &seal_check {
                    Some((wanted, der)) => {
                        let signer_der = bzt_core::pki::pem_to_der(&leaf)?;
                        crate::seals::check_seal_signature(
                            der,
                            wanted,
                            &signer_der,
                            &makers,
                            created_at,
                            now,
                        )
                        .map(Some)
                    }
                    None => {
                        bzt_core::pki::verify_signature(v.key(), &tbs, &signature).map(|()| None)
                    }
                });
                let mut recipients = Vec::new();
                if matches!(signed, Some(Ok(_))) {
                    for pem in &recipients_pem {
                        let checked = trust.verify_chain(pem, &chain, &mut budget);
                        let failed = checked.is_err();
                        recipients.push(checked);
                        if failed {
                            break;
                        }
                    }
                }
                (signer, signed, recipients)
            })
            .await
    }

    /// Counts a 422 against the session and answers it; the third moves the session to `failed`.
    /// A wrong number pick rejects the session. Like the third bad
    /// completion (no certificate was used), it is recorded just after the
    /// transition, by the one request whose transition happened: racing wrong
    /// picks (a relay retrying, a double tap) leave exactly one record, where
    /// recording first would leave one `rejected` and an `aborted` pair per loser.
    async fn match_failed(&self, session: &Session, phone_token: Secret) -> ApiError {
        let wrong_pick = || {
            ApiError::forbidden(
                "the number picked on the phone does not match the one shown in the browser; the session is rejected",
            )
        };
        let update = match self
            .apply_on(session, &Op::MatchFailed { phone_token })
            .await
        {
            Ok(u) => u,
            Err(e) => return e,
        };
        match update.output {
            Ok(_) => {
                let record = audit_operation(
                    &update.session,
                    None,
                    "rejected",
                    Some(bzt_core::reason::MATCH_FAILED.into()),
                );
                if let Err(e) = self
                    .parts
                    .audit
                    .append(record, self.parts.clock.now())
                    .await
                {
                    tracing::error!(session = %session.id, error = %e, "could not record a wrong number pick");
                }
                wrong_pick()
            }
            // Another wrong pick of this phone won the race: same answer, no second record.
            Err(_) if rejected_by_match(&update.session) => wrong_pick(),
            Err(state) => state.into(),
        }
    }

    async fn count_bad_completion(
        &self,
        id: &SessionId,
        phone_token: Secret,
        e: DomainError,
    ) -> ApiError {
        metrics::counter!("bzt_bad_completions_total", "code" => e.code.as_str()).increment(1);
        match self.apply(id, &Op::BadCompletion { phone_token }).await {
            Ok(u) => match u.output {
                Ok(OpOutput::BadCompletionCounted { failed: true, .. }) => {
                    let record = audit_operation(
                        &u.session,
                        None,
                        "failed",
                        Some(bzt_core::reason::TOO_MANY_BAD_COMPLETIONS.into()),
                    );
                    if let Err(e) = self
                        .parts
                        .audit
                        .append(record, self.parts.clock.now())
                        .await
                    {
                        tracing::error!(session = %id, error = %e, "could not record a failed session");
                    }
                    ApiError::new(
                        e.code,
                        format!(
                            "{} (third failed completion: the session has failed)",
                            e.message
                        ),
                    )
                }
                Ok(_) => e.into(),
                Err(state) => state.into(),
            },
            Err(store) => store,
        }
    }

    // ---- Shared -----------------------------------------------------------

    pub async fn load(&self, id: &SessionId) -> Result<Session, ApiError> {
        self.parts.store.get(id).await?.ok_or_else(not_found)
    }

    /// The session, perhaps from this node's copy, but never a version
    /// older than `at_least` (see `RecordStore::get_recent`): for a woken
    /// socket (what it was woken with is what it needs), and for callers
    /// that start a compare-and-set from it.
    pub async fn load_recent(&self, id: &SessionId, at_least: u64) -> Result<Session, ApiError> {
        self.parts
            .store
            .get_recent(id, at_least)
            .await?
            .ok_or_else(not_found)
    }

    /// Applies an op and reacts to the transition it caused; `not_found` if the session is gone.
    pub async fn apply(&self, id: &SessionId, op: &Op) -> Result<Update, ApiError> {
        let now = self.parts.clock.now();
        let written = self.parts.store.update(id, now, apply_op(op, now)).await;
        self.applied(written)
    }

    /// [`Broker::apply`] for a session read or copied: the store may skip
    /// reading it again (and re-reads if the copy was stale).
    async fn apply_on(&self, current: &Session, op: &Op) -> Result<Update, ApiError> {
        let now = self.parts.clock.now();
        let written = self
            .parts
            .store
            .update_on(current, now, apply_op(op, now))
            .await;
        self.applied(written)
    }

    fn applied(
        &self,
        written: Result<Option<Updated<Session, OpApplied>>, StoreError>,
    ) -> Result<Update, ApiError> {
        let Updated {
            output: (output, previous_status),
            record: session,
            changed,
        } = written?.ok_or_else(not_found)?;
        let update = Update {
            output,
            session,
            changed,
            previous_status,
        };
        self.after_update(&update);
        Ok(update)
    }

    /// The single reaction point to a written change.
    fn after_update(&self, u: &Update) {
        if !u.changed {
            return;
        }
        let s = &u.session;
        if s.status != u.previous_status {
            metrics::counter!("bzt_session_transitions_total", "kind" => s.kind.as_str(), "status" => s.status.as_str())
                .increment(1);
            if s.status == Status::Scanned {
                if let Some(scanned) = s.scanned_at {
                    let ms = s.created_at.millis_until(scanned).max(0) as f64 / 1000.0;
                    metrics::histogram!("bzt_time_to_scan_seconds").record(ms);
                }
            }
        }
        if s.status.is_terminal() && !u.previous_status.is_terminal() {
            // The one info line of a session (created and claimed are
            // debug): three per login were 3.4% of a node's CPU at info.
            tracing::info!(
                session = %s.id,
                app = %s.app_id,
                kind = s.kind.as_str(),
                status = s.status.as_str(),
                ms = s.created_at.millis_until(self.parts.clock.now()),
                "session finished"
            );
            if let Some(at) = s.purge_at() {
                self.parts.timers.schedule(at, Timer::Purge(s.id.clone()));
            }
            if let Some(url) = &s.webhook_url {
                if let Some(secret) = self
                    .parts
                    .apps
                    .by_id(&s.app_id)
                    .and_then(|a| a.webhook_secret.clone())
                {
                    self.parts
                        .webhooks
                        .deliver(&s.app_id, url.clone(), secret, s.view());
                }
            }
        } else if s.status == Status::Pending {
            // A rotation happened: schedule the next one.
            if let Some(at) = s.claim.next_rotation_at(s.created_at) {
                self.parts.timers.schedule(at, Timer::Rotate(s.id.clone()));
            }
        }
    }

    /// Expires every session whose deadline has passed, as handed out by
    /// the store (see "Expiry deadlines" in [`crate::store`]): local timers
    /// call this at each deadline, and with a shared store every node also
    /// calls it every [`crate::store::RecordStore::poll_interval`]. Returns how
    /// many sessions it claimed.
    pub async fn sweep_expiries(&self) -> Result<usize, ApiError> {
        use futures_util::stream::{self, StreamExt};
        const BATCH: usize = 512;
        let mut claimed = 0;
        loop {
            let ids = self
                .parts
                .store
                .claim_due(Session::DEADLINES, self.parts.clock.now(), BATCH)
                .await?;
            let n = ids.len();
            claimed += n;
            let outcomes: Vec<_> = stream::iter(ids)
                .map(|id| async move {
                    let r = self.apply(&id, &Op::Expire).await;
                    (id, r)
                })
                .buffer_unordered(16)
                .collect()
                .await;
            let mut done = Vec::with_capacity(n);
            for (id, r) in outcomes {
                match r {
                    // Expired (or ended before): nothing more is due.
                    Ok(u) => done.push((id, u.session.next_deadline())),
                    Err(e) if e.code == ErrorCode::NotFound => done.push((id, None)),
                    // Its lease runs out and a later sweep claims it again.
                    Err(e) => tracing::warn!(session = %id, error = %e, "expiry failed"),
                }
            }
            self.parts.store.schedule(Session::DEADLINES, &done).await?;
            if n < BATCH {
                return Ok(claimed);
            }
        }
    }

    /// Rotates the QR of every session whose rotation the store says is
    /// due, then records each one's next rotation (see "QR rotation" in
    /// [`crate::store`]): local timers call this at each rotation, and with
    /// a shared store every node also calls it every
    /// [`crate::store::RecordStore::poll_interval`]. Returns how many it claimed.
    pub async fn sweep_rotations(&self) -> Result<usize, ApiError> {
        use futures_util::stream::{self, StreamExt};
        let ids = self
            .parts
            .store
            .claim_due(SESSION_ROTATIONS, self.parts.clock.now(), 512)
            .await?;
        let n = ids.len();
        let outcomes: Vec<_> = stream::iter(ids)
            .map(|id| async move {
                let r = self
                    .apply(
                        &id,
                        &Op::Rotate {
                            new_secret: Secret::generate(),
                        },
                    )
                    .await;
                (id, r)
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let mut done = Vec::new();
        for (id, r) in outcomes {
            match r {
                Ok(u) => {
                    let next = (u.session.status == Status::Pending)
                        .then(|| u.session.claim.next_rotation_at(u.session.created_at))
                        .flatten();
                    done.push((id, next));
                }
                Err(e) if e.code == ErrorCode::NotFound => done.push((id, None)),
                // Its lease runs out and a later sweep claims it again.
                Err(e) => tracing::warn!(session = %id, error = %e, "rotation failed"),
            }
        }
        self.parts.store.schedule(SESSION_ROTATIONS, &done).await?;
        Ok(n)
    }

    /// What the timer queue calls when a deadline passes.
    pub async fn on_timer(&self, timer: Timer) {
        let result = match &timer {
            // The store hands each due session to one sweep, on one node.
            Timer::Expire(_) => self.sweep_expiries().await.map(|_| ()),
            // A shared store hands each due rotation to one sweep, on one node.
            Timer::Rotate(_) if self.parts.store.poll_interval().is_some() => {
                self.sweep_rotations().await.map(|_| ())
            }
            Timer::Rotate(id) => self
                .apply(
                    id,
                    &Op::Rotate {
                        new_secret: Secret::generate(),
                    },
                )
                .await
                .map(|_| ()),
            Timer::Purge(id) => self.parts.store.remove(id).await.map_err(ApiError::from),
            Timer::Conversation(id) => self.tick_conversation(id).await,
            Timer::PurgeConversation(id) => self
                .parts
                .conversations
                .remove(id)
                .await
                .map_err(ApiError::from),
        };
        match result {
            Ok(()) => {}
            Err(e) if e.code == ErrorCode::NotFound => {}
            Err(e) => {
                tracing::warn!(?timer, error = %e, "timer failed; retrying in 1 s");
                self.parts
                    .timers
                    .schedule(self.parts.clock.now().plus_secs(1), timer);
            }
        }
    }
}

/// What a session op answers through the store: its output and the status
/// before it.
type OpApplied = (Result<OpOutput, DomainError>, Status);

/// The store's change for `op` at `now`: the domain's [`Session::apply`].
fn apply_op(op: &Op, now: Timestamp) -> impl FnMut(&mut Session) -> OpApplied + Send + '_ {
    move |s: &mut Session| {
        let previous_status = s.status;
        (s.apply(op, now).output, previous_status)
    }
}

/// The outcome of an op on a session.
#[derive(Debug)]
pub struct Update {
    /// The op's own answer (it may refuse; a refusal can still come with a
    /// change, as when a late claim expires the session).
    pub output: Result<OpOutput, DomainError>,
    /// The session as it is after the op.
    pub session: Session,
    /// Whether the op wrote anything.
    pub changed: bool,
    /// The status before the op, so callers can tell what transition happened.
    pub previous_status: Status,
}

/// The audit record of a session's completion.
fn audit_operation(
    s: &Session,
    certificate: Option<&bzt_core::pki::CertificateInfo>,
    outcome: &str,
    reason: Option<String>,
) -> bzt_core::audit::Operation {
    bzt_core::audit::Operation {
        app: s.app_id.clone(),
        kind: s.kind.as_str().into(),
        session_id: s.id.to_string(),
        conversation_id: None,
        request_id: None,
        cert_serial: certificate.map(|c| c.serial.clone()).unwrap_or_default(),
        cert_issuer: certificate.map(|c| c.issuer.clone()).unwrap_or_default(),
        cert_subject: certificate.map(|c| c.subject.clone()).unwrap_or_default(),
        tbs_sm3: bzt_core::pki::sm3_hex(&s.tbs),
        outcome: outcome.into(),
        reason,
        auto_confirmed: None,
        device_name: s
            .device
            .as_ref()
            .map(|d| d.name.clone())
            .unwrap_or_default(),
        requester_ip: s.requester.as_ref().and_then(|r| r.ip.clone()),
        requester_user_agent: s.requester.as_ref().and_then(|r| r.user_agent.clone()),
        actor: None,
        delegate: s.delegate.clone(),
    }
}

fn browser_token(presented: Option<&str>) -> Result<Secret, ApiError> {
    presented
        .and_then(Secret::from_presented)
        .ok_or_else(|| ApiError::unauthorized("the browser token (?t=) is missing"))
}

fn check_browser_token(session: Session, token: &Secret) -> Result<Session, ApiError> {
    if !session.browser_token.verify(token) {
        return Err(ApiError::unauthorized(
            "the browser token (?t=) is not valid for this session",
        ));
    }
    Ok(session)
}

fn not_found() -> ApiError {
    unknown_session_error().into()
}

/// Splits `<base>/q/<session id>#<claim secret>`.
pub fn parse_qr_text(qr_text: &str) -> Result<(SessionId, Secret), ApiError> {
    let bad = || {
        ApiError::invalid(
            "`qr_text` is not a QR code of this broker (expected <base>/q/<id>#<secret>)",
        )
    };
    let (url, secret) = qr_text.trim().split_once('#').ok_or_else(bad)?;
    let (_, id) = url.rsplit_once("/q/").ok_or_else(bad)?;
    let id = SessionId::parse(id).ok_or_else(bad)?;
    let secret = Secret::from_presented(secret).ok_or_else(bad)?;
    Ok((id, secret))
}

/// Fields that belong to one kind only, and the ones a kind requires.
fn validate_kind_extras(session: &Session, c: &Completion) -> Result<(), ApiError> {
    let kind = session.kind;
    if c.recipients_pem.is_some() && kind != Kind::Encrypt {
        return Err(ApiError::invalid(
            "`recipients_pem` is only allowed for kind encrypt",
        ));
    }
    if c.wrapped_key.is_some() && kind != Kind::Decrypt {
        return Err(ApiError::invalid(
            "`wrapped_key_b64` is only allowed for kind decrypt",
        ));
    }
    match (&session.seal, &c.seal_signature) {
        (Some(_), None) => {
            return Err(ApiError::invalid(
                "this session asks for a seal signature (扫码签章): send `seal_signature_b64` (an SES_Signature), not `signature_b64`",
            ))
        }
        (Some(_), Some(_)) if !c.signature.is_empty() => {
            return Err(ApiError::invalid(
                "send `seal_signature_b64` alone: the signature is inside the SES_Signature",
            ))
        }
        (None, Some(_)) => {
            return Err(ApiError::invalid(
                "`seal_signature_b64` is only allowed when the session was created with `seal`",
            ))
        }
        _ => {}
    }
    if c.open_conversation && kind != Kind::Sign {
        return Err(ApiError::invalid(
            "`open_conversation` is only allowed for kind sign",
        ));
    }
    match kind {
        Kind::Encrypt => match &c.recipients_pem {
            Some(r) if (1..=MAX_RECIPIENTS).contains(&r.len()) => {}
            _ => {
                return Err(ApiError::invalid(format!(
                    "kind encrypt needs `recipients_pem` with 1..{MAX_RECIPIENTS} certificates"
                )))
            }
        },
        Kind::Decrypt if c.wrapped_key.as_ref().is_none_or(|k| k.is_empty()) => {
            return Err(ApiError::invalid("kind decrypt needs `wrapped_key_b64`"));
        }
        _ => {}
    }
    if c.open_conversation && session.conversation_policy.is_none() {
        return Err(ApiError::invalid(
            "this session was created without `conversation`, so it cannot open one",
        ));
    }
    Ok(())
}

fn rejected_by_match(session: &Session) -> bool {
    matches!(
        &session.outcome,
        Some(bzt_core::session::Outcome::Rejected { reason }) if reason == bzt_core::reason::MATCH_FAILED
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qr_text_is_split_into_id_and_secret() {
        let (id, secret) = parse_qr_text("http://127.0.0.1:8700/q/abc_DEF-1#s3cr3t").unwrap();
        assert_eq!(id.as_str(), "abc_DEF-1");
        assert_eq!(secret.expose(), "s3cr3t");
        for bad in [
            "",
            "http://x/q/abc",
            "http://x/p/abc#s",
            "http://x/q/#s",
            "http://x/q/a b#s",
            "http://x/q/a#",
        ] {
            let e = parse_qr_text(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidRequest, "{bad:?}");
        }
    }
}
