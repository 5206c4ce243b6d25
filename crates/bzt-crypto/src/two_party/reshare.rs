//! Re-sharing (企业证书授权): a fresh pair of shares for the same joint key,
//! one on a member's phone, one on the service, without `d` ever existing and
//! without the service learning the member's share.
//!
//! With `(1 + d)⁻¹ = d1·d2` (administrator `d1`, service `d2`):
//!
//! 1. The administrator's phone draws `t` ([`ReshareDealer`]) and hands
//!    `d1·t` to the member's phone (sealed to the member's key) and `t` to the
//!    service (inside the channel). The service derives the member's pending
//!    pair `d2·t⁻¹` and `P1' = t⁻¹·P1` ([`ServiceShare::reshare`]).
//! 2. The member's phone draws `u` ([`MemberAcceptance`]) and keeps
//!    `d1'' = d1·t·u`; it sends `u` and a proof of knowledge of `d1''⁻¹` for
//!    `P1'' = u⁻¹·P1'`. The service checks the proof, keeps `d2'' = d2·t⁻¹·u⁻¹`
//!    and `P1''` ([`ServiceShare::accept_member`]), and answers
//!    `P2'' = d2''⁻¹·G`, with which the member checks `d1''⁻¹·P2'' − G = P`.
//!
//! `d1''·d2'' = d1·d2`, so the member co-signs under the company key `P`.
//! The service learns `t` and `u` but never `d1`, so never `d1''`. The
//! administrator learns `d1·t` but not `u`, so it cannot make the member's
//! PIN proofs (and cannot pass itself off as the member in the audit).
//! The member learns `d1·t` but not `t`, so never the administrator's `d1`.
//! Destroying `d2''` on the service ends the member's use of the key; the
//! administrator's pair is untouched.

use sm2::elliptic_curve::ops::Invert;
use sm2::elliptic_curve::Group;
use sm2::{NonZeroScalar, ProjectivePoint};
use zeroize::Zeroize;

use super::keygen::{joint_public_key_phone, ServiceShare};
use super::points::{decode_scalar, encode_point, encode_scalar, random_scalar};
use super::schnorr::SchnorrProof;
use super::Result;

const MEMBER_CONTEXT: &[u8] = b"BZT-2P-RESHARE-MEMBER-V1";

/// The administrator's phone: the factor `t` of one grant.
pub struct ReshareDealer {
    t: NonZeroScalar,
}

impl ReshareDealer {
    pub fn start() -> Result<Self> {
        Ok(Self {
            t: random_scalar()?,
        })
    }

    /// `d1·t`: for the member's phone only (seal it to the member's key).
    pub fn member_share(&self, d1: &NonZeroScalar) -> [u8; 32] {
        encode_scalar(&(**d1 * *self.t))
    }

    /// `t`: for the service only (inside the channel).
    pub fn service_factor(&self) -> [u8; 32] {
        encode_scalar(&self.t)
    }
}

impl Drop for ReshareDealer {
    fn drop(&mut self) {
        self.t.zeroize();
    }
}

impl ServiceShare {
    /// The member's pending pair from the administrator's `P1` and the
    /// factor `t`: `(d2·t⁻¹, P1' = t⁻¹·P1)`.
    pub fn reshare(
        &self,
        admin_p1: &ProjectivePoint,
        factor: &[u8],
    ) -> Result<(Self, ProjectivePoint)> {
        let t_inv = decode_scalar(factor)?.invert();
        let share = Self::from_scalar(*self.d2() * t_inv);
        Ok((share, *admin_p1 * *t_inv))
    }

    /// Completes a member's pending pair with the member's factor `u` and its
    /// proof for `P1'' = u⁻¹·P1'`: `(d2·t⁻¹·u⁻¹, P1'', P2'')`.
    pub fn accept_member(
        &self,
        pending_p1: &ProjectivePoint,
        factor: &[u8],
        proof: &SchnorrProof,
        grant_id: &str,
    ) -> Result<(Self, ProjectivePoint, ProjectivePoint)> {
        let u_inv = decode_scalar(factor)?.invert();
        let p1 = *pending_p1 * *u_inv;
        proof.verify(&p1, &member_context(grant_id, &p1))?;
        let share = Self::from_scalar(*self.d2() * u_inv);
        let p2 = share.p2();
        Ok((share, p1, p2))
    }
}

