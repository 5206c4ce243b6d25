//! The scan session and its state machine.
//!
//! ```text
//!            claim                 approve
//! pending ─────────▶ scanned ─────────────▶ approved
//!    │                  │  ├── reject / match_failed ──▶ rejected
//!    │                  │  └── 3rd bad completion ─────▶ failed
//!    └──── cancel / expire (from pending or scanned) ──▶ cancelled / expired
//! ```
//! Every transition is a [`Session::apply`] of an [`Op`] at a given `now`. It
//! either applies completely or not at all, and it bumps `version` exactly
//! when the status changes. A store makes "read, apply, write" atomic (a lock
//! in memory, compare-and-set on [`Session::rev`] in Redis); nothing else
//! about the rules lives outside this file.
//!
//! Randomness (tokens, number-match codes, rotated secrets) is drawn by the
//! caller and passed in, so applying an op is deterministic and a store may
//! retry it after losing a compare-and-set race.

use crate::codec::{b64, b64_opt};
use crate::error::{DomainError, ErrorCode};
use crate::pki::CertificateInfo;
use crate::secret::{random_bytes, ConversationId, Secret, SecretHash, SessionId};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

/// Allowed session lifetimes, seconds.
pub const TTL_RANGE_S: std::ops::RangeInclusive<u32> = 30..=600;
pub const DEFAULT_TTL_S: u32 = 180;
/// A terminal session stays readable at least this long (docs/protocol.md).
pub const TERMINAL_RETENTION_S: i64 = 600;
/// Completions that fail verification before the session moves to `failed`.
pub const MAX_BAD_COMPLETIONS: u8 = 3;
/// Grace during which a superseded claim secret of a rotating QR still works.
pub const ROTATION_GRACE_MS: i64 = 3_000;
pub const ROTATE_RANGE_S: std::ops::RangeInclusive<u32> = 5..=60;
pub const MAX_TITLE_CHARS: usize = 200;
pub const MAX_TBS_BYTES: usize = 64 * 1024;

/// What a session is for: the wire's own type (crate `bzt-wire`).
pub use bzt_wire::Kind;

/// Where a session is (the wire type: `pending` → `scanned` → one terminal state).
pub use bzt_wire::Status;

/// What the phone shows the user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisplayText {
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The end user on whose behalf the session runs, as the RP or the broker saw them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requester {
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub user_agent: Option<String>,
    #[serde(default)]
    pub origin: Option<String>,
}

/// The phone that claimed the session, as it described itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    pub id: String,
    pub name: String,
}

/// A member signing with a company certificate granted to it (企业证书授权):
/// the co-signing service names it when it co-signs for the session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delegate {
    pub name: String,
    /// The member's phone (device id).
    pub device: String,
}

/// Only this certificate may complete the session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectCert {
    /// Normalised: lowercase hex without leading zeros.
    pub serial: String,
    pub issuer: Option<String>,
}

/// Limits of a conversation a `sign` session may open (会话签章).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConversationPolicy {
    #[serde(default = "ConversationPolicy::default_max_requests")]
    pub max_requests: u32,
    #[serde(default = "ConversationPolicy::default_idle_s")]
    pub idle_s: u32,
    #[serde(default = "ConversationPolicy::default_max_s")]
    pub max_s: u32,
}

impl ConversationPolicy {
    /// Upper bounds. A conversation keeps its requests (with their bytes
    /// and signatures) until it ends, and every change rewrites it in the
    /// store, so its length must stay bounded; eight hours covers a working
    /// day's bid document.
    pub const MAX_REQUESTS: u32 = 1000;
    pub const MAX_IDLE_S: u32 = 3600;
    pub const MAX_LIFETIME_S: u32 = 8 * 3600;

    pub fn default_max_requests() -> u32 {
        200
    }
    pub fn default_idle_s() -> u32 {
        600
    }
    pub fn default_max_s() -> u32 {
        7200
    }
}

/// The claim secret of the QR code, with rotation state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClaimSecrets {
    pub current: Secret,
    /// Rotation counter, 0 for the first code.
    pub seq: u32,
    /// The superseded secret and the end of its grace period.
    pub previous: Option<(Secret, Timestamp)>,
    /// Rotation period (`rotate_s`), if the RP asked for a rotating QR.
    pub rotate_s: Option<u32>,
}

impl ClaimSecrets {
    fn accepts(&self, presented: &Secret, now: Timestamp) -> bool {
        // Evaluate both comparisons so the time taken does not say which matched.
        let current = self.current.matches(presented);
        let previous = match &self.previous {
            Some((s, until)) => s.matches(presented) && now < *until,
            None => false,
        };
        current | previous
    }

    /// When the current code is due to be replaced.
    pub fn next_rotation_at(&self, created_at: Timestamp) -> Option<Timestamp> {
        self.rotate_s
            .map(|r| created_at.plus_secs(i64::from(r) * (i64::from(self.seq) + 1)))
    }
}

/// Number matching: the browser shows `code`, the phone must pick it from `choices`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumberMatch {
    pub code: String,
    pub choices: Vec<String>,
}

impl NumberMatch {
    /// A two-digit code and three distinct two-digit choices containing it, in random order.
    pub fn generate() -> Self {
        let bytes = random_bytes::<16>();
        let mut picks: Vec<String> = Vec::with_capacity(3);
        for pair in bytes.chunks(2) {
            let n = u16::from_le_bytes([pair[0], pair[1]]) % 100;
            let s = format!("{n:02}");
            if !picks.contains(&s) {
                picks.push(s);
            }
            if picks.len() == 3 {
                break;
            }
        }
        // 8 draws from 100 values virtually never collide twice; fill deterministically if so.
        let mut n = 0u16;
        while picks.len() < 3 {
            let s = format!("{n:02}");
            if !picks.contains(&s) {
                picks.push(s);
            }
            n += 1;
        }
        let code = picks[(bytes[15] % 3) as usize].clone();
        Self {
            code,
            choices: picks,
        }
    }
}

/// A conversation opened by an approved `sign` session, as the RP and browser see it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConversationGrant {
    pub id: ConversationId,
    /// The requester's token (travels in `result.conversation.token`).
    pub token: Secret,
    pub expires_at: Timestamp,
}

/// `seal` of a `sign` session: the RP asks for a GB/T 38540 seal signature (扫码签章 with an
/// electronic seal) instead of a bare SM2 signature over `tbs_b64`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealRequest {
    /// SM3 of the protected data: the SES_Signature's `dataHash` must be exactly this.
    #[serde(with = "b64")]
    pub data_hash: Vec<u8>,
    /// `TBS_Sign.propertyInfo`: what is protected (in OFD, the path of `Signature.xml`).
    pub property_info: String,
}

impl SealRequest {
    /// Longest `property_info` accepted.
    pub const MAX_PROPERTY_INFO: usize = 512;

