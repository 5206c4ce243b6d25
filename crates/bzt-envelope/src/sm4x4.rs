//! SM4 block encryption (GB/T 32907), four blocks at a time.
//!
//! The `sm4` crate encrypts one block at a time; each of SM4's 32 rounds depends on the one
//! before, so a single block leaves the CPU waiting on table lookups. Counter mode has
//! independent blocks, and `ctr` (used by `aes-gcm`) hands a cipher several at once when it
//! declares `ParBlocksSize`: this type interleaves four, which measured about 1.8x the `sm4`
//! crate per core. The arithmetic is the standard's, with the same 256-byte S-box lookups as
//! the `sm4` crate (so the same, not constant-time, timing profile); no larger T-tables.
//!
//! Only encryption is implemented: GCM never decrypts blocks. Checked against the standard's
//! test vector, against the `sm4` crate on random keys and blocks, and (through GCM) against
//! RFC 8998 and Python `cryptography`.

use cipher::consts::{U16, U4};
use cipher::{
    Block, BlockCipherEncBackend, BlockCipherEncClosure, BlockCipherEncrypt, BlockSizeUser, InOut,
    Key, KeyInit, KeySizeUser, ParBlocks, ParBlocksSizeUser,
};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// SM4 with round keys expanded; encryption only.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct Sm4x4 {
    /// The 32 round keys.
    rk: [u32; 32],
}

static SBOX: [u8; 256] = [
    0xd6, 0x90, 0xe9, 0xfe, 0xcc, 0xe1, 0x3d, 0xb7, 0x16, 0xb6, 0x14, 0xc2, 0x28, 0xfb, 0x2c, 0x05,
    0x2b, 0x67, 0x9a, 0x76, 0x2a, 0xbe, 0x04, 0xc3, 0xaa, 0x44, 0x13, 0x26, 0x49, 0x86, 0x06, 0x99,
    0x9c, 0x42, 0x50, 0xf4, 0x91, 0xef, 0x98, 0x7a, 0x33, 0x54, 0x0b, 0x43, 0xed, 0xcf, 0xac, 0x62,
    0xe4, 0xb3, 0x1c, 0xa9, 0xc9, 0x08, 0xe8, 0x95, 0x80, 0xdf, 0x94, 0xfa, 0x75, 0x8f, 0x3f, 0xa6,
    0x47, 0x07, 0xa7, 0xfc, 0xf3, 0x73, 0x17, 0xba, 0x83, 0x59, 0x3c, 0x19, 0xe6, 0x85, 0x4f, 0xa8,
    0x68, 0x6b, 0x81, 0xb2, 0x71, 0x64, 0xda, 0x8b, 0xf8, 0xeb, 0x0f, 0x4b, 0x70, 0x56, 0x9d, 0x35,
    0x1e, 0x24, 0x0e, 0x5e, 0x63, 0x58, 0xd1, 0xa2, 0x25, 0x22, 0x7c, 0x3b, 0x01, 0x21, 0x78, 0x87,
    0xd4, 0x00, 0x46, 0x57, 0x9f, 0xd3, 0x27, 0x52, 0x4c, 0x36, 0x02, 0xe7, 0xa0, 0xc4, 0xc8, 0x9e,
    0xea, 0xbf, 0x8a, 0xd2, 0x40, 0xc7, 0x38, 0xb5, 0xa3, 0xf7, 0xf2, 0xce, 0xf9, 0x61, 0x15, 0xa1,
    0xe0, 0xae, 0x5d, 0xa4, 0x9b, 0x34, 0x1a, 0x55, 0xad, 0x93, 0x32, 0x30, 0xf5, 0x8c, 0xb1, 0xe3,
    0x1d, 0xf6, 0xe2, 0x2e, 0x82, 0x66, 0xca, 0x60, 0xc0, 0x29, 0x23, 0xab, 0x0d, 0x53, 0x4e, 0x6f,
    0xd5, 0xdb, 0x37, 0x45, 0xde, 0xfd, 0x8e, 0x2f, 0x03, 0xff, 0x6a, 0x72, 0x6d, 0x6c, 0x5b, 0x51,
    0x8d, 0x1b, 0xaf, 0x92, 0xbb, 0xdd, 0xbc, 0x7f, 0x11, 0xd9, 0x5c, 0x41, 0x1f, 0x10, 0x5a, 0xd8,
    0x0a, 0xc1, 0x31, 0x88, 0xa5, 0xcd, 0x7b, 0xbd, 0x2d, 0x74, 0xd0, 0x12, 0xb8, 0xe5, 0xb4, 0xb0,
    0x89, 0x69, 0x97, 0x4a, 0x0c, 0x96, 0x77, 0x7e, 0x65, 0xb9, 0xf1, 0x09, 0xc5, 0x6e, 0xc6, 0x84,
    0x18, 0xf0, 0x7d, 0xec, 0x3a, 0xdc, 0x4d, 0x20, 0x79, 0xee, 0x5f, 0x3e, 0xd7, 0xcb, 0x39, 0x48,
];

const FK: [u32; 4] = [0xa3b1bac6, 0x56aa3350, 0x677d9197, 0xb27022dc];

/// CK_i: byte j of CK_i is (4i + j) * 7 mod 256.
const CK: [u32; 32] = {
    let mut ck = [0u32; 32];
    let mut i = 0;
    while i < 32 {
        let mut j = 0;
        while j < 4 {
            ck[i] = (ck[i] << 8) | (((4 * i + j) * 7) % 256) as u32;
            j += 1;
        }
        i += 1;
    }
    ck
};

