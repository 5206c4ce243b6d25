//! The phone's client for the co-signing service: it runs the phone's half
//! of each two-party round, makes the PIN proof, and seals every body to the
//! service key pinned at enrolment. Nothing it sends or receives outside the
//! channel carries a share, a proof, `Q1`, `s1`, `T1` or `T2`.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use bzt_crypto::two_party::channel::seal_request;
use bzt_crypto::two_party::{
    self, point_from_hex, point_to_hex, BlindedDecryption, PhoneKeygen, PhoneSigning, PinProof,
    PinStatement, SchnorrProof,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sm2::dsa::Signature;
use sm2::{NonZeroScalar, ProjectivePoint};

use crate::grants::{Action, GrantRequest};
use crate::wire::{
    channel_aad, AcceptAnswer, AcceptCall, AuditList, CertificateInfo, Context, DecryptAnswer,
    DecryptRequest, Delegate, EnrolAnswer, EnrolRequest, ErrorBody, GrantCall, GrantList,
    GrantPackage, GrantRef, Info, KeyStatus, OpeningWindow, PinProofWire, SealedAnswer, SealedBody,
    SignAnswer, SignRequest,
};

/// Why a call to the service failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the co-signing service could not be reached: {0}")]
    Http(#[from] reqwest::Error),
    /// The service refused; `code` is stable (see docs/key-splitting.md).
    #[error("the co-signing service refused ({status} {code}): {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    #[error("two-party computation failed: {0}")]
    Crypto(#[from] two_party::Error),
    #[error("the co-signing service answered something unexpected: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The service's error code, if it refused.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Refused { code, .. } => Some(code),
            _ => None,
        }
    }
}

pub type Result<T> = core::result::Result<T, ClientError>;

/// What enrolment leaves the phone with. Store `d1` only masked by the PIN
/// (`MaskedShare::mask`), and `P1`/`P2` nowhere.
pub struct Enrollment {
    pub key_id: String,
    pub d1: NonZeroScalar,
    pub joint_public_key: ProjectivePoint,
}

/// A client of one co-signing service, pinned to its channel key.
#[derive(Clone)]
pub struct CosignerClient {
    http: reqwest::Client,
    base_url: String,
    service_key: ProjectivePoint,
}

impl CosignerClient {
    /// A client for `base_url` whose channel key is `service_key_hex` (as
    /// stored in the phone's identity at enrolment).
    pub fn new(base_url: &str, service_key_hex: &str) -> Result<Self> {
        let service_key = point_from_hex(service_key_hex)?;
        Ok(Self {
            http: http_client()?,
            base_url: base_url.trim_end_matches('/').to_owned(),
            service_key,
        })
    }

