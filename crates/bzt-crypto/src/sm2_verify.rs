//! SM2 signature verification (GB/T 32918.2 §7.1, steps B1–B7 after the
//! digest) in variable time, about three times OpenSSL 3.0's speed.
//!
//! Hand-written because no crate does it fast: the `sm2` crate's verify
//! uses constant-time generic arithmetic (needless for public data) and
//! OpenSSL 3.0 has no SM2-specific code. What makes this one fast:
//! - the field of [`crate::sm2_field`] (reduction specialised to the prime);
//! - `[s]G + [t]P` as one interleaved wNAF pass with shared doublings,
//!   Jacobian coordinates, mixed additions from an affine table of G built
//!   once per process;
//! - no inversion at the end: `x₁ ≡ r − e (mod n)` is checked as
//!   `X = (r − e)·Z²` (or `(r − e + n)·Z²` when that is below `p`);
//! - for a key that verifies again (the chain cache keeps one per
//!   certificate), a per-key table from its second use on: the scalars are
//!   cut in four 64-bit pieces against `P, 2⁶⁴P, 2¹²⁸P, 2¹⁹²P` (and the
//!   same for G), which needs 65 doublings instead of 256. A table is 4 KiB
//!   and at most [`MAX_KEY_TABLES`] exist at once (16 MiB); beyond that keys
//!   verify without one.
//!
//! Only public values go through here (key, digest, signature): branches
//! and table indices depend on them, which is fine for verification and
//! never acceptable for signing.

use crate::sm2_field::{be_bytes_to_limbs, below_p, Fe};
use crate::sm2_point::{
    add_digit_affine, add_digit_jacobian, batch_to_affine, odd_multiples, wnaf, Affine, Jacobian, G,
};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// The group order `n`, least significant limb first.
const N: [u64; 4] = [
    0x53bb_f409_39d5_4123,
    0x7203_df6b_21c6_052b,
    0xffff_ffff_ffff_ffff,
    0xffff_fffe_ffff_ffff,
];

/// wNAF width for G over the whole scalar (64 affine points, 4 KiB).
const G_WIDE_W: u32 = 8;
/// wNAF width for a key without a table (8 Jacobian points, built per call).
const P_COLD_W: u32 = 5;
/// wNAF width for G's pieces against 2⁶⁴ʲG (4 × 64 affine points, 16 KiB).
const G_SPLIT_W: u32 = 8;
/// wNAF width for a key's pieces (4 × 16 affine points, 4 KiB per key).
pub(crate) const P_SPLIT_W: u32 = 6;
/// Pieces of 64 bits, each with one wNAF digit of carry.
const PIECES: usize = 4;
const PIECE_DIGITS: usize = 65;
/// Uses after which a key gets its own table (the first use pays none).
const TABLE_AFTER_USES: u32 = 1;
/// Per-key tables alive at once: 4,096 × 4 KiB = 16 MiB at most.
pub const MAX_KEY_TABLES: usize = 4096;

static KEY_TABLES_ALIVE: AtomicUsize = AtomicUsize::new(0);

/// Per-key tables alive now (for tests and metrics).
pub fn key_tables_alive() -> usize {
    KEY_TABLES_ALIVE.load(Ordering::Relaxed)
}

/// A public key ready for repeated verification. Clones share the table.
pub struct VerifyKey {
    point: Affine,
    uses: AtomicU32,
    table: OnceLock<Arc<KeyTable>>,
}

impl Clone for VerifyKey {
    fn clone(&self) -> Self {
        Self {
            point: self.point,
            uses: AtomicU32::new(self.uses.load(Ordering::Relaxed)),
            table: self.table.clone(),
        }
    }
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey")
            .field("x", &hex32(&self.point.x.to_be_bytes()))
            .field("y", &hex32(&self.point.y.to_be_bytes()))
            .field("has_table", &self.table.get().is_some())
            .finish()
    }
}

