//! Arithmetic modulo the SM2 prime `p = 2²⁵⁶ − 2²²⁴ − 2⁹⁶ + 2⁶⁴ − 1`, for
//! the variable-time verify in [`crate::sm2_verify`].
//!
//! Hand-written because no crate offers it at this speed: the `sm2` crate's
//! field is fiat-crypto's generic word-by-word Montgomery code (half of the
//! crate's verify time, measured with callgrind). Here elements are four
//! 64-bit limbs in Montgomery form (`aR mod p`, `R = 2²⁵⁶`), products use
//! `u128`, and the reduction uses the prime's shape: `p ≡ −1 (mod 2⁶⁴)`, so
//! each Montgomery step's quotient is the low word itself, and `q·p` is a
//! handful of shifts and subtractions instead of four multiplications.
//!
//! **Variable time**: branches depend on the values. Use only on public data
//! (keys, signatures, messages), never on secrets.

/// `p`, least significant limb first.
pub(crate) const P: [u64; 4] = [
    0xffff_ffff_ffff_ffff,
    0xffff_ffff_0000_0000,
    0xffff_ffff_ffff_ffff,
    0xffff_fffe_ffff_ffff,
];
/// `R² mod p`: multiplying by it enters Montgomery form.
const R2: Fe = Fe([
    0x0000_0002_0000_0003,
    0x0000_0002_ffff_ffff,
    0x0000_0001_0000_0001,
    0x0000_0004_0000_0002,
]);

/// An element of GF(p) in Montgomery form, always fully reduced (`< p`), so
/// equality of limbs is equality of elements.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Fe(pub(crate) [u64; 4]);

#[inline(always)]
fn adc(a: u64, b: u64, carry: u64) -> (u64, u64) {
    let s = a as u128 + b as u128 + carry as u128;
    (s as u64, (s >> 64) as u64)
}

/// `a − b − borrow`, borrow in and out as 0 or 1.
#[inline(always)]
fn sbb(a: u64, b: u64, borrow: u64) -> (u64, u64) {
    let d = (a as u128).wrapping_sub(b as u128 + borrow as u128);
    (d as u64, (d >> 127) as u64)
}

/// `acc + a·b + carry`, which always fits in 128 bits.
#[inline(always)]
fn mac(acc: u64, a: u64, b: u64, carry: u64) -> (u64, u64) {
    let s = acc as u128 + (a as u128) * (b as u128) + carry as u128;
    (s as u64, (s >> 64) as u64)
}

/// `a − p`, with the borrow.
#[inline(always)]
fn sub_p(a: [u64; 4]) -> ([u64; 4], u64) {
    let (r0, b) = sbb(a[0], P[0], 0);
    let (r1, b) = sbb(a[1], P[1], b);
    let (r2, b) = sbb(a[2], P[2], b);
    let (r3, b) = sbb(a[3], P[3], b);
    ([r0, r1, r2, r3], b)
}

/// Whether the 4-limb integer `a` is below `p`.
pub(crate) fn below_p(a: &[u64; 4]) -> bool {
    sub_p(*a).1 == 1
}

/// Montgomery reduction of a 512-bit `t < p·2²⁵⁶`: `t·2⁻²⁵⁶ mod p`.
#[inline(always)]
fn reduce(mut t: [u64; 8]) -> Fe {
    // Each round adds q·p with q = t[i] (p ≡ −1 mod 2⁶⁴, so the word
    // becomes 0) and moves up a word. Relative to word i + 1,
    // q·p / 2⁶⁴ + q (the −q cancelled t[i]) is
    // A = q − q·2³² − q·2¹⁶⁰ + q·2¹⁹², non-negative and below 2²⁵⁶.
    // The carry out of word i + 4 is added one round later, at word i + 5.
    let mut deferred = 0u64;
    for i in 0..4 {
        let q = t[i];
        let (lo, hi) = (q << 32, q >> 32);
        let (a0, b) = sbb(q, lo, 0);
        let (a1, b) = sbb(0, hi, b);
        let (a2, b) = sbb(0, lo, b);
        let (a3, _) = sbb(q, hi, b);
        let (x, c) = adc(t[i + 1], a0, 0);
        t[i + 1] = x;
        let (x, c) = adc(t[i + 2], a1, c);
        t[i + 2] = x;
        let (x, c) = adc(t[i + 3], a2, c);
        t[i + 3] = x;
        let s = t[i + 4] as u128 + a3 as u128 + c as u128 + deferred as u128;
        t[i + 4] = s as u64;
        deferred = (s >> 64) as u64;
    }
    // Result t[4..8] + deferred·2²⁵⁶ < 2p: one conditional subtraction.
    let r = [t[4], t[5], t[6], t[7]];
    let (s, borrow) = sub_p(r);
    if deferred != 0 || borrow == 0 {
        Fe(s)
    } else {
        Fe(r)
    }
}

