//! The body: SM4-GCM over fixed-size chunks, sealed and opened batch by batch on all cores.
//!
//! Layout in memory: a batch is a buffer of `slots` slots of `chunk + 16` bytes. When sealing,
//! slot *i* receives up to `chunk` plaintext bytes and gets its tag appended in place, so the
//! sealed batch is one contiguous run of bytes. When opening, slot *i* receives one sealed chunk
//! and is decrypted in place; the plaintexts are then packed together and written at once.
//!
//! Pipeline: three batch buffers rotate. While worker threads process batch *k*, the calling
//! thread writes batch *k-1* and reads batch *k+1*. Reading and writing stay on the calling
//! thread, so callers' readers and writers need not be `Send`. Memory is three batches
//! ([`BATCH_BYTES`] each) whatever the file size.

use std::io::{Read, Write};
use std::thread;

use aes_gcm::aead::consts::U12;
use aes_gcm::{AeadInOut, AesGcm, KeyInit, Nonce, Tag};

use crate::error::{Error, Result};
use crate::header::{header_digest, read_full, Header};
use crate::keys::ContentKey;
use crate::sm4x4::Sm4x4;
use crate::{NONCE_PREFIX_LEN, TAG_LEN};

/// SM4 in GCM mode with 96-bit nonces, as RFC 8998 defines it. The block cipher is
/// [`Sm4x4`], which computes the same SM4 as `sm4::Sm4` four blocks at a time.
pub(crate) type Sm4Gcm = AesGcm<Sm4x4, U12>;

/// Target size of one batch buffer. Three are alive at once.
pub(crate) const BATCH_BYTES: usize = 2 << 20;

/// At most this many worker threads, whatever the machine.
const MAX_THREADS: usize = 16;

/// Which way the bytes go.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Seal,
    Open,
}

/// Byte and chunk counts of a finished body.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Totals {
    pub chunks: u64,
    pub plaintext: u64,
    pub sealed: u64,
}

/// Everything needed to seal or open one file's body.
pub(crate) struct Body {
    /// SM4-GCM keyed with the content key; shared by reference with the workers.
    cipher: Sm4Gcm,
    /// The header's nonce prefix.
    prefix: [u8; NONCE_PREFIX_LEN],
    /// SM3 of the raw header bytes: the associated data of every chunk.
    aad: [u8; 32],
    /// Plaintext bytes per chunk.
    chunk: usize,
}

/// One batch of consecutive chunks.
struct Batch {
    /// Room for `slots` slots of `chunk + 16` bytes (initialised as far as used so far).
    buf: Vec<u8>,
    /// Slots per batch.
    slots: usize,
    /// Bytes read into each filled slot (plaintext when sealing, sealed chunk when opening).
    lens: Vec<usize>,
    /// Index of the batch's first chunk in the file.
    first: u64,
    /// Whether the batch holds the file's final chunk (its last slot).
    last: bool,
    /// Opening only: the input ended with fewer than 16 bytes after the batch's slots, so the
    /// final chunk is missing (`last` is then set too, but no slot is the final chunk).
    truncated: bool,
}

impl Body {
    pub(crate) fn new(key: &ContentKey, header: &Header, raw_header: &[u8]) -> Self {
        Self {
            cipher: Sm4Gcm::new(key.as_bytes().into()),
            prefix: header.nonce_prefix(),
            aad: header_digest(raw_header),
            chunk: header.chunk_size() as usize,
        }
    }

    /// Seals all of `input` to `output` (body only).
    pub(crate) fn seal(&self, input: &mut dyn Read, output: &mut dyn Write) -> Result<Totals> {
        self.run(Mode::Seal, input, output)
    }

    /// Opens a body from `input` (positioned after the header) to `output`. Each batch is
    /// written only after all its chunks authenticated; on error nothing from the failing
    /// batch on is written.
    pub(crate) fn open(&self, input: &mut dyn Read, output: &mut dyn Write) -> Result<Totals> {
        self.run(Mode::Open, input, output)
    }

