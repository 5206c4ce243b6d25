//! The phone's share at rest, masked by its PIN, and the PIN proof.
//!
//! At rest the phone keeps `d1·m mod n` with `m = PBKDF2-HMAC-SM3(PIN, salt)`
//! reduced mod n, and nothing that checks a guess: not `P1`, not `P2`, no MAC.
//! Every PIN unmasks to *some* scalar, so the file alone cannot tell the right
//! PIN from a wrong one. Only the service, which knows `P1`, can: the phone
//! proves knowledge of `d1⁻¹` for `P1` (a Schnorr proof, [`super::schnorr`])
//! whose challenge binds the key, the operation, its context, the point it
//! carries (`Q1` or `T1`), a fresh nonce and the time. A wrong PIN gives a
//! wrong `d1` and a failed proof, which the service counts. The slow KDF is
//! defence in depth; the guarantee is that no offline test exists, provided
//! proofs and rounds travel only inside the [`super::channel`].

use pbkdf2::pbkdf2_hmac;
use sm2::elliptic_curve::ops::{Invert, Reduce};
use sm2::elliptic_curve::Group;
use sm2::{FieldBytes, NonZeroScalar, ProjectivePoint, Scalar};
use sm3::Sm3;
use zeroize::Zeroize;

use super::points::{decode_scalar, encode_point, encode_scalar, random_bytes};
use super::schnorr::SchnorrProof;
use super::{Error, Result};

/// PBKDF2 rounds for new masked shares (~30 ms on a phone-class core).
pub const DEFAULT_PIN_ITERATIONS: u32 = 50_000;

/// `d1` as the phone stores it: `d1·m` with the salt and rounds that give `m`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaskedShare {
    pub masked: [u8; 32],
    pub salt: [u8; 16],
    pub iterations: u32,
}

impl MaskedShare {
    /// Masks `d1` under `pin` with a fresh salt.
    pub fn mask(d1: &NonZeroScalar, pin: &str, iterations: u32) -> Result<Self> {
        let salt = random_bytes::<16>()?;
        let m = pin_scalar(pin, &salt, iterations)?;
        let masked = encode_scalar(&(**d1 * *m));
        Ok(Self {
            masked,
            salt,
            iterations,
        })
    }

    /// `d1` if `pin` is right, a different scalar otherwise: the file cannot
    /// tell which (only the service's proof check can).
    pub fn unmask(&self, pin: &str) -> Result<NonZeroScalar> {
        let m = pin_scalar(pin, &self.salt, self.iterations)?;
        let masked = decode_scalar(&self.masked)?;
        Ok(masked * m.invert())
    }
}

fn pin_scalar(pin: &str, salt: &[u8], iterations: u32) -> Result<NonZeroScalar> {
    let mut okm = [0u8; 32];
    pbkdf2_hmac::<Sm3>(pin.as_bytes(), salt, iterations.max(1), &mut okm);
    let m = <Scalar as Reduce<FieldBytes>>::reduce(&FieldBytes::from(okm));
    okm.zeroize();
    Option::from(NonZeroScalar::new(m)).ok_or(Error::InvalidScalar)
}

/// What a PIN proof is bound to. `context` is the operation's canonical
/// context line (the co-signing service's wire crate defines it).
#[derive(Clone, Copy, Debug)]
pub struct PinStatement<'a> {
    pub key_id: &'a str,
    /// `sign` or `decrypt`.
    pub operation: &'a str,
    pub context: &'a str,
    /// `Q1` or `T1`.
    pub point: &'a ProjectivePoint,
}

impl PinStatement<'_> {
    fn bytes(&self, nonce: &[u8; 16], issued_at: i64) -> Vec<u8> {
        format!(
            "BZT-COSIGN-PIN-V1\nkey:{}\nop:{}\ncontext:{}\npoint:{}\nnonce:{}\nissued_at:{}",
            self.key_id,
            self.operation,
            self.context,
            hex::encode(encode_point(self.point)),
            hex::encode(nonce),
            issued_at
        )
        .into_bytes()
    }
}

