//! Property tests of the hand-written SM2 verify against the `sm2` crate, an
//! independent implementation (fiat-crypto field, complete formulas): the
//! same points for `[s]G + [t]P` on thousands of random and edge-case
//! inputs, and the same verdict on valid, altered and out-of-range
//! signatures, including keys with small or large coordinates. OpenSSL-made
//! signatures are checked in tests/api/interop.rs and
//! crates/bzt-crypto/tests/sm2_openssl.rs.

use crate::sm2_point::Affine;
use crate::sm2_verify::{lincomb_split, lincomb_wide, split_table, VerifyKey, P_SPLIT_W};
use rand::{Rng, RngCore, SeedableRng};
use sm2::dsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use sm2::dsa::{Signature, SigningKey, VerifyingKey};
use sm2::elliptic_curve::ops::Reduce;
use sm2::elliptic_curve::point::{AffineCoordinates, DecompressPoint};
use sm2::elliptic_curve::subtle::Choice;
use sm2::{AffinePoint, FieldBytes, ProjectivePoint, Scalar};

const N_BE: [u8; 32] = [
    0xff, 0xff, 0xff, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0x72, 0x03, 0xdf, 0x6b, 0x21, 0xc6, 0x05, 0x2b, 0x53, 0xbb, 0xf4, 0x09, 0x39, 0xd5, 0x41, 0x23,
];
const P_BE: [u8; 32] = [
    0xff, 0xff, 0xff, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff,
];
const DIST_ID: &str = "1234567812345678";

fn rng() -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(0x5302_c0de)
}

/// A uniformly random non-zero scalar (the workspace's rand; the crate's own
/// `Field::random` wants a newer rand_core).
fn rand_scalar(rng: &mut impl RngCore) -> Scalar {
    loop {
        let mut b = [0u8; 32];
        rng.fill_bytes(&mut b);
        let s = scalar(&b);
        if !bool::from(s.is_zero()) {
            return s;
        }
    }
}

fn scalar(bytes: &[u8; 32]) -> Scalar {
    <Scalar as Reduce<FieldBytes>>::reduce(&FieldBytes::from(*bytes))
}

fn bytes(s: &Scalar) -> [u8; 32] {
    s.to_bytes().into()
}

fn small(v: u64) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[24..].copy_from_slice(&v.to_be_bytes());
    b
}

/// `n − k` as bytes, k small.
fn n_minus(k: u64) -> [u8; 32] {
    bytes(&(-scalar(&small(k))))
}

/// Scalars that stress the recoding and the pieces: 0, 1, 2, n − 1, n − 2,
/// (n − 1)/2, powers of two at piece borders, all-ones pieces, and n itself
/// (≡ 0) and 2²⁵⁶ − 1 (both reduced mod n first).
fn edge_scalars() -> Vec<[u8; 32]> {
    let mut v = vec![
        [0u8; 32],
        small(1),
        small(2),
        small(3),
        n_minus(1),
        n_minus(2),
        bytes(&(-scalar(&small(1))).shr_vartime_half()),
        N_BE,
        [0xff; 32],
    ];
    for bit in [63usize, 64, 127, 128, 191, 192, 255] {
        let mut b = [0u8; 32];
        b[31 - bit / 8] = 1 << (bit % 8);
        v.push(b);
    }
    let mut ones = [0u8; 32];
    ones[8..16].fill(0xff);
    v.push(ones);
    v
}

trait Half {
    fn shr_vartime_half(&self) -> Scalar;
}
impl Half for Scalar {
    /// `self / 2` for even `self` (here n − 1).
    fn shr_vartime_half(&self) -> Scalar {
        let two_inv = scalar(&small(2)).invert().unwrap_or(Scalar::ONE);
        *self * two_inv
    }
}

fn affine_xy(p: &AffinePoint) -> ([u8; 32], [u8; 32]) {
    (p.x().into(), p.y().into())
}

fn crate_lincomb(s: &Scalar, t: &Scalar, p: &AffinePoint) -> Option<[[u8; 32]; 2]> {
    let sum = ProjectivePoint::GENERATOR * s + ProjectivePoint::from(*p) * t;
    let a = sum.to_affine();
    if bool::from(a.is_identity()) {
        None
    } else {
        let (x, y) = affine_xy(&a);
        Some([x, y])
    }
}