    /// Checks the RP's `seal`: a 32-byte SM3 hash and printable ASCII `property_info`
    /// (`IA5String` in the structure), 1..=512 characters.
    pub fn validate(&self) -> Result<(), DomainError> {
        if self.data_hash.len() != 32 {
            return Err(DomainError::invalid(format!(
                "`seal.data_hash_b64` must be an SM3 hash (32 bytes), got {} bytes",
                self.data_hash.len()
            )));
        }
        let p = &self.property_info;
        if p.is_empty()
            || p.len() > Self::MAX_PROPERTY_INFO
            || !p.bytes().all(|b| (0x20..0x7f).contains(&b))
        {
            return Err(DomainError::invalid(format!(
                "`seal.property_info` must be 1..{} printable ASCII characters",
                Self::MAX_PROPERTY_INFO
            )));
        }
        Ok(())
    }
}

/// The seal picture pushed with the result, so the bid tool can stamp it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealPicture {
    /// `PNG`, `JPG`, `GIF`, `BMP` or `SVG`.
    #[serde(rename = "type")]
    pub picture_type: String,
    #[serde(rename = "data_b64", with = "b64")]
    pub data: Vec<u8>,
    pub width_mm: u32,
    pub height_mm: u32,
}

/// What a verified seal signature adds to an approval (`result.seal`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealApproval {
    /// The whole `SES_Signature`, DER (`result.seal_signature_b64`).
    #[serde(with = "b64")]
    pub seal_signature: Vec<u8>,
    /// `DER(TBS_Sign)`: the bytes the signer signed (`result.tbs_b64`).
    #[serde(with = "b64")]
    pub signed: Vec<u8>,
    pub es_id: String,
    pub name: String,
    /// `company`, `personal`, or `other` for a type number this broker does not name.
    pub seal_type: String,
    pub valid_start: Timestamp,
    pub valid_end: Timestamp,
    /// The seal maker's certificate subject.
    pub maker: String,
    /// `timeInfo`: when the phone stamped.
    pub time_info: Timestamp,
    pub property_info: String,
    pub picture: SealPicture,
}

/// `result.seal` (and a conversation request's `seal`): the verified seal, with its picture.
pub fn seal_result(seal: &SealApproval, data_hash: &[u8]) -> bzt_wire::SealResult {
    bzt_wire::SealResult {
        es_id: seal.es_id.clone(),
        name: seal.name.clone(),
        seal_type: seal.seal_type.clone(),
        valid_start: seal.valid_start.to_rfc3339(),
        valid_end: seal.valid_end.to_rfc3339(),
        maker: seal.maker.clone(),
        time_info: seal.time_info.to_rfc3339(),
        property_info: seal.property_info.clone(),
        data_hash_b64: crate::codec::encode(data_hash),
        picture: bzt_wire::SealPicture {
            picture_type: seal.picture.picture_type.clone(),
            data_b64: crate::codec::encode(&seal.picture.data),
            width_mm: seal.picture.width_mm,
            height_mm: seal.picture.height_mm,
        },
    }
}

/// A certificate as the wire describes it.
pub fn certificate_view(c: &CertificateInfo) -> bzt_wire::CertificateInfo {
    bzt_wire::CertificateInfo {
        pem: c.pem.clone(),
        serial: c.serial.clone(),
        subject: c.subject.clone(),
        issuer: c.issuer.clone(),
        not_before: c.not_before.to_rfc3339(),
        not_after: c.not_after.to_rfc3339(),
        domain: c.domain.clone(),
    }
}

impl DisplayText {
    /// What the phone shows, on the wire.
    pub fn view(&self) -> bzt_wire::DisplayView {
        bzt_wire::DisplayView {
            title: self.title.clone(),
            detail: self.detail.clone(),
        }
    }
}

impl Delegate {
    /// The member, on the wire.
    pub fn view(&self) -> bzt_wire::Delegate {
        bzt_wire::Delegate {
            name: self.name.clone(),
            device: self.device.clone(),
        }
    }
}

/// What an approved session carries.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Approval {
    pub certificate: CertificateInfo,
    #[serde(with = "b64")]
    pub signature: Vec<u8>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<CertificateInfo>,
    #[serde(default, with = "b64_opt", skip_serializing_if = "Option::is_none")]
    pub wrapped_key: Option<Vec<u8>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<ConversationGrant>,
    /// A seal session's verified seal signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<Box<SealApproval>>,
}

/// How a session ended.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    Approved(Box<Approval>),
    Rejected { reason: String },
    Failed { reason: String },
    Expired,
    Cancelled,
}

/// Who cancelled, for logs and metrics (the wire does not distinguish).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelledBy {
    Rp,
    Browser,
}

/// The opening window of a `decrypt` session (开标时间): the content key may be
/// unwrapped from `not_before` (the opening time) until `not_after` (the
/// decryption deadline the hall sets). The broker refuses completions outside
/// it, carries it on the claim and in the co-signing context, and a
/// co-signing service refuses co-decryption outside it by its own clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Opening {
    pub not_before: Timestamp,
    pub not_after: Timestamp,
}

impl Opening {
    /// The longest window a hall may set: a decryption deadline is hours
    /// after the opening, not months (a typo in a year would otherwise
    /// leave a bid file openable for good).
    pub const MAX_WINDOW_S: i64 = 7 * 24 * 3600;

    /// Checks a window given at create time `now`: ordered, not already
    /// over, not longer than [`Self::MAX_WINDOW_S`].
    pub fn validate(&self, now: Timestamp) -> Result<(), DomainError> {
        if self.not_before >= self.not_after {
            return Err(DomainError::invalid(
                "`opening.not_before` must be earlier than `opening.not_after`",
            ));
        }
        if self.not_before.millis_until(self.not_after) > Self::MAX_WINDOW_S * 1000 {
            return Err(DomainError::invalid(format!(
                "the opening window is longer than {} days; set `opening.not_after` to the decryption deadline",
                Self::MAX_WINDOW_S / 86_400
            )));
        }
        if self.not_after <= now {
            return Err(DomainError::invalid(format!(
                "`opening.not_after` ({}) has already passed",
                self.not_after
            )));
        }
        Ok(())
    }

    /// Is `now` inside the window (`not_before` included, `not_after` excluded)?
    pub fn contains(&self, now: Timestamp) -> bool {
        self.not_before <= now && now < self.not_after
    }

    /// The error of a completion or co-decryption attempted at `now`, outside the window.
    pub fn refuse_at(&self, now: Timestamp) -> Option<DomainError> {
        if now < self.not_before {
            Some(DomainError::new(
                ErrorCode::Forbidden,
                format!(
                    "the bid files may not be opened before the opening time {}",
                    self.not_before
                ),
            ))
        } else if now >= self.not_after {
            Some(DomainError::new(
                ErrorCode::Forbidden,
                format!("the decryption deadline {} has passed", self.not_after),
            ))
        } else {
            None
        }
    }
}

/// Validated content of a create request. Built by [`NewSession::validate`],
/// the only way to make one, so a `Session` never holds an unchecked field.
#[derive(Clone, Debug)]
pub struct NewSession {
    pub kind: Kind,
    pub ttl_s: u32,
    pub display: DisplayText,
    pub accept: Vec<String>,
    pub expect_cert: Option<ExpectCert>,
    pub requester: Option<Requester>,
    pub tbs: Option<Vec<u8>>,
    pub conversation: Option<ConversationPolicy>,
    pub envelope_header: Option<Vec<u8>>,
    pub reply_key: Option<String>,
    /// `decrypt` only; checked against the clock by [`Opening::validate`] at create.
    pub opening: Option<Opening>,
    pub webhook_url: Option<String>,
    pub rotate_s: Option<u32>,
    pub number_match: bool,
    pub seal: Option<SealRequest>,
}

