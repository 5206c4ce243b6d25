//! The co-signing service's HTTP API, once, for the service and its clients.
//!
//! Points are hex `04‖X‖Y`, scalars 32-byte hex, binary fields base64 in
//! fields ending `_b64`. The bodies of `POST /v1/keys`, `…/sign` and
//! `…/decrypt` travel sealed ([`SealedBody`], [`SealedAnswer`]) to the
//! service key of `GET /v1/info`; the types below are what is inside.
//! Errors are plain `{"error": {"code", "message"}}` ([`ErrorBody`]).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bzt_crypto::two_party::{SealedRequest, SealedResponse};
use serde::{Deserialize, Serialize};
use sm3::{Digest, Sm3};

/// Version of this API, in `GET /v1/info`.
pub const API_VERSION: u32 = 1;

/// `GET /v1/info`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Info {
    /// The service's static channel key; the phone pins it at enrolment.
    pub service_key: String,
    pub version: u32,
}

/// A sealed request body (see `bzt_crypto::two_party::channel`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SealedBody {
    /// Ephemeral public point, hex `04‖X‖Y`.
    pub ephemeral: String,
    pub nonce_b64: String,
    /// Ciphertext followed by its 16-byte SM4-GCM tag.
    pub ciphertext_b64: String,
}

/// A sealed answer (200 only; errors are plain [`ErrorBody`]).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SealedAnswer {
    pub nonce_b64: String,
    pub ciphertext_b64: String,
}

impl SealedBody {
    pub fn from_sealed(sealed: &SealedRequest) -> Self {
        Self {
            ephemeral: hex::encode(&sealed.ephemeral),
            nonce_b64: B64.encode(sealed.nonce),
            ciphertext_b64: B64.encode(&sealed.ciphertext),
        }
    }

    pub fn to_sealed(&self) -> Option<SealedRequest> {
        Some(SealedRequest {
            ephemeral: hex::decode(&self.ephemeral).ok()?,
            nonce: B64.decode(&self.nonce_b64).ok()?.try_into().ok()?,
            ciphertext: B64.decode(&self.ciphertext_b64).ok()?,
        })
    }
}

impl SealedAnswer {
    pub fn from_sealed(sealed: &SealedResponse) -> Self {
        Self {
            nonce_b64: B64.encode(sealed.nonce),
            ciphertext_b64: B64.encode(&sealed.ciphertext),
        }
    }

    pub fn to_sealed(&self) -> Option<SealedResponse> {
        Some(SealedResponse {
            nonce: B64.decode(&self.nonce_b64).ok()?.try_into().ok()?,
            ciphertext: B64.decode(&self.ciphertext_b64).ok()?,
        })
    }
}

/// The associated data of a sealed exchange: method and path, so a sealed
/// body cannot be replayed against another endpoint or key.
pub fn channel_aad(method: &str, path: &str) -> Vec<u8> {
    format!("{method} {path}").into_bytes()
}

/// Inside `POST /v1/keys`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrolRequest {
    pub p1: String,
    pub proof1: String,
    /// Shown to the app owner in the admin API and audit (e.g. the holder's name).
    pub label: String,
}

/// Answer to [`EnrolRequest`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrolAnswer {
    pub key_id: String,
    pub p2: String,
    pub proof2: String,
}

/// Which request of the broker a co-signature answers. The service fetches
/// the bytes to sign from the broker (or, for `csr`, checks them) itself.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Context {
    Session(SessionRef),
    Conversation(ConversationRef),
    /// Enrolment only: a PKCS#10 `CertificationRequestInfo` (DER) whose
    /// public key is the joint key.
    Csr(CsrRef),
    /// An administrator's request about grants of its certificate
    /// ([`crate::grants::GrantRequest`] text), co-signed with the
    /// administrator's own share: never with a member's.
    Grant(GrantRef),
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GrantRef {
    pub tbs_b64: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SessionRef {
    pub id: String,
    /// The phone's token for that session: the broker's proof that this phone
    /// claimed it. Relayed to the broker, never stored.
    pub phone_token: String,
    /// Set by the service, never taken from the phone: the member whose
    /// granted share co-signs (企业证书授权), relayed to the broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate: Option<Delegate>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConversationRef {
    pub id: String,
    pub request_id: String,
    pub phone_token: String,
    /// As in [`SessionRef`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate: Option<Delegate>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CsrRef {
    pub tbs_b64: String,
}

impl Context {
    /// The context line the PIN proof binds (no secrets: the phone token is
    /// proven to the broker, not hashed into the proof).
    pub fn canonical(&self) -> String {
        match self {
            Context::Session(s) => format!("session:{}", s.id),
            Context::Conversation(c) => format!("conversation:{}:{}", c.id, c.request_id),
            Context::Csr(c) => {
                let tbs = B64.decode(&c.tbs_b64).unwrap_or_default();
                format!("csr:{}", hex::encode(Sm3::digest(&tbs)))
            }
            Context::Grant(g) => {
                let tbs = B64.decode(&g.tbs_b64).unwrap_or_default();
                format!("grant:{}", hex::encode(Sm3::digest(&tbs)))
            }
        }
    }
}

/// A PIN proof on the wire.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PinProofWire {
    /// 16 random bytes, hex.
    pub nonce: String,
    /// Unix seconds when the proof was made.
    pub issued_at: i64,
    /// Schnorr proof `R ‖ z`, hex.
    pub proof: String,
}

