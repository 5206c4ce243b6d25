//! The opening hall's side of 扫码解密, as a library (`bzt hall decrypt` is a thin shell over it).
//! It creates its session through [`RpClient`] and waits on the browser WebSocket through the
//! shared connector, so `https:`/`wss:` brokers work (with extra CA roots from [`ClientTls`]).
//!
//! 1. Generate a one-time SM2 key ([`OneTimeKey`]); its public half is the session's
//!    `reply_key`.
//! 2. Create a `decrypt` session whose `envelope_header_b64` is the sealed file's header,
//!    byte for byte as in the file ([`HallClient::create_decrypt`]); show its QR.
//! 3. Wait on the browser WebSocket ([`DecryptSession::wait`]), reconnecting after a drop: every
//!    (re)connect starts with a snapshot, so no outcome is lost.
//! 4. On `approved`, check the result (the signed challenge is this session's and names this
//!    header; the signature verifies with the signer's certificate), unwrap `wrapped_key_b64`
//!    with the one-time key and open the file ([`DecryptSession::finish`]); nothing is written
//!    unless the whole file authenticates. On `rejected`, report the phone's reason.
//!
//! The content key exists in clear only on the phone and here (wiped on drop); the broker sees
//! it only wrapped to the one-time key, which never leaves this process.
//!
//! Not checked here: that the signer's certificate chains to a trusted root (the broker did
//! that; a hall that does not trust its broker should check `result.certificate` against its
//! own CA list).

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bzt_envelope::{
    header_digest, open_to_path_with_content_key, read_header, unwrap_key, ContentKey, Header,
    OpenReport,
};
use bzt_phone::{Challenge, Kind};
use futures_util::StreamExt;
use serde_json::Value;
use sm2::SecretKey;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

pub use crate::OpeningWindow;
use crate::{ClientTls, CreateSession, CreatedSession, Display, RpClient, RpError};

/// Longest display title the broker accepts (characters).
const MAX_TITLE_CHARS: usize = 200;
/// How long after the session's expiry the hall keeps trying to learn its outcome.
const EXPIRY_GRACE: Duration = Duration::from_secs(30);
/// First and largest pause between WebSocket reconnects.
const RECONNECT_MIN: Duration = Duration::from_millis(250);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Everything the hall can fail with. A phone's refusal is not an error: it is
/// [`HallOutcome::Rejected`].
#[derive(Debug, thiserror::Error)]
pub enum HallError {
    /// The sealed file could not be read, or is not an envelope, or did not open.
    #[error(transparent)]
    Envelope(#[from] bzt_envelope::Error),
    /// The broker refused a request with a protocol error.
    #[error("the broker answered HTTP {status} {code}: {message}")]
    Broker {
        /// HTTP status.
        status: u16,
        /// The protocol's error code.
        code: String,
        /// The broker's message.
        message: String,
    },
    /// The broker could not be reached (after retries, for the WebSocket).
    #[error("cannot talk to the broker: {0}")]
    Transport(String),
    /// The broker answered something the protocol does not allow.
    #[error("unexpected answer from the broker: {0}")]
    Protocol(String),
    /// The approved result does not check out (wrong challenge, bad signature, a wrapped key
    /// that does not decrypt with the one-time key): the file is not opened.
    #[error("the approval does not check out: {0}")]
    BadResult(String),
    /// No outcome arrived before the session's expiry (plus a grace period).
    #[error("no outcome from the broker by the session's expiry")]
    TimedOut,
    /// The co-signing service did not register the opening window; no session was created.
    #[error("the co-signing service did not register the opening window: {0}")]
    Opening(String),
}

/// The hall's one-time SM2 key pair: the phone wraps the content key to its public half.
/// Made per session, never stored; the secret is wiped when dropped.
pub struct OneTimeKey {
    /// Unwraps `wrapped_key_b64`.
    secret: SecretKey,
}

impl OneTimeKey {
    /// A fresh key from the operating system's generator.
    pub fn generate() -> Result<Self, HallError> {
        use sm2::elliptic_curve::Generate;
        let secret = SecretKey::try_generate()
            .map_err(|_| HallError::Transport("the system random generator failed".into()))?;
        Ok(Self { secret })
    }