/// A create request as the RP sent it, before validation.
#[derive(Clone, Debug, Default)]
pub struct NewSessionRequest {
    pub kind: Option<Kind>,
    pub ttl_s: Option<u32>,
    pub display: Option<DisplayText>,
    pub accept: Option<Vec<String>>,
    pub expect_cert: Option<ExpectCert>,
    pub requester: Option<Requester>,
    pub tbs: Option<Vec<u8>>,
    pub conversation: Option<ConversationPolicy>,
    pub envelope_header: Option<Vec<u8>>,
    pub reply_key: Option<String>,
    pub opening: Option<Opening>,
    pub webhook_url: Option<String>,
    pub rotate_s: Option<u32>,
    pub number_match: Option<bool>,
    pub seal: Option<SealRequest>,
}

impl NewSession {
    /// Checks a create request against the protocol and the configured trust
    /// domains. Messages name the field and say what is allowed.
    pub fn validate(req: NewSessionRequest, trust_domains: &[String]) -> Result<Self, DomainError> {
        let kind = req
            .kind
            .ok_or_else(|| DomainError::invalid("`kind` is required"))?;
        let ttl_s = req.ttl_s.unwrap_or(DEFAULT_TTL_S);
        if !TTL_RANGE_S.contains(&ttl_s) {
            return Err(DomainError::invalid(format!(
                "`ttl_s` must be between {} and {} seconds, got {ttl_s}",
                TTL_RANGE_S.start(),
                TTL_RANGE_S.end()
            )));
        }
        let display = req
            .display
            .ok_or_else(|| DomainError::invalid("`display.title` is required"))?;
        validate_display(&display)?;
        let accept = match req.accept {
            None => trust_domains.to_vec(),
            Some(list) if list.is_empty() => {
                return Err(DomainError::invalid(
                    "`accept` must name at least one trust domain (omit it to accept all)",
                ))
            }
            Some(list) => {
                let mut out: Vec<String> = Vec::new();
                for name in list {
                    if !trust_domains.contains(&name) {
                        return Err(DomainError::invalid(format!(
                            "`accept` names unknown trust domain {name:?}; configured: {}",
                            trust_domains.join(", ")
                        )));
                    }
                    if !out.contains(&name) {
                        out.push(name);
                    }
                }
                out
            }
        };
        let expect_cert = req
            .expect_cert
            .map(|e| {
                crate::pki::normalize_serial(&e.serial)
                    .map(|serial| ExpectCert {
                        serial,
                        issuer: e.issuer,
                    })
                    .ok_or_else(|| {
                        DomainError::invalid("`expect_cert.serial` must be a hex serial number")
                    })
            })
            .transpose()?;

        let only = |present: bool, field: &str, kinds: &str| {
            if present {
                Err(DomainError::invalid(format!(
                    "`{field}` is only allowed for kind {kinds}, not {}",
                    kind.as_str()
                )))
            } else {
                Ok(())
            }
        };
        only(kind != Kind::Sign && req.tbs.is_some(), "tbs_b64", "sign")?;
        only(
            kind != Kind::Sign && req.conversation.is_some(),
            "conversation",
            "sign",
        )?;
        only(
            kind != Kind::Decrypt && req.envelope_header.is_some(),
            "envelope_header_b64",
            "decrypt",
        )?;
        only(
            kind != Kind::Decrypt && req.reply_key.is_some(),
            "reply_key",
            "decrypt",
        )?;
        only(
            kind != Kind::Decrypt && req.opening.is_some(),
            "opening",
            "decrypt",
        )?;

        only(kind != Kind::Sign && req.seal.is_some(), "seal", "sign")?;
        if kind == Kind::Sign {
            match (&req.tbs, &req.seal) {
                (None, None) => {
                    return Err(DomainError::invalid(
                        "kind `sign` requires `tbs_b64` (or `seal` for a seal signature)",
                    ))
                }
                (Some(_), Some(_)) => {
                    return Err(DomainError::invalid(
                        "send `tbs_b64` or `seal`, not both: a seal signature signs TBS_Sign around `seal.data_hash_b64`",
                    ))
                }
                (Some(t), None) => validate_tbs(t)?,
                (None, Some(seal)) => seal.validate()?,
            }
        }
        if let Some(c) = &req.conversation {
            if c.max_requests == 0 || c.idle_s == 0 || c.max_s == 0 {
                return Err(DomainError::invalid(
                    "`conversation` limits must be positive numbers",
                ));
            }
            for (name, value, max) in [
                (
                    "max_requests",
                    c.max_requests,
                    ConversationPolicy::MAX_REQUESTS,
                ),
                ("idle_s", c.idle_s, ConversationPolicy::MAX_IDLE_S),
                ("max_s", c.max_s, ConversationPolicy::MAX_LIFETIME_S),
            ] {
                if value > max {
                    return Err(DomainError::invalid(format!(
                        "`conversation.{name}` is {value}; at most {max} (open a new conversation after it ends)"
                    )));
                }
            }
        }
        if kind == Kind::Decrypt {
            match &req.envelope_header {
                None => {
                    return Err(DomainError::invalid(
                        "kind `decrypt` requires `envelope_header_b64`",
                    ))
                }
                Some(h) if h.is_empty() => {
                    return Err(DomainError::invalid("`envelope_header_b64` is empty"))
                }
                Some(_) => {}
            }
            match &req.reply_key {
                None => return Err(DomainError::invalid("kind `decrypt` requires `reply_key`")),
                Some(k) if !is_uncompressed_point_hex(k) => {
                    return Err(DomainError::invalid(
                        "`reply_key` must be an uncompressed SM2 point: 130 hex digits starting with 04",
                    ))
                }
                // The phone would only find out after the user scanned.
                Some(k) if !is_on_curve(k) => {
                    return Err(DomainError::invalid(
                        "`reply_key` is not a point on the SM2 curve (check that x and y belong to one public key)",
                    ))
                }
                Some(_) => {}
            }
        }
        if let Some(r) = req.rotate_s {
            if !ROTATE_RANGE_S.contains(&r) {
                return Err(DomainError::invalid(format!(
                    "`rotate_s` must be between {} and {} seconds, got {r}",
                    ROTATE_RANGE_S.start(),
                    ROTATE_RANGE_S.end()
                )));
            }
        }
        if let Some(url) = &req.webhook_url {
            validate_webhook_url(url)?;
        }
        if let Some(r) = &req.requester {
            validate_requester(r)?;
        }
        Ok(Self {
            kind,
            ttl_s,
            display,
            accept,
            expect_cert,
            requester: req.requester,
            tbs: req.tbs,
            conversation: req.conversation,
            envelope_header: req.envelope_header,
            reply_key: req.reply_key.map(|k| k.to_ascii_lowercase()),
            opening: req.opening,
            webhook_url: req.webhook_url,
            rotate_s: req.rotate_s,
            number_match: req.number_match.unwrap_or(false),
            seal: req.seal,
        })
    }
}