/// The S-box applied to each byte.
#[inline(always)]
fn tau(a: u32) -> u32 {
    let b = a.to_be_bytes();
    u32::from_be_bytes([
        SBOX[b[0] as usize],
        SBOX[b[1] as usize],
        SBOX[b[2] as usize],
        SBOX[b[3] as usize],
    ])
}

/// Round function T = L(tau(.)).
#[inline(always)]
fn t(a: u32) -> u32 {
    let b = tau(a);
    b ^ b.rotate_left(2) ^ b.rotate_left(10) ^ b.rotate_left(18) ^ b.rotate_left(24)
}

/// Key-schedule function T' = L'(tau(.)).
fn t_key(a: u32) -> u32 {
    let b = tau(a);
    b ^ b.rotate_left(13) ^ b.rotate_left(23)
}

impl Sm4x4 {
    /// Encrypts `N` blocks, their rounds interleaved.
    #[inline(always)]
    fn encrypt_lanes<const N: usize>(
        &self,
        input: [&Block<Self>; N],
        output: [&mut Block<Self>; N],
    ) {
        let mut x = [[0u32; 4]; N];
        for (state, block) in x.iter_mut().zip(input) {
            for (word, bytes) in state.iter_mut().zip(block.chunks_exact(4)) {
                *word = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
            }
        }
        for r in self.rk.chunks_exact(4) {
            for s in x.iter_mut() {
                s[0] ^= t(s[1] ^ s[2] ^ s[3] ^ r[0]);
            }
            for s in x.iter_mut() {
                s[1] ^= t(s[2] ^ s[3] ^ s[0] ^ r[1]);
            }
            for s in x.iter_mut() {
                s[2] ^= t(s[3] ^ s[0] ^ s[1] ^ r[2]);
            }
            for s in x.iter_mut() {
                s[3] ^= t(s[0] ^ s[1] ^ s[2] ^ r[3]);
            }
        }
        for (state, block) in x.iter().zip(output) {
            // The ciphertext is the final state words in reverse order.
            for (bytes, word) in block.chunks_exact_mut(4).zip(state.iter().rev()) {
                bytes.copy_from_slice(&word.to_be_bytes());
            }
        }
    }
}

impl KeySizeUser for Sm4x4 {
    type KeySize = U16;
}

impl KeyInit for Sm4x4 {
    fn new(key: &Key<Self>) -> Self {
        let mut k = [0u32; 4];
        for ((word, bytes), fk) in k.iter_mut().zip(key.chunks_exact(4)).zip(FK) {
            *word = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) ^ fk;
        }
        let mut rk = [0u32; 32];
        for (i, out) in rk.iter_mut().enumerate() {
            k[i % 4] ^= t_key(k[(i + 1) % 4] ^ k[(i + 2) % 4] ^ k[(i + 3) % 4] ^ CK[i]);
            *out = k[i % 4];
        }
        k.zeroize();
        Self { rk }
    }
}

impl BlockSizeUser for Sm4x4 {
    type BlockSize = U16;
}

impl ParBlocksSizeUser for Sm4x4 {
    type ParBlocksSize = U4;
}

impl BlockCipherEncrypt for Sm4x4 {
    #[inline]
    fn encrypt_with_backend(&self, f: impl BlockCipherEncClosure<BlockSize = Self::BlockSize>) {
        f.call(self)
    }
}

impl BlockCipherEncBackend for Sm4x4 {
    #[inline]
    fn encrypt_block(&self, mut block: InOut<'_, '_, Block<Self>>) {
        let input = block.clone_in();
        self.encrypt_lanes([&input], [block.get_out()]);
    }

    #[inline]
    fn encrypt_par_blocks(&self, mut blocks: InOut<'_, '_, ParBlocks<Self>>) {
        let input = blocks.clone_in();
        let [a, b, c, d] = &mut blocks.get_out().0;
        self.encrypt_lanes([&input[0], &input[1], &input[2], &input[3]], [a, b, c, d]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encrypt(key: &[u8; 16], block: &[u8; 16]) -> [u8; 16] {
        let mut b = Block::<Sm4x4>::from(*block);
        BlockCipherEncrypt::encrypt_block(&Sm4x4::new(key.into()), &mut b);
        b.into()
    }

    /// GB/T 32907-2016 appendix A, example 1.
    #[test]
    fn standard_vector() {
        let v: [u8; 16] = hex::decode("0123456789abcdeffedcba9876543210")
            .unwrap()
            .try_into()
            .unwrap();
        assert_eq!(
            hex::encode(encrypt(&v, &v)),
            "681edf34d206965e86b3e94f536e4246"
        );
    }

    #[test]
    fn constants_match_the_standard() {
        assert_eq!(CK[0], 0x00070e15);
        assert_eq!(CK[31], 0x646b7279);
        assert_eq!(SBOX[0], 0xd6);
        assert_eq!(SBOX[255], 0x48);
    }

    /// Same output as the `sm4` crate, one block and four at a time, on random keys.
    #[test]
    fn matches_the_sm4_crate() {
        let mut bytes = [0u8; 16 * 9];
        for round in 0..64 {
            crate::keys::random_bytes(&mut bytes).unwrap();
            let key: [u8; 16] = bytes[..16].try_into().unwrap();
            // 1..=8 blocks exercise the four-lane path and the single-block tail.
            let n = 1 + round % 8;
            let mut ours: Vec<Block<Sm4x4>> = bytes[16..16 * (n + 1)]
                .chunks_exact(16)
                .map(|c| Block::<Sm4x4>::try_from(c).unwrap())
                .collect();
            let mut theirs = ours.clone();
            Sm4x4::new(&key.into()).encrypt_blocks(&mut ours);
            sm4::Sm4::new(&key.into()).encrypt_blocks(&mut theirs);
            assert_eq!(ours, theirs, "key {key:02x?}, {n} blocks");
        }
    }
}
