//! 企业证书授权: the text of an administrator's request about grants, and the
//! clock grants are judged by.
//!
//! The administrator's phone and the service co-sign this text with the
//! company key through the administrator's own share (context
//! `{"grant": {"tbs_b64"}}`); the service refuses that context for a member's
//! share, and refuses to co-sign broker bytes that begin like it, so a valid
//! signature over a request can only come from the administrator's phone.
//!
//! ```text
//! BZT-GRANT-V1
//! action:<grant|extend|ungrant|list>
//! key:<the administrator's key id>
//! grant:<grant id>                 (not for list)
//! member:<name>                    (grant)
//! device:<device id>               (grant)
//! certificate:<serial hex>         (grant)
//! ca:<issuer>                      (grant)
//! certificate_type:<type>          (grant)
//! not_after:<RFC 3339>             (grant, extend)
//! nonce:<32 hex digits>
//! issued_at:<unix seconds>
//! ```

use std::sync::atomic::{AtomicI64, Ordering};

use crate::wire::{CertificateInfo, Delegate};

pub const HEADER: &str = "BZT-GRANT-V1";

/// What grant end times are compared with; tests inject their own.
pub trait Clock: Send + Sync {
    /// Unix seconds.
    fn now(&self) -> i64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }
}

/// A clock that moves only when told (tests).
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(now: i64) -> Self {
        Self(AtomicI64::new(now))
    }
    pub fn set(&self, now: i64) {
        self.0.store(now, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Grant,
    Extend,
    Ungrant,
    List,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Grant => "grant",
            Action::Extend => "extend",
            Action::Ungrant => "ungrant",
            Action::List => "list",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "grant" => Action::Grant,
            "extend" => Action::Extend,
            "ungrant" => Action::Ungrant,
            "list" => Action::List,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantRequest {
    pub action: Action,
    pub key_id: String,
    pub grant_id: Option<String>,
    pub member: Option<Delegate>,
    pub certificate: Option<CertificateInfo>,
    pub not_after: Option<String>,
    pub nonce: String,
    pub issued_at: i64,
}

impl GrantRequest {
    pub fn to_text(&self) -> String {
        let mut lines = vec![
            HEADER.to_owned(),
            format!("action:{}", self.action.as_str()),
            format!("key:{}", self.key_id),
        ];
        if let Some(g) = &self.grant_id {
            lines.push(format!("grant:{g}"));
        }
        if let Some(m) = &self.member {
            lines.push(format!("member:{}", m.name));
            lines.push(format!("device:{}", m.device));
        }
        if let Some(c) = &self.certificate {
            lines.push(format!("certificate:{}", c.serial));
            lines.push(format!("ca:{}", c.ca));
            lines.push(format!("certificate_type:{}", c.certificate_type));
        }
        if let Some(t) = &self.not_after {
            lines.push(format!("not_after:{t}"));
        }
        lines.push(format!("nonce:{}", self.nonce));
        lines.push(format!("issued_at:{}", self.issued_at));
        lines.join("\n")
    }

    /// Parses a request and checks it has exactly the lines its action
    /// needs, in order (it must re-render to the same bytes).
    pub fn parse(text: &[u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(text).map_err(|_| "the request is not UTF-8")?;
        let mut lines = text.split('\n');
        if lines.next() != Some(HEADER) {
            return Err(format!("the request must start with {HEADER}"));
        }
        let mut fields = std::collections::HashMap::new();
        for line in lines {
            let (k, v) = line
                .split_once(':')
                .ok_or_else(|| format!("not a key:value line: {line:?}"))?;
            if v.is_empty() || v.contains('\r') || fields.insert(k, v).is_some() {
                return Err(format!("line {k}: empty, repeated or with a CR"));
            }
        }
        let get = |k: &str| fields.get(k).map(|v| (*v).to_owned());
        let need = |k: &str| get(k).ok_or_else(|| format!("the request lacks {k}:"));
        let action =
            Action::parse(&need("action")?).ok_or("action: grant, extend, ungrant or list")?;
        let request = Self {
            action,
            key_id: need("key")?,
            grant_id: get("grant"),
            member: match (get("member"), get("device")) {
                (Some(name), Some(device)) => Some(Delegate { name, device }),
                _ => None,
            },
            certificate: match (get("certificate"), get("ca"), get("certificate_type")) {
                (Some(serial), Some(ca), Some(certificate_type)) => Some(CertificateInfo {
                    serial,
                    ca,
                    certificate_type,
                }),
                _ => None,
            },
            not_after: get("not_after"),
            nonce: need("nonce")?,
            issued_at: need("issued_at")?
                .parse()
                .map_err(|_| "issued_at: unix seconds")?,
        };
        let shape_ok = match action {
            Action::Grant => {
                request.grant_id.is_some()
                    && request.member.is_some()
                    && request.certificate.is_some()
                    && request.not_after.is_some()
            }
            Action::Extend => {
                request.grant_id.is_some()
                    && request.member.is_none()
                    && request.certificate.is_none()
                    && request.not_after.is_some()
            }
            Action::Ungrant => {
                request.grant_id.is_some()
                    && request.member.is_none()
                    && request.certificate.is_none()
                    && request.not_after.is_none()
            }
            Action::List => {
                request.grant_id.is_none()
                    && request.member.is_none()
                    && request.certificate.is_none()
                    && request.not_after.is_none()
            }
        };
        if !shape_ok || request.to_text() != text {
            return Err(format!(
                "a {} request has other lines or another order than docs/key-splitting.md gives",
                action.as_str()
            ));
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> GrantRequest {
        GrantRequest {
            action: Action::Grant,
            key_id: "k".into(),
            grant_id: Some("g".into()),
            member: Some(Delegate {
                name: "李四".into(),
                device: "phone-2".into(),
            }),
            certificate: Some(CertificateInfo {
                serial: "0a".into(),
                ca: "Dev CA".into(),
                certificate_type: "SM2 企业证书".into(),
            }),
            not_after: Some("2030-01-01T00:00:00Z".into()),
            nonce: "00".repeat(16),
            issued_at: 1_700_000_000,
        }
    }

    #[test]
    fn a_request_round_trips_and_a_changed_or_reordered_one_does_not_parse() {
        let text = grant().to_text();
        assert_eq!(GrantRequest::parse(text.as_bytes()).unwrap(), grant());
        let reordered = text.replace("member:李四\ndevice:phone-2", "device:phone-2\nmember:李四");
        assert!(GrantRequest::parse(reordered.as_bytes()).is_err());
        let extra = format!("{text}\nnote:x");
        assert!(GrantRequest::parse(extra.as_bytes()).is_err());
        let mut ungrant = grant();
        ungrant.action = Action::Ungrant;
        assert!(GrantRequest::parse(ungrant.to_text().as_bytes()).is_err());
        assert!(GrantRequest::parse(b"BZT-CHALLENGE-V1\nkind:login").is_err());
    }
}