/// `display`: a non-empty title and an optional detail, ≤ 200 characters each,
/// free of control, bidi and invisible characters ([`crate::text`]).
pub fn validate_display(display: &DisplayText) -> Result<(), DomainError> {
    if display.title.trim().is_empty() {
        return Err(DomainError::invalid("`display.title` must not be empty"));
    }
    if display.title.chars().count() > MAX_TITLE_CHARS {
        return Err(DomainError::invalid(format!(
            "`display.title` is longer than {MAX_TITLE_CHARS} characters"
        )));
    }
    if display
        .detail
        .as_ref()
        .is_some_and(|d| d.chars().count() > MAX_TITLE_CHARS)
    {
        return Err(DomainError::invalid(format!(
            "`display.detail` is longer than {MAX_TITLE_CHARS} characters"
        )));
    }
    use crate::text::{check_display_text, Lines};
    check_display_text("display.title", &display.title, Lines::One)?;
    if let Some(detail) = &display.detail {
        check_display_text("display.detail", detail, Lines::Many)?;
    }
    Ok(())
}

/// An uncompressed SM2 point in hex that is on the curve.
fn is_on_curve(hex_point: &str) -> bool {
    hex::decode(hex_point)
        .ok()
        .is_some_and(|bytes| sm2::PublicKey::from_sec1_bytes(&bytes).is_ok())
}

/// Longest `requester.user_agent` kept or accepted, in characters.
pub const MAX_USER_AGENT_CHARS: usize = 512;
/// Longest `requester.origin`, in characters.
pub const MAX_ORIGIN_CHARS: usize = 256;

/// `requester` from the RP: `ip` an IP address, `user_agent` at most 512
/// and `origin` at most 256 characters of displayable text (the phone shows
/// them), `origin` an http(s) origin.
pub fn validate_requester(r: &Requester) -> Result<(), DomainError> {
    use crate::text::{check_display_text, Lines};
    if let Some(ip) = &r.ip {
        if ip.parse::<std::net::IpAddr>().is_err() {
            return Err(DomainError::invalid(format!(
                "`requester.ip` must be an IPv4 or IPv6 address, got {:?}",
                ip.chars().take(64).collect::<String>()
            )));
        }
    }
    if let Some(ua) = &r.user_agent {
        if ua.chars().count() > MAX_USER_AGENT_CHARS {
            return Err(DomainError::invalid(format!(
                "`requester.user_agent` is longer than {MAX_USER_AGENT_CHARS} characters"
            )));
        }
        check_display_text("requester.user_agent", ua, Lines::One)?;
    }
    if let Some(origin) = &r.origin {
        let lower = origin.to_ascii_lowercase();
        if origin.chars().count() > MAX_ORIGIN_CHARS
            || !(lower.starts_with("https://") || lower.starts_with("http://"))
        {
            return Err(DomainError::invalid(format!(
                "`requester.origin` must be an http(s) origin of at most {MAX_ORIGIN_CHARS} characters"
            )));
        }
        check_display_text("requester.origin", origin, Lines::One)?;
    }
    Ok(())
}

/// `webhook_url`: an absolute http(s) URL of at most 2048 characters with a
/// host and a port other than 0 (`http://` and `http://:0/` would fail on
/// every delivery). Whether the host may be reached is decided at delivery,
/// after DNS.
pub fn validate_webhook_url(url: &str) -> Result<(), DomainError> {
    let lower = url.to_ascii_lowercase();
    if !(lower.starts_with("https://") || lower.starts_with("http://"))
        || url.len() > 2048
        || url.chars().any(char::is_whitespace)
    {
        return Err(DomainError::invalid(
            "`webhook_url` must be an absolute http(s) URL",
        ));
    }
    let parsed = url::Url::parse(url)
        .map_err(|e| DomainError::invalid(format!("`webhook_url` is not a valid URL: {e}")))?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(DomainError::invalid("`webhook_url` has no host"));
    }
    if parsed.port() == Some(0) {
        return Err(DomainError::invalid("`webhook_url` names port 0"));
    }
    Ok(())
}

/// Bytes to sign: 1 B..64 KiB (more answers 413).
pub fn validate_tbs(tbs: &[u8]) -> Result<(), DomainError> {
    if tbs.is_empty() {
        return Err(DomainError::invalid("`tbs_b64` must hold at least 1 byte"));
    }
    if tbs.len() > MAX_TBS_BYTES {
        return Err(DomainError::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "`tbs_b64` holds {} bytes; at most {MAX_TBS_BYTES} may be signed",
                tbs.len()
            ),
        ));
    }
    Ok(())
}

fn is_uncompressed_point_hex(s: &str) -> bool {
    s.len() == 130 && s.starts_with("04") && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// The secrets handed out once, at creation, in the create answer.
#[derive(Debug)]
pub struct CreatedSecrets {
    pub browser_token: Secret,
}

/// A scan session as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Session {
    pub id: SessionId,
    pub app_id: String,
    pub kind: Kind,
    pub status: Status,
    /// Bumped by every status transition; what clients use to detect change.
    pub version: u64,
    /// Bumped by every write, including the ones that do not change `version`
    /// (QR rotation, requester notes); the compare-and-set key of stores.
    pub rev: u64,
    pub display: DisplayText,
    pub accept: Vec<String>,
    pub expect_cert: Option<ExpectCert>,
    pub requester: Option<Requester>,
    /// The bytes the phone must sign: the RP's for `sign`, else the challenge.
    #[serde(with = "b64")]
    pub tbs: Vec<u8>,
    pub conversation_policy: Option<ConversationPolicy>,
    /// A `sign` session that asks for a seal signature; `tbs` then holds `seal.data_hash`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<SealRequest>,
    #[serde(default, with = "b64_opt")]
    pub envelope_header: Option<Vec<u8>>,
    pub reply_key: Option<String>,
    /// The opening window of a `decrypt` session, when the hall set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opening: Option<Opening>,
    pub webhook_url: Option<String>,
    pub claim: ClaimSecrets,
    /// Whether the RP asked for number matching.
    pub number_match_required: bool,
    /// Drawn at claim when required.
    pub number_match: Option<NumberMatch>,
    pub browser_token: SecretHash,
    pub phone_token: Option<SecretHash>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub scanned_at: Option<Timestamp>,
    pub completed_at: Option<Timestamp>,
    pub device: Option<Device>,
    pub bad_completions: u8,
    pub outcome: Option<Outcome>,
    /// Set while scanned when the co-signing service co-signs for this
    /// session with a member's granted share; shown as `result.delegate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate: Option<Delegate>,
}

/// A change requested of a session. See the module doc for the rules.
#[derive(Clone, Debug)]
pub enum Op {
    /// The phone presents the QR's claim secret.
    Claim {
        secret: Secret,
        device: Device,
        phone_token: SecretHash,
        number_match: Option<NumberMatch>,
    },
    /// A completion that passed every check.
    Approve {
        phone_token: Secret,
        approval: Box<Approval>,
    },
    /// A completion that failed certificate or signature checks (a 422).
    BadCompletion { phone_token: Secret },
    /// The phone declined.
    Reject { phone_token: Secret, reason: String },
    /// The phone picked the wrong number.
    MatchFailed { phone_token: Secret },
    /// The RP or the browser cancelled.
    Cancel { by: CancelledBy },
    /// The expiry timer fired (a no-op unless due and not terminal).
    Expire,
    /// The rotation timer fired (a no-op unless due and pending).
    Rotate { new_secret: Secret },
    /// First sight of the browser: remember who is asking, if the RP did not say.
    NoteRequester(Requester),
    /// The co-signing service is co-signing for the phone that holds the
    /// session, with a member's granted share (`Some`) or an owner's (`None`).
    NoteDelegate(Option<Delegate>),
}