    /// Fetches `GET /v1/info` and pins the key it names (trust on first use,
    /// at enrolment; later clients are built with [`Self::new`]).
    pub async fn discover(base_url: &str) -> Result<Self> {
        let http = http_client()?;
        let base_url = base_url.trim_end_matches('/').to_owned();
        let info: Info = answer(http.get(format!("{base_url}/v1/info")).send().await?).await?;
        let service_key = point_from_hex(&info.service_key)?;
        Ok(Self {
            http,
            base_url,
            service_key,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The pinned channel key, hex `04‖X‖Y`: keep it in the phone's identity.
    pub fn service_key_hex(&self) -> String {
        point_to_hex(&self.service_key)
    }

    /// Key generation with the service: returns `d1` and the joint key.
    pub async fn enroll(&self, label: &str, enrolment_token: Option<&str>) -> Result<Enrollment> {
        let phone = PhoneKeygen::start()?;
        let request = EnrolRequest {
            p1: point_to_hex(phone.p1()),
            proof1: phone.proof()?.to_hex(),
            label: label.to_owned(),
        };
        let answer: EnrolAnswer = self.sealed("/v1/keys", &request, enrolment_token).await?;
        let p2 = point_from_hex(&answer.p2)?;
        let proof2 = SchnorrProof::from_hex(&answer.proof2)?;
        let (d1, joint_public_key) = phone.finish(&p2, &proof2)?;
        Ok(Enrollment {
            key_id: answer.key_id,
            d1,
            joint_public_key,
        })
    }

    /// Co-signs `tbs` (the bytes the broker holds for `context`; the service
    /// fetches them itself) and returns a signature verified under `joint`.
    /// `d1` is the unmasked share: with a wrong PIN the service refuses.
    pub async fn sign(
        &self,
        key_id: &str,
        d1: &NonZeroScalar,
        joint: &ProjectivePoint,
        context: &Context,
        tbs: &[u8],
    ) -> Result<Signature> {
        self.sign_bytes(key_id, d1, joint, context, tbs, None).await
    }

    /// Co-signs `DER(TBS_Sign)` of a seal signature for a seal session or seal
    /// request (`context`). The phone builds it around its seal; the service
    /// checks it against the hash and `propertyInfo` the broker holds for
    /// `context` before signing, so it signs no `TBS_Sign` nobody asked for.
    pub async fn sign_seal(
        &self,
        key_id: &str,
        d1: &NonZeroScalar,
        joint: &ProjectivePoint,
        context: &Context,
        tbs_sign_der: &[u8],
    ) -> Result<Signature> {
        self.sign_bytes(
            key_id,
            d1,
            joint,
            context,
            tbs_sign_der,
            Some(B64.encode(tbs_sign_der)),
        )
        .await
    }

    async fn sign_bytes(
        &self,
        key_id: &str,
        d1: &NonZeroScalar,
        joint: &ProjectivePoint,
        context: &Context,
        tbs: &[u8],
        seal_tbs_b64: Option<String>,
    ) -> Result<Signature> {
        let phone = PhoneSigning::start()?;
        let pin_proof = pin_proof(d1, key_id, "sign", context, phone.q1())?;
        let request = SignRequest {
            context: context.clone(),
            q1: point_to_hex(phone.q1()),
            pin_proof,
            seal_tbs_b64,
        };
        let answer: SignAnswer = self
            .sealed(&format!("/v1/keys/{key_id}/sign"), &request, None)
            .await?;
        let r = hex::decode(&answer.r).map_err(|_| ClientError::Protocol("r is not hex".into()))?;
        let s1 =
            hex::decode(&answer.s1).map_err(|_| ClientError::Protocol("s1 is not hex".into()))?;
        Ok(phone.finish(d1, joint, tbs, &r, &s1)?)
    }

    /// Blinded co-decryption of a GM/T 0009 DER ciphertext sealed to the
    /// joint key (an envelope's `key_b64`) for a `decrypt` session.
    pub async fn decrypt(
        &self,
        key_id: &str,
        d1: &NonZeroScalar,
        context: &Context,
        ciphertext_der: &[u8],
    ) -> Result<Vec<u8>> {
        let phone = BlindedDecryption::start_der(ciphertext_der)?;
        let pin_proof = pin_proof(d1, key_id, "decrypt", context, phone.t1())?;
        let request = DecryptRequest {
            context: context.clone(),
            t1: point_to_hex(phone.t1()),
            pin_proof,
        };
        let answer: DecryptAnswer = self
            .sealed(&format!("/v1/keys/{key_id}/decrypt"), &request, None)
            .await?;
        let t2 = point_from_hex(&answer.t2)?;
        Ok(phone.finish(d1, &t2)?)
    }

    /// `POST /v1/admin/keys/{key_id}/{action}` (`freeze`, `unfreeze`,
    /// `revoke`, `unlock`) with the service's admin token.
    pub async fn admin(&self, admin_token: &str, key_id: &str, action: &str) -> Result<KeyStatus> {
        let url = format!("{}/v1/admin/keys/{key_id}/{action}", self.base_url);
        answer(self.http.post(url).bearer_auth(admin_token).send().await?).await
    }

    /// `GET /v1/admin/keys/{key_id}`.
    pub async fn key_status(&self, admin_token: &str, key_id: &str) -> Result<KeyStatus> {
        let url = format!("{}/v1/admin/keys/{key_id}", self.base_url);
        answer(self.http.get(url).bearer_auth(admin_token).send().await?).await
    }

    /// `GET /v1/audit` (admin token).
    pub async fn audit(&self, admin_token: &str) -> Result<AuditList> {
        let url = format!("{}/v1/audit", self.base_url);
        answer(self.http.get(url).bearer_auth(admin_token).send().await?).await
    }

    /// `POST /v1/openings` with a relying party's token (the opening hall).
    pub async fn register_opening(&self, rp_token: &str, window: &OpeningWindow) -> Result<()> {
        let url = format!("{}/v1/openings", self.base_url);
        let resp = self
            .http
            .post(url)
            .bearer_auth(rp_token)
            .json(window)
            .send()
            .await?;
        let _: serde_json::Value = answer(resp).await?;
        Ok(())
    }

    /// 企业证书授权: grants the certificate of `key_id` (the administrator's
    /// share `d1`) to `member` until `end` (RFC 3339). Returns the service's
    /// answer and the package for the member's phone, whose share is sealed
    /// to `member_key` (the member's receiving key).
    #[allow(clippy::too_many_arguments)]
    pub async fn grant(
        &self,
        key_id: &str,
        d1: &NonZeroScalar,
        joint: &ProjectivePoint,
        member: Delegate,
        certificate: CertificateInfo,
        end: &str,
        member_key: &ProjectivePoint,
    ) -> Result<(GrantList, GrantPackage)> {
        let grant_id = uuid::Uuid::new_v4().simple().to_string();
        let dealer = two_party::ReshareDealer::start()?;
        let request = GrantRequest {
            grant_id: Some(grant_id.clone()),
            member: Some(member),
            certificate: Some(certificate),
            not_after: Some(end.to_owned()),
            ..self.grant_request(Action::Grant, key_id)?
        };
        let list = self
            .grant_call(
                key_id,
                d1,
                joint,
                &request,
                Some(hex::encode(dealer.service_factor())),
            )
            .await?;
        let share = hex::encode(dealer.member_share(d1));
        let (sealed, _) = seal_request(
            member_key,
            format!("grant:{grant_id}").as_bytes(),
            share.as_bytes(),
        )?;
        let package = GrantPackage {
            grant_id,
            cosigner_url: self.base_url.clone(),
            service_key: self.service_key_hex(),
            public_key: point_to_hex(joint),
            end: end.to_owned(),
            share: SealedBody::from_sealed(&sealed),
        };
        Ok((list, package))
    }

    /// Changes a grant's end time (更改证书授权结束时间).
    pub async fn extend(
        &self,
        key_id: &str,
        d1: &NonZeroScalar,
        joint: &ProjectivePoint,
        grant_id: &str,
        end: &str,
    ) -> Result<GrantList> {
        self.change_grant(key_id, d1, joint, Action::Extend, grant_id, Some(end))
            .await
    }

    /// Takes a grant back (证书解除授权).
    pub async fn ungrant(
        &self,
        key_id: &str,
        d1: &NonZeroScalar,
        joint: &ProjectivePoint,
        grant_id: &str,
    ) -> Result<GrantList> {
        self.change_grant(key_id, d1, joint, Action::Ungrant, grant_id, None)
            .await
    }

    /// `action` on one existing grant (with its new end, for `extend`).
    async fn change_grant(
        &self,
        key_id: &str,
        d1: &NonZeroScalar,
        joint: &ProjectivePoint,
        action: Action,
        grant_id: &str,
        not_after: Option<&str>,
    ) -> Result<GrantList> {
        let request = GrantRequest {
            grant_id: Some(grant_id.to_owned()),
            not_after: not_after.map(str::to_owned),
            ..self.grant_request(action, key_id)?
        };
        self.grant_call(key_id, d1, joint, &request, None).await
    }

    /// The grants of this certificate and their reclaim records.
    pub async fn grants(
        &self,
        key_id: &str,
        d1: &NonZeroScalar,
        joint: &ProjectivePoint,
    ) -> Result<GrantList> {
        let request = self.grant_request(Action::List, key_id)?;
        self.grant_call(key_id, d1, joint, &request, None).await
    }

    fn grant_request(&self, action: Action, key_id: &str) -> Result<GrantRequest> {
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).map_err(|_| two_party::Error::Random)?;
        Ok(GrantRequest {
            action,
            key_id: key_id.to_owned(),
            grant_id: None,
            member: None,
            certificate: None,
            not_after: None,
            nonce: hex::encode(nonce),
            issued_at: time::OffsetDateTime::now_utc().unix_timestamp(),
        })
    }

    /// Co-signs the request with the administrator's share, then sends it.
    async fn grant_call(
        &self,
        key_id: &str,
        d1: &NonZeroScalar,
        joint: &ProjectivePoint,
        request: &GrantRequest,
        factor: Option<String>,
    ) -> Result<GrantList> {
        let text = request.to_text();
        if GrantRequest::parse(text.as_bytes()).is_err() {
            return Err(ClientError::Protocol(
                "a name, device or certificate field holds a line break or is empty".into(),
            ));
        }
        let tbs_b64 = B64.encode(text.as_bytes());
        let context = Context::Grant(GrantRef {
            tbs_b64: tbs_b64.clone(),
        });
        let signature = self
            .sign(key_id, d1, joint, &context, text.as_bytes())
            .await?;
        let call = GrantCall {
            request_b64: tbs_b64,
            signature_b64: B64.encode(signature.to_der().as_bytes()),
            factor,
        };
        self.sealed(&format!("/v1/keys/{key_id}/grants"), &call, None)
            .await
    }

    /// The member's phone: opens the package with its receiving key, makes
    /// the share its own with the service, and checks it is a share of the
    /// company key. Mask the result's `d1` with the member's PIN.
    pub async fn accept_grant(
        package: &GrantPackage,
        receiving_key: &two_party::ChannelKey,
    ) -> Result<Enrollment> {
        let client = Self::new(&package.cosigner_url, &package.service_key)?;
        let sealed = package
            .share
            .to_sealed()
            .ok_or_else(|| ClientError::Protocol("the package's share does not parse".into()))?;
        let (dealt, _) = receiving_key
            .open_request(format!("grant:{}", package.grant_id).as_bytes(), &sealed)?;
        let dealt = hex::decode(&dealt)
            .map_err(|_| ClientError::Protocol("the dealt share is not hex".into()))?;
        let member = two_party::MemberAcceptance::start(&dealt)?;
        let call = AcceptCall {
            factor: hex::encode(member.service_factor()),
            proof: member.proof(&package.grant_id)?.to_hex(),
        };
        let answer: AcceptAnswer = client
            .sealed(
                &format!("/v1/grants/{}/accept", package.grant_id),
                &call,
                None,
            )
            .await?;
        let joint = point_from_hex(&package.public_key)?;
        let d1 = member.finish(&point_from_hex(&answer.p2)?, &joint)?;
        Ok(Enrollment {
            key_id: answer.key_id,
            d1,
            joint_public_key: joint,
        })
    }

    /// `GET /v1/admin/grants` (the service's admin token: the operator).
    pub async fn operator_grants(&self, admin_token: &str) -> Result<GrantList> {
        let url = format!("{}/v1/admin/grants", self.base_url);
        answer(self.http.get(url).bearer_auth(admin_token).send().await?).await
    }

    /// `POST /v1/admin/grants/{grant_id}/reclaim` (the operator).
    pub async fn operator_reclaim(&self, admin_token: &str, grant_id: &str) -> Result<GrantList> {
        let url = format!("{}/v1/admin/grants/{grant_id}/reclaim", self.base_url);
        answer(self.http.post(url).bearer_auth(admin_token).send().await?).await
    }

    async fn sealed<Q: Serialize, A: DeserializeOwned>(
        &self,
        path: &str,
        request: &Q,
        bearer: Option<&str>,
    ) -> Result<A> {
        let aad = channel_aad("POST", path);
        let plain =
            serde_json::to_vec(request).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let (sealed, keys) = seal_request(&self.service_key, &aad, &plain)?;
        let mut builder = self
            .http
            .post(format!("{}{path}", self.base_url))
            .json(&SealedBody::from_sealed(&sealed));
        if let Some(token) = bearer {
            builder = builder.bearer_auth(token);
        }
        let body: SealedAnswer = answer(builder.send().await?).await?;
        let sealed = body
            .to_sealed()
            .ok_or_else(|| ClientError::Protocol("a sealed answer that does not parse".into()))?;
        let plain = keys.open_response(&aad, &sealed)?;
        serde_json::from_slice(&plain).map_err(|e| ClientError::Protocol(e.to_string()))
    }
}

fn pin_proof(
    d1: &NonZeroScalar,
    key_id: &str,
    operation: &str,
    context: &Context,
    point: &ProjectivePoint,
) -> Result<PinProofWire> {
    let canonical = context.canonical();
    let statement = PinStatement {
        key_id,
        operation,
        context: &canonical,
        point,
    };
    let proof = PinProof::prove(
        d1,
        &statement,
        time::OffsetDateTime::now_utc().unix_timestamp(),
    )?;
    Ok(PinProofWire {
        nonce: hex::encode(proof.nonce),
        issued_at: proof.issued_at,
        proof: proof.proof.to_hex(),
    })
}

fn http_client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()?)
}

