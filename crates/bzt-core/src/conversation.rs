//! Signing conversations (会话签章): after one scan, the requester sends more
//! signing requests and the phone answers them without a new scan, by tap or
//! automatically (自动确认).
//!
//! ```text
//! open ──(requests: pending → approved | rejected | expired)──▶ ended{by}
//! ```
//! A conversation ends when the phone or the requester ends it, after
//! `idle_s` without a new request, `max_s` after it opened, once its
//! `max_requests`-th request is answered, or when the opening certificate
//! stops being acceptable (revoked or expired). Pending requests of an ended
//! conversation expire.
//!
//! As with sessions, every change is a [`Conversation::apply`] of an op at a
//! given `now`; a store makes "read, apply, write" atomic. Signature checks
//! happen before the op (they need the trust store), so `Respond` carries a
//! verdict rather than a signature to check.

use crate::codec::b64;
use crate::error::{DomainError, ErrorCode};
use crate::pki::CertificateInfo;
use crate::secret::{ConversationId, RequestId, SecretHash, SessionId};
use crate::session::{ConversationPolicy, DisplayText};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Lifetime of one signing request (docs/protocol.md).
pub const REQUEST_TTL_S: i64 = 60;
/// Unanswered requests a conversation holds at once. Bounds the record
/// (each may carry 64 KiB) and the phone's queue.
pub const MAX_PENDING_REQUESTS: usize = 32;

/// Who or what ended a conversation, and where a signing request is (the wire types).
pub use bzt_wire::{EndedBy, RequestStatus};

/// One signing request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SignRequest {
    pub id: RequestId,
    /// 1-based position in the conversation; requests reach the phone in this order.
    pub seq: u32,
    pub display: DisplayText,
    /// The bytes to sign; emptied once the request is finished (the
    /// requester has them, and the record stays small).
    #[serde(with = "b64")]
    pub tbs: Vec<u8>,
    /// SM3 of `tbs`, kept for the audit trail after `tbs` is dropped.
    pub tbs_sm3: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub status: RequestStatus,
    #[serde(
        default,
        with = "crate::codec::b64_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub signature: Option<Vec<u8>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_confirmed: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Timestamp>,
    /// A seal request (扫码签章 with a seal on this page): `tbs` holds `seal.data_hash`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<crate::session::SealRequest>,
    /// The verified seal signature of an approved seal request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal_result: Option<Box<crate::session::SealApproval>>,
    /// The member who answers with a granted company certificate (企业证书授权),
    /// as the co-signing service named it; shown as the result's `delegate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate: Option<crate::session::Delegate>,
}

impl SignRequest {
    pub fn is_finished(&self) -> bool {
        self.status != RequestStatus::Pending
    }

    /// `GET /v1/conversations/<cid>/requests/<rid>` and the requester's `request_result`.
    pub fn result_view(&self) -> bzt_wire::ConversationRequestView {
        let mut v = bzt_wire::ConversationRequestView {
            request_id: self.id.to_string(),
            status: self.status.as_str().to_owned(),
            expires_at: self.expires_at.to_rfc3339(),
            signature_b64: self.signature.as_deref().map(crate::codec::encode),
            tbs_b64: None,
            seal_signature_b64: None,
            seal: None,
            auto_confirmed: self.auto_confirmed,
            reason: self.reason.clone(),
            completed_at: self.completed_at.map(|t| t.to_rfc3339()),
            // Only once answered: who will sign is not news while the request waits.
            delegate: self
                .delegate
                .as_ref()
                .filter(|_| self.is_finished())
                .map(crate::session::Delegate::view),
        };
        if let (Some(result), Some(asked)) = (&self.seal_result, &self.seal) {
            v.seal_signature_b64 = Some(crate::codec::encode(&result.seal_signature));
            v.tbs_b64 = Some(crate::codec::encode(&result.signed));
            v.seal = Some(crate::session::seal_result(result, &asked.data_hash));
        }
        v
    }

    /// The phone's `sign_request` frame.
    pub fn phone_frame(&self) -> bzt_wire::SignRequestFrame {
        bzt_wire::SignRequestFrame {
            request_id: self.id.to_string(),
            seq: self.seq,
            display: self.display.view(),
            tbs_b64: crate::codec::encode(&self.tbs),
            seal: self.seal.as_ref().map(|seal| bzt_wire::SealAsk {
                data_hash_b64: crate::codec::encode(&seal.data_hash),
                property_info: seal.property_info.clone(),
            }),
            expires_at: self.expires_at.to_rfc3339(),
        }
    }
}