/// Inside `POST /v1/keys/{key_id}/sign`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignRequest {
    pub context: Context,
    pub q1: String,
    pub pin_proof: PinProofWire,
    /// For a seal session or seal request only: `DER(TBS_Sign)` as the phone
    /// built it around its seal. The service signs these bytes only when they
    /// carry the `dataHash` and `propertyInfo` the broker holds for `context`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal_tbs_b64: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignAnswer {
    pub r: String,
    pub s1: String,
}

/// Inside `POST /v1/keys/{key_id}/decrypt`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecryptRequest {
    pub context: Context,
    pub t1: String,
    pub pin_proof: PinProofWire,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecryptAnswer {
    pub t2: String,
}

/// `GET /v1/admin/keys/{key_id}` and the answer of every admin action.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KeyStatus {
    pub key_id: String,
    pub label: String,
    /// `active`, `frozen` or `revoked`.
    pub state: String,
    /// Wrong PIN proofs in a row; at 5 the key is locked until unlocked.
    pub failures: u32,
    pub locked: bool,
    /// The joint public key, hex `04‖X‖Y`.
    pub public_key: String,
    pub created_at: String,
}

/// `POST /v1/openings` (a relying party's credential): the opening window of
/// an envelope, bound to the SM3 of its header, which the service then
/// enforces whatever the broker says.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OpeningWindow {
    /// Lower-case hex SM3 of the envelope header's JSON bytes (the
    /// challenge's `envelope:` line).
    pub envelope_sm3: String,
    pub not_before: String,
    pub not_after: String,
}

/// One line of `GET /v1/audit`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    pub at: String,
    /// Which service node answered.
    pub node: String,
    pub key_id: String,
    /// `enrol`, `sign`, `decrypt`, `freeze`, `unfreeze`, `revoke`, `unlock`.
    pub operation: String,
    /// The context line ([`Context::canonical`]) or the admin action.
    pub context: String,
    /// SM3 of the bytes co-signed, hex, for `sign`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tbs_sm3: Option<String>,
    /// `ok` or the error code.
    pub outcome: String,
    /// The member who used a granted share (企业证书授权), if it was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate: Option<Delegate>,
}

/// A member holding a granted share of a company certificate: who signed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Delegate {
    pub name: String,
    /// The member's phone (its `device.json` id).
    pub device: String,
}

/// Inside `POST /v1/keys/{key_id}/grants` (sealed): an administrator's
/// request, signed with the certificate's key by the administrator's phone
/// and the service together (context `{"grant": {"tbs_b64"}}`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantCall {
    /// The request text ([`crate::grants::GrantRequest`]), base64.
    pub request_b64: String,
    /// The SM2 signature over it, DER, base64.
    pub signature_b64: String,
    /// `grant` only: the re-sharing factor `t`, 32-byte hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<String>,
}

/// One authorisation of a company certificate to a member.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Also the member's key id on this service.
    pub grant_id: String,
    /// The administrator's key (the certificate's owner share).
    pub granted_by: String,
    /// The company key, hex `04‖X‖Y`.
    pub public_key: String,
    pub certificate: CertificateInfo,
    pub member: Delegate,
    pub start: String,
    pub end: String,
    /// `pending` (not yet accepted by the member), `active`, `reclaimed`.
    pub status: String,
    /// The state of the administrator's key that lends the certificate, when
    /// it is not `active`: `frozen` (挂失: the member cannot co-sign until it
    /// is unfrozen) or `revoked` (注销: the grant was reclaimed with it).
    /// Worked out when listed, not stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lender_state: Option<String>,
    /// The administrator's last request about this grant, and its
    /// signature: anyone can check it against the company certificate.
    pub authorisation: Authorisation,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Authorisation {
    pub request_b64: String,
    /// SM2 signature, DER, base64 (ID `1234567812345678`).
    pub signature_b64: String,
}

