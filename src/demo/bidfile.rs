//! 生成投标文件 (the bid tool's `encrypt` flow) and 开标大厅 (the hall's `decrypt` flow) for the
//! demo pages, as a relying party's backend does them.
//!
//! Encrypt (`bidtool.html`):
//! 1. `POST /demo/api/files?name=` uploads the bid file ([`super::files`]);
//! 2. `POST /demo/api/encrypt {file_id}` creates an `encrypt` session for it and answers the
//!    broker's create answer, which the page hands to the SDK widget (QR, live status);
//! 3. once the page saw `approved`, `POST /demo/api/encrypt/<session>/seal?t=<browser token>`
//!    reads the session
//!    **from the broker** (API key), re-checks the signed challenge and the signature, seals the
//!    upload to exactly the certificates in the broker's `result.recipients` and answers the
//!    sealed file's download link with the recipients. Nothing the page says about the outcome
//!    is believed.
//!
//! Decrypt (`hall.html`):
//! 1. upload the sealed `.bze` the same way;
//! 2. `POST /demo/api/decrypt {file_id}` reads its header, makes a one-time SM2 key and creates a
//!    `decrypt` session with number matching, through [`crate::hall::HallClient`]; a background
//!    task waits for the outcome on the session's socket and, when approved, checks the signed
//!    challenge, unwraps the re-wrapped content key and opens the file
//!    ([`crate::hall::DecryptSession::finish`]);
//! 3. `GET /demo/api/decrypt/<session>?t=<browser token>&wait=N` answers that task's state: `waiting`, `opened`
//!    (signer, plaintext download link, size, SM3), `rejected` (the phone's reason, e.g. 本证书不在
//!    该投标文件的解密证书列表中…), `expired`, `cancelled`, `failed` or `error`.
//!
//! `GET /demo/api/files/<id>` downloads a result (sealed file or plaintext).
//!
//! A session id is no secret (it is in the QR code, which a hall shows on a big screen), so the
//! job endpoints also want the session's browser token, which only the page that created the
//! session holds; the results' file ids are random.

use super::files::{FileKind, FileStore, StoredFile, FILE_TTL};
use super::DemoRp;
use crate::error::ApiError;
use crate::hall::{DecryptOptions, DecryptSession, HallError, HallOutcome};
use crate::http::ApiJson;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bzt_core::ErrorCode;
use bzt_envelope::{Recipient, SealOptions};
use bzt_phone::{Challenge, Kind};
use bzt_rp_client::CreateSession;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Most jobs (encrypt or decrypt sessions) remembered; the oldest is forgotten first.
const MAX_JOBS: usize = 64;
/// Longest `wait` of `GET /demo/api/decrypt/<id>` (seconds).
const MAX_WAIT_S: u64 = 25;

/// The demo's bid-file jobs, by session id.
#[derive(Default)]
pub struct Jobs {
    /// `encrypt` sessions and the upload each one seals. A std `Mutex`: never held across
    /// `.await` (entries are `Arc`s cloned out).
    encrypt: Mutex<HashMap<String, Arc<EncryptJob>>>,
    /// `decrypt` sessions and the state of the task that waits for each.
    decrypt: Mutex<HashMap<String, Arc<DecryptJob>>>,
}

pub struct EncryptJob {
    /// The session's browser token: only the page that created the session may seal.
    browser_token: String,
    /// The bid file to seal.
    upload: Arc<StoredFile>,
    /// The answer of the first successful seal, repeated to later calls (sealing twice would
    /// make two different files).
    sealed: tokio::sync::OnceCell<Value>,
    /// For expiry.
    created: Instant,
}

pub struct DecryptJob {
    /// The session's browser token: only the page that created the session learns the outcome
    /// (and so the plaintext's download link).
    browser_token: String,
    /// The hall task's state.
    state: watch::Receiver<Value>,
    /// For expiry.
    created: Instant,
}