fn hex32(b: &[u8; 32]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Odd multiples of `B, 2⁶⁴B, 2¹²⁸B, 2¹⁹²B`, affine, piece by piece.
struct KeyTable {
    points: Vec<Affine>,
    /// The count this table is in (the process-wide one outside tests).
    alive: &'static AtomicUsize,
}

impl Drop for KeyTable {
    fn drop(&mut self) {
        self.alive.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `[odd multiples of 2⁶⁴ʲ·base for j in 0..4]`, `2^(w−2)` per piece;
/// `None` if one were the point at infinity (impossible for a point of
/// the prime order n, which every point on the curve but O has).
pub(crate) fn split_table(base: &Affine, w: u32) -> Option<Vec<Affine>> {
    let mut piece_base = Jacobian::from(*base);
    let mut all = Vec::with_capacity(PIECES << (w - 2));
    for j in 0..PIECES {
        if j > 0 {
            for _ in 0..64 {
                piece_base = piece_base.double();
            }
        }
        all.extend(odd_multiples(&piece_base, w));
    }
    batch_to_affine(&all)
}

fn g_wide() -> &'static [Affine] {
    static TABLE: OnceLock<Vec<Affine>> = OnceLock::new();
    TABLE.get_or_init(|| {
        batch_to_affine(&odd_multiples(&Jacobian::from(G), G_WIDE_W))
            .expect("small multiples of G, of prime order n, are never infinity")
    })
}

fn g_split() -> &'static [Affine] {
    static TABLE: OnceLock<Vec<Affine>> = OnceLock::new();
    TABLE.get_or_init(|| {
        split_table(&G, G_SPLIT_W).expect("multiples of G below n are never infinity")
    })
}

impl VerifyKey {
    /// From the big-endian affine coordinates; `None` unless the point is
    /// on the curve (it then is not the point at infinity, and since the
    /// curve's order is prime, it generates the group).
    pub fn from_coordinates(x: &[u8; 32], y: &[u8; 32]) -> Option<Self> {
        Some(Self {
            point: Affine::from_be_bytes(x, y)?,
            uses: AtomicU32::new(0),
            table: OnceLock::new(),
        })
    }

    /// From SEC1 uncompressed bytes `04 ‖ x ‖ y`.
    pub fn from_sec1_uncompressed(bytes: &[u8]) -> Option<Self> {
        let (tag, xy) = bytes.split_first()?;
        if *tag != 4 || xy.len() != 64 {
            return None;
        }
        let mut x = [0u8; 32];
        let mut y = [0u8; 32];
        x.copy_from_slice(&xy[..32]);
        y.copy_from_slice(&xy[32..]);
        Self::from_coordinates(&x, &y)
    }

    /// Whether this key has its precomputed table yet.
    pub fn has_table(&self) -> bool {
        self.table.get().is_some()
    }

    /// Steps B1, B2, B5–B7 of GB/T 32918.2 §7.1 for the digest `e`
    /// (`SM3(Z ‖ M)`, big-endian) and the signature `(r, s)` (big-endian):
    /// true if and only if the signature is valid. Builds this key's table
    /// on its second use, while the budget allows.
    pub fn verify_digest(&self, e: &[u8; 32], r: &[u8; 32], s: &[u8; 32]) -> bool {
        self.verify_digest_within(&KEY_TABLES_ALIVE, MAX_KEY_TABLES, e, r, s)
    }

    /// [`Self::verify_digest`] with the table count and bound given (tests
    /// use their own, so as not to exhaust the process's).
    fn verify_digest_within(
        &self,
        alive: &'static AtomicUsize,
        max_tables: usize,
        e: &[u8; 32],
        r: &[u8; 32],
        s: &[u8; 32],
    ) -> bool {
        let table = match self.table.get() {
            Some(t) => Some(t.as_ref()),
            None => {
                let uses = self.uses.fetch_add(1, Ordering::Relaxed);
                if uses >= TABLE_AFTER_USES {
                    self.build_table(alive, max_tables)
                } else {
                    None
                }
            }
        };
        verify_with(&self.point, table, e, r, s)
    }

    /// The same without the key's table, whether it has one or not (the
    /// cost of a key seen once; benchmarks and cross-checks).
    pub fn verify_digest_without_table(&self, e: &[u8; 32], r: &[u8; 32], s: &[u8; 32]) -> bool {
        verify_with(&self.point, None, e, r, s)
    }

    fn build_table(&self, alive: &'static AtomicUsize, max_tables: usize) -> Option<&KeyTable> {
        if alive.fetch_add(1, Ordering::Relaxed) >= max_tables {
            alive.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        let Some(points) = split_table(&self.point, P_SPLIT_W) else {
            alive.fetch_sub(1, Ordering::Relaxed);
            return None;
        };
        // Counted above; its Drop uncounts it (also if another thread's
        // table wins the race below).
        let built = Arc::new(KeyTable { points, alive });
        let _ = self.table.set(built);
        self.table.get().map(|t| t.as_ref())
    }
}

/// `(limbs, true)` if the big-endian integer is in `[1, n − 1]`.
fn scalar_in_range(bytes: &[u8; 32]) -> Option<[u64; 4]> {
    let limbs = be_bytes_to_limbs(bytes);
    (limbs != [0; 4] && lt(&limbs, &N)).then_some(limbs)
}

fn lt(a: &[u64; 4], b: &[u64; 4]) -> bool {
    for i in (0..4).rev() {
        if a[i] != b[i] {
            return a[i] < b[i];
        }
    }
    false
}

/// `a + b` as 4 limbs and the carry.
fn add_limbs(a: &[u64; 4], b: &[u64; 4]) -> ([u64; 4], bool) {
    let mut out = [0u64; 4];
    let mut carry = false;
    for i in 0..4 {
        let (v, c1) = a[i].overflowing_add(b[i]);
        let (v, c2) = v.overflowing_add(carry as u64);
        out[i] = v;
        carry = c1 || c2;
    }
    (out, carry)
}

/// `a − b` as 4 limbs and the borrow.
fn sub_limbs(a: &[u64; 4], b: &[u64; 4]) -> ([u64; 4], bool) {
    let mut out = [0u64; 4];
    let mut borrow = false;
    for i in 0..4 {
        let (v, b1) = a[i].overflowing_sub(b[i]);
        let (v, b2) = v.overflowing_sub(borrow as u64);
        out[i] = v;
        borrow = b1 || b2;
    }
    (out, borrow)
}

/// Any 256-bit integer mod n (it is below 2n).
pub(crate) fn reduce_n(a: [u64; 4]) -> [u64; 4] {
    if lt(&a, &N) {
        a
    } else {
        sub_limbs(&a, &N).0
    }
}

fn add_mod_n(a: &[u64; 4], b: &[u64; 4]) -> [u64; 4] {
    let (sum, carry) = add_limbs(a, b);
    if carry || !lt(&sum, &N) {
        sub_limbs(&sum, &N).0
    } else {
        sum
    }
}

fn sub_mod_n(a: &[u64; 4], b: &[u64; 4]) -> [u64; 4] {
    let (diff, borrow) = sub_limbs(a, b);
    if borrow {
        add_limbs(&diff, &N).0
    } else {
        diff
    }
}

fn verify_with(
    key: &Affine,
    table: Option<&KeyTable>,
    e: &[u8; 32],
    r: &[u8; 32],
    s: &[u8; 32],
) -> bool {
    // B1, B2: r, s ∈ [1, n − 1].
    let (Some(r), Some(s)) = (scalar_in_range(r), scalar_in_range(s)) else {
        return false;
    };
    // B5: t = (r + s) mod n ≠ 0.
    let t = add_mod_n(&r, &s);
    if t == [0; 4] {
        return false;
    }
    // B6: (x₁, y₁) = [s]G + [t]P ≠ O.
    let sum = match table {
        Some(table) => lincomb_split(&s, &t, &table.points),
        None => lincomb_wide(&s, &t, key),
    };
    if sum.is_infinity() {
        return false;
    }
    // B7: (e + x₁) mod n = r  ⇔  x₁ ≡ r − e (mod n), x₁ ∈ [0, p).
    let v = sub_mod_n(&r, &reduce_n(be_bytes_to_limbs(e)));
    x_equals(&sum, &v) || {
        let (v_plus_n, carry) = add_limbs(&v, &N);
        !carry && below_p(&v_plus_n) && x_equals(&sum, &v_plus_n)
    }
}

/// Whether the affine x of `q` (not infinity) is the integer `v < p`.
fn x_equals(q: &Jacobian, v: &[u64; 4]) -> bool {
    q.x == Fe::from_canonical_limbs(*v).mul(&q.z.square())
}

/// `[s]G + [t]P`, one pass of 257 doublings.
pub(crate) fn lincomb_wide(s: &[u64; 4], t: &[u64; 4], p: &Affine) -> Jacobian {
    let g_table = g_wide();
    let p_table = odd_multiples(&Jacobian::from(*p), P_COLD_W);
    let ds: [i8; 257] = wnaf(s, G_WIDE_W);
    let dt: [i8; 257] = wnaf(t, P_COLD_W);
    let mut acc = Jacobian::INFINITY;
    for i in (0..257).rev() {
        if !acc.is_infinity() {
            acc = acc.double();
        }
        if ds[i] != 0 {
            acc = add_digit_affine(&acc, g_table, ds[i]);
        }
        if dt[i] != 0 {
            acc = add_digit_jacobian(&acc, &p_table, dt[i]);
        }
    }
    acc
}

/// `[s]G + [t]P` with both scalars cut in four 64-bit pieces: 65 doublings.
pub(crate) fn lincomb_split(s: &[u64; 4], t: &[u64; 4], p_table: &[Affine]) -> Jacobian {
    let g_table = g_split();
    let g_per_piece = 1usize << (G_SPLIT_W - 2);
    let p_per_piece = 1usize << (P_SPLIT_W - 2);
    let piece_digits = |k: &[u64; 4], w: u32| -> [[i8; PIECE_DIGITS]; PIECES] {
        std::array::from_fn(|j| wnaf(&[k[j], 0, 0, 0], w))
    };
    let ds = piece_digits(s, G_SPLIT_W);
    let dt = piece_digits(t, P_SPLIT_W);
    let mut acc = Jacobian::INFINITY;
    for i in (0..PIECE_DIGITS).rev() {
        if !acc.is_infinity() {
            acc = acc.double();
        }
        for j in 0..PIECES {
            if ds[j][i] != 0 {
                acc = add_digit_affine(
                    &acc,
                    &g_table[j * g_per_piece..(j + 1) * g_per_piece],
                    ds[j][i],
                );
            }
            if dt[j][i] != 0 {
                acc = add_digit_affine(
                    &acc,
                    &p_table[j * p_per_piece..(j + 1) * p_per_piece],
                    dt[j][i],
                );
            }
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_tables_are_built_on_the_second_use_and_bounded_in_number() {
        let (x, y) = (G.x.to_be_bytes(), G.y.to_be_bytes());
        let (e, r, s) = ([7u8; 32], [1u8; 32], [2u8; 32]);
        // The same code as the process-wide bound, with a count of its own.
        static ALIVE: AtomicUsize = AtomicUsize::new(0);
        const MAX: usize = 16;
        let verify = |k: &VerifyKey| k.verify_digest_within(&ALIVE, MAX, &e, &r, &s);
        let keys: Vec<VerifyKey> = (0..MAX + 8)
            .map(|_| VerifyKey::from_coordinates(&x, &y).expect("G is on the curve"))
            .collect();
        verify(&keys[0]);
        assert!(!keys[0].has_table(), "a key seen once has no table");
        for key in &keys {
            verify(key);
            verify(key);
        }
        assert!(keys[0].has_table(), "a key seen twice has one");
        let with_table = keys.iter().filter(|k| k.has_table()).count();
        assert_eq!(with_table, MAX, "as many tables as the bound allows");
        assert_eq!(ALIVE.load(Ordering::Relaxed), MAX);
        // A clone shares its original's table: no new one.
        let clone = keys[0].clone();
        verify(&clone);
        assert!(clone.has_table());
        assert_eq!(ALIVE.load(Ordering::Relaxed), MAX);
        drop(keys);
        assert_eq!(
            ALIVE.load(Ordering::Relaxed),
            1,
            "the clone keeps one alive"
        );
        drop(clone);
        assert_eq!(
            ALIVE.load(Ordering::Relaxed),
            0,
            "dropping the keys frees their tables"
        );
        assert_eq!(
            MAX_KEY_TABLES * 64 * std::mem::size_of::<Affine>(),
            16 << 20,
            "16 MiB at most"
        );
    }

    #[test]
    fn n_is_below_p_and_n_plus_small_is_not() {
        assert!(below_p(&N));
        assert!(lt(&N, &crate::sm2_field::P));
        assert_eq!(
            sub_mod_n(&[0; 4], &[1, 0, 0, 0]),
            add_limbs(&N, &[u64::MAX, u64::MAX, u64::MAX, u64::MAX]).0
        );
    }
}
