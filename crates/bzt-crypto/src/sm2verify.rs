//! SM2 signature verification (GB/T 32918.2 §7) in variable time.
//!
//! Verification handles only public values (key, message, signature), so
//! constant time buys nothing here. The digest `e = SM3(Z ‖ M)` is computed
//! here with the key's kept `Z`; the curve arithmetic (steps B1–B7) is
//! [`crate::sm2_verify`], hand-written for speed (about 3× OpenSSL 3.0
//! for a key seen once, more for a kept key, which gets its own table from
//! its second use: see loadtest/RESULTS.md) and cross-checked against the
//! `sm2` crate there. Unit tests check that it agrees with the crate's own
//! verify, and tests/api/interop.rs that it accepts OpenSSL's signatures.

use crate::sm2_verify::VerifyKey;
use sm2::dsa::{Signature, VerifyingKey};
use sm3::{Digest, Sm3};

/// `a`, `b`, `xG`, `yG` of the SM2 curve (GB/T 32918.5), in the order `Z`
/// hashes them.
const CURVE_PARAMS: [[u8; 32]; 4] = [
    hex32("FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC"),
    hex32("28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93"),
    hex32("32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7"),
    hex32("BC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0"),
];

const fn hex32(s: &str) -> [u8; 32] {
    const fn nibble(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'A'..=b'F' => c - b'A' + 10,
            _ => panic!("not upper-case hex"),
        }
    }
    let b = s.as_bytes();
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = nibble(b[2 * i]) << 4 | nibble(b[2 * i + 1]);
        i += 1;
    }
    out
}

/// A verifying key with its `Z` value, computed once, and its fast form
/// (with a precomputed table from the second verify on, 4 KiB, bounded in
/// number by [`crate::sm2_verify`]): what the chain cache keeps per certificate, so a
/// phone that signs often costs the verify alone.
#[derive(Clone, Debug)]
pub struct KeptKey {
    key: VerifyingKey,
    z: [u8; 32],
    fast: VerifyKey,
}

impl KeptKey {
    /// `None` if the key's distinguishing ID is too long for `ENTL`.
    pub fn new(key: VerifyingKey) -> Option<Self> {
        let z = z_value(&key)?;
        let fast = VerifyKey::from_sec1_uncompressed(&key.to_sec1_bytes())?;
        Some(Self { key, z, fast })
    }

    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }
}

/// `Z` of a verifying key (its own distinguishing ID).
fn z_value(key: &VerifyingKey) -> Option<[u8; 32]> {
    let point = key.to_sec1_bytes();
    // Uncompressed SEC1: 0x04 ‖ x ‖ y.
    let xy = point.get(1..65).filter(|_| point.len() == 65)?;
    z_of(key.distid().as_bytes(), xy)
}

/// `Z = SM3(ENTL ‖ ID ‖ a ‖ b ‖ xG ‖ yG ‖ xA ‖ yA)` (§5.5) for the public
/// point `xA ‖ yA` (64 bytes): the one place every party computes it (the
/// `sm2` crate keeps its own private). `None` if `ID` is too long for `ENTL`
/// or `xy` is not 64 bytes.
pub fn z_of(id: &[u8], xy: &[u8]) -> Option<[u8; 32]> {
    let entl = u16::try_from(id.len().checked_mul(8)?).ok()?;
    if xy.len() != 64 {
        return None;
    }
    let mut h = Sm3::new();
    h.update(entl.to_be_bytes());
    h.update(id);
    for p in &CURVE_PARAMS {
        h.update(p);
    }
    h.update(xy);
    Some(h.finalize().into())
}

/// True if `sig` is `key`'s signature over `msg` (SM3, the key's ID).
pub fn verify(key: &KeptKey, msg: &[u8], sig: &Signature) -> bool {
    let (e, r, s) = digest_and_scalars(key, msg, sig);
    key.fast.verify_digest(&e, &r, &s)
}

/// The same without the key's table: what a key's first verify costs
/// (benchmarks, and tests that both paths agree).
pub fn verify_without_table(key: &KeptKey, msg: &[u8], sig: &Signature) -> bool {
    let (e, r, s) = digest_and_scalars(key, msg, sig);
    key.fast.verify_digest_without_table(&e, &r, &s)
}

/// B3, B4: `e = SM3(Z ‖ M)`, with `r` and `s` as big-endian bytes; B1, B2,
/// B5–B7 are [`crate::sm2_verify`]'s.
fn digest_and_scalars(
    key: &KeptKey,
    msg: &[u8],
    sig: &Signature,
) -> ([u8; 32], [u8; 32], [u8; 32]) {
    let e: [u8; 32] = Sm3::new()
        .chain_update(key.z)
        .chain_update(msg)
        .finalize()
        .into();
    (e, sig.r().to_bytes().into(), sig.s().to_bytes().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sm2::dsa::signature::{Signer, Verifier};
    use sm2::dsa::SigningKey;

    fn key(seed: u64) -> SigningKey {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&seed.to_be_bytes());
        bytes[31] = 1;
        SigningKey::from_slice(crate::SM2_DISTID, &bytes).expect("valid scalar")
    }

    #[test]
    fn agrees_with_the_crates_constant_time_verify() {
        for i in 0..64u64 {
            let sk = key(i * 7919 + 3);
            let vk = sk.verifying_key();
            let msg = format!("challenge {i} 扫码登录").into_bytes();
            let sig: Signature = sk.sign(&msg);
            assert!(vk.verify(&msg, &sig).is_ok());
            let kept = KeptKey::new(vk.clone()).expect("default ID");
            assert!(
                verify_without_table(&kept, &msg, &sig),
                "valid, first use {i}"
            );
            assert!(verify(&kept, &msg, &sig), "valid signature {i}");
            assert!(verify(&kept, &msg, &sig), "valid, with the key's table {i}");

            let mut other = msg.clone();
            other[i as usize % msg.len()] ^= 1;
            assert!(vk.verify(&other, &sig).is_err());
            assert!(!verify(&kept, &other, &sig), "changed message {i}");
            assert!(
                !verify_without_table(&kept, &other, &sig),
                "changed message {i}"
            );

            let stranger = key(i + 1_000_000);
            let stranger = KeptKey::new(stranger.verifying_key().clone()).expect("default ID");
            assert!(!verify(&stranger, &msg, &sig), "other key {i}");

            // r and s swapped: still a well-formed signature, never a valid one.
            let swapped = Signature::from_scalars(sig.s().to_bytes(), sig.r().to_bytes())
                .expect("non-zero scalars");
            assert_eq!(
                vk.verify(&msg, &swapped).is_ok(),
                verify(&kept, &msg, &swapped)
            );
        }
    }

    #[test]
    fn z_uses_the_keys_distinguishing_id() {
        let sk = SigningKey::from_slice("ALICE123@YAHOO.COM", &[9u8; 32]).expect("valid scalar");
        let sig: Signature = sk.sign(b"message digest");
        let kept = KeptKey::new(sk.verifying_key().clone()).expect("short ID");
        assert!(verify(&kept, b"message digest", &sig));
        let default_id =
            VerifyingKey::from_sec1_bytes(crate::SM2_DISTID, &sk.verifying_key().to_sec1_bytes())
                .expect("same point");
        let default_id = KeptKey::new(default_id).expect("default ID");
        assert!(!verify(&default_id, b"message digest", &sig));
    }
}