/// What a successful op yields to its caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpOutput {
    Done,
    /// Nothing to do (expire not due, rotation not due, requester already known).
    Unchanged,
    Claimed {
        match_choices: Option<Vec<String>>,
    },
    /// A bad completion was counted; `failed` says whether it was the last allowed.
    BadCompletionCounted {
        count: u8,
        failed: bool,
    },
}

/// The result of [`Session::apply`]: the op's answer, and whether the session
/// changed and must be written back. An op can fail *and* change the session:
/// a claim that arrives after `expires_at` both expires the session and answers 410.
#[derive(Debug)]
pub struct Applied {
    pub changed: bool,
    pub output: Result<OpOutput, DomainError>,
}

impl Session {
    /// A new pending session. Returns it with the browser token, which is
    /// stored only as a hash.
    pub fn create(
        id: SessionId,
        app_id: &str,
        spec: NewSession,
        now: Timestamp,
    ) -> (Self, CreatedSecrets) {
        let expires_at = now.plus_secs(i64::from(spec.ttl_s));
        let tbs = match (spec.kind, &spec.seal) {
            (Kind::Sign, Some(seal)) => seal.data_hash.clone(),
            (Kind::Sign, None) => spec.tbs.unwrap_or_default(),
            (kind, _) => crate::challenge::build(
                kind,
                app_id,
                id.as_str(),
                &crate::challenge::new_nonce(),
                expires_at,
                spec.envelope_header.as_deref(),
            ),
        };
        let browser_token = Secret::generate();
        let session = Session {
            id,
            app_id: app_id.to_owned(),
            kind: spec.kind,
            status: Status::Pending,
            version: 1,
            rev: 1,
            display: spec.display,
            accept: spec.accept,
            expect_cert: spec.expect_cert,
            requester: spec.requester,
            tbs,
            conversation_policy: spec.conversation,
            seal: spec.seal,
            envelope_header: spec.envelope_header,
            reply_key: spec.reply_key,
            opening: spec.opening,
            webhook_url: spec.webhook_url,
            claim: ClaimSecrets {
                current: Secret::generate(),
                seq: 0,
                previous: None,
                rotate_s: spec.rotate_s,
            },
            number_match_required: spec.number_match,
            number_match: None,
            browser_token: browser_token.hash(),
            phone_token: None,
            created_at: now,
            expires_at,
            scanned_at: None,
            completed_at: None,
            device: None,
            bad_completions: 0,
            outcome: None,
            delegate: None,
        };
        (session, CreatedSecrets { browser_token })
    }

    pub fn is_terminal(&self) -> bool {
        self.status.is_terminal()
    }

    /// When a terminal session may be forgotten.
    pub fn purge_at(&self) -> Option<Timestamp> {
        self.completed_at.map(|t| t.plus_secs(TERMINAL_RETENTION_S))
    }

    /// The QR text: `<public_base_url>/q/<session id>#<claim secret>`.
    pub fn qr_text(&self, public_base_url: &str) -> String {
        format!(
            "{}/q/{}#{}",
            public_base_url.trim_end_matches('/'),
            self.id,
            self.claim.current.expose()
        )
    }

    /// Does this bearer token belong to the phone that claimed the session?
    pub fn phone_token_matches(&self, token: &Secret) -> bool {
        self.phone_token.is_some_and(|h| h.verify(token))
    }

    /// Is the presented secret this session's claim secret (or the previous one, in grace)?
    pub fn claim_secret_matches(&self, secret: &Secret, now: Timestamp) -> bool {
        self.claim.accepts(secret, now)
    }

    /// Checks that a completion by `phone_token` may proceed now, without
    /// changing anything. Handlers call this before the (expensive)
    /// certificate and signature checks, and [`Op::Approve`] checks it again.
    pub fn check_completable(
        &self,
        phone_token: &Secret,
        now: Timestamp,
    ) -> Result<(), DomainError> {
        if !self.phone_token_matches(phone_token) {
            return Err(DomainError::new(
                ErrorCode::Unauthorized,
                "the phone token is not valid for this session",
            ));
        }
        match self.status {
            Status::Scanned if now >= self.expires_at => Err(expired_error()),
            Status::Scanned => Ok(()),
            Status::Expired => Err(expired_error()),
            s => Err(DomainError::conflict(format!(
                "the session is already {} and cannot be completed",
                s.as_str()
            ))),
        }
    }

    /// Applies `op` at `now`. See [`Applied`].
    pub fn apply(&mut self, op: &Op, now: Timestamp) -> Applied {
        // Lazy expiry: whatever the op, a session past its deadline expires
        // first, so no caller ever acts on a session the timer has not reached yet.
        let expired_now = self.expire_if_due(now);
        let output = self.apply_inner(op, now);
        // Only expiry changes a session whose op then fails; every other op
        // either applies or leaves the session untouched.
        let changed = expired_now || matches!(&output, Ok(o) if *o != OpOutput::Unchanged);
        if changed {
            self.rev += 1;
        }
        Applied { changed, output }
    }

