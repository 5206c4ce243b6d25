//! A split identity (密钥拆分): the certificate's SM2 key exists nowhere whole. The phone
//! keeps one share `d1`, masked by its PIN; a co-signing service keeps the other, and every
//! signature and decryption is a two-party computation with it (docs/key-splitting.md).
//!
//! The identity directory holds:
//! - `cert.pem`: the certificate of the joint key (and any intermediates after it);
//! - `split-key.json` ([`SplitKeyFile`]): the key id at the service, the service's URL and
//!   pinned channel key, the joint public key, the masked share with its salt and PBKDF2 rounds;
//! - `device.json`: the device presented in claims.
//!
//! It holds no whole private key, no `d1`, no `P1` and nothing else that tells a right PIN
//! from a wrong one: a wrong PIN unmasks a wrong share, which only the service's check of the
//! PIN proof can detect (five in a row lock the share).
//!
//! Relying parties and the broker see no difference: the certificate, the signature (DER SM2
//! over SM3, ID `1234567812345678`) and the re-wrapped key are those of a whole key.

use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bzt_cosigner::wire::{Context, ConversationRef, CsrRef, SessionRef};
use bzt_cosigner::{CosignerClient, SplitKeyFile};
use sm2::{NonZeroScalar, ProjectivePoint, PublicKey};
use x509_cert::der::asn1::BitString;
use x509_cert::der::{Decode, Encode, EncodePem};
use x509_cert::name::Name;
use x509_cert::request::{CertReq, CertReqInfo, Version};
use x509_cert::spki::{AlgorithmIdentifierOwned, EncodePublicKey, SubjectPublicKeyInfoOwned};
use x509_cert::Certificate;

use crate::claim::Claimed;
use crate::client::{check_approval, signed_approval_body, ApproveExtras, Phone};
use crate::conversation::SignRequest;
use crate::envelope::{recipients_with_own, DecryptOutcome, DecryptTask};
use crate::error::Error;
use crate::identity::Device;
use crate::session::CompleteAnswer;

/// The certificate file of an identity directory.
pub const CERT_FILE: &str = "cert.pem";
/// The split-key file of an identity directory.
pub const SPLIT_KEY_FILE: &str = "split-key.json";
/// The device file of an identity directory.
pub const DEVICE_FILE: &str = "device.json";
/// OID of SM2 signatures with SM3 (GM/T 0006).
const SM2_WITH_SM3: &str = "1.2.156.10197.1.501";

/// A phone's split identity, as loaded from its directory. It can do nothing without the PIN
/// ([`SplitIdentity::unlock`]).
#[derive(Clone)]
pub struct SplitIdentity {
    certificate_pem: String,
    certificate: Certificate,
    /// Intermediates sent as `chain_pem`.
    pub chain_pem: Vec<String>,
    /// The certificate's public key: the joint key `P`.
    pub(crate) joint: ProjectivePoint,
    pub(crate) file: SplitKeyFile,
    device: Device,
}

impl std::fmt::Debug for SplitIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SplitIdentity")
            .field("serial", &self.serial_hex())
            .field("key_id", &self.file.key_id)
            .field("cosigner_url", &self.file.cosigner_url)
            .finish_non_exhaustive()
    }
}

impl SplitIdentity {
    /// Loads `dir` (`cert.pem`, `split-key.json`).
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, Error> {
        let dir = dir.as_ref();
        let read = |name: &str| {
            let p = dir.join(name);
            std::fs::read_to_string(&p)
                .map_err(|e| Error::Identity(format!("cannot read {}: {e}", p.display())))
        };
        let file: SplitKeyFile = serde_json::from_str(&read(SPLIT_KEY_FILE)?)
            .map_err(|e| Error::Identity(format!("{SPLIT_KEY_FILE} is not a split key: {e}")))?;
        if file.version != 1 {
            return Err(Error::Identity(format!(
                "{SPLIT_KEY_FILE} has version {}; this phone reads version 1",
                file.version
            )));
        }
        let device: Device = serde_json::from_str(&read(DEVICE_FILE)?)
            .map_err(|e| Error::Identity(format!("{DEVICE_FILE}: {e}")))?;
        Self::from_parts(&read(CERT_FILE)?, file, device)
    }

