//! The service: HTTP routes, and each operation as the protocol's steps.
//!
//! Every sign or decrypt request runs the same gates, in this order: open the
//! sealed body; the key exists, is not revoked, not frozen, not locked; the
//! content: the bytes come from the broker for a live session of this phone
//! (or, for a PKCS#10 request at enrolment, are checked to carry the joint
//! key), never from the phone, and a decryption is inside its opening window;
//! then the received point is valid, the PIN proof is fresh and verifies (a
//! failure counts, the fifth in a row locks) and its nonce was never used.
//! The content comes before the PIN so that only a phone holding a live
//! session's token can spend a key's five attempts.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bzt_crypto::two_party::{
    decode_point, encode_point, message_digest, point_from_hex, point_to_hex, service_decrypt,
    service_sign, ChannelKey, PinProof, PinStatement, ResponseKey, SchnorrProof, ServiceShare,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sm2::ProjectivePoint;
use sm3::{Digest, Sm3};
use subtle::ConstantTimeEq;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::net::TcpListener;

use crate::config::{Config, StoreKind};
use crate::context::{BrokerContextClient, ContextSource};
use crate::error::ServiceError;
use crate::grants::{Clock, SystemClock};
use crate::sealing::MasterKey;
use crate::store::file::FileStore;
use crate::store::redis::RedisStore;
use crate::store::{KeyRecord, KeyState, KeyStore};
use crate::wire::{
    channel_aad, AuditList, AuditRecord, BrokerContextRequest, Context, DecryptAnswer,
    DecryptRequest, Delegate, EnrolAnswer, EnrolRequest, Info, KeyStatus, OpeningWindow,
    PinProofWire, SealedAnswer, SealedBody, SignAnswer, SignRequest, API_VERSION,
};
use crate::wire::{ConversationRef, SessionRef};

/// Wrong PIN proofs in a row that lock a key until the owner unlocks it.
pub const MAX_FAILURES: u32 = 5;

/// How long the mark "this decrypt session had its one co-decryption" is
/// kept: longer than any session lives (the phone opens its one recipient
/// entry per session).
const DECRYPTS_PER_SESSION_TTL_S: u64 = 24 * 3600;

pub struct Service {
    pub(crate) config: Config,
    pub(crate) store: Arc<dyn KeyStore>,
    pub(crate) master: MasterKey,
    channel: ChannelKey,
    context: Arc<dyn ContextSource>,
    pub(crate) node: String,
    /// Unix seconds; with a store that forgets nonces on restart, proofs made
    /// before this are refused (they might be replays of ones already used).
    started_at: i64,
    /// What grant end times are judged by (tests inject their own).
    pub(crate) clock: Arc<dyn Clock>,
}

pub(crate) fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