    fn apply_inner(&mut self, op: &Op, now: Timestamp) -> Result<OpOutput, DomainError> {
        match op {
            Op::Claim {
                secret,
                device,
                phone_token,
                number_match,
            } => {
                // The secret first: a wrong one must look exactly like an unknown session.
                if !self.claim.accepts(secret, now) {
                    return Err(unknown_session_error());
                }
                match self.status {
                    Status::Pending => {}
                    Status::Scanned => {
                        return Err(DomainError::new(
                            ErrorCode::AlreadyClaimed,
                            "this QR code has already been scanned by another phone",
                        ))
                    }
                    Status::Expired => return Err(expired_error()),
                    s => {
                        return Err(DomainError::conflict(format!(
                            "the session is already {}",
                            s.as_str()
                        )))
                    }
                }
                let number_match = if self.number_match_required {
                    Some(number_match.clone().unwrap_or_else(NumberMatch::generate))
                } else {
                    None
                };
                let match_choices = number_match.as_ref().map(|m| m.choices.clone());
                self.number_match = number_match;
                self.phone_token = Some(*phone_token);
                self.device = Some(device.clone());
                self.scanned_at = Some(now);
                // The claim secret is spent: forget the grace copy so it cannot be replayed.
                self.claim.previous = None;
                self.transition(Status::Scanned, now);
                Ok(OpOutput::Claimed { match_choices })
            }
            Op::Approve {
                phone_token,
                approval,
            } => {
                self.check_completable(phone_token, now)?;
                self.outcome = Some(Outcome::Approved(approval.clone()));
                self.transition(Status::Approved, now);
                Ok(OpOutput::Done)
            }
            Op::BadCompletion { phone_token } => {
                self.check_completable(phone_token, now)?;
                self.bad_completions = self.bad_completions.saturating_add(1);
                let failed = self.bad_completions >= MAX_BAD_COMPLETIONS;
                if failed {
                    self.outcome = Some(Outcome::Failed {
                        reason: crate::reason::TOO_MANY_BAD_COMPLETIONS.into(),
                    });
                    self.transition(Status::Failed, now);
                }
                Ok(OpOutput::BadCompletionCounted {
                    count: self.bad_completions,
                    failed,
                })
            }
            Op::Reject {
                phone_token,
                reason,
            } => {
                self.check_completable(phone_token, now)?;
                self.outcome = Some(Outcome::Rejected {
                    reason: reason.clone(),
                });
                self.transition(Status::Rejected, now);
                Ok(OpOutput::Done)
            }
            Op::MatchFailed { phone_token } => {
                self.check_completable(phone_token, now)?;
                self.outcome = Some(Outcome::Rejected {
                    reason: crate::reason::MATCH_FAILED.into(),
                });
                self.transition(Status::Rejected, now);
                Ok(OpOutput::Done)
            }
            Op::Cancel { .. } => match self.status {
                Status::Pending | Status::Scanned => {
                    self.outcome = Some(Outcome::Cancelled);
                    self.transition(Status::Cancelled, now);
                    Ok(OpOutput::Done)
                }
                s => Err(DomainError::conflict(format!(
                    "the session is already {} and cannot be cancelled",
                    s.as_str()
                ))),
            },
            // Handled by `expire_if_due` before every op.
            Op::Expire => Ok(OpOutput::Unchanged),
            Op::Rotate { new_secret } => {
                let due = self.claim.next_rotation_at(self.created_at);
                match due {
                    Some(at) if self.status == Status::Pending && now >= at => {
                        let old = std::mem::replace(&mut self.claim.current, new_secret.clone());
                        self.claim.previous = Some((old, now.plus_millis(ROTATION_GRACE_MS)));
                        self.claim.seq += 1;
                        Ok(OpOutput::Done)
                    }
                    _ => Ok(OpOutput::Unchanged),
                }
            }
            Op::NoteDelegate(d) => {
                if self.status != Status::Scanned || self.delegate == *d {
                    Ok(OpOutput::Unchanged)
                } else {
                    self.delegate = d.clone();
                    Ok(OpOutput::Done)
                }
            }
            Op::NoteRequester(r) => {
                if self.requester.is_some() || self.is_terminal() {
                    Ok(OpOutput::Unchanged)
                } else {
                    self.requester = Some(r.clone());
                    Ok(OpOutput::Done)
                }
            }
        }
    }

    fn expire_if_due(&mut self, now: Timestamp) -> bool {
        if !self.is_terminal() && now >= self.expires_at {
            self.outcome = Some(Outcome::Expired);
            self.transition(Status::Expired, now);
            true
        } else {
            false
        }
    }

    fn transition(&mut self, to: Status, now: Timestamp) {
        debug_assert!(!self.status.is_terminal(), "terminal states never change");
        self.status = to;
        self.version += 1;
        if to.is_terminal() {
            self.completed_at = Some(now);
            // Secrets that could act on a finished session are no longer needed.
            self.claim.previous = None;
        }
    }

    /// The `result` member of the session view: the outcome as the RP and
    /// the browser see it (identical for both), `Some(None)` (`null`) for
    /// expired and cancelled, absent (`None`) while the session is not terminal.
    pub fn result_view(&self) -> Option<Option<bzt_wire::SessionResult>> {
        let outcome = self.outcome.as_ref()?;
        Some(match outcome {
            Outcome::Approved(a) => {
                let mut r = bzt_wire::ApprovedResult {
                    certificate: certificate_view(&a.certificate),
                    signature_b64: crate::codec::encode(&a.signature),
                    tbs_b64: crate::codec::encode(&self.tbs),
                    seal_signature_b64: None,
                    seal: None,
                    recipients: None,
                    wrapped_key_b64: a.wrapped_key.as_deref().map(crate::codec::encode),
                    delegate: self.delegate.as_ref().map(Delegate::view),
                    conversation: a.conversation.as_ref().map(|c| bzt_wire::RequesterGrant {
                        id: c.id.to_string(),
                        token: c.token.expose().to_owned(),
                        expires_at: c.expires_at.to_rfc3339(),
                    }),
                };
                if let Some(seal) = &a.seal {
                    // The signed bytes are DER(TBS_Sign), which wraps the RP's hash.
                    r.tbs_b64 = crate::codec::encode(&seal.signed);
                    r.seal_signature_b64 = Some(crate::codec::encode(&seal.seal_signature));
                    r.seal = Some(seal_result(seal, &self.tbs));
                }
                if self.kind == Kind::Encrypt {
                    r.recipients = Some(a.recipients.iter().map(certificate_view).collect());
                }
                Some(bzt_wire::SessionResult::Approved(Box::new(r)))
            }
            Outcome::Rejected { reason } | Outcome::Failed { reason } => {
                Some(bzt_wire::SessionResult::Reason(bzt_wire::ReasonResult {
                    reason: reason.clone(),
                }))
            }
            Outcome::Expired | Outcome::Cancelled => None,
        })
    }

    /// The session view of docs/protocol.md (webhooks; `GET` and `DELETE` add
    /// the match code, see [`Self::rp_view`]).
    pub fn view(&self) -> bzt_wire::SessionView {
        bzt_wire::SessionView {
            id: self.id.to_string(),
            kind: self.kind.as_str().to_owned(),
            status: self.status.as_str().to_owned(),
            version: self.version,
            display: self.display.view(),
            created_at: self.created_at.to_rfc3339(),
            expires_at: self.expires_at.to_rfc3339(),
            scanned_at: self.scanned_at.map(|t| t.to_rfc3339()),
            completed_at: self.completed_at.map(|t| t.to_rfc3339()),
            device: self.device.as_ref().map(|d| bzt_wire::DeviceView {
                name: d.name.clone(),
            }),
            result: self.result_view(),
            match_code: None,
            qr_text: None,
            qr_seq: None,
        }
    }

    /// The RP's view (`GET` and `DELETE /v1/sessions/<id>` with the API key): the view plus
    /// the `match_code` while the session is scanned with number matching, so a page that
    /// learns the session's progress through its backend (the SDK's poll fallback) can still
    /// show the two digits. Webhooks (terminal only) never carry it.
    pub fn rp_view(&self) -> bzt_wire::SessionView {
        let mut v = self.view();
        v.match_code = self.match_code_now();
        v
    }

    /// The browser's snapshot: the view plus the current `qr_text` while
    /// pending and the `match_code` once scanned.
    pub fn snapshot_view(&self, public_base_url: &str) -> bzt_wire::SessionView {
        let mut v = self.view();
        if self.status == Status::Pending {
            v.qr_text = Some(self.qr_text(public_base_url));
            v.qr_seq = Some(self.claim.seq);
        }
        v.match_code = self.match_code_now();
        v
    }