trait Aged {
    fn created(&self) -> Instant;
}
impl Aged for EncryptJob {
    fn created(&self) -> Instant {
        self.created
    }
}
impl Aged for DecryptJob {
    fn created(&self) -> Instant {
        self.created
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Inserts after dropping expired entries and, at [`MAX_JOBS`], the oldest.
fn remember<T: Aged>(map: &Mutex<HashMap<String, Arc<T>>>, id: String, job: T) {
    let mut jobs = lock(map);
    jobs.retain(|_, j| j.created().elapsed() < FILE_TTL);
    while jobs.len() >= MAX_JOBS {
        let Some(oldest) = jobs
            .iter()
            .min_by_key(|(_, j)| j.created())
            .map(|(k, _)| k.clone())
        else {
            break;
        };
        jobs.remove(&oldest);
    }
    jobs.insert(id, Arc::new(job));
}

/// The job's browser token, compared in constant time.
fn check_token(expected: &str, given: Option<&str>) -> Result<(), ApiError> {
    use subtle::ConstantTimeEq;
    match given {
        Some(g) if bool::from(g.as_bytes().ct_eq(expected.as_bytes())) => Ok(()),
        _ => Err(ApiError::unauthorized(
            "give the session's browser token as ?t=<browser_token> (from the create answer)",
        )),
    }
}

fn find<T: Aged>(map: &Mutex<HashMap<String, Arc<T>>>, id: &str) -> Result<Arc<T>, ApiError> {
    lock(map)
        .get(id)
        .filter(|j| j.created().elapsed() < FILE_TTL)
        .cloned()
        .ok_or_else(|| {
            ApiError::not_found(
                "no bid-file job for this session (unknown, or older than 30 minutes); start again",
            )
        })
}

pub fn routes() -> Router<Arc<DemoRp>> {
    Router::new()
        .route("/demo/api/files", post(upload))
        .route("/demo/api/files/{id}", get(download))
        .route("/demo/api/encrypt", post(create_encrypt))
        .route("/demo/api/encrypt/{id}/seal", post(seal))
        .route("/demo/api/decrypt", post(create_decrypt))
        .route("/demo/api/decrypt/{id}", get(decrypt_state))
}

// ---- files ------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadQuery {
    /// The file's name, as the page's file picker gave it.
    name: String,
}

/// `POST /demo/api/files?name=<file name>` with the raw bytes as body (any content type).
async fn upload(
    State(rp): State<Arc<DemoRp>>,
    query: Result<Query<UploadQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|_| {
        ApiError::invalid("give the file's name as ?name=<file name> and the bytes as the body")
    })?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let file = rp.files.upload(&q.name, declared, body).await?;
    Ok((StatusCode::CREATED, Json(file.info())).into_response())
}

/// `GET /demo/api/files/<id>`: a sealed file or an opened plaintext, as an attachment.
async fn download(
    State(rp): State<Arc<DemoRp>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let file = rp.files.get(&id, FileKind::Result)?;
    let bytes = tokio::fs::read(&file.path).await.map_err(|e| {
        tracing::warn!(error = %e, "demo download");
        ApiError::not_found("the file is no longer available; run the flow again")
    })?;
    let mut resp = Body::from(bytes).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&content_disposition(&file.name)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

/// `attachment` with an ASCII fallback name and the UTF-8 name (RFC 6266, RFC 5987).
fn content_disposition(name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

fn size_text(n: u64) -> String {
    if n >= 1024 * 1024 {
        format!("{:.1} MiB", n as f64 / (1024.0 * 1024.0))
    } else if n >= 1024 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{n} 字节")
    }
}

// ---- encrypt ----------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateJob {
    /// An upload's id (`POST /demo/api/files`).
    file_id: String,
    /// Session lifetime, passed on (the broker allows 30..600).
    #[serde(default)]
    ttl_s: Option<u32>,
}