impl Fe {
    pub const ZERO: Fe = Fe([0; 4]);
    /// `R mod p`, the Montgomery form of 1.
    pub const ONE: Fe = Fe([
        0x0000_0000_0000_0001,
        0x0000_0000_ffff_ffff,
        0x0000_0000_0000_0000,
        0x0000_0001_0000_0000,
    ]);

    /// From a big-endian integer; `None` unless it is below `p`.
    pub fn from_be_bytes(bytes: &[u8; 32]) -> Option<Fe> {
        let limbs = be_bytes_to_limbs(bytes);
        below_p(&limbs).then(|| Fe(limbs).mul(&R2))
    }

    /// From limbs already known to be below `p` (e.g. a scalar below `n`).
    pub(crate) fn from_canonical_limbs(limbs: [u64; 4]) -> Fe {
        debug_assert!(below_p(&limbs));
        Fe(limbs).mul(&R2)
    }

    /// The canonical integer, big-endian.
    pub fn to_be_bytes(&self) -> [u8; 32] {
        let a = self.0;
        let plain = reduce([a[0], a[1], a[2], a[3], 0, 0, 0, 0]).0;
        let mut out = [0u8; 32];
        for (i, limb) in plain.iter().enumerate() {
            out[24 - 8 * i..32 - 8 * i].copy_from_slice(&limb.to_be_bytes());
        }
        out
    }

    pub fn is_zero(&self) -> bool {
        self.0 == [0; 4]
    }

    #[inline]
    pub fn add(&self, rhs: &Fe) -> Fe {
        let (a, b) = (self.0, rhs.0);
        let (r0, c) = adc(a[0], b[0], 0);
        let (r1, c) = adc(a[1], b[1], c);
        let (r2, c) = adc(a[2], b[2], c);
        let (r3, c) = adc(a[3], b[3], c);
        let r = [r0, r1, r2, r3];
        let (s, borrow) = sub_p(r);
        if c != 0 || borrow == 0 {
            Fe(s)
        } else {
            Fe(r)
        }
    }

    #[inline]
    pub fn sub(&self, rhs: &Fe) -> Fe {
        let (a, b) = (self.0, rhs.0);
        let (r0, bw) = sbb(a[0], b[0], 0);
        let (r1, bw) = sbb(a[1], b[1], bw);
        let (r2, bw) = sbb(a[2], b[2], bw);
        let (r3, bw) = sbb(a[3], b[3], bw);
        if bw == 0 {
            return Fe([r0, r1, r2, r3]);
        }
        let (r0, c) = adc(r0, P[0], 0);
        let (r1, c) = adc(r1, P[1], c);
        let (r2, c) = adc(r2, P[2], c);
        let (r3, _) = adc(r3, P[3], c);
        Fe([r0, r1, r2, r3])
    }

    #[inline]
    pub fn double(&self) -> Fe {
        self.add(self)
    }

    pub fn neg(&self) -> Fe {
        Fe::ZERO.sub(self)
    }

    #[inline]
    pub fn mul(&self, rhs: &Fe) -> Fe {
        let (a, b) = (self.0, rhs.0);
        let mut t = [0u64; 8];
        for i in 0..4 {
            let mut c = 0;
            for j in 0..4 {
                (t[i + j], c) = mac(t[i + j], a[i], b[j], c);
            }
            t[i + 4] = c;
        }
        reduce(t)
    }

    /// `self²`: the six cross products once, doubled, plus the diagonal.
    #[inline]
    pub fn square(&self) -> Fe {
        let a = self.0;
        let (t1, c) = mac(0, a[0], a[1], 0);
        let (t2, c) = mac(0, a[0], a[2], c);
        let (t3, t4) = mac(0, a[0], a[3], c);
        let (t3, c) = mac(t3, a[1], a[2], 0);
        let (t4, t5) = mac(t4, a[1], a[3], c);
        let (t5, t6) = mac(t5, a[2], a[3], 0);
        let t7 = t6 >> 63;
        let t6 = (t6 << 1) | (t5 >> 63);
        let t5 = (t5 << 1) | (t4 >> 63);
        let t4 = (t4 << 1) | (t3 >> 63);
        let t3 = (t3 << 1) | (t2 >> 63);
        let t2 = (t2 << 1) | (t1 >> 63);
        let t1 = t1 << 1;
        let d = a[0] as u128 * a[0] as u128;
        let t0 = d as u64;
        let (t1, c) = adc(t1, (d >> 64) as u64, 0);
        let d = a[1] as u128 * a[1] as u128;
        let (t2, c) = adc(t2, d as u64, c);
        let (t3, c) = adc(t3, (d >> 64) as u64, c);
        let d = a[2] as u128 * a[2] as u128;
        let (t4, c) = adc(t4, d as u64, c);
        let (t5, c) = adc(t5, (d >> 64) as u64, c);
        let d = a[3] as u128 * a[3] as u128;
        let (t6, c) = adc(t6, d as u64, c);
        let (t7, _) = adc(t7, (d >> 64) as u64, c);
        reduce([t0, t1, t2, t3, t4, t5, t6, t7])
    }