    /// The session's `reply_key`: lowercase hex of the uncompressed point `04||X||Y`.
    pub fn reply_key_hex(&self) -> String {
        hex::encode(self.secret.public_key().to_sec1_bytes())
    }

    /// Decrypts a `wrapped_key_b64` (GM/T 0009 DER, base64) into the content key.
    pub fn unwrap(&self, wrapped_b64: &str) -> Result<ContentKey, HallError> {
        let der = STANDARD
            .decode(wrapped_b64)
            .map_err(|_| HallError::BadResult("wrapped_key_b64 is not base64".into()))?;
        let key = unwrap_key(&self.secret, &der).map_err(|_| {
            HallError::BadResult("the wrapped key does not decrypt with the one-time key".into())
        })?;
        ContentKey::from_slice(&key)
            .map_err(|_| HallError::BadResult("the wrapped key is not a 16-byte key".into()))
    }
}

/// How to create the session.
#[derive(Clone, Debug, Default)]
pub struct DecryptOptions {
    /// Shown on the phone; default `开标解密：<file name>`.
    pub title: Option<String>,
    /// Session lifetime in seconds (broker default when `None`).
    pub ttl_s: Option<u64>,
    /// Ask for number matching (recommended for `decrypt`).
    pub number_match: bool,
    /// The opening window (开标时间): sent with the session, and registered with the co-signing
    /// service first when `cosigner` is set.
    pub opening: Option<OpeningWindow>,
    /// The co-signing service of split keys, where the window is registered under the hall's
    /// own token, so that the service refuses to co-decrypt outside it whatever the broker says.
    pub cosigner: Option<CosignerRegistration>,
}

/// Where and how the hall registers its opening windows with the co-signing service
/// (`POST /v1/openings`, docs/key-splitting.md).
#[derive(Clone, Debug)]
pub struct CosignerRegistration {
    /// The service's base URL, e.g. `http://127.0.0.1:8701`.
    pub url: String,
    /// The hall's relying-party token at the service (`[[relying_parties]]`).
    pub token: String,
}

/// Talks to a broker as an RP backend (API key).
#[derive(Clone, Debug)]
pub struct HallClient {
    /// The relying-party API.
    rp: RpClient,
    /// The roots `wss:` trusts (give the HTTP client the same ones).
    tls: ClientTls,
}

/// A created `decrypt` session, with what the hall needs to finish it.
pub struct DecryptSession {
    /// Session id.
    pub id: String,
    /// The text to show as a QR code (updated by [`HallEvent::Qr`] when it rotates).
    pub qr_text: String,
    /// The session's expiry, as the broker wrote it.
    pub expires_at: String,
    /// The broker's create answer as received (`browser_token`, `ws_url`, `events_url`,
    /// `qr_svg_url`, ...): what a hall's web page needs to show the QR itself (the web demo's
    /// 开标大厅 hands it to the browser SDK).
    pub created: CreatedSession,
    /// The browser WebSocket (absolute `ws:`/`wss:` URL with the browser token).
    ws_url: String,
    /// The roots `wss:` trusts.
    tls: ClientTls,
    /// The sealed file.
    input: PathBuf,
    /// The file's header bytes exactly as in the file: what the challenge names.
    header_raw: Vec<u8>,
    /// The parsed header (recipients, to tell whether the signer is one).
    header: Header,
    /// Unwraps the phone's answer.
    key: OneTimeKey,
    /// When to stop waiting.
    deadline: tokio::time::Instant,
}

/// What happens while the hall waits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HallEvent {
    /// The QR text changed (rotation), or was seen again after a reconnect while pending.
    Qr(String),
    /// A phone claimed the session; with number matching, the two digits to show large.
    Scanned {
        /// The phone's device name.
        device: Option<String>,
        /// The number-matching code.
        match_code: Option<String>,
    },
    /// The socket dropped; the hall reconnects after `delay`.
    Reconnecting {
        /// What went wrong.
        error: String,
        /// The pause before the next attempt.
        delay: Duration,
    },
}

