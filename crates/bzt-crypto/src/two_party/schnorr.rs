//! Schnorr proof of knowledge of a discrete log, made non-interactive with
//! Fiat-Shamir over SM3: for `X = x·G` the prover sends `R = k·G` and
//! `z = k + c·x` with `c = H(domain, context, X, R)`; the verifier checks
//! `z·G = R + c·X`.
//!
//! Used twice: at key generation (each party proves it knows the log of its
//! `P1`/`P2`, so neither can choose its point as a function of the other's)
//! and as the PIN proof (the phone proves knowledge of `d1⁻¹` for `P1`, the
//! challenge binding a fresh nonce and the operation). Note that a transcript
//! `(R, z)` with its context tests any candidate `X` (and without `X` in the
//! hash would even give it away as `c⁻¹·(z·G − R)`); a candidate PIN gives a
//! candidate `X`, so proofs travel only inside the [`super::channel`].

use sm2::elliptic_curve::{Group, PrimeField};
use sm2::{FieldBytes, NonZeroScalar, ProjectivePoint, Scalar};
use subtle::ConstantTimeEq;

use super::points::{
    decode_point, encode_point, encode_scalar, hash_to_scalar, random_scalar, POINT_LEN,
};
use super::{Error, Result};

const DOMAIN: &[u8] = b"BZT-2P-SCHNORR-V1";

/// `R ‖ z`: 65 + 32 bytes on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchnorrProof {
    commitment: ProjectivePoint,
    response: Scalar,
}

impl SchnorrProof {
    /// Wire length in bytes.
    pub const LEN: usize = POINT_LEN + 32;

    /// Proves knowledge of `x` with `public = x·G`, bound to `context`.
    pub fn prove(x: &NonZeroScalar, public: &ProjectivePoint, context: &[u8]) -> Result<Self> {
        let k = random_scalar()?;
        let commitment = ProjectivePoint::mul_by_generator(&*k);
        let c = challenge(context, public, &commitment);
        let response = *k + c * **x;
        Ok(Self {
            commitment,
            response,
        })
    }

    /// Checks the proof for `public` (already validated) and `context`.
    pub fn verify(&self, public: &ProjectivePoint, context: &[u8]) -> Result<()> {
        let c = challenge(context, public, &self.commitment);
        if bool::from(c.is_zero()) {
            return Err(Error::BadProof);
        }
        let lhs = ProjectivePoint::mul_by_generator(&self.response);
        let rhs = self.commitment + *public * c;
        if bool::from(lhs.ct_eq(&rhs)) {
            Ok(())
        } else {
            Err(Error::BadProof)
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = encode_point(&self.commitment);
        out.extend_from_slice(&encode_scalar(&self.response));
        out
    }

    /// Parses `R ‖ z`, validating `R` as any received point.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != Self::LEN {
            return Err(Error::BadProof);
        }
        let commitment = decode_point(&bytes[..POINT_LEN]).map_err(|_| Error::BadProof)?;
        let repr: [u8; 32] = bytes[POINT_LEN..].try_into().map_err(|_| Error::BadProof)?;
        let response =
            Option::from(Scalar::from_repr(FieldBytes::from(repr))).ok_or(Error::BadProof)?;
        Ok(Self {
            commitment,
            response,
        })
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.to_bytes())
    }

    pub fn from_hex(text: &str) -> Result<Self> {
        Self::from_bytes(&hex::decode(text).map_err(|_| Error::BadProof)?)
    }
}

fn challenge(context: &[u8], public: &ProjectivePoint, commitment: &ProjectivePoint) -> Scalar {
    hash_to_scalar(&[
        DOMAIN,
        context,
        &encode_point(public),
        &encode_point(commitment),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_honest_proof_verifies_only_for_its_point_and_context() {
        let x = random_scalar().unwrap();
        let public = ProjectivePoint::mul_by_generator(&*x);
        let proof = SchnorrProof::prove(&x, &public, b"ctx").unwrap();
        assert_eq!(proof.verify(&public, b"ctx"), Ok(()));
        assert_eq!(proof.verify(&public, b"other"), Err(Error::BadProof));
        let other = ProjectivePoint::mul_by_generator(&*random_scalar().unwrap());
        assert_eq!(proof.verify(&other, b"ctx"), Err(Error::BadProof));
        let parsed = SchnorrProof::from_hex(&proof.to_hex()).unwrap();
        assert_eq!(parsed.verify(&public, b"ctx"), Ok(()));
    }

    #[test]
    fn a_proof_with_the_wrong_secret_fails() {
        let x = random_scalar().unwrap();
        let public = ProjectivePoint::mul_by_generator(&*x);
        let wrong = random_scalar().unwrap();
        let proof = SchnorrProof::prove(&wrong, &public, b"ctx").unwrap();
        assert_eq!(proof.verify(&public, b"ctx"), Err(Error::BadProof));
    }

    #[test]
    fn a_tampered_proof_fails_to_parse_or_verify() {
        let x = random_scalar().unwrap();
        let public = ProjectivePoint::mul_by_generator(&*x);
        let mut bytes = SchnorrProof::prove(&x, &public, b"ctx").unwrap().to_bytes();
        bytes[96] ^= 1;
        let proof = SchnorrProof::from_bytes(&bytes).unwrap();
        assert_eq!(proof.verify(&public, b"ctx"), Err(Error::BadProof));
        bytes[10] ^= 1;
        assert!(SchnorrProof::from_bytes(&bytes).is_err());
    }
}
