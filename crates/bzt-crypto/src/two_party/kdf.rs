//! The SM2 key derivation function (GB/T 32918.4 §5.4.3):
//! `K = SM3(Z ‖ 1) ‖ SM3(Z ‖ 2) ‖ …`, counters 32-bit big-endian, cut to length.
//!
//! Written here because the `sm2` crate keeps its KDF private, and the
//! blinded decryption finishes SM2 decryption outside `DecryptingKey`. It is
//! checked by opening ciphertexts made by OpenSSL and by the `sm2` crate.

use sm3::{Digest, Sm3};

pub(crate) fn sm2_kdf(z: &[u8], out: &mut [u8]) {
    for (i, chunk) in out.chunks_mut(32).enumerate() {
        // A counter past u32 would need 128 GiB of output: never asked for.
        let counter = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let block = Sm3::new()
            .chain_update(z)
            .chain_update(counter.to_be_bytes())
            .finalize();
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
}
