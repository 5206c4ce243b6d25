//! 企业证书授权 on the service: the administrator's grant requests (each
//! co-signed with the administrator's own share), the member's acceptance,
//! the operator's list and reclaim, and automatic reclaim at the end time.
//!
//! A grant's member key has the grant's id. Reclaiming it, by whoever,
//! goes through `Service::reclaim`, which the store performs once for all
//! nodes: the grant becomes `reclaimed`, the member's server share is
//! replaced by a revoked tombstone, and one reclaim record is written.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bzt_crypto::two_party::{
    decode_point, encode_point, point_to_hex, SchnorrProof, ServiceShare, DEFAULT_DIST_ID,
};
use sm2::dsa::signature::Verifier;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::error::ServiceError;
use crate::grants::{Action, GrantRequest};
use crate::server::{now, open_sealed, require_admin, rfc3339, seal_answer, Answer, Service};
use crate::store::{GrantEntry, KeyRecord, KeyState, PendingShare, StoreError};
use crate::wire::{
    AcceptAnswer, AcceptCall, Authorisation, Delegate, Grant, GrantCall, GrantList, ReclaimRecord,
    SealedAnswer,
};

/// How often `bzt cosigner serve` looks for grants past their end time.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

pub const ACTOR_ADMINISTRATOR: &str = "administrator";
pub const ACTOR_OPERATOR: &str = "operator";
pub const ACTOR_AUTOMATIC: &str = "automatic";
/// A reclaim record's reason when the lending administrator key was revoked.
pub const REASON_LENDER_REVOKED: &str = "lender_revoked";

fn reclaimed() -> ServiceError {
    ServiceError::new(
        StatusCode::GONE,
        "reclaimed",
        "this grant was reclaimed (收回); the administrator can grant again",
    )
}

fn unix_of(rfc: &str) -> Option<i64> {
    OffsetDateTime::parse(rfc, &Rfc3339)
        .ok()
        .map(OffsetDateTime::unix_timestamp)
}

