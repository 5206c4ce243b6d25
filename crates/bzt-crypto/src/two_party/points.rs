//! Wire forms of points and scalars, and the checks every received value
//! passes before it takes part in arithmetic.

use getrandom::SysRng;
use sm2::elliptic_curve::ops::Reduce;
use sm2::elliptic_curve::sec1::ToSec1Point;
use sm2::elliptic_curve::{Generate, PrimeField};
use sm2::{FieldBytes, NonZeroScalar, ProjectivePoint, PublicKey, Scalar};
use sm3::{Digest, Sm3};

use super::{Error, Result};

/// Length of an uncompressed SEC1 point `04 ‖ X ‖ Y`.
pub const POINT_LEN: usize = 65;

/// Parses `04 ‖ X ‖ Y`, refusing compressed forms, points off the curve and
/// the identity: the service answers `d2⁻¹·X` for points it is sent, so an
/// unchecked point would make it an oracle on `d2`.
pub fn decode_point(bytes: &[u8]) -> Result<ProjectivePoint> {
    if bytes.len() != POINT_LEN || bytes[0] != 0x04 {
        return Err(Error::InvalidPoint);
    }
    // `PublicKey` checks the curve equation and refuses the identity.
    let key = PublicKey::from_sec1_bytes(bytes).map_err(|_| Error::InvalidPoint)?;
    Ok(key.to_projective())
}

/// `04 ‖ X ‖ Y`. Only called on points known not to be the identity (the
/// identity has no uncompressed form and would encode as one zero byte).
pub fn encode_point(point: &ProjectivePoint) -> Vec<u8> {
    point.to_affine().to_sec1_point(false).as_bytes().to_vec()
}

/// Lower-case hex of [`encode_point`], the form points take in JSON.
pub fn point_to_hex(point: &ProjectivePoint) -> String {
    hex::encode(encode_point(point))
}

/// [`decode_point`] of hex text (either case).
pub fn point_from_hex(text: &str) -> Result<ProjectivePoint> {
    let bytes = hex::decode(text).map_err(|_| Error::InvalidPoint)?;
    decode_point(&bytes)
}

/// A 32-byte big-endian scalar in `[1, n-1]`.
pub fn decode_scalar(bytes: &[u8]) -> Result<NonZeroScalar> {
    let repr: [u8; 32] = bytes.try_into().map_err(|_| Error::InvalidScalar)?;
    Option::from(NonZeroScalar::from_repr(FieldBytes::from(repr))).ok_or(Error::InvalidScalar)
}

/// 32-byte big-endian form of a scalar.
pub fn encode_scalar(scalar: &Scalar) -> [u8; 32] {
    scalar.to_repr().into()
}

/// A uniformly random scalar in `[1, n-1]` from the operating system.
pub(crate) fn random_scalar() -> Result<NonZeroScalar> {
    NonZeroScalar::try_generate_from_rng(&mut SysRng).map_err(|_| Error::Random)
}

/// Random bytes from the operating system.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    use getrandom::rand_core::TryRng;
    let mut out = [0u8; N];
    SysRng.try_fill_bytes(&mut out).map_err(|_| Error::Random)?;
    Ok(out)
}

/// SM3 of length-prefixed parts, reduced mod n: the Fiat-Shamir challenge.
/// Each part carries its length so no two different part lists hash alike.
pub(crate) fn hash_to_scalar(parts: &[&[u8]]) -> Scalar {
    let mut h = Sm3::new();
    for part in parts {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    let digest: [u8; 32] = h.finalize().into();
    <Scalar as Reduce<FieldBytes>>::reduce(&FieldBytes::from(digest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sm2::elliptic_curve::Group;

    #[test]
    fn a_point_survives_its_wire_form() {
        let p = ProjectivePoint::generator() * *random_scalar().unwrap();
        assert_eq!(point_from_hex(&point_to_hex(&p)).unwrap(), p);
    }

    #[test]
    fn points_off_the_curve_compressed_or_identity_are_refused() {
        let g = encode_point(&ProjectivePoint::generator());
        let mut off = g.clone();
        off[64] ^= 1;
        assert_eq!(decode_point(&off), Err(Error::InvalidPoint));
        let mut compressed = vec![0x02 | (g[64] & 1)];
        compressed.extend_from_slice(&g[1..33]);
        assert_eq!(decode_point(&compressed), Err(Error::InvalidPoint));
        assert_eq!(decode_point(&[0u8]), Err(Error::InvalidPoint));
        assert_eq!(decode_point(&[0u8; 65]), Err(Error::InvalidPoint));
        assert_eq!(encode_point(&ProjectivePoint::identity()), vec![0u8]);
    }

    #[test]
    fn zero_and_out_of_range_scalars_are_refused() {
        assert_eq!(decode_scalar(&[0u8; 32]), Err(Error::InvalidScalar));
        assert_eq!(decode_scalar(&[0xffu8; 32]), Err(Error::InvalidScalar));
        assert_eq!(decode_scalar(&[1u8; 31]), Err(Error::InvalidScalar));
        let k = random_scalar().unwrap();
        assert_eq!(decode_scalar(&encode_scalar(&k)).unwrap(), k);
    }
}
