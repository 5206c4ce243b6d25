//! The content key and its SM2 wrapping (GM/T 0009 DER, the form OpenSSL speaks; the SM2
//! encryption itself is `bzt_crypto::wrap`).

use getrandom::{rand_core::TryRng, SysRng};
use sm2::{PublicKey, SecretKey};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{Error, Result};

/// Length of a content key: SM4 keys are 128 bits.
pub const CONTENT_KEY_LEN: usize = 16;

/// The SM4 key a file's body is sealed under. One per file, random, wiped from memory on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ContentKey([u8; CONTENT_KEY_LEN]);

impl ContentKey {
    /// A fresh random key from the operating system's generator.
    pub fn generate() -> Result<Self> {
        let mut key = [0u8; CONTENT_KEY_LEN];
        random_bytes(&mut key)?;
        Ok(Self(key))
    }

    /// Takes a key as bytes (e.g. the output of [`unwrap_key`]); it must be 16 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        let key: [u8; CONTENT_KEY_LEN] = bytes
            .try_into()
            .map_err(|_| Error::BadContentKey(bytes.len()))?;
        Ok(Self(key))
    }

    /// The key bytes, e.g. to [`wrap_key`] them for someone.
    pub fn as_bytes(&self) -> &[u8; CONTENT_KEY_LEN] {
        &self.0
    }
}

impl std::fmt::Debug for ContentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContentKey(..)")
    }
}

pub(crate) fn random_bytes(buf: &mut [u8]) -> Result<()> {
    SysRng.try_fill_bytes(buf).map_err(|_| Error::Crypto)
}

/// SM2-encrypts `key` (normally a 16-byte content key) to `public`, in the GM/T 0009 DER form
/// `SEQUENCE { x, y, C3 (SM3, 32 bytes), C2 }` that `openssl pkeyutl -decrypt` reads.
///
/// Fails only if the system random generator fails.
pub fn wrap_key(public: &PublicKey, key: &[u8]) -> Result<Vec<u8>> {
    bzt_crypto::wrap::wrap_key(public, key).map_err(|_| Error::Crypto)
}

/// Decrypts a GM/T 0009 DER SM2 ciphertext made by [`wrap_key`] or by
/// `openssl pkeyutl -encrypt -certin -inkey cert.pem`.
///
/// Returns [`Error::UnwrapFailed`] if it does not decrypt (wrong key, damaged input, C3 mismatch).
/// It does not check the length of the result: wrap it in [`ContentKey::from_slice`].
pub fn unwrap_key(secret: &SecretKey, der: &[u8]) -> Result<Vec<u8>> {
    bzt_crypto::wrap::unwrap_key(secret, der).map_err(|_| Error::UnwrapFailed)
}

/// Parses the hall's one-time `reply_key` from a `decrypt` claim: hex (either case) of the
/// uncompressed SM2 point `04 || X || Y` (65 bytes). The phone re-wraps the content key to it
/// with [`wrap_key`].
pub fn parse_reply_key(hex_text: &str) -> Result<PublicKey> {
    let bytes =
        hex::decode(hex_text.trim()).map_err(|e| Error::BadReplyKey(format!("not hex: {e}")))?;
    if bytes.len() != 65 || bytes[0] != 0x04 {
        return Err(Error::BadReplyKey(format!(
            "expected 65 bytes 04||X||Y, got {} bytes",
            bytes.len()
        )));
    }
    PublicKey::from_sec1_bytes(&bytes)
        .map_err(|_| Error::BadReplyKey("not a point on the SM2 curve".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keypair() -> (SecretKey, PublicKey) {
        let mut bytes = [0u8; 32];
        loop {
            random_bytes(&mut bytes).expect("rng");
            if let Ok(secret) = SecretKey::from_slice(&bytes) {
                let public = secret.public_key();
                return (secret, public);
            }
        }
    }

    #[test]
    fn wrap_unwrap_round_trip() {
        let (secret, public) = keypair();
        let key = ContentKey::generate().unwrap();
        let der = wrap_key(&public, key.as_bytes()).unwrap();
        assert_eq!(der[0], 0x30, "GM/T 0009 form is a DER SEQUENCE");
        assert_eq!(unwrap_key(&secret, &der).unwrap(), key.as_bytes());
    }

    #[test]
    fn unwrap_with_wrong_key_fails() {
        let (_, public) = keypair();
        let (other, _) = keypair();
        let der = wrap_key(&public, &[7u8; 16]).unwrap();
        assert!(matches!(unwrap_key(&other, &der), Err(Error::UnwrapFailed)));
    }

    #[test]
    fn reply_key_parsing() {
        let (_, public) = keypair();
        let hex_text = hex::encode_upper(public.to_sec1_bytes());
        assert_eq!(parse_reply_key(&hex_text).unwrap(), public);
        // Compressed form, wrong length, not hex, off-curve point.
        let compressed = &hex_text[2..66];
        assert!(parse_reply_key(&format!("02{compressed}")).is_err());
        assert!(parse_reply_key("04abcd").is_err());
        assert!(parse_reply_key("zz").is_err());
        assert!(parse_reply_key(&format!("04{}", "11".repeat(64))).is_err());
    }

    #[test]
    fn content_key_length_is_checked() {
        assert!(matches!(
            ContentKey::from_slice(&[0; 15]),
            Err(Error::BadContentKey(15))
        ));
        assert!(ContentKey::from_slice(&[0; 16]).is_ok());
        assert_eq!(format!("{:?}", ContentKey([1; 16])), "ContentKey(..)");
    }
}
