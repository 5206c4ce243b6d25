//! The text in a session's QR code: `<public_base_url>/q/<session id>#<claim secret>`.

use std::fmt;
use std::str::FromStr;

/// Why a scanned text is not a bzt QR text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QrError {
    /// Nothing was scanned.
    #[error("the QR text is empty")]
    Empty,
    /// No `#<claim secret>` part: not a bzt code, or the scanner dropped the fragment.
    #[error("the QR text has no #<claim secret> part")]
    MissingSecret,
    /// The secret after `#` is empty or holds characters no broker writes.
    #[error("the claim secret after # is empty or malformed")]
    BadSecret,
    /// No `/q/<session id>` path before the `#`.
    #[error("the QR text has no /q/<session id> part")]
    MissingSessionPath,
    /// The session id is empty or holds `/`, `?` or spaces.
    #[error("the session id in the QR text is empty or malformed")]
    BadSessionId,
    /// The part before `/q/` is not an absolute http(s) URL.
    #[error("the broker address {0:?} in the QR text is not an http(s) URL")]
    BadBaseUrl(String),
}

/// A parsed QR text. [`QrText::as_str`] is what the phone sends in its claim body.
#[derive(Clone, PartialEq, Eq)]
pub struct QrText {
    /// The whole text, trimmed: sent verbatim as `qr_text`.
    raw: String,
    /// Where `/q/` starts in `raw`.
    q_at: usize,
    /// Where the secret starts in `raw` (after `#`).
    secret_at: usize,
}

impl QrText {
    /// Parses `<public_base_url>/q/<session id>#<claim secret>` (surrounding whitespace ignored).
    ///
    /// The base URL must be an absolute `http`/`https` URL without query or fragment and may carry
    /// a path prefix (`https://host/bzt/q/...`); the session id must be non-empty without `/`,
    /// `?` or whitespace; the secret must be non-empty, printable ASCII without spaces or `#`.
    pub fn parse(text: &str) -> Result<Self, QrError> {
        let raw = text.trim();
        if raw.is_empty() {
            return Err(QrError::Empty);
        }
        let hash = raw.find('#').ok_or(QrError::MissingSecret)?;
        let (before, secret) = (&raw[..hash], &raw[hash + 1..]);
        if secret.is_empty() || !secret.bytes().all(|b| b.is_ascii_graphic() && b != b'#') {
            return Err(QrError::BadSecret);
        }
        let q_at = before.rfind("/q/").ok_or(QrError::MissingSessionPath)?;
        let (base, id) = (&before[..q_at], &before[q_at + 3..]);
        if id.is_empty()
            || id
                .chars()
                .any(|c| c == '/' || c == '?' || c.is_whitespace() || c.is_control())
        {
            return Err(QrError::BadSessionId);
        }
        let url = reqwest::Url::parse(base).map_err(|_| QrError::BadBaseUrl(base.to_string()))?;
        if !matches!(url.scheme(), "http" | "https")
            || url.host_str().is_none()
            || url.query().is_some()
            || base.contains('?')
        {
            return Err(QrError::BadBaseUrl(base.to_string()));
        }
        Ok(Self {
            raw: raw.to_string(),
            q_at,
            secret_at: hash + 1,
        })
    }

    /// The whole QR text (what goes into the claim body's `qr_text`).
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The broker's `public_base_url`, without a trailing `/q/...`.
    pub fn base_url(&self) -> &str {
        &self.raw[..self.q_at]
    }

    /// The session id.
    pub fn session_id(&self) -> &str {
        &self.raw[self.q_at + 3..self.secret_at - 1]
    }

    /// The claim secret. It never goes into a URL; the broker gets it inside `qr_text`.
    pub fn claim_secret(&self) -> &str {
        &self.raw[self.secret_at..]
    }
}

impl FromStr for QrText {
    type Err = QrError;

    fn from_str(s: &str) -> Result<Self, QrError> {
        Self::parse(s)
    }
}

/// Shows the text without its secret, so logs do not leak it.
impl fmt::Debug for QrText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QrText({}/q/{}#…)", self.base_url(), self.session_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_protocol_form() {
        let qr = QrText::parse("http://127.0.0.1:8700/q/s_abc123#Zk9vYmFy-_x").unwrap();
        assert_eq!(qr.base_url(), "http://127.0.0.1:8700");
        assert_eq!(qr.session_id(), "s_abc123");
        assert_eq!(qr.claim_secret(), "Zk9vYmFy-_x");
        assert_eq!(qr.as_str(), "http://127.0.0.1:8700/q/s_abc123#Zk9vYmFy-_x");
        assert!(
            !format!("{qr:?}").contains("Zk9v"),
            "Debug must not show the secret"
        );
    }

    #[test]
    fn keeps_a_path_prefix_and_trims_whitespace() {
        let qr: QrText = " https://bid.example.cn/bzt/q/ABC#s3cr3t\n"
            .parse()
            .unwrap();
        assert_eq!(qr.base_url(), "https://bid.example.cn/bzt");
        assert_eq!(qr.session_id(), "ABC");
        assert_eq!(qr.claim_secret(), "s3cr3t");
        assert_eq!(qr.as_str(), "https://bid.example.cn/bzt/q/ABC#s3cr3t");
    }

    #[test]
    fn refuses_malformed_texts_with_clear_errors() {
        let cases = [
            ("", QrError::Empty),
            ("   ", QrError::Empty),
            ("http://h/q/abc", QrError::MissingSecret),
            ("http://h/q/abc#", QrError::BadSecret),
            ("http://h/q/abc#a b", QrError::BadSecret),
            ("http://h/q/abc#a#b", QrError::BadSecret),
            ("http://h/x/abc#sec", QrError::MissingSessionPath),
            ("http://h/q/#sec", QrError::BadSessionId),
            ("http://h/q/a/b#sec", QrError::BadSessionId),
            ("http://h/q/a?x=1#sec", QrError::BadSessionId),
            ("ftp://h/q/abc#sec", QrError::BadBaseUrl("ftp://h".into())),
            ("/q/abc#sec", QrError::BadBaseUrl("".into())),
            (
                "http://h?x/q/abc#sec",
                QrError::BadBaseUrl("http://h?x".into()),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(QrText::parse(text), Err(want), "{text:?}");
        }
    }
}
