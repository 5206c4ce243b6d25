//! Blinded co-decryption of a GM/T 0009 (DER) SM2 ciphertext in one round
//! trip: phone `T1 = w·C1` with a fresh `w`; service `T2 = d2⁻¹·T1`; phone
//! `(w⁻¹·d1⁻¹)·T2 − C1 = d·C1`, then the standard KDF, XOR and `C3` check.
//!
//! The blinding is the point: without `w` (the phone sending `d1⁻¹·C1`, as
//! some published co-sign servers do) the service would learn `(1 + d)·C1`
//! and, holding the bid files, open them alone. Here it sees `w·C1` and
//! `d2⁻¹·w·C1`, which say nothing about `d·C1` without `w` and `d1`.

use sm2::elliptic_curve::ops::Invert;
use sm2::elliptic_curve::sec1::ToSec1Point;
use sm2::elliptic_curve::Group;
use sm2::pkcs8::der::Decode;
use sm2::pke::Cipher;
use sm2::{NonZeroScalar, ProjectivePoint};
use sm3::{Digest, Sm3};
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use super::kdf::sm2_kdf;
use super::keygen::ServiceShare;
use super::points::{decode_point, random_scalar};
use super::{Error, Result};

/// The service's round: `T2 = d2⁻¹·T1`, for a `T1` already validated by
/// [`super::decode_point`].
pub fn service_decrypt(share: &ServiceShare, t1: &ProjectivePoint) -> ProjectivePoint {
    *t1 * *share.d2().invert()
}

/// The phone's side of one decryption: the parsed ciphertext and fresh `w`.
pub struct BlindedDecryption {
    w: NonZeroScalar,
    c1: ProjectivePoint,
    c2: Vec<u8>,
    c3: [u8; 32],
    t1: ProjectivePoint,
}

impl BlindedDecryption {
    /// Parses a GM/T 0009 DER ciphertext (what OpenSSL's `pkeyutl -encrypt`
    /// and the envelope's `key_b64` hold) and blinds its `C1`.
    pub fn start_der(ciphertext: &[u8]) -> Result<Self> {
        let (c1, c2, c3) = parse_der(ciphertext)?;
        let w = random_scalar()?;
        let t1 = c1 * *w;
        Ok(Self { w, c1, c2, c3, t1 })
    }

    /// `T1 = w·C1`, sent to the service (inside the channel).
    pub fn t1(&self) -> &ProjectivePoint {
        &self.t1
    }

    /// Unblinds the service's `T2` (validated by the caller) to `d·C1` and
    /// finishes SM2 decryption, checking `C3`.
    pub fn finish(self, d1: &NonZeroScalar, t2: &ProjectivePoint) -> Result<Vec<u8>> {
        let unblind = *self.w.invert() * *d1.invert();
        let shared = *t2 * unblind - self.c1;
        open_with_shared_point(&shared, &self.c2, &self.c3)
    }
}

impl Drop for BlindedDecryption {
    fn drop(&mut self) {
        self.w.zeroize();
    }
}

/// Finishes SM2 decryption of `ciphertext` given a candidate `d·C1`: what the
/// phone does last, and what an attacker must manage to open a file. Public
/// so the tests that play the attacker use the real thing.
pub fn open_der_with_shared_point(ciphertext: &[u8], shared: &ProjectivePoint) -> Result<Vec<u8>> {
    let (_, c2, c3) = parse_der(ciphertext)?;
    open_with_shared_point(shared, &c2, &c3)
}

/// `C1` of a DER ciphertext (validated).
pub fn der_c1(ciphertext: &[u8]) -> Result<ProjectivePoint> {
    Ok(parse_der(ciphertext)?.0)
}

fn parse_der(ciphertext: &[u8]) -> Result<(ProjectivePoint, Vec<u8>, [u8; 32])> {
    let cipher: Cipher<'_> = Cipher::from_der(ciphertext).map_err(|_| Error::Decrypt)?;
    // Re-validate C1 through the one check every received point passes.
    let c1 =
        decode_point(cipher.c1().to_sec1_point(false).as_bytes()).map_err(|_| Error::Decrypt)?;
    let c3: [u8; 32] = cipher
        .c3()
        .as_slice()
        .try_into()
        .map_err(|_| Error::Decrypt)?;
    Ok((c1, cipher.c2().to_vec(), c3))
}