pub(crate) fn rfc3339(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

impl Service {
    /// Opens the store, the master key and the channel key named by `config`,
    /// and the broker's context endpoint.
    pub async fn build(config: Config) -> anyhow::Result<Arc<Self>> {
        let context = Arc::new(BrokerContextClient::new(
            &config.broker_url,
            config.broker_credential.clone(),
        )?);
        Self::build_with_context(config, context).await
    }

    pub async fn build_with_context(
        config: Config,
        context: Arc<dyn ContextSource>,
    ) -> anyhow::Result<Arc<Self>> {
        Self::build_with_clock(config, context, Arc::new(SystemClock)).await
    }

    /// As [`Self::build_with_context`], judging grant end times by `clock`.
    pub async fn build_with_clock(
        config: Config,
        context: Arc<dyn ContextSource>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Arc<Self>> {
        let master = match (&config.master_key_hex, &config.master_key_file) {
            (Some(hex), _) => MasterKey::from_hex(hex)?,
            (None, Some(path)) => MasterKey::load_or_generate(path, config.dev_mode)?,
            (None, None) if config.dev_mode => {
                let dir = config.data_dir.clone().unwrap_or_else(|| ".".into());
                MasterKey::load_or_generate(&dir.join("cosigner-master.key"), true)?
            }
            (None, None) => anyhow::bail!("no master key configured"),
        };
        let store: Arc<dyn KeyStore> = match config.store.kind {
            StoreKind::File => Arc::new(FileStore::open(&config.store_path())?),
            StoreKind::Redis => {
                let url = config
                    .store
                    .redis_url
                    .as_deref()
                    .unwrap_or("redis://127.0.0.1:6379");
                let prefix = config
                    .store
                    .key_prefix
                    .as_deref()
                    .unwrap_or("bzt-cosigner:");
                Arc::new(RedisStore::connect(url, prefix).await?)
            }
        };
        let candidate = master.seal(b"channel-key", &ChannelKey::generate()?.to_bytes())?;
        let sealed = store.channel_key(&candidate).await?;
        let channel = ChannelKey::from_bytes(&master.open(b"channel-key", &sealed)?)?;
        let node = config
            .node_name
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()[..8].to_owned());
        if config.dev_mode {
            tracing::warn!("co-signing service in DEVELOPMENT mode: open enrolment, generated master key; never use in production");
        }
        Ok(Arc::new(Self {
            config,
            store,
            master,
            channel,
            context,
            node,
            started_at: now(),
            clock,
        }))
    }

    pub fn channel_public_key(&self) -> &ProjectivePoint {
        self.channel.public()
    }
}

/// The routes (kept apart from the listener so tests can drive them).
pub fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/info", get(info))
        .route("/v1/keys", post(enrol))
        .route("/v1/keys/{key_id}/sign", post(sign))
        .route("/v1/keys/{key_id}/decrypt", post(decrypt))
        .route("/v1/admin/keys/{key_id}", get(key_status))
        .route("/v1/admin/keys/{key_id}/{action}", post(admin_action))
        .route("/v1/audit", get(audit))
        .route("/v1/openings", post(register_opening))
        .route(
            "/v1/keys/{key_id}/grants",
            post(crate::grant_routes::admin_request),
        )
        .route(
            "/v1/grants/{grant_id}/accept",
            post(crate::grant_routes::accept),
        )
        .route("/v1/admin/grants", get(crate::grant_routes::operator_list))
        .route(
            "/v1/admin/grants/{grant_id}/reclaim",
            post(crate::grant_routes::operator_reclaim),
        )
        .with_state(service)
}

/// Serves on `config.listen` until the process ends.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = TcpListener::bind(&config.listen).await?;
    serve_on(listener, config).await
}

/// Serves on a listener already bound (`config.listen` is not used) until the process ends.
pub async fn serve_on(listener: TcpListener, config: Config) -> anyhow::Result<()> {
    let service = Service::build(config).await?;
    tracing::info!(addr = %listener.local_addr()?, "co-signing service listening");
    crate::grant_routes::spawn_sweeper(service.clone());
    run(listener, service).await
}

