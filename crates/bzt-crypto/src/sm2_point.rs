//! Points of the SM2 curve `y² = x³ − 3x + b` for the variable-time verify:
//! Jacobian coordinates (`x = X/Z²`, `y = Y/Z³`), the `a = −3` doubling,
//! mixed addition with affine table entries, wNAF recoding, and tables of
//! odd multiples normalised to affine with one inversion (Montgomery's
//! trick). Hand-written for the reasons in [`crate::sm2_field`]; the `sm2`
//! crate's complete projective formulas cost about twice as many field
//! multiplications per step. **Variable time**: public data only.

use crate::sm2_field::Fe;

/// `b` of the SM2 curve, Montgomery form.
const B: Fe = Fe([
    0x90d2_3063_2bc0_dd42,
    0x71cf_379a_e9b5_37ab,
    0x5279_8150_5ea5_1c3c,
    0x240f_e188_ba20_e2c8,
]);

/// An affine point, never the point at infinity.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Affine {
    pub x: Fe,
    pub y: Fe,
}

/// The base point G (GB/T 32918.5).
pub const G: Affine = Affine {
    x: Fe([
        0x6132_8990_f418_029e,
        0x3e79_81ed_dca6_c050,
        0xd6a1_ed99_ac24_c3c3,
        0x9116_7a5e_e1c1_3b05,
    ]),
    y: Fe([
        0xc135_4e59_3c2d_0ddd,
        0xc1f5_e578_8d32_95fa,
        0x8d4c_fb06_6e2a_48f8,
        0x63cd_65d4_81d7_35bd,
    ]),
};

impl Affine {
    /// From big-endian coordinates; `None` unless both are below `p` and
    /// the point is on the curve.
    pub fn from_be_bytes(x: &[u8; 32], y: &[u8; 32]) -> Option<Affine> {
        let p = Affine {
            x: Fe::from_be_bytes(x)?,
            y: Fe::from_be_bytes(y)?,
        };
        p.is_on_curve().then_some(p)
    }

    pub fn is_on_curve(&self) -> bool {
        let x3 = self.x.square().mul(&self.x);
        let three_x = self.x.double().add(&self.x);
        self.y.square() == x3.sub(&three_x).add(&B)
    }

    pub fn neg(&self) -> Affine {
        Affine {
            x: self.x,
            y: self.y.neg(),
        }
    }
}

/// A point in Jacobian coordinates; `Z = 0` is the point at infinity.
#[derive(Clone, Copy, Debug)]
pub struct Jacobian {
    pub x: Fe,
    pub y: Fe,
    pub z: Fe,
}

impl From<Affine> for Jacobian {
    fn from(p: Affine) -> Self {
        Jacobian {
            x: p.x,
            y: p.y,
            z: Fe::ONE,
        }
    }
}

impl Jacobian {
    pub const INFINITY: Jacobian = Jacobian {
        x: Fe::ONE,
        y: Fe::ONE,
        z: Fe::ZERO,
    };

    pub fn is_infinity(&self) -> bool {
        self.z.is_zero()
    }

    /// `2·self` ("dbl-2001-b", a = −3): 3M + 5S. Infinity stays infinity
    /// (Z₃ = 2·Y·Z); no point of this prime-order curve has y = 0.
    #[inline]
    pub fn double(&self) -> Jacobian {
        let delta = self.z.square();
        let gamma = self.y.square();
        let beta = self.x.mul(&gamma);
        let t = self.x.sub(&delta).mul(&self.x.add(&delta));
        let alpha = t.double().add(&t);
        let beta4 = beta.double().double();
        let x3 = alpha.square().sub(&beta4.double());
        let z3 = self.y.add(&self.z).square().sub(&gamma).sub(&delta);
        let gamma2_8 = gamma.square().double().double().double();
        let y3 = alpha.mul(&beta4.sub(&x3)).sub(&gamma2_8);
        Jacobian {
            x: x3,
            y: y3,
            z: z3,
        }
    }

