//! Co-signing in one round trip.
//!
//! Phone: `Q1 = w1·G`. Service: `(x1, y1) = w2·G + d2⁻¹·Q1`, `r = (e + x1) mod n`
//! (redrawn if 0), `s1 = d2·(r + w2)`. Phone: `s = d1·(s1 + w1) − r`, refused
//! if `s = 0` or `s + r = 0` (i.e. `r + k = n` for the joint nonce
//! `k = w2 + d2⁻¹·w1`), then checked against the joint key before release.
//!
//! The service computes `e` itself from the joint key and the message
//! ([`message_digest`]); it is never handed a digest.

use sm2::dsa::signature::Verifier;
use sm2::dsa::{Signature, VerifyingKey};
use sm2::elliptic_curve::ops::{Invert, Reduce};
use sm2::elliptic_curve::point::AffineCoordinates;
use sm2::elliptic_curve::Group;
use sm2::{FieldBytes, NonZeroScalar, ProjectivePoint, Scalar};
use sm3::{Digest, Sm3};
use zeroize::Zeroize;

use super::keygen::ServiceShare;
use super::points::{decode_scalar, encode_point, encode_scalar, random_scalar};
use super::{Error, Result, DEFAULT_DIST_ID};

/// `e = SM3(Z ‖ M)` reduced mod n, `Z` from `joint` and the default ID
/// (GB/T 32918.2 §6.1; the `sm2` crate keeps its `Z` private).
pub fn message_digest(joint: &ProjectivePoint, msg: &[u8]) -> Result<Scalar> {
    if bool::from(joint.is_identity()) {
        return Err(Error::InvalidPoint);
    }
    let z = crate::sm2verify::z_of(DEFAULT_DIST_ID.as_bytes(), &encode_point(joint)[1..])
        .ok_or(Error::InvalidPoint)?;
    let e: [u8; 32] = Sm3::new()
        .chain_update(z)
        .chain_update(msg)
        .finalize()
        .into();
    Ok(<Scalar as Reduce<FieldBytes>>::reduce(&FieldBytes::from(e)))
}

/// The service's round: `(r, s1)` for the phone's `Q1` (already validated by
/// [`super::decode_point`]) and the digest `e` it computed itself.
pub fn service_sign(
    share: &ServiceShare,
    q1: &ProjectivePoint,
    e: &Scalar,
) -> Result<([u8; 32], [u8; 32])> {
    let d2 = share.d2();
    let d2_inv = d2.invert();
    let scaled_q1 = *q1 * *d2_inv;
    loop {
        let mut w2 = random_scalar()?;
        let point = ProjectivePoint::mul_by_generator(&*w2) + scaled_q1;
        if bool::from(point.is_identity()) {
            w2.zeroize();
            continue;
        }
        let x1 = <Scalar as Reduce<FieldBytes>>::reduce(&point.to_affine().x());
        let r = *e + x1;
        if bool::from(r.is_zero()) {
            w2.zeroize();
            continue;
        }
        let s1 = **d2 * (r + *w2);
        w2.zeroize();
        return Ok((encode_scalar(&r), encode_scalar(&s1)));
    }
}

/// The phone's side of one signature, holding the fresh `w1`.
pub struct PhoneSigning {
    w1: NonZeroScalar,
    q1: ProjectivePoint,
}

impl PhoneSigning {
    /// Draws a fresh `w1` (never reused: two signatures with one `w1` give
    /// away `d1`).
    pub fn start() -> Result<Self> {
        let w1 = random_scalar()?;
        let q1 = ProjectivePoint::mul_by_generator(&*w1);
        Ok(Self { w1, q1 })
    }

    /// `Q1 = w1·G`, sent to the service (inside the channel).
    pub fn q1(&self) -> &ProjectivePoint {
        &self.q1
    }

    /// Finishes with the service's `(r, s1)`: `s = d1·(s1 + w1) − r`, then
    /// verifies `(r, s)` over `msg` under `joint` before releasing it.
    pub fn finish(
        self,
        d1: &NonZeroScalar,
        joint: &ProjectivePoint,
        msg: &[u8],
        r: &[u8],
        s1: &[u8],
    ) -> Result<Signature> {
        let r = decode_scalar(r)?;
        let s1 = decode_scalar(s1)?;
        let s = **d1 * (*s1 + *self.w1) - *r;
        if bool::from(s.is_zero()) || bool::from((s + *r).is_zero()) {
            return Err(Error::Degenerate);
        }
        let sig = Signature::from_scalars(encode_scalar(&r), encode_scalar(&s))
            .map_err(|_| Error::Degenerate)?;
        let key = VerifyingKey::from_affine(DEFAULT_DIST_ID, joint.to_affine())
            .map_err(|_| Error::InvalidPoint)?;
        key.verify(msg, &sig).map_err(|_| Error::BadSignature)?;
        Ok(sig)
    }
}