/// The member's phone: re-randomises what the administrator sent by its own
/// `u`, so that the administrator does not know the share it ends with.
pub struct MemberAcceptance {
    u: NonZeroScalar,
    share: NonZeroScalar,
}

impl MemberAcceptance {
    /// From `d1·t` as received from the administrator.
    pub fn start(received: &[u8]) -> Result<Self> {
        let received = decode_scalar(received)?;
        let u = random_scalar()?;
        let share = received * u;
        Ok(Self { u, share })
    }

    /// `u`, for the service (inside the channel).
    pub fn service_factor(&self) -> [u8; 32] {
        encode_scalar(&self.u)
    }

    /// Proof of knowledge of `d1''⁻¹` for `P1'' = d1''⁻¹·G`, bound to the grant.
    pub fn proof(&self, grant_id: &str) -> Result<SchnorrProof> {
        let inverse = self.share.invert();
        let p1 = ProjectivePoint::mul_by_generator(&*inverse);
        SchnorrProof::prove(&inverse, &p1, &member_context(grant_id, &p1))
    }

    /// Checks the service's `P2''` against the company key `joint` and returns
    /// the member's share `d1''` (to be masked by the member's PIN).
    pub fn finish(self, p2: &ProjectivePoint, joint: &ProjectivePoint) -> Result<NonZeroScalar> {
        if joint_public_key_phone(&self.share, p2)? != *joint {
            return Err(super::Error::BadProof);
        }
        Ok(self.share)
    }
}

impl Drop for MemberAcceptance {
    fn drop(&mut self) {
        self.u.zeroize();
        self.share.zeroize();
    }
}

