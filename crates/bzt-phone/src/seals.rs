//! 印章管理 and 扫码签章 with an electronic seal (GB/T 38540): the phone keeps its seals, shows
//! the ones it may use for a session, and answers with an `SES_Signature` over the RP's hash.
//!
//! A seal is usable by this phone when it is bound to the phone's certificate and valid now; the
//! broker checks the same and more (the maker's signature and trust), so offering only usable
//! seals spares the user a refusal.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bzt_seal::Seal;
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::claim::Claimed;
use crate::client::{check_approval, ApproveExtras, Phone};
use crate::error::Error;
use crate::identity::{sign, PhoneIdentity};
use crate::session::CompleteAnswer;

/// What a seal session asks the phone to sign: from the claim answer's `seal`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealAsk {
    /// SM3 of the RP's data (32 bytes): the SES_Signature's `dataHash`.
    pub data_hash: Vec<u8>,
    /// `TBS_Sign.propertyInfo`.
    pub property_info: String,
}

impl SealAsk {
    /// From `seal` of a claim answer or a conversation's `sign_request`, as sent.
    pub(crate) fn from_wire(wire: bzt_wire::SealAsk) -> Result<SealAsk, String> {
        let data_hash = STANDARD
            .decode(&wire.data_hash_b64)
            .map_err(|e| format!("seal.data_hash_b64 is not base64: {e}"))?;
        if data_hash.len() != 32 {
            return Err("seal.data_hash_b64 is not an SM3 hash (32 bytes)".into());
        }
        Ok(SealAsk {
            data_hash,
            property_info: wire.property_info,
        })
    }
}

/// The phone's seals (印章管理), read from `*.der` / `*.seal` files of a directory.
#[derive(Clone, Debug, Default)]
pub struct SealWallet {
    seals: Vec<Seal>,
}

impl SealWallet {
    /// An empty wallet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a seal (SESeal DER); refuses what is not one.
    pub fn add_der(&mut self, der: &[u8]) -> Result<&Seal, Error> {
        let seal = Seal::from_der(der).map_err(|e| Error::Refused(format!("not a seal: {e}")))?;
        self.seals.push(seal);
        Ok(self.seals.last().expect("just pushed"))
    }

    /// Reads every `*.der` and `*.seal` file of `dir` (sorted by name). A file that is not a
    /// seal is an error naming it: a wallet that silently drops seals would confuse its user.
    pub fn load_dir(dir: &Path) -> Result<Self, Error> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| {
                Error::Refused(format!("cannot read seal directory {}: {e}", dir.display()))
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| matches!(p.extension().and_then(|x| x.to_str()), Some("der" | "seal")))
            .collect();
        files.sort();
        let mut wallet = Self::new();
        for f in files {
            let der = std::fs::read(&f)
                .map_err(|e| Error::Refused(format!("cannot read {}: {e}", f.display())))?;
            wallet
                .add_der(&der)
                .map_err(|e| Error::Refused(format!("{}: {e}", f.display())))?;
        }
        Ok(wallet)
    }

    /// Every seal kept.
    pub fn seals(&self) -> &[Seal] {
        &self.seals
    }

    /// The seals `identity` may stamp with at `now`: bound to its certificate, within validity.
    pub fn usable(&self, identity: &PhoneIdentity, now: OffsetDateTime) -> Vec<&Seal> {
        let Ok(cert_der) = der_of(identity) else {
            return Vec::new();
        };
        self.usable_with(&cert_der, now)
    }

    /// The seals the certificate `cert_der` (DER) may stamp with at `now`: for a split
    /// identity, whose certificate is its own.
    pub fn usable_with(&self, cert_der: &[u8], now: OffsetDateTime) -> Vec<&Seal> {
        self.seals
            .iter()
            .filter(|s| s.is_bound_to(cert_der).unwrap_or(false))
            .filter(|s| s.valid_start() <= now && now <= s.valid_end())
            .collect()
    }

    /// A seal by its esID or its name.
    pub fn find(&self, key: &str) -> Option<&Seal> {
        self.seals
            .iter()
            .find(|s| s.es_id() == key)
            .or_else(|| self.seals.iter().find(|s| s.name() == key))
    }
}