    /// `self + q` with `q` affine ("madd-2007-bl"): 7M + 4S, and the
    /// exceptional cases (infinity, equal or opposite points) by branches.
    #[inline]
    pub fn add_affine(&self, q: &Affine) -> Jacobian {
        if self.is_infinity() {
            return Jacobian::from(*q);
        }
        let z1z1 = self.z.square();
        let u2 = q.x.mul(&z1z1);
        let s2 = q.y.mul(&self.z).mul(&z1z1);
        let h = u2.sub(&self.x);
        let r = s2.sub(&self.y).double();
        if h.is_zero() {
            return if r.is_zero() {
                self.double()
            } else {
                Jacobian::INFINITY
            };
        }
        let hh = h.square();
        let i = hh.double().double();
        let j = h.mul(&i);
        let v = self.x.mul(&i);
        let x3 = r.square().sub(&j).sub(&v.double());
        let y3 = r.mul(&v.sub(&x3)).sub(&self.y.mul(&j).double());
        let z3 = self.z.add(&h).square().sub(&z1z1).sub(&hh);
        Jacobian {
            x: x3,
            y: y3,
            z: z3,
        }
    }

    /// `self + q`, both Jacobian ("add-2007-bl"): 11M + 5S, exceptional
    /// cases by branches.
    pub fn add(&self, q: &Jacobian) -> Jacobian {
        if self.is_infinity() {
            return *q;
        }
        if q.is_infinity() {
            return *self;
        }
        let z1z1 = self.z.square();
        let z2z2 = q.z.square();
        let u1 = self.x.mul(&z2z2);
        let u2 = q.x.mul(&z1z1);
        let s1 = self.y.mul(&q.z).mul(&z2z2);
        let s2 = q.y.mul(&self.z).mul(&z1z1);
        let h = u2.sub(&u1);
        let r = s2.sub(&s1).double();
        if h.is_zero() {
            return if r.is_zero() {
                self.double()
            } else {
                Jacobian::INFINITY
            };
        }
        let i = h.double().square();
        let j = h.mul(&i);
        let v = u1.mul(&i);
        let x3 = r.square().sub(&j).sub(&v.double());
        let y3 = r.mul(&v.sub(&x3)).sub(&s1.mul(&j).double());
        let z3 = self.z.add(&q.z).square().sub(&z1z1).sub(&z2z2).mul(&h);
        Jacobian {
            x: x3,
            y: y3,
            z: z3,
        }
    }

    pub fn neg(&self) -> Jacobian {
        Jacobian {
            x: self.x,
            y: self.y.neg(),
            z: self.z,
        }
    }

    /// The affine point, `None` for infinity (one inversion).
    pub fn to_affine(&self) -> Option<Affine> {
        if self.is_infinity() {
            return None;
        }
        let zinv = self.z.invert();
        let zinv2 = zinv.square();
        Some(Affine {
            x: self.x.mul(&zinv2),
            y: self.y.mul(&zinv2).mul(&zinv),
        })
    }
}

/// Normalises points to affine with one inversion (Montgomery's trick).
/// `None` if any is the point at infinity.
pub fn batch_to_affine(points: &[Jacobian]) -> Option<Vec<Affine>> {
    if points.iter().any(Jacobian::is_infinity) {
        return None;
    }
    // prefix[i] = z₀·…·zᵢ
    let mut prefix = Vec::with_capacity(points.len());
    let mut acc = Fe::ONE;
    for p in points {
        acc = acc.mul(&p.z);
        prefix.push(acc);
    }
    let mut inv = acc.invert();
    let mut out = vec![
        Affine {
            x: Fe::ZERO,
            y: Fe::ZERO
        };
        points.len()
    ];
    for i in (0..points.len()).rev() {
        // inv = (z₀·…·zᵢ)⁻¹ here.
        let zinv = if i == 0 { inv } else { inv.mul(&prefix[i - 1]) };
        inv = inv.mul(&points[i].z);
        let zinv2 = zinv.square();
        out[i] = Affine {
            x: points[i].x.mul(&zinv2),
            y: points[i].y.mul(&zinv2).mul(&zinv),
        };
    }
    Some(out)
}