/// A conversation as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Conversation {
    pub id: ConversationId,
    pub app_id: String,
    /// The `sign` session that opened it.
    pub session_id: SessionId,
    /// The certificate that opened it; every signature must verify with its key.
    pub certificate: CertificateInfo,
    pub chain_pem: Vec<String>,
    /// The phone's device name, for the audit trail.
    pub device_name: String,
    /// The end user of the opening session, for the audit trail.
    #[serde(default)]
    pub requester: Option<crate::session::Requester>,
    pub requester_token: SecretHash,
    pub phone_token: SecretHash,
    pub policy: ConversationPolicy,
    pub opened_at: Timestamp,
    /// `opened_at + max_s`.
    pub expires_at: Timestamp,
    /// When the last request arrived (or the conversation opened): the idle clock.
    pub last_request_at: Timestamp,
    /// Shared, so that the copies a store hands out (one per change) cost
    /// a pointer per request, not the request; a change copies only the
    /// request it changes (`Arc::make_mut`).
    pub requests: Vec<Arc<SignRequest>>,
    pub ended: Option<(EndedBy, Timestamp)>,
    /// Bumped by every write; the compare-and-set key of stores.
    pub rev: u64,
}

/// A change requested of a conversation.
#[derive(Clone, Debug)]
pub enum ConvOp {
    AddRequest {
        id: RequestId,
        display: DisplayText,
        tbs: Vec<u8>,
    },
    /// A request for a seal signature over `seal.data_hash` (a seal on one more page).
    AddSealRequest {
        id: RequestId,
        display: DisplayText,
        seal: crate::session::SealRequest,
    },
    /// The phone's signature for `request_id`, already verified (`Ok`) or
    /// refused (`Err(reason)`) against the opening certificate.
    Respond {
        request_id: RequestId,
        verdict: Result<Vec<u8>, String>,
        auto_confirmed: bool,
    },
    /// The phone's seal signature for a seal request, already verified: `signature` is the SM2
    /// signature inside it.
    RespondSealed {
        request_id: RequestId,
        signature: Vec<u8>,
        seal: Box<crate::session::SealApproval>,
        auto_confirmed: bool,
    },
    Decline {
        request_id: RequestId,
        reason: String,
    },
    /// Who will answer a pending request, as the co-signing service says when
    /// it asks for the request's bytes: a member with a granted share, or
    /// `None` for the certificate owner's own share.
    NoteDelegate {
        request_id: RequestId,
        delegate: Option<crate::session::Delegate>,
    },
    End {
        by: EndedBy,
    },
    /// Apply what is due (request TTLs, idle, max lifetime). Timers send this.
    Tick,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConvOutput {
    Done,
    Unchanged,
    Added { expires_at: Timestamp },
}

#[derive(Debug)]
pub struct ConvApplied {
    pub changed: bool,
    pub output: Result<ConvOutput, DomainError>,
    /// Requests that reached a final status in this op (for the audit trail).
    pub finished: Vec<RequestId>,
}

/// What opening a conversation needs.
pub struct OpenConversation {
    pub id: ConversationId,
    pub app_id: String,
    pub session_id: SessionId,
    pub certificate: CertificateInfo,
    pub chain_pem: Vec<String>,
    pub device_name: String,
    pub requester: Option<crate::session::Requester>,
    pub requester_token: SecretHash,
    pub phone_token: SecretHash,
    pub policy: ConversationPolicy,
}

fn ended_error(by: EndedBy) -> DomainError {
    DomainError::new(
        ErrorCode::Expired,
        format!("the conversation has ended (by {})", by.as_str()),
    )
}

/// Why `req` cannot be answered, if it cannot.
fn refuse_answer(ended: Option<(EndedBy, Timestamp)>, req: &SignRequest) -> Option<DomainError> {
    match req.status {
        RequestStatus::Pending => None,
        RequestStatus::Expired if ended.is_some() => {
            Some(ended_error(ended.map(|e| e.0).unwrap_or(EndedBy::Limit)))
        }
        RequestStatus::Expired => Some(DomainError::expired(
            "the request expired before it was answered",
        )),
        s => Some(DomainError::conflict(format!(
            "the request is already {}; it is never signed twice",
            s.as_str()
        ))),
    }
}

impl Conversation {
    pub fn open(o: OpenConversation, now: Timestamp) -> Self {
        Self {
            id: o.id,
            app_id: o.app_id,
            session_id: o.session_id,
            certificate: o.certificate,
            chain_pem: o.chain_pem,
            device_name: o.device_name,
            requester: o.requester,
            requester_token: o.requester_token,
            phone_token: o.phone_token,
            policy: o.policy,
            opened_at: now,
            expires_at: now.plus_secs(i64::from(o.policy.max_s)),
            last_request_at: now,
            requests: Vec::new(),
            ended: None,
            rev: 1,
        }
    }