    pub(crate) fn from_parts(
        cert_pem: &str,
        file: SplitKeyFile,
        device: Device,
    ) -> Result<Self, Error> {
        let mut certs = bzt_crypto::pem_certificates(cert_pem)?.into_iter();
        let certificate = certs
            .next()
            .ok_or_else(|| Error::Identity(format!("{CERT_FILE} has no CERTIFICATE block")))?;
        let to_pem = |c: &Certificate| {
            c.to_pem(x509_cert::der::pem::LineEnding::LF)
                .map_err(|e| Error::Identity(format!("cannot re-encode a certificate: {e}")))
        };
        let chain_pem = certs.map(|c| to_pem(&c)).collect::<Result<Vec<_>, _>>()?;
        let joint = bzt_crypto::cert_public_key(&certificate)?.to_projective();
        if bzt_crypto::two_party::point_to_hex(&joint) != file.public_key.to_ascii_lowercase() {
            return Err(Error::Identity(format!(
                "{CERT_FILE} is not the certificate of the split key in {SPLIT_KEY_FILE}"
            )));
        }
        Ok(Self {
            certificate_pem: to_pem(&certificate)?,
            joint,
            certificate,
            chain_pem,
            file,
            device,
        })
    }

    /// Writes the identity to `dir` (created if missing; files readable by the owner only).
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<(), Error> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Identity(format!("cannot create {}: {e}", dir.display())))?;
        let mut cert = self.certificate_pem.clone();
        for c in &self.chain_pem {
            cert.push_str(c);
        }
        let json = serde_json::to_string_pretty(&self.file)
            .map_err(|e| Error::Identity(format!("cannot encode {SPLIT_KEY_FILE}: {e}")))?;
        let device = serde_json::to_string_pretty(&self.device)
            .map_err(|e| Error::Identity(format!("cannot encode {DEVICE_FILE}: {e}")))?;
        write_private(&dir.join(CERT_FILE), &cert)?;
        write_private(&dir.join(SPLIT_KEY_FILE), &json)?;
        write_private(&dir.join(DEVICE_FILE), &device)
    }

    /// The certificate, PEM (one block), sent as `certificate_pem`.
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    pub fn certificate(&self) -> &Certificate {
        &self.certificate
    }

    /// The serial in the broker's form (lowercase hex, no leading zeros).
    pub fn serial_hex(&self) -> String {
        bzt_crypto::serial_hex(&self.certificate)
    }

    /// The key's id at the co-signing service (for the app owner's admin calls).
    pub fn key_id(&self) -> &str {
        &self.file.key_id
    }

    pub fn cosigner_url(&self) -> &str {
        &self.file.cosigner_url
    }

    /// The device presented in claims.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Replaces the device presented in claims.
    pub fn with_device(mut self, id: impl Into<String>, name: impl Into<String>) -> Self {
        self.device = Device {
            id: id.into(),
            name: name.into(),
        };
        self
    }

    /// Unmasks the share with `pin`. Always succeeds for a well-formed file: whether the PIN
    /// was right shows only when the service checks the first PIN proof.
    pub fn unlock(&self, pin: &str) -> Result<UnlockedSplit<'_>, Error> {
        let d1 = self.file.unmask(pin)?;
        let client = CosignerClient::new(&self.file.cosigner_url, &self.file.service_key)?;
        Ok(UnlockedSplit {
            identity: self,
            d1,
            client,
        })
    }
}

/// A split identity with its share unmasked for a while (drop it when done: the share is a
/// `NonZeroScalar`, wiped on drop by the `sm2` crate's zeroize support).
pub struct UnlockedSplit<'a> {
    pub(crate) identity: &'a SplitIdentity,
    pub(crate) d1: NonZeroScalar,
    pub(crate) client: CosignerClient,
}