/// A terminal session as the socket reported it.
#[derive(Clone, Debug)]
pub struct Terminal {
    /// `approved`, `rejected`, `expired`, `cancelled` or `failed`.
    pub status: String,
    /// The session's `result` (`null` for expired and cancelled).
    pub result: Value,
}

/// Who approved the opening.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signer {
    /// Subject, RFC 4514.
    pub subject: String,
    /// Serial, lowercase hex.
    pub serial: String,
    /// Issuer, RFC 4514.
    pub issuer: String,
    /// Whether the file's header lists this certificate as a recipient.
    pub is_recipient: bool,
}

/// How a decryption ended.
#[derive(Clone, Debug)]
pub enum HallOutcome {
    /// The file was opened to the output path.
    Opened {
        /// Who approved.
        signer: Signer,
        /// Plaintext bytes and chunks.
        report: OpenReport,
    },
    /// The phone declined; its reason (e.g. 本证书不在该投标文件的解密证书列表中…).
    Rejected {
        /// The phone's reason, as the broker passed it on.
        reason: String,
    },
    /// Nobody completed the session in time.
    Expired,
    /// The session was cancelled.
    Cancelled,
    /// Too many bad completions (or another failure the broker reports).
    Failed {
        /// The broker's reason.
        reason: String,
    },
}

impl HallClient {
    /// A client of the broker at `base_url` (e.g. `http://127.0.0.1:8700`) with an app's API key.
    pub fn new(http: reqwest::Client, base_url: &str, api_key: &str) -> Self {
        Self {
            rp: RpClient::new(http, base_url, api_key),
            tls: ClientTls::web_pki(),
        }
    }

    /// Trusts `tls`'s roots on the browser WebSocket (`wss:`); build the HTTP client passed to
    /// [`HallClient::new`] from the same [`ClientTls`].
    pub fn with_tls(mut self, tls: ClientTls) -> Self {
        self.tls = tls;
        self
    }