    fn slot_len(&self) -> usize {
        self.chunk + TAG_LEN
    }

    fn run(&self, mode: Mode, input: &mut dyn Read, output: &mut dyn Write) -> Result<Totals> {
        let slots = (BATCH_BYTES / self.slot_len()).max(1);
        let threads = thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_THREADS);
        let mut totals = Totals::default();
        let mut cur = Batch::new(slots, self.slot_len());
        let mut next = Batch::new(slots, self.slot_len());
        let mut done = Batch::new(slots, self.slot_len());
        let mut have_done = false;

        self.fill(mode, input, &mut cur, 0, &mut totals)?;
        loop {
            let more = !cur.last;
            let next_first = cur.first + cur.lens.len() as u64;
            let (processed, io) = thread::scope(|s| {
                let per = cur.lens.len().div_ceil(threads).max(1);
                let workers: Vec<_> = cur
                    .buf
                    .chunks_mut(per * self.slot_len())
                    .zip(cur.lens.chunks(per))
                    .enumerate()
                    .map(|(g, (region, lens))| {
                        let first = cur.first + (g * per) as u64;
                        let final_index = (cur.last && !cur.truncated).then(|| next_first - 1);
                        s.spawn(move || self.process(mode, region, lens, first, final_index))
                    })
                    .collect();
                let io = (|| -> Result<()> {
                    if have_done {
                        self.drain(mode, output, &mut done)?;
                    }
                    if more {
                        self.fill(mode, input, &mut next, next_first, &mut totals)?;
                    }
                    Ok(())
                })();
                let processed = workers
                    .into_iter()
                    .map(|w| {
                        w.join()
                            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                    })
                    .collect::<Result<Vec<()>>>();
                (processed, io)
            });
            processed?;
            if cur.truncated {
                return Err(Error::Truncated(
                    "the body ends without its final chunk (a final chunk is always present)",
                ));
            }
            io?;
            std::mem::swap(&mut done, &mut cur);
            have_done = true;
            if !more {
                self.drain(mode, output, &mut done)?;
                output.flush()?;
                return Ok(totals);
            }
            std::mem::swap(&mut cur, &mut next);
        }
    }

    /// Reads the next batch of chunks into `batch`.
    fn fill(
        &self,
        mode: Mode,
        input: &mut dyn Read,
        batch: &mut Batch,
        first: u64,
        totals: &mut Totals,
    ) -> Result<()> {
        let cap = match mode {
            Mode::Seal => self.chunk,
            Mode::Open => self.slot_len(),
        };
        batch.lens.clear();
        batch.first = first;
        batch.last = false;
        batch.truncated = false;
        let slot_len = self.slot_len();
        for i in 0..batch.slots {
            let end = (i + 1) * slot_len;
            if batch.buf.len() < end {
                // Buffers grow to the slots actually used, so a small file costs little.
                batch.buf.resize(end, 0);
            }
            let n = read_full(input, &mut batch.buf[end - slot_len..end - slot_len + cap])?;
            if mode == Mode::Open && n < TAG_LEN {
                // Too short to be a sealed chunk: the file lacks its final chunk. Reported
                // after the chunks before it are checked, so that a damaged chunk there
                // (e.g. a final chunk lengthened by appended bytes) is named instead.
                batch.truncated = true;
                batch.last = true;
                break;
            }
            batch.lens.push(n);
            if n < cap {
                batch.last = true;
                break;
            }
        }
        let count = batch.lens.len() as u64;
        // Chunk indices are 32-bit in the nonce.
        if first + count > u64::from(u32::MAX) + 1 {
            return Err(match mode {
                Mode::Seal => Error::TooLarge,
                Mode::Open => Error::Corrupt {
                    chunk: u64::from(u32::MAX) + 1,
                },
            });
        }
        let read: u64 = batch.lens.iter().map(|&n| n as u64).sum();
        let tags = count * TAG_LEN as u64;
        totals.chunks += count;
        match mode {
            Mode::Seal => {
                totals.plaintext += read;
                totals.sealed += read + tags;
            }
            Mode::Open => {
                totals.plaintext += read - tags;
                totals.sealed += read;
            }
        }
        Ok(())
    }

    /// Seals or opens a run of consecutive slots in place. `first` is the index of the first
    /// one; `final_index` the index of the file's final chunk if it is in this batch.
    fn process(
        &self,
        mode: Mode,
        region: &mut [u8],
        lens: &[usize],
        first: u64,
        final_index: Option<u64>,
    ) -> Result<()> {
        for (i, (slot, &len)) in region.chunks_mut(self.slot_len()).zip(lens).enumerate() {
            let index = first + i as u64;
            let nonce = self.nonce(index, final_index == Some(index));
            match mode {
                Mode::Seal => {
                    let (data, rest) = slot.split_at_mut(len);
                    let tag = self
                        .cipher
                        .encrypt_inout_detached(&nonce, &self.aad, data.into())
                        .map_err(|_| Error::Crypto)?;
                    rest[..TAG_LEN].copy_from_slice(&tag);
                }
                Mode::Open => {
                    let (data, tag) = slot[..len].split_at_mut(len - TAG_LEN);
                    let tag = Tag::try_from(&*tag).map_err(|_| Error::Crypto)?;
                    self.cipher
                        .decrypt_inout_detached(&nonce, &self.aad, data.into(), &tag)
                        .map_err(|_| Error::Corrupt { chunk: index })?;
                }
            }
        }
        Ok(())
    }

    /// Writes a processed batch: the sealed chunks as they lie, or the plaintexts packed.
    fn drain(&self, mode: Mode, output: &mut dyn Write, batch: &mut Batch) -> Result<()> {
        let slot = self.slot_len();
        let end = match mode {
            Mode::Seal => {
                // Every slot but the last is full, so the sealed bytes are contiguous.
                let last = batch.lens.len() - 1;
                last * slot + batch.lens[last] + TAG_LEN
            }
            Mode::Open => {
                let mut end = 0;
                for (i, &len) in batch.lens.iter().enumerate() {
                    let plain = len - TAG_LEN;
                    batch.buf.copy_within(i * slot..i * slot + plain, end);
                    end += plain;
                }
                end
            }
        };
        output.write_all(&batch.buf[..end])?;
        Ok(())
    }

    /// prefix (7) || index (4, big-endian) || 1 for the final chunk else 0.
    fn nonce(&self, index: u64, last: bool) -> Nonce<U12> {
        let mut nonce = [0u8; 12];
        nonce[..NONCE_PREFIX_LEN].copy_from_slice(&self.prefix);
        // `fill` refuses indices beyond u32, so the truncation never loses bits.
        nonce[NONCE_PREFIX_LEN..11].copy_from_slice(&(index as u32).to_be_bytes());
        nonce[11] = u8::from(last);
        nonce.into()
    }
}

