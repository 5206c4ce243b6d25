//! The HTTP side of the Phone API: claim, approve, reject.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use reqwest::header::RETRY_AFTER;
use reqwest::Url;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::claim::{Claimed, Token};
use crate::error::{BrokerError, Error};
use crate::identity::{sign, Device, PhoneIdentity};
use crate::qr::QrText;
use crate::session::{CompleteAnswer, Kind};

/// Largest broker answer read; anything longer is an [`Error::UnexpectedAnswer`].
const MAX_ANSWER_BYTES: usize = 1 << 20;
/// Most recipients an `encrypt` completion may carry (PROTOCOL: 1..50).
const MAX_RECIPIENTS: usize = 50;

/// A phone talking to brokers. Cheap to clone (the `reqwest::Client` inside is shared);
/// configure timeouts, proxies and TLS roots on the client you pass in.
#[derive(Clone, Debug)]
pub struct Phone {
    /// Shared connection pool; one per process is enough, even for a load generator.
    http: reqwest::Client,
}

/// What an approval carries besides the certificate and signature. Which fields apply depends
/// on the session's kind; [`Phone::approve`] refuses (without sending) fields that do not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApproveExtras {
    /// The two-digit code the user picked from [`Claimed::match_choices`]; required when the
    /// session uses number matching.
    pub match_code: Option<String>,
    /// `sign` only, and only when [`Claimed::conversation_allowed`]: open a conversation.
    pub open_conversation: bool,
    /// `encrypt` only (required, 1..=50): PEM certificates that may open the bid file.
    pub recipients_pem: Vec<String>,
    /// `decrypt` only (required): the content key re-wrapped to [`Claimed::reply_key`]
    /// (SM2, GM/T 0009 DER), base64.
    pub wrapped_key_b64: Option<String>,
}

impl Phone {
    /// A phone using `http` for every request.
    pub fn new(http: reqwest::Client) -> Self {
        Self { http }
    }

    /// Claims the session of a scanned QR text as `identity`'s device (`POST /v1/claim`).
    ///
    /// The claim is one-time: a second claim answers `already_claimed`. If the broker's 200
    /// answer cannot be used (missing fields, `tbs_b64` not base64), the session is rejected at
    /// once (best effort, when the answer names the session and token) so it does not hang
    /// `scanned`, and [`Error::UnexpectedAnswer`] is returned.
    pub async fn claim(&self, qr: &QrText, identity: &PhoneIdentity) -> Result<Claimed, Error> {
        self.claim_as(qr, &identity.device).await
    }

    /// [`Phone::claim`] with an explicit device.
    pub async fn claim_as(&self, qr: &QrText, device: &Device) -> Result<Claimed, Error> {
        let url = endpoint(qr.base_url(), &["v1", "claim"])?;
        let body = bzt_wire::ClaimRequest {
            qr_text: qr.as_str().to_owned(),
            device: bzt_wire::ClaimDevice {
                id: device.id.clone(),
                name: device.name.clone(),
            },
        };
        let resp = self.http.post(url).json(&body).send().await?;
        let answer: Value = read_answer(resp).await?;
        match Claimed::from_answer(qr.base_url(), answer.clone()) {
            Ok(claimed) => Ok(claimed),
            Err(detail) => {
                // The session is now `scanned` by us: release it rather than leave it hanging,
                // if the answer at least says which session and token. Best effort: the error
                // below is what matters to the caller.
                let session_id = answer["session"]["id"].as_str();
                let token = answer["phone_token"].as_str();
                if let (Some(session_id), Some(token)) = (session_id, token) {
                    let reject = rejection("unusable claim answer");
                    let _ = self
                        .post_complete(qr.base_url(), session_id, &Token::new(token), &reject)
                        .await;
                }
                Err(Error::UnexpectedAnswer {
                    status: 200,
                    detail,
                })
            }
        }
    }

