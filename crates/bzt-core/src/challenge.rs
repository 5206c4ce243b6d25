//! The challenge bytes a phone signs for every kind except `sign`.
//!
//! ```text
//! BZT-CHALLENGE-V1
//! kind:<kind>
//! app:<app id>
//! session:<session id>
//! nonce:<base64url, no padding, 16 random bytes>
//! expires:<the session's expires_at, exactly>
//! envelope:<hex SM3 of the envelope header>     (decrypt only)
//! ```
//! Binding kind, app and session into the signed text is what makes a
//! signature for one session, app or kind useless for any other.

use crate::secret::{b64url, random_bytes};
use crate::session::Kind;
use crate::time::Timestamp;
use sm3::{Digest, Sm3};

pub const MAGIC: &str = "BZT-CHALLENGE-V1";

/// A fresh 16-byte nonce in the challenge's encoding.
pub fn new_nonce() -> String {
    b64url(&random_bytes::<16>())
}

/// The exact challenge bytes (LF line ends, no trailing LF).
pub fn build(
    kind: Kind,
    app_id: &str,
    session_id: &str,
    nonce: &str,
    expires_at: Timestamp,
    envelope_header: Option<&[u8]>,
) -> Vec<u8> {
    let mut text = format!(
        "{MAGIC}\nkind:{}\napp:{app_id}\nsession:{session_id}\nnonce:{nonce}\nexpires:{}",
        kind.as_str(),
        expires_at.to_rfc3339()
    );
    if let Some(header) = envelope_header {
        text.push_str("\nenvelope:");
        text.push_str(&hex::encode(Sm3::digest(header)));
    }
    text.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_protocol() {
        let t = Timestamp::parse_rfc3339("2026-11-23T10:00:00.000Z").unwrap();
        let bytes = build(Kind::Login, "demo", "S1", "bm9uY2U", t, None);
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "BZT-CHALLENGE-V1\nkind:login\napp:demo\nsession:S1\nnonce:bm9uY2U\nexpires:2026-11-23T10:00:00.000Z"
        );
    }

    #[test]
    fn decrypt_adds_the_sm3_of_the_header_last() {
        let t = Timestamp::from_unix_millis(0);
        let text = String::from_utf8(build(Kind::Decrypt, "a", "s", "n", t, Some(b"abc"))).unwrap();
        // SM3("abc"), GB/T 32905 example 1.
        assert!(text.ends_with(
            "\nenvelope:66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
        ));
        assert!(!text.ends_with('\n'));
    }

    #[test]
    fn nonces_are_16_random_bytes() {
        let a = new_nonce();
        assert_eq!(a.len(), 22);
        assert_ne!(a, new_nonce());
    }
}