fn ours(
    s: &[u8; 32],
    t: &[u8; 32],
    point: &Affine,
    table: &[Affine],
) -> [Option<[[u8; 32]; 2]>; 2] {
    let s = crate::sm2_verify::reduce_n(crate::sm2_field::be_bytes_to_limbs(s));
    let t = crate::sm2_verify::reduce_n(crate::sm2_field::be_bytes_to_limbs(t));
    let affine = |j: crate::sm2_point::Jacobian| {
        j.to_affine()
            .map(|a| [a.x.to_be_bytes(), a.y.to_be_bytes()])
    };
    [
        affine(lincomb_wide(&s, &t, point)),
        affine(lincomb_split(&s, &t, table)),
    ]
}

/// Points with x = 0, 1, 2, … and x near p (both y), found with the crate.
fn extreme_points() -> Vec<AffinePoint> {
    let mut out = Vec::new();
    let mut candidates: Vec<[u8; 32]> = (0..40).map(small).collect();
    for k in 1..40u8 {
        let mut x = P_BE;
        x[31] = x[31].wrapping_sub(k);
        candidates.push(x);
    }
    for x in candidates {
        for odd in [0u8, 1] {
            let p = AffinePoint::decompress(&FieldBytes::from(x), Choice::from(odd));
            if let Some(p) = Option::<AffinePoint>::from(p) {
                out.push(p);
            }
        }
    }
    assert!(out.len() >= 20, "found {} extreme points", out.len());
    out
}

#[test]
fn lincomb_agrees_with_the_sm2_crate_on_random_and_edge_inputs() {
    let mut rng = rng();
    let mut points: Vec<AffinePoint> = vec![
        AffinePoint::GENERATOR,
        (-ProjectivePoint::GENERATOR).to_affine(),
    ];
    points.push((ProjectivePoint::GENERATOR + ProjectivePoint::GENERATOR).to_affine());
    points.extend(extreme_points());
    for _ in 0..16 {
        points.push((ProjectivePoint::GENERATOR * rand_scalar(&mut rng)).to_affine());
    }
    let edges = edge_scalars();
    let mut cases = 0;
    for (i, p) in points.iter().enumerate() {
        // Edge × edge for a few points, random pairs for all.
        let mut pairs: Vec<([u8; 32], [u8; 32])> = Vec::new();
        if i < 4 || i % 7 == 0 {
            for s in &edges {
                for t in &edges {
                    pairs.push((*s, *t));
                }
            }
        }
        for _ in 0..40 {
            let mut s = [0u8; 32];
            let mut t = [0u8; 32];
            rng.fill_bytes(&mut s);
            rng.fill_bytes(&mut t);
            pairs.push((s, t));
            // s = t and s = −t make the two halves collide or cancel when P = ±G.
            pairs.push((s, s));
            pairs.push((s, bytes(&(-scalar(&s)))));
        }
        let (x, y) = affine_xy(p);
        let point = Affine::from_be_bytes(&x, &y).expect("the crate's point is on the curve");
        let table = split_table(&point, P_SPLIT_W).expect("a curve point's table");
        for (s, t) in pairs {
            let expected = crate_lincomb(&scalar(&s), &scalar(&t), p);
            let [wide, split] = ours(&s, &t, &point, &table);
            assert_eq!(wide, expected, "wide: s={s:02x?} t={t:02x?} point {i}");
            assert_eq!(split, expected, "split: s={s:02x?} t={t:02x?} point {i}");
            cases += 1;
        }
    }
    assert!(cases > 5_000, "{cases} cases");
}

/// A valid `(e, r, s)` for any key, made with the crate's arithmetic: pick
/// s and t, then r = t − s and e = r − x₁ (no private key needed, since e
/// is free here).
fn forged_valid(p: &AffinePoint, rng: &mut impl RngCore) -> ([u8; 32], [u8; 32], [u8; 32]) {
    loop {
        let s = rand_scalar(&mut *rng);
        let t = rand_scalar(&mut *rng);
        let r = t - s;
        if bool::from(s.is_zero() | r.is_zero()) {
            continue;
        }
        let Some([x1, _]) = crate_lincomb(&s, &t, p) else {
            continue;
        };
        let e = r - scalar(&x1);
        return (bytes(&e), bytes(&r), bytes(&s));
    }
}

fn crate_verdict(vk: &VerifyingKey, e: &[u8; 32], r: &[u8; 32], s: &[u8; 32]) -> bool {
    match Signature::from_scalars(*r, *s) {
        Ok(sig) => vk.verify_prehash(e, &sig).is_ok(),
        // r or s outside [1, n − 1]: no valid signature has it.
        Err(_) => false,
    }
}