/// `POST /demo/api/encrypt {file_id}` → 201, the broker's create answer of an `encrypt` session.
async fn create_encrypt(
    State(rp): State<Arc<DemoRp>>,
    ApiJson(req): ApiJson<CreateJob>,
) -> Result<Response, ApiError> {
    let upload = rp.files.get(&req.file_id, FileKind::Upload)?;
    let mut body = CreateSession::new(
        bzt_rp_client::Kind::Encrypt,
        format!("生成投标文件：{}", upload.name),
    );
    body.display.detail = Some(format!(
        "文件大小 {}，SM3 {}…；请选择可解密该投标文件的证书（本机证书及同事的证书）",
        size_text(upload.size),
        &upload.sm3[..16]
    ));
    body.ttl_s = req.ttl_s;
    let created = rp
        .broker
        .create_session(&body)
        .await
        .map_err(super::broker_error)?;
    let (id, browser_token) = (created.id.clone(), created.browser_token.clone());
    remember(
        &rp.jobs.encrypt,
        id,
        EncryptJob {
            browser_token,
            upload,
            sealed: tokio::sync::OnceCell::new(),
            created: Instant::now(),
        },
    );
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenQuery {
    /// The session's browser token.
    #[serde(default)]
    t: Option<String>,
}

/// `POST /demo/api/encrypt/<session>/seal?t=<browser token>`: seals the upload to the approved
/// recipients.
async fn seal(
    State(rp): State<Arc<DemoRp>>,
    Path(id): Path<String>,
    query: Result<Query<TokenQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|_| ApiError::invalid("the only parameter is ?t="))?;
    let job = find(&rp.jobs.encrypt, &id)?;
    check_token(&job.browser_token, q.t.as_deref())?;
    let answer = job
        .sealed
        .get_or_try_init(|| seal_once(&rp, &id, &job.upload))
        .await?;
    Ok(Json(answer.clone()))
}

async fn seal_once(rp: &DemoRp, id: &str, upload: &Arc<StoredFile>) -> Result<Value, ApiError> {
    // The outcome as the broker reports it to this backend, never as the page reports it.
    let view = rp
        .broker
        .get_session(id)
        .await
        .map_err(super::broker_error)?;
    match view.status.as_str() {
        "approved" => {}
        s @ ("pending" | "scanned") => {
            return Err(ApiError::conflict(format!(
                "the session is {s}: wait until the phone approves, then seal"
            )))
        }
        s => {
            return Err(ApiError::conflict(format!(
                "the session is {s}, not approved: nothing to seal; start again"
            )))
        }
    }
    // Checked field by field as JSON, whatever shape the broker gave it.
    let result = match view.result {
        Some(Some(result)) => serde_json::to_value(result).unwrap_or(Value::Null),
        _ => Value::Null,
    };
    let checked = check_encrypt_result(&result, id, &rp.app_id)?;

    let (out_id, out_path) = rp.files.new_path().await?;
    let input = upload.path.clone();
    let output = out_path.clone();
    let recipients = checked.recipients.clone();
    let report = tokio::task::spawn_blocking(move || -> Result<_, bzt_envelope::Error> {
        let reader = std::io::BufReader::new(std::fs::File::open(&input)?);
        let file = std::fs::File::create(&output)?;
        let mut writer = std::io::BufWriter::new(file);
        let report = bzt_envelope::seal(&recipients, reader, &mut writer, &SealOptions::default())?;
        use std::io::Write as _;
        writer.flush()?;
        Ok(report)
    })
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "demo seal task");
        ApiError::internal()
    })?
    .map_err(|e| {
        let _ = std::fs::remove_file(&out_path);
        tracing::warn!(error = %e, "demo seal");
        match e {
            bzt_envelope::Error::DuplicateRecipient { .. } | bzt_envelope::Error::NoRecipients => {
                ApiError::invalid(format!("the recipients cannot be sealed to: {e}"))
            }
            _ => ApiError::new(
                ErrorCode::Unavailable,
                "the demo backend could not write the sealed file; retry shortly",
            )
            .with_retry_after(1),
        }
    })?;
    let sealed = rp
        .files
        .add_result(out_id, format!("{}.bze", upload.name), out_path)
        .await?;
    Ok(json!({
        "session_id": id,
        "sealed": sealed.info(),
        "plaintext": { "name": upload.name, "size": upload.size, "sm3": upload.sm3 },
        "header_sm3": hex::encode(report.header_digest),
        "signer": checked.signer,
        "recipients": checked.recipients_info,
    }))
}

/// What an `encrypt` result yields once checked.
struct CheckedEncrypt {
    /// `{subject, serial, issuer}` of the certificate that signed.
    signer: Value,
    /// The certificates to seal to, in the order the phone gave them.
    recipients: Vec<Recipient>,
    /// `{subject, serial, issuer, domain}` of each, for the page.
    recipients_info: Vec<Value>,
}

