//! The `BZT-CHALLENGE-V1` text a phone signs for every kind but `sign`.
//!
//! ```text
//! BZT-CHALLENGE-V1
//! kind:<kind>
//! app:<app id>
//! session:<session id>
//! nonce:<base64url without padding, 16 random bytes>
//! expires:<exactly the session's expires_at string>
//! envelope:<lowercase hex SM3 of the envelope header's JSON bytes>   (decrypt only)
//! ```
//! LF line ends, no trailing LF. A phone must parse this and compare it with what the claim
//! answer said before signing: a signature made for one session, app or kind must never be
//! obtainable for another (see [`crate::Claimed::check_challenge`]).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sm3::{Digest, Sm3};

use crate::session::Kind;

/// The first line of every challenge.
pub const CHALLENGE_MAGIC: &str = "BZT-CHALLENGE-V1";

/// Why a challenge was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    /// `sign` sessions carry the RP's own bytes, not a challenge (and unknown kinds carry nothing
    /// this phone understands).
    #[error("a {0} session has no BZT-CHALLENGE-V1 text to check")]
    NotAChallengeKind(Kind),
    /// The bytes are not a well-formed challenge.
    #[error("malformed challenge: {0}")]
    Malformed(String),
    /// A line disagrees with the claim answer: the phone must not sign it.
    #[error("the challenge's {field} is {found:?} but the claim answer says {expected:?}")]
    Mismatch {
        /// Which line (`kind`, `app`, `session`, `expires`, `envelope`).
        field: &'static str,
        /// What the claim answer says.
        expected: String,
        /// What the challenge says.
        found: String,
    },
}

/// A parsed challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// The `kind:` line.
    pub kind: Kind,
    /// The `app:` line (the RP app id).
    pub app: String,
    /// The `session:` line.
    pub session: String,
    /// The decoded `nonce:` line.
    pub nonce: [u8; 16],
    /// The `expires:` line, verbatim.
    pub expires: String,
    /// The decoded `envelope:` line: SM3 of the envelope header (decrypt only).
    pub envelope: Option<[u8; 32]>,
}

impl Challenge {
    /// Parses challenge bytes strictly: exact line order, LF only, no trailing LF, a 16-byte
    /// nonce, a 32-byte lowercase-hex envelope hash on `decrypt` challenges and on no other.
    pub fn parse(tbs: &[u8]) -> Result<Self, ChallengeError> {
        let bad = |why: String| ChallengeError::Malformed(why);
        let text = std::str::from_utf8(tbs).map_err(|_| bad("not UTF-8".into()))?;
        let mut lines = text.split('\n');
        if lines.next() != Some(CHALLENGE_MAGIC) {
            return Err(bad(format!("the first line is not {CHALLENGE_MAGIC}")));
        }
        let mut field = |name: &'static str| -> Result<&str, ChallengeError> {
            let line = lines
                .next()
                .ok_or_else(|| bad(format!("the {name}: line is missing")))?;
            let value = line
                .strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(':'))
                .ok_or_else(|| bad(format!("expected a {name}: line, found {line:?}")))?;
            if value.is_empty() || value.chars().any(char::is_control) {
                return Err(bad(format!(
                    "the {name}: value is empty or has control characters"
                )));
            }
            Ok(value)
        };
        let kind_text = field("kind")?;
        let kind = Kind::from_wire(kind_text)
            .filter(|k| k.signs_challenge())
            .ok_or_else(|| bad(format!("kind {kind_text:?} has no challenge")))?;
        let app = field("app")?.to_string();
        let session = field("session")?.to_string();
        let nonce_text = field("nonce")?;
        let nonce = URL_SAFE_NO_PAD
            .decode(nonce_text)
            .ok()
            .and_then(|n| <[u8; 16]>::try_from(n).ok())
            .ok_or_else(|| bad("the nonce is not 16 bytes of unpadded base64url".into()))?;
        let expires = field("expires")?.to_string();
        let envelope = if kind == Kind::Decrypt {
            let hex_text = field("envelope")?;
            let parsed = (hex_text.len() == 64
                && hex_text
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| hex::decode(hex_text).ok())
            .flatten()
            .and_then(|h| <[u8; 32]>::try_from(h).ok())
            .ok_or_else(|| bad("the envelope hash is not 64 lowercase hex digits".into()))?;
            Some(parsed)
        } else {
            None
        };
        if let Some(extra) = lines.next() {
            return Err(bad(if extra.is_empty() {
                "a trailing line feed or empty line".into()
            } else {
                format!("an unexpected line {extra:?}")
            }));
        }
        Ok(Self {
            kind,
            app,
            session,
            nonce,
            expires,
            envelope,
        })
    }

    /// Checks every line against what the claim answer said. `envelope_header` is the decoded
    /// envelope header of a `decrypt` session (its SM3 must be the `envelope:` line).
    pub fn check(
        &self,
        kind: Kind,
        app_id: &str,
        session_id: &str,
        expires_at: &str,
        envelope_header: Option<&[u8]>,
    ) -> Result<(), ChallengeError> {
        let same = |field: &'static str, expected: &str, found: &str| {
            if expected == found {
                Ok(())
            } else {
                Err(ChallengeError::Mismatch {
                    field,
                    expected: expected.to_string(),
                    found: found.to_string(),
                })
            }
        };
        same("kind", kind.as_str(), self.kind.as_str())?;
        same("app", app_id, &self.app)?;
        same("session", session_id, &self.session)?;
        same("expires", expires_at, &self.expires)?;
        let expected = envelope_header.map(|h| hex::encode(Sm3::digest(h)));
        let found = self.envelope.map(hex::encode);
        if expected != found {
            return Err(ChallengeError::Mismatch {
                field: "envelope",
                expected: expected.unwrap_or_else(|| "(no envelope header)".into()),
                found: found.unwrap_or_else(|| "(no envelope line)".into()),
            });
        }
        Ok(())
    }

    /// Renders the challenge text (the inverse of [`Challenge::parse`]); handy for mock brokers.
    pub fn to_text(&self) -> String {
        let mut text = format!(
            "{CHALLENGE_MAGIC}\nkind:{}\napp:{}\nsession:{}\nnonce:{}\nexpires:{}",
            self.kind,
            self.app,
            self.session,
            URL_SAFE_NO_PAD.encode(self.nonce),
            self.expires
        );
        if let Some(envelope) = self.envelope {
            text.push_str("\nenvelope:");
            text.push_str(&hex::encode(envelope));
        }
        text
    }
}