pub async fn run(listener: TcpListener, service: Arc<Service>) -> anyhow::Result<()> {
    axum::serve(
        listener,
        router(service).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}

pub(crate) type Answer<T> = Result<Json<T>, ServiceError>;

async fn info(State(svc): State<Arc<Service>>) -> Json<Info> {
    Json(Info {
        service_key: point_to_hex(svc.channel.public()),
        version: API_VERSION,
    })
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

pub(crate) fn token_matches(given: Option<&str>, expected: &str) -> bool {
    given.is_some_and(|g| bool::from(Sm3::digest(g).ct_eq(&Sm3::digest(expected))))
}

pub(crate) fn open_sealed<T: DeserializeOwned>(
    svc: &Service,
    path: &str,
    body: &[u8],
) -> Result<(T, ResponseKey), ServiceError> {
    let sealed: SealedBody = serde_json::from_slice(body)
        .map_err(|e| ServiceError::invalid(format!("body is not a sealed request: {e}")))?;
    let sealed = sealed.to_sealed().ok_or_else(|| {
        ServiceError::invalid("sealed request fields are not hex/base64 of the right lengths")
    })?;
    let (plain, keys) = svc.channel.open_request(&channel_aad("POST", path), &sealed).map_err(|_| {
        ServiceError::new(
            StatusCode::BAD_REQUEST,
            "bad_channel",
            "the body does not open under this service's key: is the phone pinned to another service?",
        )
    })?;
    let request = serde_json::from_slice(&plain)
        .map_err(|e| ServiceError::invalid(format!("sealed request: {e}")))?;
    Ok((request, keys))
}

pub(crate) fn seal_answer<T: Serialize>(
    path: &str,
    keys: &ResponseKey,
    answer: &T,
) -> Answer<SealedAnswer> {
    let plain = serde_json::to_vec(answer).map_err(|_| ServiceError::internal())?;
    let sealed = keys
        .seal_response(&channel_aad("POST", path), &plain)
        .map_err(|_| ServiceError::internal())?;
    Ok(Json(SealedAnswer::from_sealed(&sealed)))
}

async fn enrol(
    State(svc): State<Arc<Service>>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer<SealedAnswer> {
    match &svc.config.enrolment_token {
        Some(token) if !token_matches(bearer(&headers), token) => {
            return Err(ServiceError::unauthorized(
                "enrolment needs the service's enrolment token",
            ));
        }
        None if !svc.config.dev_mode => {
            return Err(ServiceError::unauthorized("enrolment is closed"))
        }
        _ => {}
    }
    let path = "/v1/keys";
    let (request, keys): (EnrolRequest, _) = open_sealed(&svc, path, &body)?;
    if request.label.chars().count() > 200 {
        return Err(ServiceError::invalid("label: at most 200 characters"));
    }
    let p1 = point_from_hex(&request.p1)
        .map_err(|_| ServiceError::invalid("p1 is not a valid point"))?;
    let proof1 = SchnorrProof::from_hex(&request.proof1)
        .map_err(|_| ServiceError::invalid("proof1 does not parse"))?;
    let (share, p2, proof2, joint) = ServiceShare::enrol(&p1, &proof1).map_err(|_| {
        ServiceError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_proof",
            "proof1 does not prove knowledge of P1's discrete log",
        )
    })?;
    let key_id = uuid::Uuid::new_v4().simple().to_string();
    let sealed_share = svc
        .master
        .seal(format!("share:{key_id}").as_bytes(), &share.to_bytes())
        .map_err(|_| ServiceError::internal())?;
    let record = KeyRecord {
        key_id: key_id.clone(),
        label: request.label,
        sealed_p1: svc
            .master
            .seal(format!("p1:{key_id}").as_bytes(), &encode_point(&p1))
            .map_err(|_| ServiceError::internal())?,
        public_key: point_to_hex(&joint),
        sealed_share: Some(sealed_share),
        state: KeyState::Active,
        created_at: now(),
    };
    svc.store.create(&record).await?;
    svc.audit(&key_id, "enrol", &record.label, None, "ok").await;
    tracing::info!(%key_id, "key enrolled");
    seal_answer(
        path,
        &keys,
        &EnrolAnswer {
            key_id,
            p2: point_to_hex(&p2),
            proof2: proof2.to_hex(),
        },
    )
}

async fn sign(
    State(svc): State<Arc<Service>>,
    Path(key_id): Path<String>,
    body: Bytes,
) -> Answer<SealedAnswer> {
    let context = |r: &SignRequest| r.context.canonical();
    audited_operation(&svc, &key_id, "sign", &body, context, async |request| {
        let (answer, tbs_sm3) = svc.sign(&key_id, request).await?;
        Ok((answer, Some(tbs_sm3)))
    })
    .await
}

async fn decrypt(
    State(svc): State<Arc<Service>>,
    Path(key_id): Path<String>,
    body: Bytes,
) -> Answer<SealedAnswer> {
    let context = |r: &DecryptRequest| r.context.canonical();
    audited_operation(&svc, &key_id, "decrypt", &body, context, async |request| {
        Ok((svc.decrypt(&key_id, request).await?, None))
    })
    .await
}

/// The course of a co-signing operation on `/v1/keys/{key_id}/{operation}`:
/// open the sealed request, run it, write its audit record whatever the
/// outcome (with the SM3 of what was signed, when there is one), seal the
/// answer.
async fn audited_operation<R: DeserializeOwned, A: Serialize>(
    svc: &Service,
    key_id: &str,
    operation: &str,
    body: &[u8],
    context_line: impl FnOnce(&R) -> String,
    run: impl AsyncFnOnce(&R) -> Result<(A, Option<String>), ServiceError>,
) -> Answer<SealedAnswer> {
    let path = format!("/v1/keys/{key_id}/{operation}");
    let (request, keys): (R, _) = open_sealed(svc, &path, body)?;
    let context_line = context_line(&request);
    let delegate = svc.delegate_of(key_id).await;
    match run(&request).await {
        Ok((answer, tbs_sm3)) => {
            svc.audit_as(key_id, operation, &context_line, tbs_sm3, "ok", delegate)
                .await;
            seal_answer(&path, &keys, &answer)
        }
        Err(e) => {
            svc.audit_as(key_id, operation, &context_line, None, e.code, delegate)
                .await;
            Err(e)
        }
    }
}

impl Service {
    async fn audit(
        &self,
        key_id: &str,
        operation: &str,
        context: &str,
        tbs_sm3: Option<String>,
        outcome: &str,
    ) {
        self.audit_as(key_id, operation, context, tbs_sm3, outcome, None)
            .await
    }

    /// An audit record naming the member who used a granted share.
    pub(crate) async fn audit_as(
        &self,
        key_id: &str,
        operation: &str,
        context: &str,
        tbs_sm3: Option<String>,
        outcome: &str,
        delegate: Option<Delegate>,
    ) {
        let record = AuditRecord {
            at: rfc3339(now()),
            node: self.node.clone(),
            key_id: key_id.to_owned(),
            operation: operation.to_owned(),
            context: context.to_owned(),
            tbs_sm3,
            outcome: outcome.to_owned(),
            delegate,
        };
        tracing::info!(
            key_id,
            operation,
            context,
            outcome,
            "co-signing service operation"
        );
        if let Err(e) = self.store.append_audit(&record).await {
            tracing::error!(error = %e, "audit record not written");
        }
    }

    /// The first gate: the key exists and is neither revoked, frozen nor locked.
    async fn usable(&self, key_id: &str) -> Result<KeyRecord, ServiceError> {
        let record = self
            .store
            .get(key_id)
            .await?
            .ok_or_else(|| ServiceError::not_found("no such key"))?;
        // A member's share lives only while its grant does.
        self.check_grant_in_force(key_id).await?;
        match record.state {
            KeyState::Revoked => return Err(crate::store::StoreError::Revoked.into()),
            KeyState::Frozen => {
                return Err(ServiceError::new(
                    StatusCode::FORBIDDEN,
                    "frozen",
                    "this key is frozen (挂失); its owner can unfreeze it",
                ));
            }
            KeyState::Active => {}
        }
        if self.store.failures(key_id).await? >= MAX_FAILURES {
            return Err(locked());
        }
        Ok(record)
    }

    /// The last gate, once the content is known to be asked for (so that
    /// only a phone holding a live session's token can spend the key's five
    /// PIN attempts): valid point, fresh PIN proof that verifies, unused nonce.
    async fn check_pin(
        &self,
        record: &KeyRecord,
        operation: &str,
        context: &Context,
        point_hex: &str,
        proof: &PinProofWire,
    ) -> Result<(ServiceShare, ProjectivePoint), ServiceError> {
        let key_id = record.key_id.as_str();
        let point = decode_point(&hex::decode(point_hex).unwrap_or_default())
            .map_err(|_| ServiceError::invalid("the point is not 04||X||Y on the SM2 curve"))?;
        let nonce: [u8; 16] = hex::decode(&proof.nonce)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| ServiceError::invalid("pin_proof.nonce: 16 bytes, hex"))?;
        let schnorr = SchnorrProof::from_hex(&proof.proof)
            .map_err(|_| ServiceError::invalid("pin_proof.proof does not parse"))?;
        let window = i64::try_from(self.config.proof_window_s).unwrap_or(120);
        let now = now();
        let too_old = self.store.forgets_nonces_on_restart() && proof.issued_at < self.started_at;
        if (proof.issued_at - now).abs() > window || too_old {
            return Err(ServiceError::new(
                StatusCode::BAD_REQUEST,
                "stale_proof",
                "the PIN proof is not fresh: check the phone's clock and make a new one",
            ));
        }
        let p1 = self
            .master
            .open(format!("p1:{key_id}").as_bytes(), &record.sealed_p1)
            .ok()
            .and_then(|bytes| decode_point(&bytes).ok())
            .ok_or_else(|| {
                tracing::error!(key_id, "P1 does not open under the master key");
                ServiceError::internal()
            })?;
        let canonical = context.canonical();
        let statement = PinStatement {
            key_id,
            operation,
            context: &canonical,
            point: &point,
        };
        let pin = PinProof {
            nonce,
            issued_at: proof.issued_at,
            proof: schnorr,
        };
        // A nonce is spent before anything else, so a replayed proof neither
        // counts nor, being valid, resets the count of wrong ones.
        let ttl = 2 * self.config.proof_window_s + 1;
        if !self
            .store
            .use_once(
                &format!("nonce:{key_id}:{}", proof.nonce.to_lowercase()),
                ttl,
            )
            .await?
        {
            return Err(ServiceError::new(
                StatusCode::CONFLICT,
                "replayed",
                "this PIN proof was used already; make a new one",
            ));
        }
        // Each attempt is counted before it is checked (atomically, across
        // nodes), so parallel guesses cannot slip past the limit; a wrong one's
        // count is made durable before it is answered, a right PIN clears it.
        let attempt = self.store.add_failure(key_id).await?;
        if attempt > MAX_FAILURES {
            return Err(locked());
        }
        if pin.verify(&p1, &statement).is_err() {
            tracing::warn!(key_id, failures = attempt, "wrong PIN proof");
            self.store.keep_failures(key_id).await?;
            if attempt >= MAX_FAILURES {
                return Err(locked());
            }
            return Err(ServiceError::new(
                StatusCode::FORBIDDEN,
                "wrong_pin",
                format!(
                    "wrong PIN; {} attempt(s) left before the key locks",
                    MAX_FAILURES - attempt
                ),
            ));
        }
        self.store.reset_failures(key_id).await?;
        let sealed = record
            .sealed_share
            .as_deref()
            .ok_or_else(|| ServiceError::from(crate::store::StoreError::Revoked))?;
        let share = self
            .master
            .open(format!("share:{key_id}").as_bytes(), sealed)
            .ok()
            .and_then(|bytes| ServiceShare::from_bytes(&bytes).ok())
            .ok_or_else(|| {
                tracing::error!(key_id, "server share does not open under the master key");
                ServiceError::internal()
            })?;
        Ok((share, point))
    }

    async fn sign(
        &self,
        key_id: &str,
        request: &SignRequest,
    ) -> Result<(SignAnswer, String), ServiceError> {
        let record = self.usable(key_id).await?;
        let joint = point_from_hex(&record.public_key).map_err(|_| ServiceError::internal())?;
        let delegate = self.delegate_of(key_id).await;
        let broker = match &request.context {
            Context::Session(s) => Some(BrokerContextRequest::Session(SessionRef {
                delegate: delegate.clone(),
                ..s.clone()
            })),
            Context::Conversation(c) => Some(BrokerContextRequest::Conversation(ConversationRef {
                delegate: delegate.clone(),
                ..c.clone()
            })),
            Context::Csr(_) | Context::Grant(_) => None,
        };
        let tbs =
            if let Some(asked) = broker {
                let (tbs, context) = self.broker_tbs(asked).await?;
                match (&context.seal, &request.seal_tbs_b64) {
                    (Some(seal), Some(seal_tbs)) => checked_seal_tbs(&joint, seal, seal_tbs)?,
                    (Some(_), None) => {
                        return Err(ServiceError::invalid(
                            "this asks for a seal signature: send seal_tbs_b64, DER(TBS_Sign)",
                        ))
                    }
                    (None, Some(_)) => return Err(ServiceError::not_requested(
                        "no seal signature was asked for here: nothing asked to sign a TBS_Sign",
                    )),
                    (None, None) => tbs,
                }
            } else {
                if request.seal_tbs_b64.is_some() {
                    return Err(ServiceError::not_requested(
                        "only a session or conversation request asks for a seal signature",
                    ));
                }
                match &request.context {
                    // A member's share never signs a certificate request for the company key.
                    Context::Csr(_) if delegate.is_some() => {
                        return Err(ServiceError::not_requested(
                            "a member's granted share does not co-sign certificate requests",
                        ))
                    }
                    Context::Csr(csr) => self.checked_csr(&record, &joint, &csr.tbs_b64)?,
                    Context::Grant(g) => self.checked_grant_request(key_id, &g.tbs_b64).await?,
                    Context::Session(_) | Context::Conversation(_) => {
                        return Err(ServiceError::internal())
                    }
                }
            };
        // Only the grant context signs grant requests: bytes from the broker
        // that look like one are refused, so no session makes a member (or
        // anyone) sign an authorisation.
        if !matches!(request.context, Context::Grant(_))
            && tbs.starts_with(crate::grants::HEADER.as_bytes())
        {
            return Err(ServiceError::not_requested(
                "those bytes are a grant request; only the administrator's grant context signs them",
            ));
        }
        let (share, q1) = self
            .check_pin(
                &record,
                "sign",
                &request.context,
                &request.q1,
                &request.pin_proof,
            )
            .await?;
        let e = message_digest(&joint, &tbs).map_err(|_| ServiceError::internal())?;
        let (r, s1) = service_sign(&share, &q1, &e).map_err(|_| ServiceError::internal())?;
        let answer = SignAnswer {
            r: hex::encode(r),
            s1: hex::encode(s1),
        };
        Ok((answer, hex::encode(Sm3::digest(&tbs))))
    }

    async fn decrypt(
        &self,
        key_id: &str,
        request: &DecryptRequest,
    ) -> Result<DecryptAnswer, ServiceError> {
        let Context::Session(session) = &request.context else {
            return Err(ServiceError::invalid(
                "a co-decryption answers a decrypt session: context must be {\"session\": …}",
            ));
        };
        let record = self.usable(key_id).await?;
        let session = SessionRef {
            delegate: self.delegate_of(key_id).await,
            ..session.clone()
        };
        let (tbs, context) = self
            .broker_tbs(BrokerContextRequest::Session(session.clone()))
            .await?;
        if context.kind != "decrypt" {
            return Err(ServiceError::not_requested(
                "that session is not a decrypt session",
            ));
        }
        self.check_opening(&tbs, context.opening.as_ref()).await?;
        let (share, t1) = self
            .check_pin(
                &record,
                "decrypt",
                &request.context,
                &request.t1,
                &request.pin_proof,
            )
            .await?;
        if !self
            .store
            .use_once(
                &format!("decrypt:{}", session.id),
                DECRYPTS_PER_SESSION_TTL_S,
            )
            .await?
        {
            return Err(ServiceError::new(
                StatusCode::CONFLICT,
                "already_used",
                "this decrypt session had its co-decryption already",
            ));
        }
        Ok(DecryptAnswer {
            t2: point_to_hex(&service_decrypt(&share, &t1)),
        })
    }

    async fn broker_tbs(
        &self,
        request: BrokerContextRequest,
    ) -> Result<(Vec<u8>, crate::wire::BrokerContext), ServiceError> {
        let context = self.context.fetch(&request).await?;
        let tbs = B64
            .decode(&context.tbs_b64)
            .map_err(|_| ServiceError::unavailable("the broker sent tbs that is not base64"))?;
        Ok((tbs, context))
    }

    /// The opening window (开标时间), by this service's clock. A window the
    /// relying party registered for the envelope (named by the challenge's
    /// `envelope:` line) binds whatever the broker says; the broker's own
    /// window applies as well.
    async fn check_opening(
        &self,
        tbs: &[u8],
        broker: Option<&crate::wire::Opening>,
    ) -> Result<(), ServiceError> {
        let text = String::from_utf8_lossy(tbs);
        let envelope = text
            .lines()
            .find_map(|l| l.strip_prefix("envelope:"))
            .map(str::to_lowercase);
        let registered = match &envelope {
            Some(sm3) => self.store.opening(sm3).await?,
            None => None,
        };
        if registered.is_none() && self.config.require_registered_opening {
            return Err(outside(
                "no opening window was registered for this envelope",
            ));
        }
        let now = OffsetDateTime::now_utc();
        let windows = registered
            .iter()
            .map(|w| (w.not_before.as_str(), w.not_after.as_str()))
            .chain(broker.map(|o| (o.not_before.as_str(), o.not_after.as_str())));
        for (not_before, not_after) in windows {
            let parse = |s: &str| {
                OffsetDateTime::parse(s, &Rfc3339)
                    .map_err(|_| ServiceError::unavailable("an opening window time does not parse"))
            };
            let (from, until) = (parse(not_before)?, parse(not_after)?);
            if now < from {
                return Err(outside(&format!(
                    "opening has not started: not before {not_before}"
                )));
            }
            if now > until {
                return Err(outside(&format!(
                    "the decryption deadline has passed: {not_after}"
                )));
            }
        }
        Ok(())
    }

    /// A PKCS#10 `CertificationRequestInfo` for this key, at enrolment only.
    fn checked_csr(
        &self,
        record: &KeyRecord,
        joint: &ProjectivePoint,
        tbs_b64: &str,
    ) -> Result<Vec<u8>, ServiceError> {
        use x509_cert::der::Decode;
        let age = now() - record.created_at;
        if age > i64::try_from(self.config.csr_window_s).unwrap_or(600) {
            return Err(ServiceError::not_requested(
                "a certificate request is co-signed only right after enrolment",
            ));
        }
        let tbs = B64
            .decode(tbs_b64)
            .map_err(|_| ServiceError::invalid("csr.tbs_b64 is not base64"))?;
        let info = x509_cert::request::CertReqInfo::from_der(&tbs).map_err(|_| {
            ServiceError::invalid("csr.tbs_b64 is not a DER CertificationRequestInfo")
        })?;
        let key = info.public_key.subject_public_key.raw_bytes();
        if decode_point(key).ok().as_ref() != Some(joint) {
            return Err(ServiceError::not_requested(
                "the certificate request is not for this key",
            ));
        }
        Ok(tbs)
    }
}

/// The `TBS_Sign` a phone built around its seal for a seal session or seal
/// request: signed only when it is exactly what was asked (the broker's
/// `dataHash` and `propertyInfo`), dated now, around a seal bound to this key,
/// with no extensions (nothing else rides in the signed range). The seal
/// itself is the user's choice; whether its maker is trusted is the broker's
/// and the relying party's check, as for a whole key.
fn checked_seal_tbs(
    joint: &ProjectivePoint,
    asked: &crate::wire::SealAsk,
    seal_tbs_b64: &str,
) -> Result<Vec<u8>, ServiceError> {
    use bzt_seal::asn1::TbsSign;
    use x509_cert::der::{Decode, Encode};
    let refused = |m: String| ServiceError::not_requested(m);
    let der = B64
        .decode(seal_tbs_b64)
        .map_err(|_| ServiceError::invalid("seal_tbs_b64 is not base64"))?;
    let tbs = TbsSign::from_der(&der)
        .map_err(|e| ServiceError::invalid(format!("seal_tbs_b64 is not a DER TBS_Sign: {e}")))?;
    if tbs.to_der().ok().as_deref() != Some(&der[..]) {
        return Err(ServiceError::invalid("seal_tbs_b64 is not in DER form"));
    }
    if tbs.version != bzt_seal::VERSION {
        return Err(ServiceError::invalid("TBS_Sign.version must be 4"));
    }
    let wanted_hash = B64
        .decode(&asked.data_hash_b64)
        .map_err(|_| ServiceError::unavailable("the broker sent a seal hash that is not base64"))?;
    if tbs.data_hash.raw_bytes() != wanted_hash.as_slice() {
        return Err(refused(
            "TBS_Sign.dataHash is not the hash this session asked to seal".into(),
        ));
    }
    if tbs.property_info.as_str() != asked.property_info {
        return Err(refused(format!(
            "TBS_Sign.propertyInfo is not the session's {:?}",
            asked.property_info
        )));
    }
    if tbs.ext_datas.is_some() {
        return Err(refused(
            "TBS_Sign.extDatas: extensions are not co-signed".into(),
        ));
    }
    let skew = bzt_seal::MAX_CLOCK_SKEW;
    let at = tbs.time_info.to_offset();
    let now = OffsetDateTime::now_utc();
    if at < now - skew || at > now + skew {
        return Err(refused(format!(
            "TBS_Sign.timeInfo {} is not now by the service's clock",
            tbs.time_info.as_str()
        )));
    }
    let bound = tbs
        .eseal
        .e_seal_info
        .property
        .certificates()
        .ok()
        .flatten()
        .is_some_and(|certs| {
            certs.iter().any(|c| {
                x509_cert::Certificate::from_der(c).is_ok_and(|cert| {
                    let key = cert
                        .tbs_certificate()
                        .subject_public_key_info()
                        .subject_public_key
                        .raw_bytes();
                    decode_point(key).ok().as_ref() == Some(joint)
                })
            })
        });
    if !bound {
        return Err(refused(
            "SES_ESPropertyInfo.certList: the seal is not bound to a certificate of this key"
                .into(),
        ));
    }
    Ok(der)
}

fn locked() -> ServiceError {
    ServiceError::new(
        StatusCode::LOCKED,
        "locked",
        "too many wrong PINs: the key is locked until its owner unlocks it",
    )
}

fn outside(message: &str) -> ServiceError {
    ServiceError::new(StatusCode::FORBIDDEN, "outside_opening_window", message)
}

pub(crate) fn require_admin(svc: &Service, headers: &HeaderMap) -> Result<(), ServiceError> {
    match &svc.config.admin_token {
        Some(token) if token_matches(bearer(headers), token) => Ok(()),
        Some(_) => Err(ServiceError::unauthorized(
            "the admin API needs the service's admin token",
        )),
        None => Err(ServiceError::not_found(
            "the admin API is off: set admin_token",
        )),
    }
}

async fn status_of(svc: &Service, record: &KeyRecord) -> Result<KeyStatus, ServiceError> {
    let failures = svc.store.failures(&record.key_id).await?;
    Ok(KeyStatus {
        key_id: record.key_id.clone(),
        label: record.label.clone(),
        state: record.state.as_str().to_owned(),
        failures,
        locked: failures >= MAX_FAILURES,
        public_key: record.public_key.clone(),
        created_at: rfc3339(record.created_at),
    })
}

async fn key_status(
    State(svc): State<Arc<Service>>,
    Path(key_id): Path<String>,
    headers: HeaderMap,
) -> Answer<KeyStatus> {
    require_admin(&svc, &headers)?;
    let record = svc
        .store
        .get(&key_id)
        .await?
        .ok_or_else(|| ServiceError::not_found("no such key"))?;
    Ok(Json(status_of(&svc, &record).await?))
}

async fn admin_action(
    State(svc): State<Arc<Service>>,
    Path((key_id, action)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer<KeyStatus> {
    require_admin(&svc, &headers)?;
    let mut record = svc
        .store
        .get(&key_id)
        .await?
        .ok_or_else(|| ServiceError::not_found("no such key"))?;
    if record.state == KeyState::Revoked {
        return Err(crate::store::StoreError::Revoked.into());
    }
    if action == "revoke" {
        if let Some(entry) = svc.store.get_grant(&key_id).await? {
            // 注销 of a member's key is the operator taking the grant back: one
            // reclaim, once for all nodes, so the grant shows `reclaimed` and
            // exactly one reclaim record (actor `operator`) says who.
            if entry.is_reclaimed()
                || !svc
                    .reclaim(&entry, crate::grant_routes::ACTOR_OPERATOR, false)
                    .await?
            {
                return Err(crate::store::StoreError::Revoked.into());
            }
            svc.audit(&key_id, &action, "admin", None, "ok").await;
            let record = svc
                .store
                .get(&key_id)
                .await?
                .ok_or_else(|| ServiceError::not_found("no such key"))?;
            return Ok(Json(status_of(&svc, &record).await?));
        }
    }
    match action.as_str() {
        "freeze" => record.state = KeyState::Frozen,
        "unfreeze" => record.state = KeyState::Active,
        "revoke" => {
            record.state = KeyState::Revoked;
            // Destroy the share: after this no node, backup of the record
            // written later, or new enrolment brings this key back.
            record.sealed_share = None;
        }
        "unlock" => svc.store.reset_failures(&key_id).await?,
        _ => {
            return Err(ServiceError::not_found(
                "actions: freeze, unfreeze, revoke, unlock",
            ))
        }
    }
    if action != "unlock" {
        svc.store.put(&record).await?;
    }
    if action == "revoke" {
        // The certificate this key lent to members goes with it.
        svc.reclaim_grants_of(&key_id).await?;
    }
    svc.audit(&key_id, &action, "admin", None, "ok").await;
    Ok(Json(status_of(&svc, &record).await?))
}

async fn audit(State(svc): State<Arc<Service>>, headers: HeaderMap) -> Answer<AuditList> {
    require_admin(&svc, &headers)?;
    Ok(Json(AuditList {
        records: svc.store.audit(1000).await?,
    }))
}

async fn register_opening(
    State(svc): State<Arc<Service>>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer<serde_json::Value> {
    let rp = svc
        .config
        .relying_parties
        .iter()
        .find(|rp| token_matches(bearer(&headers), &rp.token))
        .ok_or_else(|| {
            ServiceError::unauthorized(
                "registering an opening window needs a relying party's token",
            )
        })?;
    let window: OpeningWindow = serde_json::from_slice(&body)
        .map_err(|e| ServiceError::invalid(format!("opening window: {e}")))?;
    let sm3_ok = window.envelope_sm3.len() == 64
        && window.envelope_sm3.chars().all(|c| c.is_ascii_hexdigit());
    let times_ok = [&window.not_before, &window.not_after]
        .iter()
        .all(|t| OffsetDateTime::parse(t, &Rfc3339).is_ok());
    if !sm3_ok || !times_ok {
        return Err(ServiceError::invalid(
            "envelope_sm3: 64 hex digits; not_before, not_after: RFC 3339",
        ));
    }
    let window = OpeningWindow {
        envelope_sm3: window.envelope_sm3.to_lowercase(),
        ..window
    };
    svc.store.put_opening(&window).await?;
    svc.audit(
        "-",
        "opening",
        &format!("{} by {}", window.envelope_sm3, rp.id),
        None,
        "ok",
    )
    .await;
    Ok(Json(serde_json::json!({"ok": true})))
}