async fn answer<A: DeserializeOwned>(resp: reqwest::Response) -> Result<A> {
    let status = resp.status();
    let bytes = resp.bytes().await?;
    if status.is_success() {
        return serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()));
    }
    match serde_json::from_slice::<ErrorBody>(&bytes) {
        Ok(body) => Err(ClientError::Refused {
            status: status.as_u16(),
            code: body.error.code,
            message: body.error.message,
        }),
        Err(_) => Err(ClientError::Protocol(format!(
            "HTTP {status} without an error body"
        ))),
    }
}

/// What the phone keeps of a split key (the share masked by the PIN, and the
/// pinned service), as JSON. It holds nothing that checks a PIN guess: no
/// `P1`, no `P2`, no MAC; the joint public key alone tests nothing.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SplitKeyFile {
    pub version: u32,
    pub key_id: String,
    pub cosigner_url: String,
    /// The service's channel key, pinned at enrolment.
    pub service_key: String,
    /// The joint public key `P`, hex `04‖X‖Y` (the certificate's key).
    pub public_key: String,
    /// `d1·m mod n`, hex.
    pub masked_share: String,
    pub salt: String,
    pub iterations: u32,
}

impl SplitKeyFile {
    /// Masks the enrolled `d1` under `pin` with the default KDF rounds.
    pub fn new(enrollment: &Enrollment, client: &CosignerClient, pin: &str) -> Result<Self> {
        Self::with_iterations(enrollment, client, pin, two_party::DEFAULT_PIN_ITERATIONS)
    }