impl UnlockedSplit<'_> {
    pub fn identity(&self) -> &SplitIdentity {
        self.identity
    }

    /// Co-signs a claimed session's `tbs`; the service fetches the same bytes from the broker
    /// with the relayed phone token, and signs nothing else. DER signature.
    pub async fn sign_session(&self, claimed: &Claimed) -> Result<Vec<u8>, Error> {
        let context = Context::Session(SessionRef {
            id: claimed.session_id.clone(),
            phone_token: claimed.phone_token.expose().to_owned(),
            delegate: None,
        });
        self.co_sign(&context, &claimed.tbs).await
    }

    /// Co-signs a conversation request (会话签章) of conversation `conversation_id`, whose
    /// phone token is `phone_token`. DER signature.
    pub async fn sign_conversation_request(
        &self,
        conversation_id: &str,
        phone_token: &str,
        request: &SignRequest,
    ) -> Result<Vec<u8>, Error> {
        let context = Context::Conversation(ConversationRef {
            id: conversation_id.to_owned(),
            request_id: request.request_id.clone(),
            phone_token: phone_token.to_owned(),
            delegate: None,
        });
        self.co_sign(&context, &request.tbs).await
    }

    /// Stamps `ask` with `seal` (扫码签章 with a seal) for `context` at `now`: builds
    /// `TBS_Sign` around the seal and the asked hash, has it co-signed (the service checks it
    /// against what the broker holds for `context`), and returns the `SES_Signature`, DER.
    pub async fn stamp(
        &self,
        context: &Context,
        ask: &crate::seals::SealAsk,
        seal: &bzt_seal::Seal,
        now: time::OffsetDateTime,
    ) -> Result<Vec<u8>, Error> {
        let cert_der = self
            .identity
            .certificate
            .to_der()
            .map_err(|e| Error::Identity(format!("cannot encode the certificate: {e}")))?;
        let prepared = bzt_seal::prepare_signature(
            seal.der(),
            &cert_der,
            &ask.data_hash,
            &ask.property_info,
            now,
        )
        .map_err(|e| Error::Refused(format!("cannot stamp with this seal: {e}")))?;
        let signature = self
            .client
            .sign_seal(
                &self.identity.file.key_id,
                &self.d1,
                &self.identity.joint,
                context,
                prepared.signed_bytes(),
            )
            .await?;
        prepared
            .finish(signature.to_der().as_bytes())
            .map_err(|e| Error::Refused(format!("cannot stamp with this seal: {e}")))
    }

    /// Stamps a claimed seal session with `seal`.
    pub async fn stamp_session(
        &self,
        claimed: &Claimed,
        seal: &bzt_seal::Seal,
    ) -> Result<Vec<u8>, Error> {
        let ask = crate::seals::seal_ask(claimed)?;
        let context = Context::Session(SessionRef {
            id: claimed.session_id.clone(),
            phone_token: claimed.phone_token.expose().to_owned(),
            delegate: None,
        });
        self.stamp(&context, ask, seal, time::OffsetDateTime::now_utc())
            .await
    }

    /// Stamps a conversation's seal request with `seal`.
    pub async fn stamp_conversation_request(
        &self,
        conversation_id: &str,
        phone_token: &str,
        request: &SignRequest,
        seal: &bzt_seal::Seal,
    ) -> Result<Vec<u8>, Error> {
        let ask = request
            .seal
            .as_ref()
            .ok_or_else(|| Error::Refused("this request does not ask for a seal".into()))?;
        let context = Context::Conversation(ConversationRef {
            id: conversation_id.to_owned(),
            request_id: request.request_id.clone(),
            phone_token: phone_token.to_owned(),
            delegate: None,
        });
        self.stamp(&context, ask, seal, time::OffsetDateTime::now_utc())
            .await
    }

    async fn co_sign(&self, context: &Context, tbs: &[u8]) -> Result<Vec<u8>, Error> {
        let signature = self
            .client
            .sign(
                &self.identity.file.key_id,
                &self.d1,
                &self.identity.joint,
                context,
                tbs,
            )
            .await?;
        Ok(signature.to_der().to_vec())
    }

    /// Blinded co-decryption of the phone's entry of a `decrypt` session's envelope.
    pub async fn decrypt_content_key(
        &self,
        claimed: &Claimed,
        wrapped: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let context = Context::Session(SessionRef {
            id: claimed.session_id.clone(),
            phone_token: claimed.phone_token.expose().to_owned(),
            delegate: None,
        });
        Ok(self
            .client
            .decrypt(&self.identity.file.key_id, &self.d1, &context, wrapped)
            .await?)
    }
}