impl Drop for PhoneSigning {
    fn drop(&mut self) {
        self.w1.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::two_party::keygen::PhoneKeygen;
    use sm2::dsa::SigningKey;

    pub(crate) fn enrolled() -> (NonZeroScalar, ServiceShare, ProjectivePoint) {
        let phone = PhoneKeygen::start().unwrap();
        let (share, p2, proof2, _) =
            ServiceShare::enrol(phone.p1(), &phone.proof().unwrap()).unwrap();
        let (d1, joint) = phone.finish(&p2, &proof2).unwrap();
        (d1, share, joint)
    }

    fn co_sign(
        d1: &NonZeroScalar,
        share: &ServiceShare,
        joint: &ProjectivePoint,
        msg: &[u8],
    ) -> Result<Signature> {
        let phone = PhoneSigning::start()?;
        let e = message_digest(joint, msg)?;
        let (r, s1) = service_sign(share, phone.q1(), &e)?;
        phone.finish(d1, joint, msg, &r, &s1)
    }

    #[test]
    fn a_co_signature_verifies_with_the_crate_under_the_joint_key() {
        let (d1, share, joint) = enrolled();
        let sig = co_sign(&d1, &share, &joint, b"BZT-CHALLENGE-V1\nkind:login").unwrap();
        let key = VerifyingKey::from_affine(DEFAULT_DIST_ID, joint.to_affine()).unwrap();
        assert!(key.verify(b"BZT-CHALLENGE-V1\nkind:login", &sig).is_ok());
        assert!(key.verify(b"something else", &sig).is_err());
    }

    #[test]
    fn our_digest_is_the_one_a_whole_key_signs() {
        // A whole-key signature from the crate verifies by our e: (x1 of s·G + t·P) + e = r.
        let d = random_scalar().unwrap();
        let signer = SigningKey::from_nonzero_scalar(DEFAULT_DIST_ID, d).unwrap();
        let sig: Signature = sm2::dsa::signature::Signer::sign(&signer, b"msg");
        let p = ProjectivePoint::mul_by_generator(&*d);
        let e = message_digest(&p, b"msg").unwrap();
        let (r, s) = (sig.r(), sig.s());
        let point = ProjectivePoint::mul_by_generator(&*s) + p * (*r + *s);
        let x1 = <Scalar as Reduce<FieldBytes>>::reduce(&point.to_affine().x());
        assert_eq!(e + x1, *r);
    }

    #[test]
    fn a_share_alone_signs_nothing_that_verifies() {
        let (d1, share, joint) = enrolled();
        let msg = b"tbs";
        // The phone alone, guessing the service's answer as if d2 = 1.
        let phone = PhoneSigning::start().unwrap();
        let e = message_digest(&joint, msg).unwrap();
        let fake = ServiceShare::from_bytes(&encode_scalar(&Scalar::ONE)).unwrap();
        let (r, s1) = service_sign(&fake, phone.q1(), &e).unwrap();
        assert_eq!(
            phone.finish(&d1, &joint, msg, &r, &s1).unwrap_err(),
            Error::BadSignature
        );
        // The service alone: treat its s1 with a stand-in d1 = 1.
        let phone = PhoneSigning::start().unwrap();
        let (r, s1) = service_sign(&share, phone.q1(), &e).unwrap();
        let one = NonZeroScalar::new(Scalar::ONE).unwrap();
        assert_eq!(
            phone.finish(&one, &joint, msg, &r, &s1).unwrap_err(),
            Error::BadSignature
        );
    }

    #[test]
    fn each_signature_draws_fresh_nonces() {
        let (d1, share, joint) = enrolled();
        let a = co_sign(&d1, &share, &joint, b"same").unwrap();
        let b = co_sign(&d1, &share, &joint, b"same").unwrap();
        assert_ne!(a.r_bytes(), b.r_bytes());
    }
}