/// Verdicts compared per `check_all_paths`: cold, first use, second use
/// (builds the table), with the table.
const PATHS: usize = 4;

fn check_all_paths(
    vk: &VerifyingKey,
    e: &[u8; 32],
    r: &[u8; 32],
    s: &[u8; 32],
    what: &str,
) -> bool {
    let expected = crate_verdict(vk, e, r, s);
    let key = VerifyKey::from_sec1_uncompressed(&vk.to_sec1_bytes()).expect("crate key");
    assert_eq!(
        key.verify_digest_without_table(e, r, s),
        expected,
        "cold: {what}"
    );
    assert_eq!(key.verify_digest(e, r, s), expected, "first use: {what}");
    assert_eq!(key.verify_digest(e, r, s), expected, "second use: {what}");
    assert!(key.has_table(), "a key used twice gets its table");
    assert_eq!(key.verify_digest(e, r, s), expected, "with table: {what}");
    expected
}

#[test]
fn verify_agrees_with_the_sm2_crate_on_valid_altered_and_edge_signatures() {
    let mut rng = rng();
    let mut valid = 0;
    let mut cases = 0;
    for round in 0..120 {
        let sk = SigningKey::from_slice(DIST_ID, &bytes(&rand_scalar(&mut rng))).expect("key");
        let vk = sk.verifying_key().clone();
        let mut e = [0u8; 32];
        rng.fill_bytes(&mut e);
        if round % 10 == 0 {
            // Digests at or above n are reduced first.
            e = if round % 20 == 0 { N_BE } else { [0xff; 32] };
        }
        let sig: Signature = sk.sign_prehash(&e).expect("sign");
        let (r, s): ([u8; 32], [u8; 32]) = (sig.r().to_bytes().into(), sig.s().to_bytes().into());
        assert!(check_all_paths(&vk, &e, &r, &s, "valid"));
        valid += 1;
        let mut flip = |mut b: [u8; 32]| {
            let i = rng.random_range(0..32);
            b[i] ^= 1 << rng.random_range(0..8);
            b
        };
        let altered = [(flip(e), r, s), (e, flip(r), s), (e, r, flip(s)), (e, s, r)];
        for (e2, r2, s2) in altered {
            assert!(!check_all_paths(&vk, &e2, &r2, &s2, "altered"));
        }
        for edge in [[0u8; 32], small(1), n_minus(1), N_BE, [0xff; 32]] {
            check_all_paths(&vk, &e, &edge, &s, "edge r");
            check_all_paths(&vk, &e, &r, &edge, "edge s");
        }
        // r + s = n: t = 0 must be refused.
        assert!(!check_all_paths(
            &vk,
            &e,
            &r,
            &bytes(&(-scalar(&r))),
            "t = 0"
        ));
        cases += 16 * PATHS;
    }
    // Keys with small and large coordinates, and G itself, with valid
    // signatures forged through the free digest.
    let mut keys = extreme_points();
    keys.push(AffinePoint::GENERATOR);
    for p in keys {
        let vk = VerifyingKey::from_affine(DIST_ID, p).expect("not infinity");
        for _ in 0..10 {
            let (e, r, s) = forged_valid(&p, &mut rng);
            assert!(check_all_paths(&vk, &e, &r, &s, "forged valid"));
            let mut e2 = e;
            e2[31] ^= 1;
            assert!(!check_all_paths(&vk, &e2, &r, &s, "forged altered"));
            valid += 1;
            cases += 2 * PATHS;
        }
    }
    assert!(valid > 500 && cases > 5_000, "{valid} valid of {cases}");
}

#[test]
fn a_point_off_the_curve_or_out_of_range_is_not_a_key() {
    let (x, y) = affine_xy(&AffinePoint::GENERATOR);
    let mut bad_y = y;
    bad_y[31] ^= 1;
    assert!(VerifyKey::from_coordinates(&x, &bad_y).is_none());
    assert!(VerifyKey::from_coordinates(&P_BE, &y).is_none());
    assert!(VerifyKey::from_coordinates(&x, &y).is_some());
    let mut sec1 = vec![4u8];
    sec1.extend_from_slice(&x);
    sec1.extend_from_slice(&y);
    assert!(VerifyKey::from_sec1_uncompressed(&sec1).is_some());
    sec1[0] = 2;
    assert!(VerifyKey::from_sec1_uncompressed(&sec1).is_none());
}