/// Proof of knowledge of `d1⁻¹` for `P1`, bound to one operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinProof {
    /// Fresh per proof; the service keeps it until the proof would be too old.
    pub nonce: [u8; 16],
    /// Unix seconds when made; the service accepts a short window around now.
    pub issued_at: i64,
    pub proof: SchnorrProof,
}

impl PinProof {
    /// Proves with the unmasked `d1` (right or wrong PIN alike).
    pub fn prove(d1: &NonZeroScalar, statement: &PinStatement<'_>, issued_at: i64) -> Result<Self> {
        let nonce = random_bytes::<16>()?;
        let x = d1.invert();
        let p1 = ProjectivePoint::mul_by_generator(&*x);
        let proof = SchnorrProof::prove(&x, &p1, &statement.bytes(&nonce, issued_at))?;
        Ok(Self {
            nonce,
            issued_at,
            proof,
        })
    }

    /// Checks the proof against the enrolled `P1`.
    pub fn verify(&self, p1: &ProjectivePoint, statement: &PinStatement<'_>) -> Result<()> {
        self.proof
            .verify(p1, &statement.bytes(&self.nonce, self.issued_at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::two_party::points::random_scalar;

    fn statement(point: &ProjectivePoint) -> PinStatement<'_> {
        PinStatement {
            key_id: "k1",
            operation: "sign",
            context: "session:s1",
            point,
        }
    }

    #[test]
    fn the_right_pin_unmasks_d1_and_its_proof_verifies() {
        let d1 = random_scalar().unwrap();
        let p1 = ProjectivePoint::mul_by_generator(&*d1.invert());
        let stored = MaskedShare::mask(&d1, "123456", 1000).unwrap();
        let unmasked = stored.unmask("123456").unwrap();
        assert_eq!(unmasked, d1);
        let q1 = ProjectivePoint::mul_by_generator(&*random_scalar().unwrap());
        let proof = PinProof::prove(&unmasked, &statement(&q1), 1_700_000_000).unwrap();
        assert_eq!(proof.verify(&p1, &statement(&q1)), Ok(()));
    }

    #[test]
    fn a_wrong_pin_unmasks_to_something_else_whose_proof_fails() {
        let d1 = random_scalar().unwrap();
        let p1 = ProjectivePoint::mul_by_generator(&*d1.invert());
        let stored = MaskedShare::mask(&d1, "123456", 1000).unwrap();
        let wrong = stored.unmask("654321").unwrap();
        assert_ne!(wrong, d1);
        let q1 = ProjectivePoint::mul_by_generator(&*random_scalar().unwrap());
        let proof = PinProof::prove(&wrong, &statement(&q1), 1_700_000_000).unwrap();
        assert_eq!(proof.verify(&p1, &statement(&q1)), Err(Error::BadProof));
    }

    #[test]
    fn a_proof_is_bound_to_its_operation_point_and_time() {
        let d1 = random_scalar().unwrap();
        let p1 = ProjectivePoint::mul_by_generator(&*d1.invert());
        let q1 = ProjectivePoint::mul_by_generator(&*random_scalar().unwrap());
        let other = ProjectivePoint::mul_by_generator(&*random_scalar().unwrap());
        let mut proof = PinProof::prove(&d1, &statement(&q1), 1_700_000_000).unwrap();
        assert_eq!(proof.verify(&p1, &statement(&other)), Err(Error::BadProof));
        let decrypt = PinStatement {
            operation: "decrypt",
            ..statement(&q1)
        };
        assert_eq!(proof.verify(&p1, &decrypt), Err(Error::BadProof));
        let elsewhere = PinStatement {
            context: "session:s2",
            ..statement(&q1)
        };
        assert_eq!(proof.verify(&p1, &elsewhere), Err(Error::BadProof));
        proof.issued_at += 1;
        assert_eq!(proof.verify(&p1, &statement(&q1)), Err(Error::BadProof));
    }
}