    /// Reads the sealed file's header, makes a one-time key and creates the `decrypt` session.
    pub async fn create_decrypt(
        &self,
        input: &Path,
        options: &DecryptOptions,
    ) -> Result<DecryptSession, HallError> {
        let file = std::fs::File::open(input).map_err(bzt_envelope::Error::Io)?;
        let (header, header_raw) = read_header(std::io::BufReader::new(file))?;
        let key = OneTimeKey::generate()?;
        let name = input
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| input.display().to_string());
        let title = options
            .title
            .clone()
            .unwrap_or_else(|| format!("开标解密：{name}"));
        let title: String = title.chars().take(MAX_TITLE_CHARS).collect();
        let detail = format!(
            "投标文件信封 SM3：{}…；可解密证书 {} 个",
            &hex::encode(header_digest(&header_raw))[..16],
            header.recipients().len()
        );
        let mut body = CreateSession::new(crate::Kind::Decrypt, title);
        body.display = Display {
            title: body.display.title,
            detail: Some(detail),
        };
        body.envelope_header_b64 = Some(STANDARD.encode(&header_raw));
        body.reply_key = Some(key.reply_key_hex());
        body.ttl_s = options.ttl_s.map(|t| u32::try_from(t).unwrap_or(u32::MAX));
        body.number_match = options.number_match.then_some(true);
        if let Some(window) = &options.opening {
            // Registered before the session exists: no phone can be asked while only the
            // broker's copy of the window stands between it and the file.
            if let Some(cosigner) = &options.cosigner {
                self.register_opening(cosigner, &header_raw, window).await?;
            }
            body.opening = Some(window.clone());
        }
        let created = self.rp.create_session(&body).await?;
        let ttl = created.ttl_s;
        Ok(DecryptSession {
            id: created.id.clone(),
            qr_text: created.qr_text.clone(),
            expires_at: created.expires_at.clone(),
            ws_url: created.ws_url.clone(),
            created,
            tls: self.tls.clone(),
            input: input.to_owned(),
            header_raw,
            header,
            key,
            deadline: tokio::time::Instant::now() + Duration::from_secs(ttl) + EXPIRY_GRACE,
        })
    }

    /// Registers `window` for the envelope whose header is `header_raw` with the co-signing
    /// service (`POST /v1/openings`, keyed by the SM3 of the header, which the decrypt challenge
    /// names). The service then refuses to co-decrypt that envelope's keys outside the window by
    /// its own clock, even for a session whose broker sends no window or another one.
    pub async fn register_opening(
        &self,
        cosigner: &CosignerRegistration,
        header_raw: &[u8],
        window: &OpeningWindow,
    ) -> Result<(), HallError> {
        let url = format!("{}/v1/openings", cosigner.url.trim_end_matches('/'));
        let resp = self
            .rp
            .http()
            .post(&url)
            .bearer_auth(&cosigner.token)
            .json(&serde_json::json!({
                "envelope_sm3": hex::encode(header_digest(header_raw)),
                "not_before": window.not_before,
                "not_after": window.not_after,
            }))
            .send()
            .await
            .map_err(|e| HallError::Opening(format!("{url}: {}", e.without_url())))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        Err(HallError::Opening(format!(
            "HTTP {status} {}: {}",
            body["error"]["code"].as_str().unwrap_or_default(),
            body["error"]["message"].as_str().unwrap_or_default()
        )))
    }

    /// The whole flow: create the session, report its QR (as a first [`HallEvent::Qr`]), wait,
    /// and open `input` into `output` when approved.
    pub async fn decrypt_file(
        &self,
        input: &Path,
        output: &Path,
        options: &DecryptOptions,
        mut on_event: impl FnMut(&DecryptSession, HallEvent),
    ) -> Result<HallOutcome, HallError> {
        let session = self.create_decrypt(input, options).await?;
        on_event(&session, HallEvent::Qr(session.qr_text.clone()));
        let terminal = session.wait(|e| on_event(&session, e)).await?;
        session.finish(&terminal, output)
    }
}

impl DecryptSession {
    /// Waits for the session to end, on the browser WebSocket. Reconnects (with backoff) after
    /// any drop, and reads the outcome from the snapshot that starts every connection; gives up
    /// ([`HallError::TimedOut`]) a little after the session's expiry.
    pub async fn wait(&self, mut on_event: impl FnMut(HallEvent)) -> Result<Terminal, HallError> {
        let mut shown_qr = self.qr_text.clone();
        let mut shown_scan = false;
        let mut delay = RECONNECT_MIN;
        loop {
            let attempt = tokio::time::timeout_at(
                self.deadline,
                self.watch_once(&mut shown_qr, &mut shown_scan, &mut on_event),
            )
            .await
            .map_err(|_| HallError::TimedOut)?;
            let error = match attempt {
                Ok(Some(terminal)) => return Ok(terminal),
                Ok(None) => {
                    // A clean close without a result: reconnect at once for the snapshot.
                    delay = RECONNECT_MIN;
                    "the broker closed the socket".to_owned()
                }
                Err(Fatal(e)) => return Err(e),
                Err(Retry(e)) => e,
            };
            if tokio::time::Instant::now() + delay >= self.deadline {
                return Err(HallError::TimedOut);
            }
            on_event(HallEvent::Reconnecting { error, delay });
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(RECONNECT_MAX);
        }
    }