/// One line per seal for a phone screen, in Chinese: `名称（公章，编码 …，有效期至 …）`.
pub fn describe_seal_zh(seal: &Seal) -> String {
    let kind = match seal.seal_type() {
        Some(bzt_seal::SealType::Company) => "公章",
        Some(bzt_seal::SealType::Personal) => "个人章",
        None => "其他",
    };
    let until = seal
        .valid_end()
        .to_offset(time::macros::offset!(+8))
        .format(time::macros::format_description!("[year]-[month]-[day]"))
        .unwrap_or_default();
    format!(
        "{}（{kind}，编码 {}，有效期至 {until}）",
        crate::claim::clean(seal.name()),
        crate::claim::clean(seal.es_id())
    )
}

fn der_of(identity: &PhoneIdentity) -> Result<Vec<u8>, Error> {
    use x509_cert::der::Encode;
    identity
        .certificate()
        .to_der()
        .map_err(|e| Error::Refused(format!("cannot encode the certificate: {e}")))
}

/// Stamps `ask` with `seal` as `identity` at `now`: the `SES_Signature`, DER, signed through
/// [`sign`] (the one signing seam).
fn stamp(
    ask: &SealAsk,
    identity: &PhoneIdentity,
    seal: &Seal,
    now: OffsetDateTime,
) -> Result<Vec<u8>, Error> {
    let prepared = bzt_seal::prepare_signature(
        seal.der(),
        &der_of(identity)?,
        &ask.data_hash,
        &ask.property_info,
        now,
    )
    .map_err(|e| Error::Refused(format!("cannot stamp with this seal: {e}")))?;
    let signature = sign(identity, prepared.signed_bytes())?;
    prepared
        .finish(&signature)
        .map_err(|e| Error::Refused(format!("cannot stamp with this seal: {e}")))
}

/// A conversation's `sign_response` to a seal request.
pub(crate) fn seal_response_frame(
    request: &crate::conversation::SignRequest,
    identity: &PhoneIdentity,
    seal: &Seal,
    auto_confirmed: bool,
) -> Result<Value, Error> {
    let ask = request
        .seal
        .as_ref()
        .ok_or_else(|| Error::Refused("this request does not ask for a seal".into()))?;
    let ses = stamp(ask, identity, seal, OffsetDateTime::now_utc())?;
    Ok(json!({
        "type": "sign_response",
        "request_id": request.request_id,
        "seal_signature_b64": STANDARD.encode(ses),
        "auto_confirmed": auto_confirmed,
    }))
}

/// Builds the completion of a seal session: the `SES_Signature` made with `seal` over the claim's
/// hash, signed through [`sign`] (the one signing seam), at `now`. Refuses (nothing to send) a
/// session that did not ask for a seal, a seal not bound to this phone's certificate, and the
/// extras the session's kind does not take.
pub fn seal_approval_body(
    claimed: &Claimed,
    identity: &PhoneIdentity,
    seal: &Seal,
    extras: &ApproveExtras,
    now: OffsetDateTime,
) -> Result<Value, Error> {
    let ask = seal_ask(claimed)?;
    check_approval(claimed, extras)?;
    let ses = stamp(ask, identity, seal, now)?;
    Ok(seal_completion(
        identity.certificate_pem(),
        &identity.chain_pem,
        &ses,
        extras,
    ))
}

/// What a seal session asks for, or a refusal for a session that does not ask for a seal.
pub(crate) fn seal_ask(claimed: &Claimed) -> Result<&SealAsk, Error> {
    claimed
        .seal
        .as_ref()
        .ok_or_else(|| Error::Refused("this session does not ask for a seal signature".into()))
}

/// The completion body of a seal session around `ses` (the `SES_Signature`, DER).
pub(crate) fn seal_completion(
    certificate_pem: &str,
    chain_pem: &[String],
    ses: &[u8],
    extras: &ApproveExtras,
) -> Value {
    let mut body = json!({
        "certificate_pem": certificate_pem,
        "seal_signature_b64": STANDARD.encode(ses),
    });
    if !chain_pem.is_empty() {
        body["chain_pem"] = json!(chain_pem);
    }
    if let Some(code) = &extras.match_code {
        body["match_code"] = json!(code);
    }
    if extras.open_conversation {
        body["open_conversation"] = json!(true);
    }
    body
}

impl Phone {
    /// Approves a seal session (扫码签章 with a seal): stamps the claim's hash with `seal` and
    /// completes with the `SES_Signature`.
    pub async fn approve_with_seal(
        &self,
        claimed: &Claimed,
        identity: &PhoneIdentity,
        seal: &Seal,
        extras: ApproveExtras,
    ) -> Result<CompleteAnswer, Error> {
        let body = seal_approval_body(claimed, identity, seal, &extras, OffsetDateTime::now_utc())?;
        self.complete_raw(claimed, &body).await
    }
}