/// The broker is a courier, not an oracle: the signed bytes must be this app's `encrypt`
/// challenge for this session, and the signature must verify with the signer's certificate.
/// The recipients are the broker's `result.recipients` (each checked by the broker like the
/// signer: trust domain, validity, revocation).
fn check_encrypt_result(
    result: &Value,
    session_id: &str,
    app_id: &str,
) -> Result<CheckedEncrypt, ApiError> {
    let bad = |why: String| {
        ApiError::new(
            ErrorCode::BadSignature,
            format!("the approved result does not check out ({why}); nothing was sealed"),
        )
    };
    let tbs = result["tbs_b64"]
        .as_str()
        .and_then(|t| STANDARD.decode(t).ok())
        .ok_or_else(|| bad("no tbs_b64".into()))?;
    let challenge = Challenge::parse(&tbs).map_err(|e| bad(format!("challenge: {e}")))?;
    if challenge.kind != Kind::Encrypt || challenge.session != session_id || challenge.app != app_id
    {
        return Err(bad(
            "the signed challenge is not this app's encrypt challenge for this session".into(),
        ));
    }
    let pem = result["certificate"]["pem"]
        .as_str()
        .ok_or_else(|| bad("no certificate".into()))?;
    let cert = bzt_core::pki::parse_pem(pem).map_err(|e| bad(e.message))?;
    let key = bzt_core::pki::verifying_key(&cert).map_err(|e| bad(e.message))?;
    let signature = result["signature_b64"]
        .as_str()
        .and_then(|s| STANDARD.decode(s).ok())
        .ok_or_else(|| bad("no signature_b64".into()))?;
    bzt_core::pki::verify_signature(&key, &tbs, &signature).map_err(|e| bad(e.message))?;
    let signer = json!({
        "subject": bzt_core::pki::subject_string(&cert),
        "serial": bzt_core::pki::serial_hex(&cert),
        "issuer": bzt_core::pki::issuer_string(&cert),
    });

    let list = result["recipients"]
        .as_array()
        .filter(|l| !l.is_empty())
        .ok_or_else(|| bad("no recipients".into()))?;
    let mut recipients = Vec::with_capacity(list.len());
    let mut recipients_info = Vec::with_capacity(list.len());
    for (i, r) in list.iter().enumerate() {
        let pem = r["pem"]
            .as_str()
            .ok_or_else(|| bad(format!("recipient {i} has no pem")))?;
        let recipient = Recipient::from_pem(pem).map_err(|e| bad(format!("recipient {i}: {e}")))?;
        let cert = bzt_core::pki::parse_pem(pem).map_err(|e| bad(e.message))?;
        recipients_info.push(json!({
            "subject": bzt_core::pki::subject_string(&cert),
            "serial": recipient.serial(),
            "issuer": recipient.issuer(),
            "domain": r["domain"],
        }));
        recipients.push(recipient);
    }
    Ok(CheckedEncrypt {
        signer,
        recipients,
        recipients_info,
    })
}

// ---- decrypt ----------------------------------------------------------------------------------