    /// One connection: `Ok(Some)` on a terminal event, `Ok(None)` on a close without one.
    async fn watch_once(
        &self,
        shown_qr: &mut String,
        shown_scan: &mut bool,
        on_event: &mut impl FnMut(HallEvent),
    ) -> Result<Option<Terminal>, WatchError> {
        use tokio_tungstenite::tungstenite::Error as WsError;
        let connected =
            crate::connect_ws(&self.ws_url, &self.tls, WebSocketConfig::default()).await;
        let (mut ws, _) = match connected {
            Ok(ok) => ok,
            Err(WsError::Http(resp)) if resp.status().is_client_error() && resp.status() != 429 => {
                let body = resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                return Err(Fatal(
                    crate::error_from_body(resp.status().as_u16(), &body, None).into(),
                ));
            }
            Err(e) => return Err(Retry(format!("WebSocket connect: {e}"))),
        };
        while let Some(frame) = ws.next().await {
            let text = match frame {
                Ok(Message::Text(t)) => t,
                Ok(Message::Close(Some(c))) if c.code != CloseCode::Normal => {
                    return Err(Retry(format!("closed with code {}", u16::from(c.code))))
                }
                Ok(Message::Close(_)) => return Ok(None),
                Ok(_) => continue,
                Err(e) => return Err(Retry(format!("WebSocket: {e}"))),
            };
            let event: Value = serde_json::from_str(text.as_str())
                .map_err(|e| Fatal(HallError::Protocol(format!("event is not JSON: {e}"))))?;
            let (status, view) = match event["type"].as_str() {
                Some("snapshot") => (event["session"]["status"].as_str(), &event["session"]),
                Some("status") | Some("result") => (event["status"].as_str(), &event),
                Some("qr") => (Some("pending"), &event),
                _ => continue,
            };
            match status {
                Some("pending") => {
                    if let Some(qr) = view["qr_text"].as_str().filter(|q| *q != shown_qr) {
                        *shown_qr = qr.to_owned();
                        on_event(HallEvent::Qr(qr.to_owned()));
                    }
                }
                Some("scanned") if !*shown_scan => {
                    *shown_scan = true;
                    on_event(HallEvent::Scanned {
                        device: view["device"]["name"].as_str().map(str::to_owned),
                        match_code: view["match_code"].as_str().map(str::to_owned),
                    });
                }
                Some(s @ ("approved" | "rejected" | "expired" | "cancelled" | "failed")) => {
                    return Ok(Some(Terminal {
                        status: s.to_owned(),
                        result: view["result"].clone(),
                    }));
                }
                _ => {}
            }
        }
        Err(Retry("the socket ended without a close frame".into()))
    }

