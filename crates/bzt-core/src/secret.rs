//! Identifiers and bearer secrets.
//!
//! Identifiers are not secret (a session id is printed in every QR code); they
//! are random only so they cannot be enumerated. Secrets (claim secrets,
//! browser/phone tokens, API keys) carry 256 random bits, are compared in
//! constant time, never print in `Debug`, and are stored as SHA-256 hashes
//! wherever the broker only needs to recognise them again.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use subtle::ConstantTimeEq;

/// `n` bytes from the operating system's CSPRNG.
///
/// # Panics
/// Only if the OS has no randomness source, in which case no secret this
/// process could make would be safe to hand out.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).expect("operating system randomness unavailable");
    buf
}

/// base64url without padding, the form used for every id and secret in URLs.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// A fresh random id (128 bits, 22 base64url characters).
            pub fn generate() -> Self {
                Self(b64url(&random_bytes::<16>()))
            }

            /// Accepts what `generate` makes: 1..=64 characters of `[A-Za-z0-9_-]`.
            /// Anything else cannot name a record, so callers answer `not_found`.
            pub fn parse(s: &str) -> Option<Self> {
                (!s.is_empty() && s.len() <= 64 && s.chars().all(is_id_char))
                    .then(|| Self(s.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// Identifies a scan session; appears in the QR text and every URL.
    SessionId
);
id_type!(
    /// Identifies a signing conversation opened from a `sign` session.
    ConversationId
);
id_type!(
    /// Identifies one signing request inside a conversation.
    RequestId
);

/// A bearer secret: claim secret, browser token, phone token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// 256 random bits, 43 base64url characters.
    pub fn generate() -> Self {
        Self(b64url(&random_bytes::<32>()))
    }

    /// Wraps a secret presented by a client. Its length is bounded so a huge
    /// header cannot make hashing expensive; the value is otherwise opaque.
    pub fn from_presented(s: &str) -> Option<Self> {
        (!s.is_empty() && s.len() <= 256).then(|| Self(s.to_owned()))
    }

    /// The secret itself, for the one place it must travel (an API answer,
    /// the QR text). Never log this.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> SecretHash {
        SecretHash::of(self.0.as_bytes())
    }

    /// Constant-time comparison.
    pub fn matches(&self, other: &Secret) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// SHA-256 of a secret. Stored instead of the secret where the broker only
/// has to recognise it, so a store dump does not hand out working tokens.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecretHash(pub [u8; 32]);

impl SecretHash {
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// Parses 64 hex characters (config's `api_key_sha256`).
    pub fn from_hex(s: &str) -> Option<Self> {
        let v = hex::decode(s.trim()).ok()?;
        Some(Self(v.try_into().ok()?))
    }

    /// Constant-time comparison.
    pub fn matches(&self, other: &SecretHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    /// Does `presented` hash to this value? Constant time in the stored value.
    pub fn verify(&self, presented: &Secret) -> bool {
        self.matches(&presented.hash())
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretHash({}…)", &hex::encode(self.0)[..8])
    }
}

impl Serialize for SecretHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for SecretHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        SecretHash::from_hex(&s).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_random_and_redacted() {
        let a = Secret::generate();
        let b = Secret::generate();
        assert_eq!(a.expose().len(), 43);
        assert!(!a.matches(&b));
        assert!(a.matches(&a.clone()));
        assert!(!format!("{a:?}").contains(a.expose()));
        assert!(a.hash().verify(&a));
        assert!(!a.hash().verify(&b));
    }

    #[test]
    fn ids_parse_only_their_alphabet() {
        let id = SessionId::generate();
        assert_eq!(SessionId::parse(id.as_str()), Some(id));
        assert_eq!(SessionId::parse(""), None);
        assert_eq!(SessionId::parse("../etc"), None);
        assert_eq!(SessionId::parse(&"a".repeat(65)), None);
    }

    #[test]
    fn hash_round_trips_through_hex() {
        let h = SecretHash::of(b"demo-key");
        let s = serde_json::to_string(&h).unwrap();
        let back: SecretHash = serde_json::from_str(&s).unwrap();
        assert!(back.matches(&h));
        assert!(SecretHash::from_hex("zz").is_none());
    }
}
