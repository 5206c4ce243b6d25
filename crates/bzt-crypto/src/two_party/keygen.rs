//! Key generation: `P1 = d1⁻¹·G` (phone), `P2 = d2⁻¹·G` (service), each with
//! a proof of knowledge of its discrete log, and the joint public key
//! `P = d1⁻¹·P2 − G = d2⁻¹·P1 − G`, whose private key `d` satisfies
//! `(1 + d)⁻¹ = d1·d2` and is never computed by anyone.
//!
//! The proofs stop a party from choosing its point after seeing the other's
//! (say `P2 = X − … ` to steer `P` to a key it knows): each must know the
//! log of what it sends. The service's proof is bound to the phone's `P1`,
//! so it cannot be replayed into another enrolment.

use sm2::elliptic_curve::ops::Invert;
use sm2::elliptic_curve::Group;
use sm2::{NonZeroScalar, ProjectivePoint};
use zeroize::Zeroize;

use super::points::{decode_scalar, encode_point, encode_scalar, random_scalar};
use super::schnorr::SchnorrProof;
use super::{Error, Result};

const PHONE_CONTEXT: &[u8] = b"BZT-2P-KEYGEN-PHONE-V1";
const SERVICE_CONTEXT: &[u8] = b"BZT-2P-KEYGEN-SERVICE-V1";

/// The phone's half of key generation, holding `d1` until [`Self::finish`].
pub struct PhoneKeygen {
    d1: NonZeroScalar,
    p1: ProjectivePoint,
}

impl PhoneKeygen {
    /// Draws `d1` and computes `P1 = d1⁻¹·G`.
    pub fn start() -> Result<Self> {
        let d1 = random_scalar()?;
        let p1 = ProjectivePoint::mul_by_generator(&*d1.invert());
        Ok(Self { d1, p1 })
    }

    /// `P1`, sent to the service (inside the channel).
    pub fn p1(&self) -> &ProjectivePoint {
        &self.p1
    }

    /// Proof of knowledge of `d1⁻¹` for `P1`.
    pub fn proof(&self) -> Result<SchnorrProof> {
        SchnorrProof::prove(&self.d1.invert(), &self.p1, PHONE_CONTEXT)
    }

    /// Checks the service's `P2` and proof and returns `d1` with the joint
    /// public key. The caller stores `d1` masked by the PIN and must keep
    /// neither `P1` nor `P2`: with the (public) joint key either would let a
    /// thief of the phone file test PIN guesses.
    pub fn finish(
        self,
        p2: &ProjectivePoint,
        proof2: &SchnorrProof,
    ) -> Result<(NonZeroScalar, ProjectivePoint)> {
        proof2.verify(p2, &service_context(&self.p1))?;
        let joint = joint_public_key_phone(&self.d1, p2)?;
        Ok((self.d1, joint))
    }
}

impl Drop for PhoneKeygen {
    fn drop(&mut self) {
        self.d1.zeroize();
    }
}

/// The service's share `d2`, what its key store keeps (encrypted at rest).
#[derive(Clone)]
pub struct ServiceShare {
    d2: NonZeroScalar,
}

impl ServiceShare {
    /// Answers an enrolment: checks the phone's proof for `P1`, draws `d2`,
    /// and returns the share, `P2`, its proof and the joint public key.
    pub fn enrol(
        p1: &ProjectivePoint,
        proof1: &SchnorrProof,
    ) -> Result<(Self, ProjectivePoint, SchnorrProof, ProjectivePoint)> {
        proof1.verify(p1, PHONE_CONTEXT)?;
        let d2 = random_scalar()?;
        let d2_inv = d2.invert();
        let p2 = ProjectivePoint::mul_by_generator(&*d2_inv);
        let proof2 = SchnorrProof::prove(&d2_inv, &p2, &service_context(p1))?;
        let joint = joint_public_key_service(&d2, p1)?;
        Ok((Self { d2 }, p2, proof2, joint))
    }

    pub(crate) fn from_scalar(d2: NonZeroScalar) -> Self {
        Self { d2 }
    }

    pub(crate) fn d2(&self) -> &NonZeroScalar {
        &self.d2
    }

    /// 32-byte big-endian `d2`, for the key store to encrypt.
    pub fn to_bytes(&self) -> [u8; 32] {
        encode_scalar(&self.d2)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        Ok(Self {
            d2: decode_scalar(bytes)?,
        })
    }

    /// `P2 = d2⁻¹·G`.
    pub fn p2(&self) -> ProjectivePoint {
        ProjectivePoint::mul_by_generator(&*self.d2.invert())
    }
}

impl Drop for ServiceShare {
    fn drop(&mut self) {
        self.d2.zeroize();
    }
}

impl std::fmt::Debug for ServiceShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServiceShare(..)")
    }
}

/// `P = d1⁻¹·P2 − G`, refusing the identity (that would be `d = 0`).
pub fn joint_public_key_phone(d1: &NonZeroScalar, p2: &ProjectivePoint) -> Result<ProjectivePoint> {
    joint(*p2 * *d1.invert())
}

/// `P = d2⁻¹·P1 − G`.
pub fn joint_public_key_service(
    d2: &NonZeroScalar,
    p1: &ProjectivePoint,
) -> Result<ProjectivePoint> {
    joint(*p1 * *d2.invert())
}

fn joint(scaled: ProjectivePoint) -> Result<ProjectivePoint> {
    let p = scaled - ProjectivePoint::generator();
    if bool::from(p.is_identity()) {
        return Err(Error::InvalidPoint);
    }
    Ok(p)
}

fn service_context(p1: &ProjectivePoint) -> Vec<u8> {
    let mut ctx = SERVICE_CONTEXT.to_vec();
    ctx.extend_from_slice(&encode_point(p1));
    ctx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_derive_the_same_joint_key_for_d_with_one_plus_d_inverse_d1_d2() {
        let phone = PhoneKeygen::start().unwrap();
        let (share, p2, proof2, service_view) =
            ServiceShare::enrol(phone.p1(), &phone.proof().unwrap()).unwrap();
        let (d1, phone_view) = phone.finish(&p2, &proof2).unwrap();
        assert_eq!(phone_view, service_view);
        // Only a test may compute d: (1 + d) = (d1·d2)⁻¹.
        let d =
            Option::<sm2::Scalar>::from((*d1 * **share.d2()).invert()).unwrap() - sm2::Scalar::ONE;
        assert_eq!(ProjectivePoint::mul_by_generator(&d), phone_view);
    }

    #[test]
    fn enrolment_refuses_a_phone_without_its_proof_and_a_service_proof_for_another_p1() {
        let phone = PhoneKeygen::start().unwrap();
        let other = PhoneKeygen::start().unwrap();
        assert_eq!(
            ServiceShare::enrol(phone.p1(), &other.proof().unwrap()).unwrap_err(),
            Error::BadProof
        );
        let (_, p2, proof2, _) = ServiceShare::enrol(other.p1(), &other.proof().unwrap()).unwrap();
        assert_eq!(phone.finish(&p2, &proof2).unwrap_err(), Error::BadProof);
    }

    #[test]
    fn the_service_share_survives_its_stored_form() {
        let phone = PhoneKeygen::start().unwrap();
        let (share, p2, ..) = ServiceShare::enrol(phone.p1(), &phone.proof().unwrap()).unwrap();
        let again = ServiceShare::from_bytes(&share.to_bytes()).unwrap();
        assert_eq!(again.p2(), p2);
    }
}