fn member_context(grant_id: &str, p1: &ProjectivePoint) -> Vec<u8> {
    let mut ctx = MEMBER_CONTEXT.to_vec();
    ctx.extend_from_slice(&(grant_id.len() as u64).to_be_bytes());
    ctx.extend_from_slice(grant_id.as_bytes());
    ctx.extend_from_slice(&encode_point(p1));
    ctx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::two_party::keygen::PhoneKeygen;
    use crate::two_party::{message_digest, service_sign, PhoneSigning, ServiceShare};
    use sm2::dsa::signature::Verifier;
    use sm2::dsa::VerifyingKey;

    struct Company {
        admin_d1: NonZeroScalar,
        admin_p1: ProjectivePoint,
        admin_share: ServiceShare,
        joint: ProjectivePoint,
    }

    fn company() -> Company {
        let phone = PhoneKeygen::start().unwrap();
        let admin_p1 = *phone.p1();
        let (admin_share, p2, proof2, _) =
            ServiceShare::enrol(phone.p1(), &phone.proof().unwrap()).unwrap();
        let (admin_d1, joint) = phone.finish(&p2, &proof2).unwrap();
        Company {
            admin_d1,
            admin_p1,
            admin_share,
            joint,
        }
    }

    /// The whole grant: dealer, service, member. Returns the member's share,
    /// the member's service share and `P1''`.
    fn grant(c: &Company, grant_id: &str) -> (NonZeroScalar, ServiceShare, ProjectivePoint) {
        let dealer = ReshareDealer::start().unwrap();
        let (pending, pending_p1) = c
            .admin_share
            .reshare(&c.admin_p1, &dealer.service_factor())
            .unwrap();
        let member = MemberAcceptance::start(&dealer.member_share(&c.admin_d1)).unwrap();
        let (share, p1, p2) = pending
            .accept_member(
                &pending_p1,
                &member.service_factor(),
                &member.proof(grant_id).unwrap(),
                grant_id,
            )
            .unwrap();
        (member.finish(&p2, &c.joint).unwrap(), share, p1)
    }

    fn co_sign(
        d1: &NonZeroScalar,
        share: &ServiceShare,
        joint: &ProjectivePoint,
        msg: &[u8],
    ) -> Result<sm2::dsa::Signature> {
        let phone = PhoneSigning::start()?;
        let e = message_digest(joint, msg)?;
        let (r, s1) = service_sign(share, phone.q1(), &e)?;
        phone.finish(d1, joint, msg, &r, &s1)
    }

    #[test]
    fn a_member_pair_signs_under_the_company_key_and_the_admin_pair_still_does() {
        let c = company();
        let (member_d1, member_share, member_p1) = grant(&c, "g1");
        let key = VerifyingKey::from_affine(crate::two_party::DEFAULT_DIST_ID, c.joint.to_affine())
            .unwrap();
        let sig = co_sign(&member_d1, &member_share, &c.joint, b"bid").unwrap();
        assert!(key.verify(b"bid", &sig).is_ok());
        let sig = co_sign(&c.admin_d1, &c.admin_share, &c.joint, b"bid").unwrap();
        assert!(key.verify(b"bid", &sig).is_ok());
        // The member's P1'' is what its PIN proofs are checked against.
        assert_eq!(
            ProjectivePoint::mul_by_generator(&*member_d1.invert()),
            member_p1
        );
    }

    #[test]
    fn shares_differ_and_mixing_pairs_or_one_share_alone_does_not_sign() {
        let c = company();
        let (member_d1, member_share, _) = grant(&c, "g1");
        assert_ne!(encode_scalar(&member_d1), encode_scalar(&c.admin_d1));
        assert_ne!(member_share.to_bytes(), c.admin_share.to_bytes());
        // The member's phone share with the administrator's service share, and the
        // other way round: the phone's own check refuses the result.
        assert_eq!(
            co_sign(&member_d1, &c.admin_share, &c.joint, b"m").unwrap_err(),
            super::super::Error::BadSignature
        );
        assert_eq!(
            co_sign(&c.admin_d1, &member_share, &c.joint, b"m").unwrap_err(),
            super::super::Error::BadSignature
        );
        // Either share with a stand-in 1 for the other.
        let one = NonZeroScalar::new(sm2::Scalar::ONE).unwrap();
        let unit = ServiceShare::from_bytes(&encode_scalar(&one)).unwrap();
        assert!(co_sign(&member_d1, &unit, &c.joint, b"m").is_err());
        assert!(co_sign(&one, &member_share, &c.joint, b"m").is_err());
    }

    #[test]
    fn two_members_get_different_pairs_and_a_proof_for_another_grant_is_refused() {
        let c = company();
        let (a, ..) = grant(&c, "g1");
        let (b, ..) = grant(&c, "g2");
        assert_ne!(encode_scalar(&a), encode_scalar(&b));

        let dealer = ReshareDealer::start().unwrap();
        let (pending, pending_p1) = c
            .admin_share
            .reshare(&c.admin_p1, &dealer.service_factor())
            .unwrap();
        let member = MemberAcceptance::start(&dealer.member_share(&c.admin_d1)).unwrap();
        let refused = pending.accept_member(
            &pending_p1,
            &member.service_factor(),
            &member.proof("g-other").unwrap(),
            "g1",
        );
        assert!(refused.is_err());
    }

    #[test]
    fn a_member_refuses_a_share_that_is_not_for_the_company_key() {
        let c = company();
        let other = company();
        let dealer = ReshareDealer::start().unwrap();
        // The administrator (or a relay) sends a share of another key.
        let (pending, pending_p1) = c
            .admin_share
            .reshare(&c.admin_p1, &dealer.service_factor())
            .unwrap();
        let member = MemberAcceptance::start(&dealer.member_share(&other.admin_d1)).unwrap();
        // The service refuses the proof: the member's P1'' is not t⁻¹·u⁻¹·P1.
        assert!(pending
            .accept_member(
                &pending_p1,
                &member.service_factor(),
                &member.proof("g").unwrap(),
                "g"
            )
            .is_err());
    }
}