impl Phone {
    /// [`Phone::approve`] with a split key: the same checks, then the signature co-signed
    /// with the service, then the same completion.
    pub async fn approve_split(
        &self,
        claimed: &Claimed,
        key: &UnlockedSplit<'_>,
        extras: ApproveExtras,
    ) -> Result<CompleteAnswer, Error> {
        crate::client::refuse_seal_session(claimed)?;
        check_approval(claimed, &extras)?;
        let signature = key.sign_session(claimed).await?;
        let body = signed_approval_body(
            key.identity.certificate_pem(),
            &key.identity.chain_pem,
            &signature,
            &extras,
        )?;
        self.complete_raw(claimed, &body).await
    }

    /// [`Phone::approve_with_seal`] with a split key: the `SES_Signature` is co-signed with the
    /// service, which signs the `TBS_Sign` only if it carries this session's hash.
    pub async fn approve_with_seal_split(
        &self,
        claimed: &Claimed,
        key: &UnlockedSplit<'_>,
        seal: &bzt_seal::Seal,
        extras: ApproveExtras,
    ) -> Result<CompleteAnswer, Error> {
        crate::seals::seal_ask(claimed)?;
        check_approval(claimed, &extras)?;
        let ses = key.stamp_session(claimed, seal).await?;
        let body = crate::seals::seal_completion(
            key.identity.certificate_pem(),
            &key.identity.chain_pem,
            &ses,
            &extras,
        );
        self.complete_raw(claimed, &body).await
    }

    /// [`Phone::approve_encrypt`] with a split key.
    pub async fn approve_encrypt_split(
        &self,
        claimed: &Claimed,
        key: &UnlockedSplit<'_>,
        colleagues_pem: &[String],
        match_code: Option<String>,
    ) -> Result<CompleteAnswer, Error> {
        let id = key.identity;
        let extras = ApproveExtras {
            match_code,
            recipients_pem: recipients_with_own(
                id.certificate(),
                id.certificate_pem(),
                colleagues_pem,
            )?,
            ..Default::default()
        };
        self.approve_split(claimed, key, extras).await
    }

    /// [`Phone::approve_decrypt`] with a split key: the content key is co-decrypted (blinded:
    /// the service never sees the ciphertext's point), re-wrapped to the hall's key, and the
    /// session approved with a co-signed signature. When the phone cannot decrypt (not a
    /// recipient, a challenge for another file) it rejects with the reason, as a whole key does;
    /// a refusal by the service (outside the opening window, frozen, wrong PIN) is an error
    /// and the session is left as it is.
    pub async fn approve_decrypt_split(
        &self,
        claimed: &Claimed,
        key: &UnlockedSplit<'_>,
        match_code: Option<String>,
    ) -> Result<DecryptOutcome, Error> {
        let task = match DecryptTask::prepare(claimed, key.identity.certificate()) {
            Ok(task) => task,
            Err(refusal) => {
                let answer = self.reject(claimed, &refusal.reason()).await?;
                return Ok(DecryptOutcome::Rejected { refusal, answer });
            }
        };
        let content_key = key
            .decrypt_content_key(claimed, task.wrapped_for_me())
            .await?;
        let wrapped = match task.rewrap(&content_key) {
            Ok(w) => w,
            Err(refusal) => {
                let answer = self.reject(claimed, &refusal.reason()).await?;
                return Ok(DecryptOutcome::Rejected { refusal, answer });
            }
        };
        let extras = ApproveExtras {
            match_code,
            wrapped_key_b64: Some(wrapped),
            ..Default::default()
        };
        Ok(DecryptOutcome::Approved(
            self.approve_split(claimed, key, extras).await?,
        ))
    }
}