    pub fn with_iterations(
        enrollment: &Enrollment,
        client: &CosignerClient,
        pin: &str,
        iterations: u32,
    ) -> Result<Self> {
        let masked = two_party::MaskedShare::mask(&enrollment.d1, pin, iterations)?;
        Ok(Self {
            version: 1,
            key_id: enrollment.key_id.clone(),
            cosigner_url: client.base_url().to_owned(),
            service_key: client.service_key_hex(),
            public_key: point_to_hex(&enrollment.joint_public_key),
            masked_share: hex::encode(masked.masked),
            salt: hex::encode(masked.salt),
            iterations,
        })
    }

    /// `d1` for the right PIN, an unrelated scalar for a wrong one.
    pub fn unmask(&self, pin: &str) -> Result<NonZeroScalar> {
        let bad = |_| ClientError::Protocol("the split key file is damaged".into());
        let masked = two_party::MaskedShare {
            masked: hex::decode(&self.masked_share)
                .map_err(bad)?
                .try_into()
                .map_err(|_| ClientError::Protocol("masked_share: 32 bytes".into()))?,
            salt: hex::decode(&self.salt)
                .map_err(bad)?
                .try_into()
                .map_err(|_| ClientError::Protocol("salt: 16 bytes".into()))?,
            iterations: self.iterations,
        };
        Ok(masked.unmask(pin)?)
    }

    pub fn joint_public_key(&self) -> Result<ProjectivePoint> {
        Ok(point_from_hex(&self.public_key)?)
    }

    /// A client pinned to the service this key was enrolled with.
    pub fn client(&self) -> Result<CosignerClient> {
        CosignerClient::new(&self.cosigner_url, &self.service_key)
    }
}