    /// `match_code` while scanned with number matching (never before the claim, never once
    /// terminal: the code only matters while the phone is choosing).
    fn match_code_now(&self) -> Option<String> {
        self.number_match
            .as_ref()
            .filter(|_| self.status == Status::Scanned)
            .map(|m| m.code.clone())
    }
}

/// What a wrong claim secret and an unknown session both answer.
pub fn unknown_session_error() -> DomainError {
    DomainError::not_found("no such session, or the QR code is not valid")
}

fn expired_error() -> DomainError {
    DomainError::expired("the session has expired; ask for a new QR code")
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp::from_unix_millis(1_800_000_000_000);

    fn request(kind: Kind) -> NewSessionRequest {
        NewSessionRequest {
            kind: Some(kind),
            display: Some(DisplayText {
                title: "登录".into(),
                detail: None,
            }),
            tbs: (kind == Kind::Sign).then(|| b"contract".to_vec()),
            ..Default::default()
        }
    }

    fn domains() -> Vec<String> {
        vec!["platform".into(), "national".into()]
    }

    fn session(kind: Kind) -> Session {
        let spec = NewSession::validate(request(kind), &domains()).unwrap();
        Session::create(SessionId::generate(), "demo", spec, T0).0
    }

    #[test]
    fn as_a_stored_record_a_session_is_due_at_its_expiry_until_it_ends() {
        use crate::record::{RecordId, StoredRecord};
        let mut s = session(Kind::Login);
        let expiry = s.expires_at;
        assert_eq!(StoredRecord::next_deadline(&s), Some(expiry));
        assert_eq!(s.kept_from(), expiry);
        assert_eq!(RecordId::parse(s.id().as_str()), Some(s.id.clone()));
        let rev = s.rev();
        s.apply(
            &Op::Cancel {
                by: CancelledBy::Rp,
            },
            T0.plus_secs(10),
        );
        assert_eq!(s.rev(), rev + 1);
        assert_eq!(StoredRecord::next_deadline(&s), None, "nothing more is due");
        assert_eq!(s.kept_from(), expiry, "kept from its expiry");
    }

    fn device() -> Device {
        Device {
            id: "d1".into(),
            name: "张三的手机".into(),
        }
    }

    /// Claims `s` with its own secret and returns the phone token.
    fn claim(s: &mut Session, now: Timestamp) -> Secret {
        let token = Secret::generate();
        let op = Op::Claim {
            secret: s.claim.current.clone(),
            device: device(),
            phone_token: token.hash(),
            number_match: None,
        };
        let applied = s.apply(&op, now);
        assert!(applied.output.is_ok(), "{:?}", applied.output);
        token
    }

    #[test]
    fn claim_moves_pending_to_scanned_once() {
        let mut s = session(Kind::Login);
        assert_eq!((s.status, s.version), (Status::Pending, 1));
        let token = claim(&mut s, T0.plus_secs(1));
        assert_eq!((s.status, s.version), (Status::Scanned, 2));
        assert!(s.phone_token_matches(&token));

        let again = s.apply(
            &Op::Claim {
                secret: s.claim.current.clone(),
                device: device(),
                phone_token: Secret::generate().hash(),
                number_match: None,
            },
            T0.plus_secs(2),
        );
        assert_eq!(again.output.unwrap_err().code, ErrorCode::AlreadyClaimed);
        assert!(!again.changed);
        assert!(
            s.phone_token_matches(&token),
            "the winner keeps the session"
        );
    }

    #[test]
    fn rp_view_carries_the_match_code_only_while_scanned() {
        let mut req = request(Kind::Bind);
        req.number_match = Some(true);
        let spec = NewSession::validate(req, &domains()).unwrap();
        let mut s = Session::create(SessionId::generate(), "demo", spec, T0).0;
        assert!(s.rp_view().match_code.is_none(), "not before the claim");
        claim(&mut s, T0.plus_secs(1));
        let code = s.number_match.as_ref().unwrap().code.clone();
        assert_eq!(s.rp_view().match_code.as_ref(), Some(&code));
        assert_eq!(s.snapshot_view("http://x").match_code.as_ref(), Some(&code));
        assert!(s.view().match_code.is_none(), "webhooks never carry it");
        s.apply(
            &Op::Cancel {
                by: CancelledBy::Rp,
            },
            T0.plus_secs(2),
        );
        assert_eq!(s.status, Status::Cancelled);
        assert!(s.rp_view().match_code.is_none(), "not once terminal");

        let mut plain = session(Kind::Login);
        claim(&mut plain, T0.plus_secs(1));
        assert!(plain.rp_view().match_code.is_none());
    }

    #[test]
    fn wrong_secret_looks_like_an_unknown_session() {
        let mut s = session(Kind::Login);
        let applied = s.apply(
            &Op::Claim {
                secret: Secret::generate(),
                device: device(),
                phone_token: Secret::generate().hash(),
                number_match: None,
            },
            T0,
        );
        assert_eq!(applied.output.unwrap_err(), unknown_session_error());
        assert_eq!(s.status, Status::Pending);
    }

    #[test]
    fn any_op_after_the_deadline_expires_first() {
        let mut s = session(Kind::Login);
        let late = s.expires_at;
        let applied = s.apply(
            &Op::Claim {
                secret: s.claim.current.clone(),
                device: device(),
                phone_token: Secret::generate().hash(),
                number_match: None,
            },
            late,
        );
        assert_eq!(applied.output.unwrap_err().code, ErrorCode::Expired);
        assert!(applied.changed, "the expiry itself must be written");
        assert_eq!((s.status, s.version), (Status::Expired, 2));
        assert!(s.result_view().unwrap().is_none());
        // A terminal state never changes again.
        let cancel = s.apply(
            &Op::Cancel {
                by: CancelledBy::Rp,
            },
            late.plus_secs(1),
        );
        assert_eq!(cancel.output.unwrap_err().code, ErrorCode::Conflict);
        assert_eq!(s.status, Status::Expired);
    }

    #[test]
    fn expire_is_a_no_op_before_the_deadline_and_once_after() {
        let mut s = session(Kind::Bind);
        assert!(!s.apply(&Op::Expire, T0.plus_secs(179)).changed);
        assert!(s.apply(&Op::Expire, T0.plus_secs(180)).changed);
        let rev = s.rev;
        assert!(!s.apply(&Op::Expire, T0.plus_secs(181)).changed);
        assert_eq!(s.rev, rev);
    }

    #[test]
    fn third_bad_completion_fails_the_session() {
        let mut s = session(Kind::Sign);
        let token = claim(&mut s, T0);
        for n in 1..=2u8 {
            let out = s
                .apply(
                    &Op::BadCompletion {
                        phone_token: token.clone(),
                    },
                    T0,
                )
                .output;
            assert_eq!(
                out,
                Ok(OpOutput::BadCompletionCounted {
                    count: n,
                    failed: false
                })
            );
            assert_eq!(s.status, Status::Scanned);
        }
        let out = s
            .apply(
                &Op::BadCompletion {
                    phone_token: token.clone(),
                },
                T0,
            )
            .output;
        assert_eq!(
            out,
            Ok(OpOutput::BadCompletionCounted {
                count: 3,
                failed: true
            })
        );
        assert_eq!(s.status, Status::Failed);
        assert_eq!(
            s.result_view(),
            Some(Some(bzt_wire::SessionResult::Reason(
                bzt_wire::ReasonResult {
                    reason: "too_many_bad_completions".into()
                }
            )))
        );
    }

    #[test]
    fn completion_needs_the_phone_token() {
        let mut s = session(Kind::Login);
        claim(&mut s, T0);
        let out = s
            .apply(
                &Op::Reject {
                    phone_token: Secret::generate(),
                    reason: "no".into(),
                },
                T0,
            )
            .output;
        assert_eq!(out.unwrap_err().code, ErrorCode::Unauthorized);
        assert_eq!(s.status, Status::Scanned);
    }

    #[test]
    fn rotation_keeps_the_old_secret_for_the_grace_period_only() {
        let mut req = request(Kind::Login);
        req.rotate_s = Some(15);
        let spec = NewSession::validate(req, &domains()).unwrap();
        let (mut s, _) = Session::create(SessionId::generate(), "demo", spec, T0);
        let first = s.claim.current.clone();
        assert_eq!(s.claim.next_rotation_at(T0), Some(T0.plus_secs(15)));
        // Not due yet.
        let early = s.apply(
            &Op::Rotate {
                new_secret: Secret::generate(),
            },
            T0.plus_secs(14),
        );
        assert!(!early.changed);
        let at = T0.plus_secs(15);
        let rotated = s.apply(
            &Op::Rotate {
                new_secret: Secret::generate(),
            },
            at,
        );
        assert!(rotated.changed);
        assert_eq!(
            (s.claim.seq, s.version),
            (1, 1),
            "rotation does not bump version"
        );
        assert!(s.claim_secret_matches(&first, at.plus_millis(ROTATION_GRACE_MS - 1)));
        assert!(!s.claim_secret_matches(&first, at.plus_millis(ROTATION_GRACE_MS)));
        assert_eq!(s.claim.next_rotation_at(T0), Some(T0.plus_secs(30)));
    }

    #[test]
    fn number_match_draws_three_distinct_choices_with_the_code() {
        for _ in 0..200 {
            let m = NumberMatch::generate();
            assert_eq!(m.choices.len(), 3);
            assert!(m.choices.contains(&m.code));
            assert!(m
                .choices
                .iter()
                .all(|c| c.len() == 2 && c.chars().all(|d| d.is_ascii_digit())));
            let mut d = m.choices.clone();
            d.sort();
            d.dedup();
            assert_eq!(d.len(), 3);
        }
    }

    #[test]
    fn validation_names_the_field_and_the_rule() {
        let check = |f: &dyn Fn(&mut NewSessionRequest), code: ErrorCode, words: &str| {
            let mut r = request(Kind::Login);
            f(&mut r);
            let e = NewSession::validate(r, &domains()).unwrap_err();
            assert_eq!(e.code, code, "{e}");
            assert!(e.message.contains(words), "{e}");
        };
        check(&|r| r.ttl_s = Some(29), ErrorCode::InvalidRequest, "ttl_s");
        check(&|r| r.ttl_s = Some(601), ErrorCode::InvalidRequest, "ttl_s");
        check(
            &|r| r.display.as_mut().unwrap().title = "字".repeat(201),
            ErrorCode::InvalidRequest,
            "title",
        );
        check(
            &|r| r.accept = Some(vec!["mars".into()]),
            ErrorCode::InvalidRequest,
            "mars",
        );
        check(
            &|r| r.tbs = Some(vec![1]),
            ErrorCode::InvalidRequest,
            "tbs_b64",
        );
        check(
            &|r| r.rotate_s = Some(4),
            ErrorCode::InvalidRequest,
            "rotate_s",
        );
        check(
            &|r| r.webhook_url = Some("ftp://x".into()),
            ErrorCode::InvalidRequest,
            "webhook_url",
        );
        check(
            &|r| {
                r.kind = Some(Kind::Sign);
                r.tbs = Some(vec![0; MAX_TBS_BYTES + 1]);
            },
            ErrorCode::PayloadTooLarge,
            "65537",
        );
        check(
            &|r| {
                r.kind = Some(Kind::Decrypt);
                r.envelope_header = Some(b"{}".to_vec());
                r.reply_key = Some("04zz".into());
            },
            ErrorCode::InvalidRequest,
            "reply_key",
        );
    }

    #[test]
    fn challenge_binds_kind_app_session_and_deadline() {
        let s = session(Kind::Login);
        let text = String::from_utf8(s.tbs.clone()).unwrap();
        assert!(text.starts_with("BZT-CHALLENGE-V1\nkind:login\napp:demo\n"));
        assert!(text.contains(&format!("\nsession:{}\n", s.id)));
        assert!(text.ends_with(&format!("\nexpires:{}", s.expires_at)));
        assert_ne!(
            session(Kind::Login).tbs,
            s.tbs,
            "every session has its own nonce"
        );
    }

    #[test]
    fn stored_form_round_trips_without_bearer_tokens() {
        let spec = NewSession::validate(request(Kind::Sign), &domains()).unwrap();
        let (mut s, secrets) = Session::create(SessionId::generate(), "demo", spec, T0);
        let phone_token = claim(&mut s, T0);
        let json = serde_json::to_string(&s).unwrap();
        let back: Session = serde_json::from_str(&json).unwrap();
        assert_eq!(back.view(), s.view());
        assert_eq!(back.rev, s.rev);
        // Tokens are stored as hashes only: a store dump hands out no working token.
        assert!(!json.contains(phone_token.expose()));
        assert!(!json.contains(secrets.browser_token.expose()));
        assert!(back.phone_token_matches(&phone_token));
    }

    #[test]
    fn opening_window_is_for_decrypt_only_and_checked_at_create() {
        let window = Opening {
            not_before: T0.plus_secs(60),
            not_after: T0.plus_secs(3600),
        };
        let mut login = request(Kind::Login);
        login.opening = Some(window);
        let err = NewSession::validate(login, &domains()).unwrap_err();
        assert!(err.message.contains("`opening`"), "{}", err.message);

        assert!(window.validate(T0).is_ok());
        let reversed = Opening {
            not_before: window.not_after,
            not_after: window.not_before,
        };
        assert_eq!(
            reversed.validate(T0).unwrap_err().code,
            ErrorCode::InvalidRequest
        );
        let over = window.validate(T0.plus_secs(3600)).unwrap_err();
        assert!(over.message.contains("already passed"), "{}", over.message);
        let too_long = Opening {
            not_before: T0,
            not_after: T0.plus_secs(Opening::MAX_WINDOW_S + 1),
        };
        assert!(too_long.validate(T0).is_err());
    }

    #[test]
    fn opening_window_includes_its_start_and_excludes_its_deadline() {
        let window = Opening {
            not_before: T0,
            not_after: T0.plus_secs(10),
        };
        let early = window.refuse_at(T0.plus_millis(-1)).unwrap();
        assert_eq!(early.code, ErrorCode::Forbidden);
        assert!(early.message.contains("before the opening time"));
        assert!(window.refuse_at(T0).is_none());
        assert!(window.refuse_at(T0.plus_millis(9_999)).is_none());
        let late = window.refuse_at(T0.plus_secs(10)).unwrap();
        assert!(late.message.contains("deadline"));
    }
}