fn open_with_shared_point(shared: &ProjectivePoint, c2: &[u8], c3: &[u8; 32]) -> Result<Vec<u8>> {
    if bool::from(shared.is_identity()) {
        return Err(Error::Decrypt);
    }
    let encoded = shared.to_affine().to_sec1_point(false);
    let xy = &encoded.as_bytes()[1..];
    let (x2, y2) = xy.split_at(32);
    let mut mask = vec![0u8; c2.len()];
    sm2_kdf(xy, &mut mask);
    // GB/T 32918.4 A5: an all-zero KDF output is refused.
    if !c2.is_empty() && mask.iter().all(|b| *b == 0) {
        return Err(Error::Decrypt);
    }
    let mut plain: Vec<u8> = c2.iter().zip(&mask).map(|(c, t)| c ^ t).collect();
    mask.zeroize();
    let check: [u8; 32] = Sm3::new()
        .chain_update(x2)
        .chain_update(&plain)
        .chain_update(y2)
        .finalize()
        .into();
    if bool::from(check.ct_eq(c3)) {
        Ok(plain)
    } else {
        plain.zeroize();
        Err(Error::Decrypt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::two_party::keygen::PhoneKeygen;
    use crate::two_party::points::encode_point;
    use getrandom::SysRng;
    use sm2::pke::{DecryptingKey, EncryptingKey};
    use sm2::PublicKey;

    fn enrolled() -> (NonZeroScalar, ServiceShare, ProjectivePoint) {
        let phone = PhoneKeygen::start().unwrap();
        let (share, p2, proof2, _) =
            ServiceShare::enrol(phone.p1(), &phone.proof().unwrap()).unwrap();
        let (d1, joint) = phone.finish(&p2, &proof2).unwrap();
        (d1, share, joint)
    }

    fn seal(joint: &ProjectivePoint, msg: &[u8]) -> Vec<u8> {
        let key = PublicKey::from_sec1_bytes(&encode_point(joint)).unwrap();
        EncryptingKey::new(key)
            .encrypt_der(&mut SysRng, msg)
            .unwrap()
    }

    #[test]
    fn a_blinded_co_decryption_opens_what_the_crate_sealed_to_the_joint_key() {
        let (d1, share, joint) = enrolled();
        let ct = seal(&joint, b"sixteen byte key");
        let phone = BlindedDecryption::start_der(&ct).unwrap();
        let t2 = service_decrypt(&share, phone.t1());
        assert_eq!(phone.finish(&d1, &t2).unwrap(), b"sixteen byte key");
    }

    #[test]
    fn our_finish_agrees_with_the_crates_whole_key_decryption() {
        let d = random_scalar().unwrap();
        let key = DecryptingKey::new_with_mode(d, sm2::pke::Mode::C1C3C2);
        let p = ProjectivePoint::mul_by_generator(&*d);
        let ct = seal(&p, b"abc");
        assert_eq!(key.decrypt_der(&ct).unwrap(), b"abc");
        let shared = der_c1(&ct).unwrap() * *d;
        assert_eq!(open_der_with_shared_point(&ct, &shared).unwrap(), b"abc");
    }

    #[test]
    fn a_wrong_share_fails_the_c3_check() {
        let (d1, _, joint) = enrolled();
        let (_, other, _) = enrolled();
        let ct = seal(&joint, b"secret");
        let phone = BlindedDecryption::start_der(&ct).unwrap();
        let t2 = service_decrypt(&other, phone.t1());
        assert_eq!(phone.finish(&d1, &t2).unwrap_err(), Error::Decrypt);
    }

    #[test]
    fn neither_share_alone_decrypts() {
        let (d1, share, joint) = enrolled();
        let ct = seal(&joint, b"secret");
        // The phone alone: it must stand in for the service's answer (d2 = 1: T2 = T1).
        let phone = BlindedDecryption::start_der(&ct).unwrap();
        let t2 = *phone.t1();
        assert_eq!(phone.finish(&d1, &t2).unwrap_err(), Error::Decrypt);
        // The service alone: with its own share and a stand-in d1 = 1.
        let phone = BlindedDecryption::start_der(&ct).unwrap();
        let t2 = service_decrypt(&share, phone.t1());
        let one = NonZeroScalar::new(sm2::Scalar::ONE).unwrap();
        assert_eq!(phone.finish(&one, &t2).unwrap_err(), Error::Decrypt);
        // Both together.
        let phone = BlindedDecryption::start_der(&ct).unwrap();
        let t2 = service_decrypt(&share, phone.t1());
        assert_eq!(phone.finish(&d1, &t2).unwrap(), b"secret");
    }

    #[test]
    fn the_blinding_differs_every_time() {
        let (_, _, joint) = enrolled();
        let ct = seal(&joint, b"secret");
        let a = BlindedDecryption::start_der(&ct).unwrap();
        let b = BlindedDecryption::start_der(&ct).unwrap();
        assert_ne!(a.t1(), b.t1());
    }
}