/// A key just generated with the service, not yet certified or stored. Holds `d1` in clear:
/// keep it only for enrolment.
pub struct Enrolled {
    client: CosignerClient,
    enrollment: bzt_cosigner::Enrollment,
}

/// PINs are six digits: with five tries before the service locks the share, a thief of the
/// phone file has at most 5 chances in 1,000,000.
pub fn check_pin(pin: &str) -> Result<(), Error> {
    if pin.len() == 6 && pin.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(Error::Identity("the PIN must be six digits".into()))
    }
}

impl Enrolled {
    /// Runs key generation with the service at `cosigner_url`, pinning its channel key (`GET
    /// /v1/info`, trust on first use). `enrolment_token` is the service's, when it asks for one.
    pub async fn generate(
        cosigner_url: &str,
        label: &str,
        enrolment_token: Option<&str>,
    ) -> Result<Self, Error> {
        let client = CosignerClient::discover(cosigner_url).await?;
        let enrollment = client.enroll(label, enrolment_token).await?;
        Ok(Self { client, enrollment })
    }

    pub fn key_id(&self) -> &str {
        &self.enrollment.key_id
    }

    /// The joint public key `P`, the one the certificate must carry.
    pub fn public_key(&self) -> Result<PublicKey, Error> {
        PublicKey::from_affine(self.enrollment.joint_public_key.to_affine())
            .map_err(|_| Error::Identity("the joint key is the point at infinity".into()))
    }

    /// The joint public key as hex `04‖X‖Y`.
    pub fn public_key_hex(&self) -> Result<String, Error> {
        Ok(bzt_crypto::two_party::point_to_hex(
            &self.enrollment.joint_public_key,
        ))
    }

    /// A PKCS#10 certificate request for the joint key with `subject`, signed by the phone and
    /// the service together (the service checks the request's key is this key's), PEM. `openssl
    /// req -verify -vfyopt distid:1234567812345678` accepts it.
    pub async fn certificate_request(&self, subject: Name) -> Result<String, Error> {
        let der_err = |e: x509_cert::der::Error| Error::Identity(format!("PKCS#10: {e}"));
        let spki_der = self
            .public_key()?
            .to_public_key_der()
            .map_err(|e| Error::Identity(format!("PKCS#10 public key: {e}")))?;
        let info = CertReqInfo {
            version: Version::V1,
            subject,
            public_key: SubjectPublicKeyInfoOwned::from_der(spki_der.as_bytes())
                .map_err(der_err)?,
            attributes: Default::default(),
        };
        let tbs = info.to_der().map_err(der_err)?;
        let context = Context::Csr(CsrRef {
            tbs_b64: STANDARD.encode(&tbs),
        });
        let signature = self
            .client
            .sign(
                &self.enrollment.key_id,
                &self.enrollment.d1,
                &self.enrollment.joint_public_key,
                &context,
                &tbs,
            )
            .await?;
        let request = CertReq {
            info,
            algorithm: AlgorithmIdentifierOwned {
                oid: SM2_WITH_SM3
                    .parse()
                    .map_err(|_| Error::Identity("OID".into()))?,
                parameters: None,
            },
            signature: BitString::from_bytes(&signature.to_der().to_vec()).map_err(der_err)?,
        };
        request
            .to_pem(x509_cert::der::pem::LineEnding::LF)
            .map_err(der_err)
    }

    /// Masks the share under `pin` and pairs it with `cert_pem`, a certificate of the joint
    /// key ([`Enrolled::public_key`]) from the development CA or from a real CA that answered
    /// [`Enrolled::certificate_request`]: the identity to save.
    pub fn finish(self, cert_pem: &str, pin: &str, device: Device) -> Result<SplitIdentity, Error> {
        check_pin(pin)?;
        let file = SplitKeyFile::new(&self.enrollment, &self.client, pin)?;
        // Checks that the certificate carries the joint key.
        SplitIdentity::from_parts(cert_pem, file, device)
    }
}

pub(crate) fn write_private(path: &Path, text: &str) -> Result<(), Error> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| Error::Identity(format!("cannot write {}: {e}", path.display())))
}
