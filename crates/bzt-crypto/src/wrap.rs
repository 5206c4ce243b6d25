//! SM2 public-key encryption of short keys (GM/T 0009 DER, the form OpenSSL speaks): how the
//! envelope wraps its content key to each recipient, and how the phone re-wraps it to the
//! hall's one-time reply key (扫码解密).

use getrandom::SysRng;
use sm2::pke::{DecryptingKey, EncryptingKey};
use sm2::{PublicKey, SecretKey};

use crate::Error;

/// SM2-encrypts `key` (normally a 16-byte content key) to `public`, in the GM/T 0009 DER form
/// `SEQUENCE { x, y, C3 (SM3, 32 bytes), C2 }` that `openssl pkeyutl -decrypt` reads.
///
/// Fails only if the system random generator fails.
pub fn wrap_key(public: &PublicKey, key: &[u8]) -> Result<Vec<u8>, Error> {
    EncryptingKey::new(*public)
        .encrypt_der(&mut SysRng, key)
        .map_err(|_| Error::Random)
}

/// Decrypts a GM/T 0009 DER SM2 ciphertext made by [`wrap_key`] or by
/// `openssl pkeyutl -encrypt -certin -inkey cert.pem`.
///
/// Returns [`Error::DecryptFailed`] if it does not decrypt (wrong key, damaged input, C3
/// mismatch). It does not check the length of the result.
pub fn unwrap_key(secret: &SecretKey, der: &[u8]) -> Result<Vec<u8>, Error> {
    DecryptingKey::new(secret.clone())
        .decrypt_der(der)
        .map_err(|_| Error::DecryptFailed)
}