fn grant_id_ok(id: &str) -> bool {
    (8..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl Service {
    /// The member using `key_id`, if it is a granted share.
    pub(crate) async fn delegate_of(&self, key_id: &str) -> Option<Delegate> {
        self.store
            .get_grant(key_id)
            .await
            .ok()
            .flatten()
            .map(|e| e.grant.member)
    }

    /// For a member's key: its grant is active and before its end time; a
    /// grant found past its end is reclaimed here and then.
    pub(crate) async fn check_grant_in_force(&self, key_id: &str) -> Result<(), ServiceError> {
        let Some(entry) = self.store.get_grant(key_id).await? else {
            return Ok(());
        };
        if entry.is_reclaimed() {
            return Err(reclaimed());
        }
        if self.past_end(&entry) {
            self.reclaim(&entry, ACTOR_AUTOMATIC, true).await?;
            return Err(reclaimed());
        }
        // The grant lends the administrator's certificate: it is no stronger
        // than the administrator's own key.
        let lender = self.store.get(&entry.grant.granted_by).await?;
        match lender.map(|r| r.state) {
            Some(KeyState::Active) => Ok(()),
            Some(KeyState::Frozen) => Err(lender_frozen()),
            // Revoking the lender reclaims its grants; this finishes the job
            // should that have been cut short.
            Some(KeyState::Revoked) | None => {
                self.reclaim_for_revoked_lender(&entry).await?;
                Err(reclaimed())
            }
        }
    }

    /// Reclaims a grant whose lending administrator key is revoked (actor
    /// `operator`, reason `lender_revoked`); true if this call did.
    pub(crate) async fn reclaim_for_revoked_lender(
        &self,
        entry: &GrantEntry,
    ) -> Result<bool, ServiceError> {
        self.reclaim_because(entry, ACTOR_OPERATOR, Some(REASON_LENDER_REVOKED), false)
            .await
    }

    /// When the administrator key `lender` is revoked: every grant it made
    /// that is not yet reclaimed is, once for all nodes.
    pub(crate) async fn reclaim_grants_of(&self, lender: &str) -> Result<(), ServiceError> {
        for entry in self.store.grants().await? {
            if entry.grant.granted_by == lender && !entry.is_reclaimed() {
                self.reclaim_for_revoked_lender(&entry).await?;
            }
        }
        Ok(())
    }

    fn past_end(&self, entry: &GrantEntry) -> bool {
        unix_of(&entry.grant.end).is_none_or(|end| self.clock.now() >= end)
    }

    /// The bytes of a grant request the administrator's phone asks to
    /// co-sign: never through a member's key, and only about this key.
    pub(crate) async fn checked_grant_request(
        &self,
        key_id: &str,
        tbs_b64: &str,
    ) -> Result<Vec<u8>, ServiceError> {
        if self.store.get_grant(key_id).await?.is_some() {
            return Err(member_cannot_grant());
        }
        let tbs = B64
            .decode(tbs_b64)
            .map_err(|_| ServiceError::invalid("grant.tbs_b64 is not base64"))?;
        let request = GrantRequest::parse(&tbs).map_err(ServiceError::invalid)?;
        if request.key_id != key_id {
            return Err(ServiceError::not_requested(
                "the grant request names another key",
            ));
        }
        Ok(tbs)
    }

    /// Takes a grant back once for all nodes; true if this call did.
    /// `only_if_expired`: the automatic sweep, which loses to an extension
    /// made since it read the grant.
    pub(crate) async fn reclaim(
        &self,
        entry: &GrantEntry,
        actor: &str,
        only_if_expired: bool,
    ) -> Result<bool, ServiceError> {
        self.reclaim_because(entry, actor, None, only_if_expired)
            .await
    }

    /// [`Service::reclaim`], the record saying why (`reason`).
    async fn reclaim_because(
        &self,
        entry: &GrantEntry,
        actor: &str,
        reason: Option<&str>,
        only_if_expired: bool,
    ) -> Result<bool, ServiceError> {
        let grant = &entry.grant;
        let done = GrantEntry {
            grant: Grant {
                status: "reclaimed".into(),
                ..grant.clone()
            },
            pending: None,
        };
        let tombstone = KeyRecord {
            key_id: grant.grant_id.clone(),
            label: grant.member.name.clone(),
            sealed_p1: String::new(),
            public_key: grant.public_key.clone(),
            sealed_share: None,
            state: KeyState::Revoked,
            created_at: now(),
        };
        let record = ReclaimRecord {
            grant_id: grant.grant_id.clone(),
            certificate: grant.certificate.clone(),
            member: grant.member.clone(),
            at: rfc3339(self.clock.now()),
            actor: actor.to_owned(),
            reason: reason.map(str::to_owned),
            node: self.node.clone(),
        };
        let expected_end = only_if_expired.then_some(grant.end.as_str());
        let won = self
            .store
            .reclaim_grant(&done, &tombstone, &record, expected_end)
            .await?;
        if won {
            tracing::info!(grant_id = %grant.grant_id, actor, "grant reclaimed");
            self.audit_as(
                &grant.grant_id,
                "reclaim",
                &format!("grant:{} by {actor}", grant.grant_id),
                None,
                "ok",
                Some(grant.member.clone()),
            )
            .await;
        }
        Ok(won)
    }

    /// Reclaims every grant past its end time (what the sweeper runs; tests
    /// call it on each node). Returns how many this node reclaimed.
    pub async fn sweep_grants(&self) -> Result<usize, ServiceError> {
        let mut count = 0;
        for entry in self.store.grants().await? {
            if !entry.is_reclaimed()
                && self.past_end(&entry)
                && self.reclaim(&entry, ACTOR_AUTOMATIC, true).await?
            {
                count += 1;
            }
        }
        Ok(count)
    }

    async fn list_for(
        &self,
        granted_by: Option<&str>,
        grant: Option<Grant>,
    ) -> Result<GrantList, ServiceError> {
        let mut grants: Vec<Grant> = self
            .store
            .grants()
            .await?
            .into_iter()
            .map(|e| e.grant)
            .filter(|g| granted_by.is_none_or(|k| g.granted_by == k))
            .collect();
        let mut lender_states = std::collections::HashMap::new();
        for g in &mut grants {
            if !lender_states.contains_key(&g.granted_by) {
                let state = self.lender_state(&g.granted_by).await?;
                lender_states.insert(g.granted_by.clone(), state);
            }
            g.lender_state = lender_states[&g.granted_by].clone();
        }
        let reclaims = self
            .store
            .reclaims()
            .await?
            .into_iter()
            .filter(|r| grants.iter().any(|g| g.grant_id == r.grant_id))
            .collect();
        Ok(GrantList {
            grant,
            grants,
            reclaims,
        })
    }

    /// `frozen` or `revoked` for an administrator key that is not active
    /// (a key no longer stored reads as revoked).
    async fn lender_state(&self, key_id: &str) -> Result<Option<String>, ServiceError> {
        Ok(match self.store.get(key_id).await?.map(|r| r.state) {
            Some(KeyState::Active) => None,
            Some(KeyState::Frozen) => Some("frozen".to_owned()),
            Some(KeyState::Revoked) | None => Some("revoked".to_owned()),
        })
    }

    fn open_share(&self, label: &str, sealed: &str) -> Result<ServiceShare, ServiceError> {
        self.master
            .open(label.as_bytes(), sealed)
            .ok()
            .and_then(|b| ServiceShare::from_bytes(&b).ok())
            .ok_or_else(|| {
                tracing::error!(label, "share does not open under the master key");
                ServiceError::internal()
            })
    }

    fn open_point(&self, label: &str, sealed: &str) -> Result<sm2::ProjectivePoint, ServiceError> {
        self.master
            .open(label.as_bytes(), sealed)
            .ok()
            .and_then(|b| decode_point(&b).ok())
            .ok_or_else(|| {
                tracing::error!(label, "point does not open under the master key");
                ServiceError::internal()
            })
    }
}

fn lender_frozen() -> ServiceError {
    ServiceError::new(
        StatusCode::FORBIDDEN,
        "frozen",
        "the administrator's key that lends this certificate is frozen (挂失); the grant works again once it is unfrozen",
    )
}

fn member_cannot_grant() -> ServiceError {
    ServiceError::not_requested(
        "this is a member's granted share: only the certificate's administrator can grant",
    )
}

/// `POST /v1/keys/{key_id}/grants` (sealed): grant, extend, ungrant, list.
pub async fn admin_request(
    State(svc): State<Arc<Service>>,
    Path(key_id): Path<String>,
    body: Bytes,
) -> Answer<SealedAnswer> {
    let path = format!("/v1/keys/{key_id}/grants");
    let (call, keys): (GrantCall, _) = open_sealed(&svc, &path, &body)?;
    let outcome = handle_admin_request(&svc, &key_id, &call).await;
    let (operation, context) = match &outcome {
        Ok((op, ctx, _)) => (op.clone(), ctx.clone()),
        Err(_) => ("grants".to_owned(), "refused".to_owned()),
    };
    match outcome {
        Ok((_, _, answer)) => {
            svc.audit_as(&key_id, &operation, &context, None, "ok", None)
                .await;
            seal_answer(&path, &keys, &answer)
        }
        Err(e) => {
            svc.audit_as(&key_id, &operation, &context, None, e.code, None)
                .await;
            Err(e)
        }
    }
}

async fn handle_admin_request(
    svc: &Service,
    key_id: &str,
    call: &GrantCall,
) -> Result<(String, String, GrantList), ServiceError> {
    let record = svc
        .store
        .get(key_id)
        .await?
        .ok_or_else(|| ServiceError::not_found("no such key"))?;
    if svc.store.get_grant(key_id).await?.is_some() {
        return Err(member_cannot_grant());
    }
    match record.state {
        KeyState::Revoked => return Err(StoreError::Revoked.into()),
        KeyState::Frozen => {
            return Err(ServiceError::new(
                StatusCode::FORBIDDEN,
                "frozen",
                "the administrator's key is frozen (挂失)",
            ))
        }
        KeyState::Active => {}
    }
    let text = B64
        .decode(&call.request_b64)
        .map_err(|_| ServiceError::invalid("request_b64 is not base64"))?;
    let request = GrantRequest::parse(&text).map_err(ServiceError::invalid)?;
    if request.key_id != key_id {
        return Err(ServiceError::invalid("the request names another key"));
    }
    // The administrator's co-signature over the request: only its phone's
    // share and this service together make one.
    let signature = B64
        .decode(&call.signature_b64)
        .ok()
        .and_then(|der| sm2::dsa::Signature::from_der(&der).ok());
    let verifying = hex::decode(&record.public_key)
        .ok()
        .and_then(|k| sm2::dsa::VerifyingKey::from_sec1_bytes(DEFAULT_DIST_ID, &k).ok())
        .ok_or_else(ServiceError::internal)?;
    if signature.is_none_or(|sig| verifying.verify(&text, &sig).is_err()) {
        return Err(ServiceError::new(
            StatusCode::FORBIDDEN,
            "not_authorised",
            "the request is not signed with the certificate's key through the administrator's share",
        ));
    }
    let window = i64::try_from(svc.config.proof_window_s).unwrap_or(120);
    if (request.issued_at - now()).abs() > window {
        return Err(ServiceError::new(
            StatusCode::BAD_REQUEST,
            "stale_proof",
            "the grant request is not fresh: check the phone's clock and sign a new one",
        ));
    }
    if !svc
        .store
        .use_once(
            &format!("grant-request:{key_id}:{}", request.nonce),
            2 * svc.config.proof_window_s + 1,
        )
        .await?
    {
        return Err(ServiceError::new(
            StatusCode::CONFLICT,
            "replayed",
            "this grant request was used already; sign a new one",
        ));
    }
    let authorisation = Authorisation {
        request_b64: call.request_b64.clone(),
        signature_b64: call.signature_b64.clone(),
    };
    if call.factor.is_some() && request.action != Action::Grant {
        return Err(ServiceError::invalid("factor: for a grant only"));
    }
    let grant_id = request.grant_id.clone().unwrap_or_default();
    let context = format!("grant:{grant_id}");
    let action = request.action;
    let grant = match action {
        Action::List => None,
        Action::Grant => Some(grant(svc, &record, &request, call, authorisation).await?),
        Action::Extend | Action::Ungrant => {
            let entry = svc
                .store
                .get_grant(&grant_id)
                .await?
                .filter(|e| e.grant.granted_by == key_id)
                .ok_or_else(|| ServiceError::not_found("no such grant of this certificate"))?;
            if entry.is_reclaimed() {
                return Err(reclaimed());
            }
            if svc.past_end(&entry) {
                svc.reclaim(&entry, ACTOR_AUTOMATIC, true).await?;
                return Err(reclaimed());
            }
            if action == Action::Extend {
                let end = request.not_after.clone().unwrap_or_default();
                if unix_of(&end).is_none_or(|t| t <= svc.clock.now()) {
                    return Err(ServiceError::invalid(
                        "not_after: an RFC 3339 time in the future",
                    ));
                }
                let mut entry = entry;
                entry.grant.end = end;
                entry.grant.authorisation = authorisation;
                svc.store.put_grant(&entry).await.map_err(|e| match e {
                    StoreError::Revoked => reclaimed(),
                    other => other.into(),
                })?;
                Some(entry.grant)
            } else {
                if !svc.reclaim(&entry, ACTOR_ADMINISTRATOR, false).await? {
                    return Err(reclaimed());
                }
                svc.store.get_grant(&grant_id).await?.map(|e| e.grant)
            }
        }
    };
    let list = svc.list_for(Some(key_id), grant).await?;
    let operation = match action {
        Action::List => "grants",
        other => other.as_str(),
    };
    Ok((operation.to_owned(), context, list))
}

async fn grant(
    svc: &Service,
    record: &KeyRecord,
    request: &GrantRequest,
    call: &GrantCall,
    authorisation: Authorisation,
) -> Result<Grant, ServiceError> {
    let grant_id = request.grant_id.clone().unwrap_or_default();
    if !grant_id_ok(&grant_id) {
        return Err(ServiceError::invalid(
            "grant: 8 to 64 letters, digits, '-' or '_'",
        ));
    }
    let end = request.not_after.clone().unwrap_or_default();
    if unix_of(&end).is_none_or(|t| t <= svc.clock.now()) {
        return Err(ServiceError::invalid(
            "not_after: an RFC 3339 time in the future",
        ));
    }
    let too_long = |v: &Option<String>| v.as_ref().is_some_and(|v| v.chars().count() > 200);
    let member = request.member.as_ref();
    let certificate = request.certificate.as_ref();
    if too_long(&member.map(|m| m.name.clone()))
        || too_long(&member.map(|m| m.device.clone()))
        || too_long(&certificate.map(|c| c.serial.clone()))
        || too_long(&certificate.map(|c| c.ca.clone()))
        || too_long(&certificate.map(|c| c.certificate_type.clone()))
    {
        return Err(ServiceError::invalid(
            "member, device and certificate fields: at most 200 characters each",
        ));
    }
    let factor = call
        .factor
        .as_deref()
        .and_then(|f| hex::decode(f).ok())
        .ok_or_else(|| ServiceError::invalid("factor: the re-sharing factor t, 32 bytes hex"))?;
    let key_id = &record.key_id;
    let share = svc.open_share(
        &format!("share:{key_id}"),
        record
            .sealed_share
            .as_deref()
            .ok_or_else(|| ServiceError::from(StoreError::Revoked))?,
    )?;
    let admin_p1 = svc.open_point(&format!("p1:{key_id}"), &record.sealed_p1)?;
    let (pending, pending_p1) = share
        .reshare(&admin_p1, &factor)
        .map_err(|_| ServiceError::invalid("factor: not a scalar in [1, n-1]"))?;
    let seal = |label: String, bytes: &[u8]| {
        svc.master
            .seal(label.as_bytes(), bytes)
            .map_err(|_| ServiceError::internal())
    };
    let entry = GrantEntry {
        grant: Grant {
            grant_id: grant_id.clone(),
            granted_by: key_id.clone(),
            public_key: record.public_key.clone(),
            certificate: request
                .certificate
                .clone()
                .ok_or_else(ServiceError::internal)?,
            member: request.member.clone().ok_or_else(ServiceError::internal)?,
            start: rfc3339(svc.clock.now()),
            end,
            status: "pending".into(),
            lender_state: None,
            authorisation,
        },
        pending: Some(PendingShare {
            sealed_share: seal(format!("pending-share:{grant_id}"), &pending.to_bytes())?,
            sealed_p1: seal(format!("pending-p1:{grant_id}"), &encode_point(&pending_p1))?,
        }),
    };
    svc.store.create_grant(&entry).await.map_err(|e| match e {
        StoreError::Exists => {
            ServiceError::new(StatusCode::CONFLICT, "conflict", "that grant id is taken")
        }
        other => other.into(),
    })?;
    Ok(entry.grant)
}

/// `POST /v1/grants/{grant_id}/accept` (sealed): the member's phone turns
/// the dealt share into its own and the service keeps the matching half.
pub async fn accept(
    State(svc): State<Arc<Service>>,
    Path(grant_id): Path<String>,
    body: Bytes,
) -> Answer<SealedAnswer> {
    let path = format!("/v1/grants/{grant_id}/accept");
    let (call, keys): (AcceptCall, _) = open_sealed(&svc, &path, &body)?;
    let outcome = accept_grant(&svc, &grant_id, &call).await;
    let delegate = svc.delegate_of(&grant_id).await;
    match outcome {
        Ok(answer) => {
            svc.audit_as(&grant_id, "accept", "grant", None, "ok", delegate)
                .await;
            seal_answer(&path, &keys, &answer)
        }
        Err(e) => {
            svc.audit_as(&grant_id, "accept", "grant", None, e.code, delegate)
                .await;
            Err(e)
        }
    }
}

async fn accept_grant(
    svc: &Service,
    grant_id: &str,
    call: &AcceptCall,
) -> Result<AcceptAnswer, ServiceError> {
    let mut entry = svc
        .store
        .get_grant(grant_id)
        .await?
        .ok_or_else(|| ServiceError::not_found("no such grant"))?;
    if entry.is_reclaimed() {
        return Err(reclaimed());
    }
    if svc.past_end(&entry) {
        svc.reclaim(&entry, ACTOR_AUTOMATIC, true).await?;
        return Err(reclaimed());
    }
    let pending = entry.pending.clone().ok_or_else(|| {
        ServiceError::new(
            StatusCode::CONFLICT,
            "conflict",
            "this grant was accepted already",
        )
    })?;
    let share = svc.open_share(&format!("pending-share:{grant_id}"), &pending.sealed_share)?;
    let pending_p1 = svc.open_point(&format!("pending-p1:{grant_id}"), &pending.sealed_p1)?;
    let factor =
        hex::decode(&call.factor).map_err(|_| ServiceError::invalid("factor: 32 bytes hex"))?;
    let proof = SchnorrProof::from_hex(&call.proof)
        .map_err(|_| ServiceError::invalid("proof does not parse"))?;
    let (member_share, p1, p2) = share
        .accept_member(&pending_p1, &factor, &proof, grant_id)
        .map_err(|_| {
            ServiceError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "bad_proof",
                "the proof does not show the share this grant dealt",
            )
        })?;
    if !svc
        .store
        .use_once(&format!("accept:{grant_id}"), 7 * 24 * 3600)
        .await?
    {
        return Err(ServiceError::new(
            StatusCode::CONFLICT,
            "conflict",
            "this grant was accepted already",
        ));
    }
    let seal = |label: String, bytes: &[u8]| {
        svc.master
            .seal(label.as_bytes(), bytes)
            .map_err(|_| ServiceError::internal())
    };
    let record = KeyRecord {
        key_id: grant_id.to_owned(),
        label: entry.grant.member.name.clone(),
        sealed_p1: seal(format!("p1:{grant_id}"), &encode_point(&p1))?,
        public_key: entry.grant.public_key.clone(),
        sealed_share: Some(seal(format!("share:{grant_id}"), &member_share.to_bytes())?),
        state: KeyState::Active,
        created_at: now(),
    };
    entry.grant.status = "active".into();
    entry.pending = None;
    // The grant first: a reclaim in between refuses this, and a reclaim
    // after it leaves a tombstone the key record below cannot overwrite.
    svc.store.put_grant(&entry).await.map_err(|e| match e {
        StoreError::Revoked => reclaimed(),
        other => other.into(),
    })?;
    svc.store.create(&record).await.map_err(|e| match e {
        StoreError::Exists => reclaimed(),
        other => other.into(),
    })?;
    Ok(AcceptAnswer {
        key_id: grant_id.to_owned(),
        p2: point_to_hex(&p2),
        end: entry.grant.end,
    })
}

/// `GET /v1/admin/grants` (the service's admin token): every grant and
/// reclaim record, for the platform operator.
pub async fn operator_list(
    State(svc): State<Arc<Service>>,
    headers: HeaderMap,
) -> Answer<GrantList> {
    require_admin(&svc, &headers)?;
    Ok(Json(svc.list_for(None, None).await?))
}

/// `POST /v1/admin/grants/{grant_id}/reclaim` (the service's admin token):
/// the platform operator takes a grant back.
pub async fn operator_reclaim(
    State(svc): State<Arc<Service>>,
    Path(grant_id): Path<String>,
    headers: HeaderMap,
) -> Answer<GrantList> {
    require_admin(&svc, &headers)?;
    let entry = svc
        .store
        .get_grant(&grant_id)
        .await?
        .ok_or_else(|| ServiceError::not_found("no such grant"))?;
    if !svc.reclaim(&entry, ACTOR_OPERATOR, false).await? {
        return Err(reclaimed());
    }
    let grant = svc.store.get_grant(&grant_id).await?.map(|e| e.grant);
    Ok(Json(svc.list_for(None, grant).await?))
}

/// Reclaims grants past their end time every few seconds, for as long as
/// the service runs. Several nodes may sweep at once: the store lets one win.
pub fn spawn_sweeper(service: Arc<Service>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        loop {
            tick.tick().await;
            if let Err(e) = service.sweep_grants().await {
                tracing::warn!(code = e.code, "grant sweep failed; retrying");
            }
        }
    });
}