/// SM3 of an envelope header, as the `envelope:` line carries it.
pub fn envelope_hash(header: &[u8]) -> [u8; 32] {
    Sm3::digest(header).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPIRES: &str = "2026-11-23T15:43:02.123Z";

    fn login_text() -> String {
        format!(
            "BZT-CHALLENGE-V1\nkind:login\napp:demo\nsession:s1\nnonce:AAECAwQFBgcICQoLDA0ODw\nexpires:{EXPIRES}"
        )
    }

    #[test]
    fn parses_and_checks_a_login_challenge() {
        let c = Challenge::parse(login_text().as_bytes()).unwrap();
        assert_eq!(c.kind, Kind::Login);
        assert_eq!(c.app, "demo");
        assert_eq!(c.session, "s1");
        assert_eq!(c.nonce, core::array::from_fn(|i| i as u8));
        assert_eq!(c.expires, EXPIRES);
        assert_eq!(c.envelope, None);
        assert_eq!(c.to_text(), login_text());
        c.check(Kind::Login, "demo", "s1", EXPIRES, None).unwrap();
    }

    #[test]
    fn a_challenge_for_another_session_app_kind_or_time_is_refused() {
        let c = Challenge::parse(login_text().as_bytes()).unwrap();
        let mismatch = |r: Result<(), ChallengeError>| match r {
            Err(ChallengeError::Mismatch { field, .. }) => field,
            other => panic!("expected a mismatch, got {other:?}"),
        };
        assert_eq!(
            mismatch(c.check(Kind::Login, "demo", "s2", EXPIRES, None)),
            "session"
        );
        assert_eq!(
            mismatch(c.check(Kind::Login, "other", "s1", EXPIRES, None)),
            "app"
        );
        assert_eq!(
            mismatch(c.check(Kind::Bind, "demo", "s1", EXPIRES, None)),
            "kind"
        );
        assert_eq!(
            mismatch(c.check(Kind::Login, "demo", "s1", "2026-11-23T15:43:02Z", None)),
            "expires"
        );
        assert_eq!(
            mismatch(c.check(Kind::Login, "demo", "s1", EXPIRES, Some(b"{}"))),
            "envelope"
        );
    }

    #[test]
    fn decrypt_challenges_carry_the_envelope_hash() {
        let header = br#"{"v":1,"alg":"SM4-GCM-STREAM"}"#;
        let c = Challenge {
            kind: Kind::Decrypt,
            app: "hall".into(),
            session: "s9".into(),
            nonce: [7; 16],
            expires: EXPIRES.into(),
            envelope: Some(envelope_hash(header)),
        };
        let parsed = Challenge::parse(c.to_text().as_bytes()).unwrap();
        assert_eq!(parsed, c);
        parsed
            .check(Kind::Decrypt, "hall", "s9", EXPIRES, Some(header))
            .unwrap();
        assert!(parsed
            .check(Kind::Decrypt, "hall", "s9", EXPIRES, Some(b"{}"))
            .is_err());
        assert!(parsed
            .check(Kind::Decrypt, "hall", "s9", EXPIRES, None)
            .is_err());
        // The same text without its envelope line is not a decrypt challenge.
        let cut = c.to_text().rsplit_once('\n').unwrap().0.to_string();
        assert!(Challenge::parse(cut.as_bytes()).is_err());
        // Upper-case hex is not the protocol's form.
        let text = c.to_text();
        let (head, hash) = text.rsplit_once("envelope:").unwrap();
        let upper = format!("{head}envelope:{}", hash.to_uppercase());
        assert_ne!(upper, text);
        assert!(Challenge::parse(upper.as_bytes()).is_err());
    }

    #[test]
    fn malformed_texts_are_refused() {
        let good = login_text();
        let cases = [
            format!("{good}\n"),
            good.replace('\n', "\r\n"),
            good.replace("BZT-CHALLENGE-V1", "BZT-CHALLENGE-V2"),
            good.replace("kind:login", "kind:sign"),
            good.replace("kind:login", "kind:nope"),
            good.replace("app:demo", "application:demo"),
            good.replace("app:demo", "app:"),
            good.replace("AAECAwQFBgcICQoLDA0ODw", "AAECAwQFBgcICQoLDA0ODw=="),
            good.replace("AAECAwQFBgcICQoLDA0ODw", "AAECAwQFBgcICQoLDA0O"),
            good.replace("\nsession:s1", ""),
            format!("{good}\nenvelope:{}", "00".repeat(32)),
        ];
        for text in cases {
            assert!(
                matches!(
                    Challenge::parse(text.as_bytes()),
                    Err(ChallengeError::Malformed(_))
                ),
                "{text:?}"
            );
        }
        assert!(Challenge::parse(&[0xff, 0xfe]).is_err());
    }
}