/// The odd multiples `P, 3P, …, (2^(w−1) − 1)P` in Jacobian coordinates,
/// the table a width-`w` wNAF indexes.
pub fn odd_multiples(p: &Jacobian, w: u32) -> Vec<Jacobian> {
    let count = 1usize << (w - 2);
    let mut out = Vec::with_capacity(count);
    out.push(*p);
    let twice = p.double();
    for i in 1..count {
        let next = out[i - 1].add(&twice);
        out.push(next);
    }
    out
}

/// Width-`w` non-adjacent form of a little-endian 4-limb integer: digits
/// least significant first, each 0 or odd in `(−2^(w−1), 2^(w−1))`, at most
/// one non-zero in any `w` consecutive. `LEN` ≥ bit length + 1.
pub fn wnaf<const LEN: usize>(limbs: &[u64; 4], w: u32) -> [i8; LEN] {
    debug_assert!((2..=8).contains(&w));
    let len = LEN;
    let mut k = [limbs[0], limbs[1], limbs[2], limbs[3], 0];
    let mut digits = [0i8; LEN];
    let window = 1i64 << w;
    let mut i = 0;
    // Limb by limb: `k != [0; 5]` compiled to a `memcmp` call per digit,
    // 1.5% of the broker's CPU in the flows profile.
    while k.iter().any(|&limb| limb != 0) {
        if i >= len {
            // The caller's length was too short: a bug, not an input.
            panic!("wNAF needs more than {len} digits");
        }
        if k[0] & 1 == 1 {
            let mut d = (k[0] & (window as u64 - 1)) as i64;
            if d >= window / 2 {
                d -= window;
            }
            digits[i] = d as i8;
            // k −= d
            if d > 0 {
                sub_small(&mut k, d as u64);
            } else {
                add_small(&mut k, (-d) as u64);
            }
        }
        shift_right_1(&mut k);
        i += 1;
    }
    digits
}

fn sub_small(k: &mut [u64; 5], d: u64) {
    let mut borrow = d;
    for limb in k.iter_mut() {
        let (v, b) = limb.overflowing_sub(borrow);
        *limb = v;
        borrow = b as u64;
        if borrow == 0 {
            break;
        }
    }
}

fn add_small(k: &mut [u64; 5], d: u64) {
    let mut carry = d;
    for limb in k.iter_mut() {
        let (v, c) = limb.overflowing_add(carry);
        *limb = v;
        carry = c as u64;
        if carry == 0 {
            break;
        }
    }
}

fn shift_right_1(k: &mut [u64; 5]) {
    for i in 0..5 {
        let high = if i + 1 < 5 { k[i + 1] << 63 } else { 0 };
        k[i] = (k[i] >> 1) | high;
    }
}

/// Adds the table entry for a wNAF digit (odd, non-zero) to `acc`.
#[inline]
pub fn add_digit_affine(acc: &Jacobian, table: &[Affine], digit: i8) -> Jacobian {
    let entry = &table[(digit.unsigned_abs() as usize) >> 1];
    if digit > 0 {
        acc.add_affine(entry)
    } else {
        acc.add_affine(&entry.neg())
    }
}

/// Same with a Jacobian table.
#[inline]
pub fn add_digit_jacobian(acc: &Jacobian, table: &[Jacobian], digit: i8) -> Jacobian {
    let entry = &table[(digit.unsigned_abs() as usize) >> 1];
    if digit > 0 {
        acc.add(entry)
    } else {
        acc.add(&entry.neg())
    }
}