/// `POST /demo/api/decrypt {file_id}` → 201, the broker's create answer of a `decrypt` session
/// (number matching on, as docs/protocol.md recommends); a task then waits for its outcome.
async fn create_decrypt(
    State(rp): State<Arc<DemoRp>>,
    ApiJson(req): ApiJson<CreateJob>,
) -> Result<Response, ApiError> {
    let sealed = rp.files.get(&req.file_id, FileKind::Upload)?;
    let options = DecryptOptions {
        title: Some(format!("开标解密：{}", sealed.name)),
        ttl_s: req.ttl_s.map(u64::from),
        number_match: true,
        ..Default::default()
    };
    let session = rp
        .hall
        .create_decrypt(&sealed.path, &options)
        .await
        .map_err(hall_error)?;
    let created = session.created.clone();
    let id = session.id.clone();
    let browser_token = created.browser_token.clone();
    let (tx, rx) = watch::channel(json!({ "status": "waiting" }));
    remember(
        &rp.jobs.decrypt,
        id,
        DecryptJob {
            browser_token,
            state: rx,
            created: Instant::now(),
        },
    );
    let files = rp.files.clone();
    tokio::spawn(async move {
        let state = run_decrypt(session, sealed, files).await;
        // Nobody may be listening any more (the job was forgotten): fine.
        let _ = tx.send(state);
    });
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// Waits for the session's outcome and opens the file when approved; the job's final state.
async fn run_decrypt(session: DecryptSession, sealed: Arc<StoredFile>, files: FileStore) -> Value {
    let terminal = match session.wait(|_| {}).await {
        Ok(t) => t,
        Err(e) => return error_state(&hall_error(e)),
    };
    let (out_id, out_path) = match files.new_path().await {
        Ok(p) => p,
        Err(e) => return error_state(&e),
    };
    let output = out_path.clone();
    let finished = tokio::task::spawn_blocking(move || session.finish(&terminal, &output)).await;
    let outcome = match finished {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return error_state(&hall_error(e)),
        Err(e) => {
            tracing::error!(error = %e, "demo hall task");
            return error_state(&ApiError::internal());
        }
    };
    match outcome {
        HallOutcome::Opened { signer, .. } => {
            let name = plaintext_name(&sealed.name);
            match files.add_result(out_id, name, out_path).await {
                Ok(plain) => json!({
                    "status": "opened",
                    "signer": {
                        "subject": signer.subject,
                        "serial": signer.serial,
                        "issuer": signer.issuer,
                        "is_recipient": signer.is_recipient,
                    },
                    "sealed": { "name": sealed.name, "size": sealed.size, "sm3": sealed.sm3 },
                    "plaintext": plain.info(),
                }),
                Err(e) => error_state(&e),
            }
        }
        HallOutcome::Rejected { reason } => json!({ "status": "rejected", "reason": reason }),
        HallOutcome::Expired => json!({ "status": "expired" }),
        HallOutcome::Cancelled => json!({ "status": "cancelled" }),
        HallOutcome::Failed { reason } => json!({ "status": "failed", "reason": reason }),
    }
}

/// `bid.pdf.bze` → `bid.pdf`; anything else gets `.opened`.
fn plaintext_name(sealed: &str) -> String {
    match sealed.strip_suffix(".bze") {
        Some(stem) if !stem.is_empty() => stem.to_owned(),
        _ => format!("{sealed}.opened"),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StateQuery {
    /// The session's browser token.
    #[serde(default)]
    t: Option<String>,
    #[serde(default)]
    wait: Option<u64>,
}

/// `GET /demo/api/decrypt/<session>?t=<browser token>&wait=N`: the hall task's state, held up to N seconds
/// (at most 25) while it is `waiting`.
async fn decrypt_state(
    State(rp): State<Arc<DemoRp>>,
    Path(id): Path<String>,
    query: Result<Query<StateQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|_| {
        ApiError::invalid("parameters: t (the browser token) and wait (whole seconds, 0..25)")
    })?;
    let wait = q.wait.unwrap_or(0);
    if wait > MAX_WAIT_S {
        return Err(ApiError::invalid(format!(
            "`wait` must be a whole number of seconds, at most {MAX_WAIT_S}"
        )));
    }
    let job = find(&rp.jobs.decrypt, &id)?;
    check_token(&job.browser_token, q.t.as_deref())?;
    let mut rx = job.state.clone();
    if rx.borrow()["status"] == "waiting" && wait > 0 {
        let _ = tokio::time::timeout(Duration::from_secs(wait), rx.changed()).await;
    }
    let state = rx.borrow().clone();
    Ok(Json(state))
}

fn error_state(e: &ApiError) -> Value {
    json!({ "status": "error", "error": { "code": e.code.as_str(), "message": e.message } })
}

fn hall_error(e: HallError) -> ApiError {
    match e {
        HallError::Envelope(
            e @ (bzt_envelope::Error::NotAnEnvelope
            | bzt_envelope::Error::Truncated(_)
            | bzt_envelope::Error::BadHeader(_)
            | bzt_envelope::Error::UnsupportedVersion(_)
            | bzt_envelope::Error::UnsupportedAlgorithm(_)),
        ) => ApiError::invalid(format!(
            "this is not a sealed bid file (.bze) this demo can open: {e}"
        )),
        HallError::Envelope(bzt_envelope::Error::Corrupt { chunk }) => ApiError::invalid(format!(
            "the sealed file is damaged (chunk {chunk} failed authentication); nothing was released"
        )),
        HallError::Envelope(e) => {
            tracing::warn!(error = %e, "demo hall: envelope");
            ApiError::new(
                ErrorCode::Unavailable,
                "the demo backend could not read or write the file; retry shortly",
            )
        }
        HallError::Broker {
            status,
            code,
            message,
        } => ApiError::new(code_of(&code, status), message),
        HallError::Transport(e) => {
            tracing::warn!(error = %e, "demo hall: broker unreachable");
            ApiError::new(
                ErrorCode::Unavailable,
                "the demo backend cannot reach the broker",
            )
        }
        HallError::Protocol(e) => bad_broker(&e),
        HallError::Opening(e) => {
            tracing::warn!(error = %e, "demo hall: opening window not registered");
            ApiError::new(
                ErrorCode::Unavailable,
                "the co-signing service did not register the opening window; retry shortly",
            )
        }
        HallError::BadResult(why) => ApiError::new(
            ErrorCode::BadSignature,
            format!("the approved result does not check out ({why}); the file was not opened"),
        ),
        HallError::TimedOut => ApiError::new(
            ErrorCode::Expired,
            "no outcome arrived before the session expired; start again",
        ),
    }
}

pub(super) fn bad_broker(why: &str) -> ApiError {
    tracing::warn!(%why, "demo RP: unexpected broker answer");
    ApiError::new(
        ErrorCode::Unavailable,
        "the broker answered something unexpected; retry shortly",
    )
}

/// The protocol's code for a broker error (its code string, else its status).
pub(super) fn code_of(code: &str, status: u16) -> ErrorCode {
    ErrorCode::parse(code)
        .or_else(|| {
            ErrorCode::ALL
                .into_iter()
                .find(|c| c.http_status() == status)
        })
        .unwrap_or(ErrorCode::Internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downloads_name_the_file_in_ascii_and_utf8() {
        assert_eq!(
            content_disposition("标书 v2.pdf"),
            "attachment; filename=\"___v2.pdf\"; filename*=UTF-8''%E6%A0%87%E4%B9%A6%20v2.pdf"
        );
    }

    #[test]
    fn plaintext_names_drop_the_bze_suffix() {
        assert_eq!(plaintext_name("bid.pdf.bze"), "bid.pdf");
        assert_eq!(plaintext_name("bid.bin"), "bid.bin.opened");
        assert_eq!(plaintext_name(".bze"), ".bze.opened");
    }

    #[test]
    fn job_tokens_must_match() {
        assert!(check_token("abc", Some("abc")).is_ok());
        for given in [None, Some(""), Some("abd"), Some("abcd")] {
            let e = check_token("abc", given).unwrap_err();
            assert_eq!(e.code, ErrorCode::Unauthorized);
        }
    }

    #[test]
    fn broker_codes_map_back() {
        assert_eq!(code_of("conflict", 409), ErrorCode::Conflict);
        assert_eq!(code_of("something_new", 410), ErrorCode::Expired);
        assert_eq!(code_of("", 502), ErrorCode::Internal);
    }

    #[test]
    fn results_that_do_not_check_out_are_refused() {
        let r = check_encrypt_result(&json!({}), "s", "demo").err().unwrap();
        assert_eq!(r.code, ErrorCode::BadSignature);
        let tbs = STANDARD.encode(
            "BZT-CHALLENGE-V1\nkind:login\napp:demo\nsession:s\nnonce:AAAAAAAAAAAAAAAAAAAAAA\nexpires:2026-01-01T00:00:00.000Z",
        );
        let r = check_encrypt_result(&json!({ "tbs_b64": tbs }), "s", "demo")
            .err()
            .unwrap();
        assert!(
            r.message.contains("not this app's encrypt challenge"),
            "{}",
            r.message
        );
    }
}