    pub fn is_ended(&self) -> bool {
        self.ended.is_some()
    }

    pub fn request(&self, id: &RequestId) -> Option<&SignRequest> {
        self.requests.iter().find(|r| &r.id == id).map(|r| &**r)
    }

    /// The next moment something falls due (request TTL, idle, max lifetime).
    pub fn next_deadline(&self) -> Option<Timestamp> {
        if self.is_ended() {
            return None;
        }
        let idle = self
            .last_request_at
            .plus_secs(i64::from(self.policy.idle_s));
        let pending = self
            .requests
            .iter()
            .filter(|r| !r.is_finished())
            .map(|r| r.expires_at)
            .min();
        Some(
            [Some(idle), Some(self.expires_at), pending]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(self.expires_at),
        )
    }

    pub fn apply(&mut self, op: &ConvOp, now: Timestamp) -> ConvApplied {
        let mut finished = Vec::new();
        let ticked = self.tick(now, &mut finished);
        let output = self.apply_inner(op, now, &mut finished);
        let changed = ticked || matches!(&output, Ok(o) if *o != ConvOutput::Unchanged);
        if changed {
            self.rev += 1;
        }
        ConvApplied {
            changed,
            output,
            finished,
        }
    }

    fn apply_inner(
        &mut self,
        op: &ConvOp,
        now: Timestamp,
        finished: &mut Vec<RequestId>,
    ) -> Result<ConvOutput, DomainError> {
        match op {
            ConvOp::Tick => Ok(ConvOutput::Unchanged),
            ConvOp::End { by } => {
                if let Some((was, _)) = self.ended {
                    return Err(ended_error(was));
                }
                self.end(*by, now, finished);
                Ok(ConvOutput::Done)
            }
            ConvOp::AddRequest { id, display, tbs } => {
                self.add_request(id, display, tbs, None, now)
            }
            ConvOp::AddSealRequest { id, display, seal } => {
                self.add_request(id, display, &seal.data_hash, Some(seal), now)
            }
            ConvOp::RespondSealed {
                request_id,
                signature,
                seal,
                auto_confirmed,
            } => {
                let req = self.pending_request_mut(request_id)?;
                if req.seal.is_none() {
                    return Err(DomainError::invalid("this request does not ask for a seal"));
                }
                req.status = RequestStatus::Approved;
                req.signature = Some(signature.clone());
                req.seal_result = Some(seal.clone());
                req.auto_confirmed = Some(*auto_confirmed);
                req.completed_at = Some(now);
                req.tbs = Vec::new();
                finished.push(request_id.clone());
                self.end_if_limit_reached(now, finished);
                Ok(ConvOutput::Done)
            }
            ConvOp::Respond {
                request_id,
                verdict,
                auto_confirmed,
            } => {
                let req = self.pending_request_mut(request_id)?;
                match verdict {
                    Ok(sig) => {
                        req.status = RequestStatus::Approved;
                        req.signature = Some(sig.clone());
                        req.auto_confirmed = Some(*auto_confirmed);
                    }
                    Err(reason) => {
                        req.status = RequestStatus::Rejected;
                        req.reason = Some(reason.clone());
                        req.auto_confirmed = Some(*auto_confirmed);
                    }
                }
                req.completed_at = Some(now);
                req.tbs = Vec::new();
                finished.push(request_id.clone());
                self.end_if_limit_reached(now, finished);
                Ok(ConvOutput::Done)
            }
            ConvOp::NoteDelegate {
                request_id,
                delegate,
            } => {
                let req = self.pending_request_mut(request_id)?;
                if req.delegate == *delegate {
                    return Ok(ConvOutput::Unchanged);
                }
                req.delegate = delegate.clone();
                Ok(ConvOutput::Done)
            }
            ConvOp::Decline { request_id, reason } => {
                let req = self.pending_request_mut(request_id)?;
                req.status = RequestStatus::Rejected;
                req.reason = Some(reason.clone());
                req.auto_confirmed = Some(false);
                req.completed_at = Some(now);
                req.tbs = Vec::new();
                finished.push(request_id.clone());
                self.end_if_limit_reached(now, finished);
                Ok(ConvOutput::Done)
            }
        }
    }