    /// `self⁻¹` by Fermat (`self^(p−2)`), 0 for 0. Used only to normalise
    /// precomputed tables, so a plain 4-bit window is enough.
    pub fn invert(&self) -> Fe {
        let mut powers = [Fe::ONE; 16];
        for i in 1..16 {
            powers[i] = powers[i - 1].mul(self);
        }
        // p − 2, most significant limb first.
        let exponent = [P[3], P[2], P[1], P[0] - 2];
        let mut acc = Fe::ONE;
        for limb in exponent {
            for nibble in (0..16).rev() {
                for _ in 0..4 {
                    acc = acc.square();
                }
                acc = acc.mul(&powers[((limb >> (4 * nibble)) & 0xf) as usize]);
            }
        }
        acc
    }
}

/// Big-endian bytes to limbs, least significant first.
pub(crate) fn be_bytes_to_limbs(bytes: &[u8; 32]) -> [u64; 4] {
    let mut limbs = [0u64; 4];
    for (i, limb) in limbs.iter_mut().enumerate() {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[24 - 8 * i..32 - 8 * i]);
        *limb = u64::from_be_bytes(word);
    }
    limbs
}

#[cfg(test)]
mod tests {
    use super::*;
    use num_bigint::BigUint;
    use rand::{Rng, SeedableRng};

    fn p() -> BigUint {
        BigUint::from_bytes_be(&hex::decode_p())
    }

    mod hex {
        pub fn decode_p() -> Vec<u8> {
            let s = "FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF";
            (0..32)
                .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
                .collect()
        }
    }

    fn to_bytes(x: &BigUint) -> [u8; 32] {
        let v = x.to_bytes_be();
        let mut out = [0u8; 32];
        out[32 - v.len()..].copy_from_slice(&v);
        out
    }

    /// Random values plus the edges: 0, 1, 2, p − 1, p − 2, 2²⁵⁵, limbs of
    /// all ones, and values just below p's irregular words.
    fn samples() -> Vec<BigUint> {
        let p = p();
        let one = BigUint::from(1u8);
        let mut v = vec![
            BigUint::from(0u8),
            one.clone(),
            BigUint::from(2u8),
            &p - 1u8,
            &p - 2u8,
            one.clone() << 255,
            (one.clone() << 224) - 1u8,
            (one.clone() << 192) - 1u8,
            (one.clone() << 96) + 1u8,
            (one.clone() << 64) - 1u8,
            &p - (one.clone() << 64),
            &p - (one.clone() << 200),
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5e2_f1e1d);
        for _ in 0..3000 {
            let mut bytes = [0u8; 32];
            rng.fill(&mut bytes);
            // Sparse values (few bits set) stress the carry chains.
            if rng.random_bool(0.2) {
                for b in bytes.iter_mut() {
                    *b &= if rng.random_bool(0.5) { 0 } else { 0xff };
                }
            }
            v.push(BigUint::from_bytes_be(&bytes) % &p);
        }
        v
    }

    #[test]
    fn field_operations_agree_with_big_integers() {
        let p = p();
        let xs = samples();
        let fe = |x: &BigUint| Fe::from_be_bytes(&to_bytes(x)).expect("below p");
        for (i, a) in xs.iter().enumerate() {
            let b = &xs[(i * 7 + 3) % xs.len()];
            let (fa, fb) = (fe(a), fe(b));
            assert_eq!(fa.to_be_bytes(), to_bytes(a), "round trip {a}");
            assert_eq!(
                fa.mul(&fb).to_be_bytes(),
                to_bytes(&(a * b % &p)),
                "{a}·{b}"
            );
            assert_eq!(fa.square().to_be_bytes(), to_bytes(&(a * a % &p)), "{a}²");
            assert_eq!(
                fa.add(&fb).to_be_bytes(),
                to_bytes(&((a + b) % &p)),
                "{a}+{b}"
            );
            assert_eq!(
                fa.sub(&fb).to_be_bytes(),
                to_bytes(&((a + &p - b) % &p)),
                "{a}−{b}"
            );
            if i % 50 == 0 {
                let inv = fa.invert();
                if a == &BigUint::from(0u8) {
                    assert!(inv.is_zero());
                } else {
                    assert_eq!(inv.mul(&fa), Fe::ONE, "{a}⁻¹");
                }
            }
        }
    }

    #[test]
    fn values_at_or_above_p_are_refused() {
        let p = p();
        assert!(Fe::from_be_bytes(&to_bytes(&p)).is_none());
        assert!(Fe::from_be_bytes(&[0xff; 32]).is_none());
        assert!(Fe::from_be_bytes(&to_bytes(&(&p - 1u8))).is_some());
    }
}