    /// Approves a claimed session: checks the challenge (every kind but `sign`), signs `tbs`
    /// with `identity`, and completes with the certificate, chain, signature and `extras`.
    ///
    /// Nothing is sent when the challenge is not this session's ([`Error::Challenge`]) or the
    /// extras do not fit the kind ([`Error::Refused`]).
    pub async fn approve(
        &self,
        claimed: &Claimed,
        identity: &PhoneIdentity,
        extras: ApproveExtras,
    ) -> Result<CompleteAnswer, Error> {
        let body = approval_body(claimed, identity, &extras)?;
        self.complete_raw(claimed, &body).await
    }

    /// Declines a claimed session (`{"reject": {"reason"}}`); the session becomes `rejected`.
    pub async fn reject(&self, claimed: &Claimed, reason: &str) -> Result<CompleteAnswer, Error> {
        self.complete_raw(claimed, &rejection(reason)).await
    }

    /// Sends `body` as the completion of `claimed`, unchecked: for tests of the broker's own
    /// checks (bad signatures, wrong certificates, malformed bodies).
    pub async fn complete_raw(
        &self,
        claimed: &Claimed,
        body: &Value,
    ) -> Result<CompleteAnswer, Error> {
        self.post_complete(
            &claimed.base_url,
            &claimed.session_id,
            &claimed.phone_token,
            body,
        )
        .await
    }

    async fn post_complete(
        &self,
        base_url: &str,
        session_id: &str,
        token: &Token,
        body: &Value,
    ) -> Result<CompleteAnswer, Error> {
        let url = endpoint(base_url, &["v1", "sessions", session_id, "complete"])?;
        let resp = self
            .http
            .post(url)
            .bearer_auth(token.expose())
            .json(body)
            .send()
            .await?;
        read_answer(resp).await
    }
}

/// Builds (and signs) the approval body for `claimed`, or says why the phone will not.
pub fn approval_body(
    claimed: &Claimed,
    identity: &PhoneIdentity,
    extras: &ApproveExtras,
) -> Result<Value, Error> {
    refuse_seal_session(claimed)?;
    check_approval(claimed, extras)?;
    let signature = sign(identity, &claimed.tbs)?;
    signed_approval_body(
        identity.certificate_pem(),
        &identity.chain_pem,
        &signature,
        extras,
    )
}

/// The checks [`approval_body`] makes before anything is signed: the challenge is this
/// session's, the number-match pick is one of the choices, and the extras fit the kind. A
/// phone whose signature is made elsewhere (a split key, co-signed) runs these first too.
pub fn check_approval(claimed: &Claimed, extras: &ApproveExtras) -> Result<(), Error> {
    let kind = claimed.kind;
    let refuse = |why: String| Err(Error::Refused(why));
    if kind == Kind::Unknown {
        return refuse("this phone does not know the session's kind; it can only reject".into());
    }
    if kind.signs_challenge() {
        claimed.check_challenge()?;
    }
    match (&claimed.match_choices, &extras.match_code) {
        (Some(choices), None) => {
            return refuse(format!(
                "the session uses number matching: pick one of {}",
                choices.join(", ")
            ))
        }
        (Some(choices), Some(code)) if !choices.contains(code) => {
            return refuse(format!(
                "match code {code:?} is not one of {}",
                choices.join(", ")
            ))
        }
        _ => {}
    }
    if extras.open_conversation && !(kind == Kind::Sign && claimed.conversation_allowed) {
        return refuse("this session does not allow opening a conversation".into());
    }
    if kind == Kind::Encrypt {
        let n = extras.recipients_pem.len();
        if !(1..=MAX_RECIPIENTS).contains(&n) {
            return refuse(format!(
                "an encrypt session needs 1..={MAX_RECIPIENTS} recipient certificates, not {n}"
            ));
        }
        for (i, pem) in extras.recipients_pem.iter().enumerate() {
            bzt_crypto::pem_certificate(pem)
                .map_err(|e| Error::Refused(format!("recipient {}: {e}", i + 1)))?;
        }
    } else if !extras.recipients_pem.is_empty() {
        return refuse("recipient certificates only go with encrypt sessions".into());
    }
    match (kind, &extras.wrapped_key_b64) {
        (Kind::Decrypt, None) => {
            return refuse("a decrypt session needs the re-wrapped key (wrapped_key_b64)".into())
        }
        (Kind::Decrypt, Some(wrapped)) if STANDARD.decode(wrapped).is_err() => {
            return refuse("wrapped_key_b64 is not base64".into())
        }
        (Kind::Decrypt, Some(_)) | (_, None) => {}
        (_, Some(_)) => return refuse("a wrapped key only goes with decrypt sessions".into()),
    }
    Ok(())
}