    fn add_request(
        &mut self,
        id: &RequestId,
        display: &DisplayText,
        tbs: &[u8],
        seal: Option<&crate::session::SealRequest>,
        now: Timestamp,
    ) -> Result<ConvOutput, DomainError> {
        if let Some((by, _)) = self.ended {
            return Err(ended_error(by));
        }
        if self.requests.len() >= self.policy.max_requests as usize {
            return Err(DomainError::conflict(format!(
                "the conversation has reached its max_requests ({}); it ends when they are answered",
                self.policy.max_requests
            )));
        }
        let pending = self.requests.iter().filter(|r| !r.is_finished()).count();
        if pending >= MAX_PENDING_REQUESTS {
            return Err(DomainError::conflict(format!(
                "{MAX_PENDING_REQUESTS} requests already wait for the phone; wait for results first"
            )));
        }
        let expires_at = now.plus_secs(REQUEST_TTL_S);
        self.requests.push(Arc::new(SignRequest {
            id: id.clone(),
            seq: self.requests.len() as u32 + 1,
            display: display.clone(),
            tbs_sm3: crate::pki::sm3_hex(tbs),
            tbs: tbs.to_vec(),
            created_at: now,
            expires_at,
            status: RequestStatus::Pending,
            signature: None,
            auto_confirmed: None,
            reason: None,
            completed_at: None,
            seal: seal.cloned(),
            seal_result: None,
            delegate: None,
        }));
        self.last_request_at = now;
        Ok(ConvOutput::Added { expires_at })
    }

    /// The request `id` if it can be answered (`Respond`, `Decline`) in the
    /// state as stored; else the error those ops answer. Lets a caller
    /// refuse before it writes an audit record for an answer that cannot
    /// happen. Apply what is due ([`ConvOp::Tick`]) first.
    pub fn answerable(&self, id: &RequestId) -> Result<&SignRequest, DomainError> {
        let req = self
            .request(id)
            .ok_or_else(|| DomainError::not_found("no such request in this conversation"))?;
        match refuse_answer(self.ended, req) {
            Some(e) => Err(e),
            None => Ok(req),
        }
    }

    fn pending_request_mut(&mut self, id: &RequestId) -> Result<&mut SignRequest, DomainError> {
        let ended = self.ended;
        let req = self
            .requests
            .iter_mut()
            .find(|r| &r.id == id)
            .ok_or_else(|| DomainError::not_found("no such request in this conversation"))?;
        match refuse_answer(ended, req) {
            Some(e) => Err(e),
            None => Ok(Arc::make_mut(req)),
        }
    }

    /// Expires due requests and ends the conversation when a limit passed.
    fn tick(&mut self, now: Timestamp, finished: &mut Vec<RequestId>) -> bool {
        if self.is_ended() {
            return false;
        }
        let mut changed = false;
        for r in self.requests.iter_mut() {
            if r.status == RequestStatus::Pending && now >= r.expires_at {
                let r = Arc::make_mut(r);
                r.status = RequestStatus::Expired;
                r.completed_at = Some(now);
                r.tbs = Vec::new();
                finished.push(r.id.clone());
                changed = true;
            }
        }
        if now >= self.expires_at {
            self.end(EndedBy::Limit, now, finished);
            return true;
        }
        if now
            >= self
                .last_request_at
                .plus_secs(i64::from(self.policy.idle_s))
        {
            self.end(EndedBy::Idle, now, finished);
            return true;
        }
        if changed {
            self.end_if_limit_reached(now, finished);
        }
        changed
    }

    fn end_if_limit_reached(&mut self, now: Timestamp, finished: &mut Vec<RequestId>) {
        let all_answered = self.requests.iter().all(|r| r.is_finished());
        if self.requests.len() >= self.policy.max_requests as usize && all_answered {
            self.end(EndedBy::Limit, now, finished);
        }
    }