/// What the administrator's phone says of its certificate.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CertificateInfo {
    /// Serial number, hex.
    pub serial: String,
    /// The issuer (CA).
    pub ca: String,
    /// 证书类型, e.g. `SM2 企业证书`.
    pub certificate_type: String,
}

/// 证书收回记录: a grant taken back, by whom.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReclaimRecord {
    pub grant_id: String,
    pub certificate: CertificateInfo,
    pub member: Delegate,
    pub at: String,
    /// `administrator`, `operator` or `automatic`.
    pub actor: String,
    /// Why, when it was not the actor's own choice: `lender_revoked` (the
    /// administrator's key that lent the certificate was revoked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Which service node wrote it.
    pub node: String,
}

/// Answer of `POST /v1/keys/{key_id}/grants` (sealed) and of the
/// operator's `GET /v1/admin/grants`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantList {
    /// The grant the request was about, as it now stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<Grant>,
    pub grants: Vec<Grant>,
    pub reclaims: Vec<ReclaimRecord>,
}

/// Inside `POST /v1/grants/{grant_id}/accept` (sealed): the member's phone
/// re-randomises the share it was dealt and proves it holds the result.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptCall {
    /// `u`, 32-byte hex.
    pub factor: String,
    /// Proof of knowledge of `d1''⁻¹` for `P1''`, `R ‖ z` hex.
    pub proof: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptAnswer {
    pub key_id: String,
    /// `P2'' = d2''⁻¹·G`: the member checks `d1''⁻¹·P2'' − G` is the company key.
    pub p2: String,
    pub end: String,
}

/// What the administrator's phone hands the member's phone (a file, a QR
/// code): the member's share `d1·t`, sealed to the member's receiving key.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GrantPackage {
    pub grant_id: String,
    pub cosigner_url: String,
    pub service_key: String,
    pub public_key: String,
    pub end: String,
    /// [`SealedBody`] to the member's receiving key, associated data
    /// `grant:<grant_id>`; inside, `d1·t` as 32-byte hex.
    pub share: SealedBody,
}

/// `GET /v1/audit`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditList {
    pub records: Vec<AuditRecord>,
}

/// Every non-2xx answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

/// The broker's `POST /v1/cosign/context` request: the context the phone
/// named, as the service relays it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum BrokerContextRequest {
    Session(SessionRef),
    Conversation(ConversationRef),
}

/// The broker's answer: what the phone is answering, while it is pending.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BrokerContext {
    /// The session kind (`login`, `sign`, `decrypt`…) or `conversation`.
    pub kind: String,
    /// Exactly the bytes the signature must cover.
    pub tbs_b64: String,
    pub expires_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opening: Option<Opening>,
    /// A seal session or seal request: what the `TBS_Sign` must carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<SealAsk>,
}

/// `seal` of the broker's context answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SealAsk {
    /// SM3 of the protected data: `TBS_Sign.dataHash`.
    pub data_hash_b64: String,
    /// `TBS_Sign.propertyInfo`.
    pub property_info: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Opening {
    pub not_before: String,
    pub not_after: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_have_the_agreed_json_shapes() {
        let s: Context =
            serde_json::from_str(r#"{"session": {"id": "s1", "phone_token": "t"}}"#).unwrap();
        assert_eq!(s.canonical(), "session:s1");
        let c: Context = serde_json::from_str(
            r#"{"conversation": {"id": "c1", "request_id": "r1", "phone_token": "t"}}"#,
        )
        .unwrap();
        assert_eq!(c.canonical(), "conversation:c1:r1");
        let csr: Context = serde_json::from_str(r#"{"csr": {"tbs_b64": "AAE="}}"#).unwrap();
        assert!(csr.canonical().starts_with("csr:"));
        assert!(serde_json::from_str::<Context>(r#"{"digest": {"e": "00"}}"#).is_err());
        assert!(serde_json::from_str::<Context>(
            r#"{"session": {"id": "s1", "phone_token": "t", "tbs_b64": "AA=="}}"#
        )
        .is_err());
    }
}