/// The approval body from a signature already made over the session's `tbs` (after
/// [`check_approval`]).
pub fn signed_approval_body(
    certificate_pem: &str,
    chain_pem: &[String],
    signature: &[u8],
    extras: &ApproveExtras,
) -> Result<Value, Error> {
    let some_items = |v: &[String]| (!v.is_empty()).then(|| v.to_vec());
    let body = bzt_wire::CompleteRequest {
        certificate_pem: Some(certificate_pem.to_owned()),
        chain_pem: some_items(chain_pem),
        signature_b64: Some(STANDARD.encode(signature)),
        match_code: extras.match_code.clone(),
        recipients_pem: some_items(&extras.recipients_pem),
        wrapped_key_b64: extras.wrapped_key_b64.clone(),
        open_conversation: extras.open_conversation.then_some(true),
        ..Default::default()
    };
    serde_json::to_value(body).map_err(|e| Error::Refused(format!("cannot encode the body: {e}")))
}

/// A session asking for a seal signature (扫码签章 with a seal) is completed with
/// [`Phone::approve_with_seal`], never with a bare signature.
pub(crate) fn refuse_seal_session(claimed: &Claimed) -> Result<(), Error> {
    if claimed.seal.is_some() {
        return Err(Error::Refused(
            "this session asks for a seal signature (扫码签章): pick a seal (Phone::approve_with_seal)".into(),
        ));
    }
    Ok(())
}

/// `{"reject": {"reason"}}`.
fn rejection(reason: &str) -> Value {
    let body = bzt_wire::CompleteRequest {
        reject: Some(bzt_wire::Rejection {
            reason: reason.to_owned(),
        }),
        ..Default::default()
    };
    serde_json::to_value(body).unwrap_or_default()
}

/// `<base_url>/<segments...>`, each segment percent-encoded as needed.
fn endpoint(base_url: &str, segments: &[&str]) -> Result<Url, Error> {
    let bad = || Error::Refused(format!("{base_url:?} is not a usable broker URL"));
    let mut url = Url::parse(base_url).map_err(|_| bad())?;
    url.path_segments_mut()
        .map_err(|_| bad())?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

/// Reads a broker answer: `T` on 2xx, [`BrokerError`] on a protocol error body, else
/// [`Error::UnexpectedAnswer`]. At most [`MAX_ANSWER_BYTES`] are read.
async fn read_answer<T: DeserializeOwned>(mut resp: reqwest::Response) -> Result<T, Error> {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(Error::UnexpectedAnswer {
                status,
                detail: format!("the answer is longer than {MAX_ANSWER_BYTES} bytes"),
            });
        }
        body.extend_from_slice(&chunk);
    }
    if (200..300).contains(&status) {
        return serde_json::from_slice(&body).map_err(|e| Error::UnexpectedAnswer {
            status,
            detail: format!("{e}; body: {}", excerpt(&body)),
        });
    }
    match serde_json::from_slice::<bzt_wire::ErrorBody>(&body) {
        Ok(bzt_wire::ErrorBody {
            error: bzt_wire::ErrorDetail { code, message },
        }) => Err(BrokerError {
            status,
            code,
            message,
            retry_after,
        }
        .into()),
        Err(_) => Err(Error::UnexpectedAnswer {
            status,
            detail: format!("no protocol error body: {}", excerpt(&body)),
        }),
    }
}

/// The first 200 characters of a body, for error messages.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_keep_the_base_path_and_encode_segments() {
        let url = endpoint(
            "https://h.example/bzt",
            &["v1", "sessions", "a b", "complete"],
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "https://h.example/bzt/v1/sessions/a%20b/complete"
        );
        let url = endpoint("http://127.0.0.1:8700", &["v1", "claim"]).unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:8700/v1/claim");
        let url = endpoint("http://127.0.0.1:8700/", &["v1", "claim"]).unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:8700/v1/claim");
    }
}
