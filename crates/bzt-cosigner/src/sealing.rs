//! Encryption at rest under the master key: SM4-GCM, random 96-bit nonce,
//! associated data naming what is sealed (the key id for a share), so a
//! sealed share cannot be moved to another record. Stored as base64 of
//! `nonce ‖ ciphertext ‖ tag`.

use std::path::Path;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{AesGcm, KeyInit};
use anyhow::{bail, Context as _};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use getrandom::rand_core::TryRng;
use getrandom::SysRng;
use sm2::elliptic_curve::consts::U12;
use sm4::Sm4;

type Sm4Gcm = AesGcm<Sm4, U12>;

pub struct MasterKey([u8; 16]);

impl MasterKey {
    pub fn from_hex(text: &str) -> anyhow::Result<Self> {
        let bytes = hex::decode(text.trim()).context("the master key is not hex")?;
        let key: [u8; 16] = bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("the master key must be 16 bytes (32 hex digits)"))?;
        Ok(Self(key))
    }

    /// Reads `path`, or (development mode) creates it with a fresh key,
    /// readable by its owner only.
    pub fn load_or_generate(path: &Path, generate: bool) -> anyhow::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_hex(&text).with_context(|| path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && generate => {
                let mut key = [0u8; 16];
                SysRng
                    .try_fill_bytes(&mut key)
                    .map_err(|_| anyhow::anyhow!("no system randomness"))?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                write_private(path, hex::encode(key).as_bytes())?;
                Ok(Self(key))
            }
            Err(e) => bail!("reading the master key {}: {e}", path.display()),
        }
    }

    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> anyhow::Result<String> {
        let mut nonce = [0u8; 12];
        SysRng
            .try_fill_bytes(&mut nonce)
            .map_err(|_| anyhow::anyhow!("no system randomness"))?;
        let cipher =
            Sm4Gcm::new_from_slice(&self.0).map_err(|_| anyhow::anyhow!("bad key length"))?;
        let ct = cipher
            .encrypt((&nonce).into(), Payload { msg: plain, aad })
            .map_err(|_| anyhow::anyhow!("sealing failed"))?;
        Ok(B64.encode([nonce.as_slice(), &ct].concat()))
    }

    pub fn open(&self, aad: &[u8], sealed: &str) -> anyhow::Result<Vec<u8>> {
        let bytes = B64.decode(sealed).context("a sealed value is not base64")?;
        if bytes.len() < 12 + 16 {
            bail!("a sealed value is too short");
        }
        let (nonce, ct) = bytes.split_at(12);
        let nonce: [u8; 12] = nonce.try_into()?;
        let cipher =
            Sm4Gcm::new_from_slice(&self.0).map_err(|_| anyhow::anyhow!("bad key length"))?;
        cipher
            .decrypt((&nonce).into(), Payload { msg: ct, aad })
            .map_err(|_| anyhow::anyhow!("a sealed value does not open under this master key"))
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    Ok(())
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_share_opens_only_under_its_key_and_record() {
        let key = MasterKey::from_hex("00112233445566778899aabbccddeeff").unwrap();
        let other = MasterKey::from_hex("ffeeddccbbaa99887766554433221100").unwrap();
        let sealed = key.seal(b"share:k1", b"d2 bytes").unwrap();
        assert_eq!(key.open(b"share:k1", &sealed).unwrap(), b"d2 bytes");
        assert!(key.open(b"share:k2", &sealed).is_err());
        assert!(other.open(b"share:k1", &sealed).is_err());
        assert!(!B64
            .decode(&sealed)
            .unwrap()
            .windows(8)
            .any(|w| w == b"d2 bytes"));
    }
}