impl Batch {
    fn new(slots: usize, slot_len: usize) -> Self {
        Self {
            buf: Vec::with_capacity(slots * slot_len),
            slots,
            lens: Vec::new(),
            first: 0,
            last: false,
            truncated: false,
        }
    }
}

/// Chunk count and plaintext length of a well-formed body of `body_len` bytes, or `None` if
/// no body of that length exists (it lacks a final chunk of at least 16 bytes).
pub(crate) fn body_layout(chunk: u32, body_len: u64) -> Option<(u64, u64)> {
    let slot = u64::from(chunk) + TAG_LEN as u64;
    let full = body_len / slot;
    let rest = body_len % slot;
    if rest < TAG_LEN as u64 {
        return None;
    }
    let chunks = full + 1;
    Some((chunks, body_len - chunks * TAG_LEN as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8998 appendix A.1: SM4-GCM test vector.
    #[test]
    fn rfc8998_sm4_gcm_vector() {
        let key = hex::decode("0123456789ABCDEFFEDCBA9876543210").unwrap();
        let iv = hex::decode("00001234567800000000ABCD").unwrap();
        let aad = hex::decode("FEEDFACEDEADBEEFFEEDFACEDEADBEEFABADDAD2").unwrap();
        let plain = hex::decode(
            "AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBCCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD\
             EEEEEEEEEEEEEEEEFFFFFFFFFFFFFFFFEEEEEEEEEEEEEEEEAAAAAAAAAAAAAAAA",
        )
        .unwrap();
        let expected = hex::decode(
            "17F399F08C67D5EE19D0DC9969C4BB7D5FD46FD3756489069157B282BB200735\
             D82710CA5C22F0CCFA7CBF93D496AC15A56834CBCF98C397B4024A2691233B8D",
        )
        .unwrap();
        let expected_tag = hex::decode("83DE3541E4C2B58177E065A9BF7B62EC").unwrap();

        let cipher = Sm4Gcm::new_from_slice(&key).unwrap();
        let nonce = Nonce::<U12>::try_from(&iv[..]).unwrap();
        let mut buf = plain.clone();
        let tag = cipher
            .encrypt_inout_detached(&nonce, &aad, buf.as_mut_slice().into())
            .unwrap();
        assert_eq!(buf, expected);
        assert_eq!(tag.as_slice(), expected_tag.as_slice());

        let tag = Tag::try_from(&expected_tag[..]).unwrap();
        cipher
            .decrypt_inout_detached(&nonce, &aad, buf.as_mut_slice().into(), &tag)
            .unwrap();
        assert_eq!(buf, plain);
        buf[0] ^= 1;
        assert!(cipher
            .decrypt_inout_detached(&nonce, &aad, buf.as_mut_slice().into(), &tag)
            .is_err());
    }

    /// Same ciphertext and tag as `AesGcm<sm4::Sm4, U12>` for every length from 0 to 200
    /// bytes (full and partial counter blocks, four-lane and single-block paths).
    #[test]
    fn matches_gcm_over_the_sm4_crate() {
        let mut key = [0u8; 16];
        crate::keys::random_bytes(&mut key).unwrap();
        let ours = Sm4Gcm::new_from_slice(&key).unwrap();
        let theirs = AesGcm::<sm4::Sm4, U12>::new_from_slice(&key).unwrap();
        let nonce = Nonce::<U12>::from([3u8; 12]);
        for len in 0..=200 {
            let plain: Vec<u8> = (0..len as u8).collect();
            let (mut a, mut b) = (plain.clone(), plain.clone());
            let tag_a = ours
                .encrypt_inout_detached(&nonce, b"aad", a.as_mut_slice().into())
                .unwrap();
            let tag_b = theirs
                .encrypt_inout_detached(&nonce, b"aad", b.as_mut_slice().into())
                .unwrap();
            assert_eq!((a, tag_a.as_slice()), (b, tag_b.as_slice()), "length {len}");
        }
    }

    #[test]
    fn nonce_layout() {
        let header = Header::new(16, [1, 2, 3, 4, 5, 6, 7], Vec::new());
        let body = Body::new(&ContentKey::from_slice(&[0; 16]).unwrap(), &header, b"{}");
        assert_eq!(
            body.nonce(0x0102_0304, true).as_slice(),
            [1, 2, 3, 4, 5, 6, 7, 1, 2, 3, 4, 1]
        );
        assert_eq!(body.nonce(5, false)[7..], [0, 0, 0, 5, 0]);
    }

    #[test]
    fn layout_from_body_length() {
        // chunk 4: slot 20 bytes.
        assert_eq!(body_layout(4, 16), Some((1, 0)));
        assert_eq!(body_layout(4, 19), Some((1, 3)));
        assert_eq!(body_layout(4, 20 + 16), Some((2, 4)));
        assert_eq!(body_layout(4, 0), None);
        assert_eq!(body_layout(4, 20), None);
        assert_eq!(body_layout(4, 35), None);
    }
}