    fn end(&mut self, by: EndedBy, now: Timestamp, finished: &mut Vec<RequestId>) {
        for r in self.requests.iter_mut() {
            if r.status == RequestStatus::Pending {
                let r = Arc::make_mut(r);
                r.status = RequestStatus::Expired;
                r.reason = Some(crate::reason::CONVERSATION_ENDED.into());
                r.completed_at = Some(now);
                r.tbs = Vec::new();
                finished.push(r.id.clone());
            }
        }
        self.ended = Some((by, now));
    }

    /// The requester's view (`GET /v1/conversations/<cid>`).
    pub fn view(&self) -> bzt_wire::ConversationView {
        bzt_wire::ConversationView {
            id: self.id.to_string(),
            session_id: self.session_id.to_string(),
            status: if self.is_ended() { "ended" } else { "open" }.to_owned(),
            opened_at: self.opened_at.to_rfc3339(),
            expires_at: self.expires_at.to_rfc3339(),
            certificate: bzt_wire::ConversationCertificate {
                serial: self.certificate.serial.clone(),
                subject: self.certificate.subject.clone(),
                issuer: self.certificate.issuer.clone(),
            },
            max_requests: self.policy.max_requests,
            requests: u32::try_from(self.requests.len()).unwrap_or(u32::MAX),
            ended_by: self.ended.map(|(by, _)| by.as_str().to_owned()),
            ended_at: self.ended.map(|(_, at)| at.to_rfc3339()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp::from_unix_millis(1_800_000_000_000);

    fn conv(policy: ConversationPolicy) -> Conversation {
        Conversation::open(
            OpenConversation {
                id: ConversationId::generate(),
                app_id: "demo".into(),
                session_id: SessionId::generate(),
                certificate: CertificateInfo {
                    pem: String::new(),
                    serial: "1".into(),
                    subject: "CN=a".into(),
                    issuer: "CN=ca".into(),
                    not_before: T0,
                    not_after: T0.plus_secs(86_400),
                    domain: "platform".into(),
                },
                chain_pem: vec![],
                device_name: "phone".into(),
                requester: None,
                requester_token: SecretHash::of(b"r"),
                phone_token: SecretHash::of(b"p"),
                policy,
            },
            T0,
        )
    }

    #[test]
    fn as_a_stored_record_a_conversation_is_due_at_its_next_deadline_and_kept_from_its_end() {
        use crate::record::StoredRecord;
        let mut c = conv(policy(10, 600, 3600));
        assert_eq!(StoredRecord::next_deadline(&c), Some(T0.plus_secs(600)));
        assert_eq!(c.created_at(), T0);
        c.apply(&ConvOp::End { by: EndedBy::Phone }, T0.plus_secs(1));
        assert_eq!(StoredRecord::next_deadline(&c), None);
        assert_eq!(c.kept_from(), c.expires_at, "kept from its planned end");
        assert_eq!(c.expires_at, T0.plus_secs(3600));
    }

    fn policy(max_requests: u32, idle_s: u32, max_s: u32) -> ConversationPolicy {
        ConversationPolicy {
            max_requests,
            idle_s,
            max_s,
        }
    }

    fn add(c: &mut Conversation, now: Timestamp) -> RequestId {
        let id = RequestId::generate();
        let out = c.apply(
            &ConvOp::AddRequest {
                id: id.clone(),
                display: DisplayText {
                    title: "第1页".into(),
                    detail: None,
                },
                tbs: b"page".to_vec(),
            },
            now,
        );
        assert!(out.output.is_ok(), "{:?}", out.output);
        id
    }

    #[test]
    fn a_request_is_answered_once() {
        let mut c = conv(policy(10, 600, 7200));
        let id = add(&mut c, T0);
        let ok = c.apply(
            &ConvOp::Respond {
                request_id: id.clone(),
                verdict: Ok(vec![1, 2]),
                auto_confirmed: true,
            },
            T0.plus_secs(1),
        );
        assert_eq!(ok.finished, vec![id.clone()]);
        let r = c.request(&id).unwrap();
        assert_eq!(
            (r.status, r.auto_confirmed),
            (RequestStatus::Approved, Some(true))
        );
        assert!(r.tbs.is_empty(), "finished requests drop their bytes");
        let again = c.apply(
            &ConvOp::Respond {
                request_id: id.clone(),
                verdict: Ok(vec![3]),
                auto_confirmed: false,
            },
            T0.plus_secs(2),
        );
        assert_eq!(again.output.unwrap_err().code, ErrorCode::Conflict);
        assert_eq!(c.answerable(&id).unwrap_err().code, ErrorCode::Conflict);
        let other = add(&mut c, T0.plus_secs(3));
        assert!(c.answerable(&other).is_ok());
        assert_eq!(
            c.answerable(&RequestId::generate()).unwrap_err().code,
            ErrorCode::NotFound
        );
    }

    #[test]
    fn the_delegate_is_noted_while_pending_and_shown_once_answered() {
        let mut c = conv(policy(10, 600, 7200));
        let id = add(&mut c, T0);
        let lisi = crate::session::Delegate {
            name: "李四".into(),
            device: "dev-lisi".into(),
        };
        let note = |d: Option<crate::session::Delegate>| ConvOp::NoteDelegate {
            request_id: id.clone(),
            delegate: d,
        };
        assert_eq!(
            c.apply(&note(Some(lisi.clone())), T0).output,
            Ok(ConvOutput::Done)
        );
        assert_eq!(
            c.apply(&note(Some(lisi.clone())), T0).output,
            Ok(ConvOutput::Unchanged)
        );
        assert!(c.request(&id).unwrap().result_view().delegate.is_none());
        c.apply(
            &ConvOp::Respond {
                request_id: id.clone(),
                verdict: Ok(vec![1]),
                auto_confirmed: false,
            },
            T0.plus_secs(1),
        );
        assert_eq!(
            c.request(&id).unwrap().result_view().delegate,
            Some(bzt_wire::Delegate {
                name: "李四".into(),
                device: "dev-lisi".into()
            })
        );
        // An answered request's signer is settled.
        let late = c.apply(&note(None), T0.plus_secs(2));
        assert_eq!(late.output.unwrap_err().code, ErrorCode::Conflict);
        assert_eq!(c.request(&id).unwrap().delegate, Some(lisi));
    }

    #[test]
    fn requests_expire_after_their_ttl() {
        let mut c = conv(policy(10, 600, 7200));
        let id = add(&mut c, T0);
        let late = c.apply(&ConvOp::Tick, T0.plus_secs(REQUEST_TTL_S));
        assert!(late.changed);
        assert_eq!(c.request(&id).unwrap().status, RequestStatus::Expired);
        assert!(!c.is_ended());
    }

    #[test]
    fn idle_max_lifetime_and_max_requests_end_it() {
        let mut c = conv(policy(10, 60, 7200));
        add(&mut c, T0);
        c.apply(&ConvOp::Tick, T0.plus_secs(59));
        assert!(!c.is_ended());
        c.apply(&ConvOp::Tick, T0.plus_secs(60));
        assert_eq!(c.ended.map(|e| e.0), Some(EndedBy::Idle));

        let mut c = conv(policy(10, 600, 100));
        c.apply(&ConvOp::Tick, T0.plus_secs(100));
        assert_eq!(c.ended.map(|e| e.0), Some(EndedBy::Limit));
        let after = c.apply(
            &ConvOp::AddRequest {
                id: RequestId::generate(),
                display: DisplayText {
                    title: "x".into(),
                    detail: None,
                },
                tbs: vec![1],
            },
            T0.plus_secs(101),
        );
        assert_eq!(after.output.unwrap_err().code, ErrorCode::Expired);

        let mut c = conv(policy(2, 600, 7200));
        let a = add(&mut c, T0);
        let b = add(&mut c, T0);
        c.apply(
            &ConvOp::Decline {
                request_id: a,
                reason: "no".into(),
            },
            T0,
        );
        assert!(!c.is_ended());
        c.apply(
            &ConvOp::Respond {
                request_id: b,
                verdict: Ok(vec![1]),
                auto_confirmed: false,
            },
            T0,
        );
        assert_eq!(c.ended.map(|e| e.0), Some(EndedBy::Limit));
    }

    #[test]
    fn ending_expires_what_is_pending() {
        let mut c = conv(policy(10, 600, 7200));
        let id = add(&mut c, T0);
        let out = c.apply(&ConvOp::End { by: EndedBy::Phone }, T0.plus_secs(1));
        assert_eq!(out.finished, vec![id.clone()]);
        assert_eq!(c.request(&id).unwrap().status, RequestStatus::Expired);
        let twice = c.apply(
            &ConvOp::End {
                by: EndedBy::Requester,
            },
            T0.plus_secs(2),
        );
        assert_eq!(twice.output.unwrap_err().code, ErrorCode::Expired);
        assert_eq!(c.ended.map(|e| e.0), Some(EndedBy::Phone));
    }
}