    /// Turns the terminal session into the outcome; for `approved`, checks the result, unwraps
    /// the content key and opens the file into `output` (nothing is written unless the whole
    /// file authenticates; an existing `output` is replaced only then).
    pub fn finish(&self, terminal: &Terminal, output: &Path) -> Result<HallOutcome, HallError> {
        let reason = || {
            terminal.result["reason"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        };
        match terminal.status.as_str() {
            "approved" => {}
            "rejected" => return Ok(HallOutcome::Rejected { reason: reason() }),
            "expired" => return Ok(HallOutcome::Expired),
            "cancelled" => return Ok(HallOutcome::Cancelled),
            _ => return Ok(HallOutcome::Failed { reason: reason() }),
        }
        let signer = self.check_approval(&terminal.result)?;
        let wrapped = terminal.result["wrapped_key_b64"]
            .as_str()
            .ok_or_else(|| HallError::BadResult("the result has no wrapped_key_b64".into()))?;
        let key = self.key.unwrap(wrapped)?;
        let report = open_to_path_with_content_key(&key, &self.input, output)?;
        Ok(HallOutcome::Opened { signer, report })
    }

    /// The broker is a courier, not an oracle: the signed bytes must be this session's
    /// `decrypt` challenge naming this header, and the signature must verify.
    fn check_approval(&self, result: &Value) -> Result<Signer, HallError> {
        let bad = |why: &str| HallError::BadResult(why.to_owned());
        let tbs = result["tbs_b64"]
            .as_str()
            .and_then(|t| STANDARD.decode(t).ok())
            .ok_or_else(|| bad("no tbs_b64"))?;
        let challenge =
            Challenge::parse(&tbs).map_err(|e| HallError::BadResult(format!("challenge: {e}")))?;
        if challenge.kind != Kind::Decrypt
            || challenge.session != self.id
            || challenge.expires != self.expires_at
            || challenge.envelope != Some(header_digest(&self.header_raw))
        {
            return Err(bad(
                "the signed challenge is not this session's, or names another envelope header",
            ));
        }
        let pem = result["certificate"]["pem"]
            .as_str()
            .ok_or_else(|| bad("no certificate"))?;
        let cert = bzt_crypto::pem_certificate(pem)
            .map_err(|e| HallError::BadResult(format!("certificate: {e}")))?;
        let signature = result["signature_b64"]
            .as_str()
            .and_then(|s| STANDARD.decode(s).ok())
            .ok_or_else(|| bad("no signature_b64"))?;
        let key = bzt_crypto::cert_verifying_key(&cert)
            .map_err(|e| HallError::BadResult(format!("certificate: {e}")))?;
        bzt_crypto::verify_der(&key, &tbs, &signature).map_err(|_| {
            bad("the signature does not verify over the challenge with the certificate's key")
        })?;
        let serial = bzt_crypto::serial_hex(&cert);
        let issuer = bzt_crypto::issuer_string(&cert);
        Ok(Signer {
            subject: bzt_crypto::subject_string(&cert),
            is_recipient: self.header.find_recipient(&serial, &issuer).is_some(),
            serial,
            issuer,
        })
    }
}

/// Why one connection ended without an outcome.
enum WatchError {
    /// Try again (network, server restart, 1011).
    Retry(String),
    /// Give up (401/404: the session or token is not valid).
    Fatal(HallError),
}
use WatchError::{Fatal, Retry};

impl From<RpError> for HallError {
    fn from(e: RpError) -> Self {
        match e {
            RpError::Broker {
                status,
                code,
                message,
                ..
            } => HallError::Broker {
                status,
                code,
                message,
            },
            RpError::Transport(m) => HallError::Transport(m),
            RpError::Protocol(m) => HallError::Protocol(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_time_keys_round_trip() {
        let key = OneTimeKey::generate().unwrap();
        let hex_text = key.reply_key_hex();
        assert_eq!(hex_text.len(), 130);
        assert!(hex_text.starts_with("04"));
        let public = bzt_envelope::parse_reply_key(&hex_text).unwrap();
        let content = ContentKey::generate().unwrap();
        let wrapped = bzt_envelope::wrap_key(&public, content.as_bytes()).unwrap();
        let back = key.unwrap(&STANDARD.encode(wrapped)).unwrap();
        assert_eq!(back.as_bytes(), content.as_bytes());
        let other = OneTimeKey::generate().unwrap();
        let wrapped = bzt_envelope::wrap_key(&public, content.as_bytes()).unwrap();
        assert!(matches!(
            other.unwrap(&STANDARD.encode(wrapped)),
            Err(HallError::BadResult(_))
        ));
    }

    #[test]
    fn broker_errors_are_read_from_the_body() {
        let e = crate::error_from_body(
            404,
            r#"{"error":{"code":"not_found","message":"no"}}"#,
            None,
        );
        match HallError::from(e) {
            HallError::Broker { status, code, .. } => {
                assert_eq!((status, code.as_str()), (404, "not_found"))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            HallError::from(crate::error_from_body(502, "<html>", None)),
            HallError::Protocol(_)
        ));
    }
}
