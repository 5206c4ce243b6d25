//! Sealing a file to one or more recipients.

use std::io::{Read, Write};

use crate::error::{Error, Result};
use crate::header::{write_header, Header, RecipientEntry};
use crate::keys::{random_bytes, wrap_key, ContentKey};
use crate::recipient::Recipient;
use crate::stream::Body;
use crate::{DEFAULT_CHUNK, MAGIC, MAX_CHUNK, NONCE_PREFIX_LEN};

/// How to seal.
#[derive(Clone, Debug)]
pub struct SealOptions {
    /// Plaintext bytes per chunk, 1..=[`MAX_CHUNK`]; default [`DEFAULT_CHUNK`] (64 KiB).
    /// Smaller chunks cost 16 bytes of tag each and more per-chunk work; larger chunks need
    /// more memory per batch when opening. Keep the default unless testing.
    pub chunk_size: u32,
}

impl Default for SealOptions {
    fn default() -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK,
        }
    }
}

/// What [`seal`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealReport {
    /// Plaintext bytes read from the input.
    pub plaintext_len: u64,
    /// Chunks in the body, the final (possibly empty) one included.
    pub chunks: u64,
    /// Bytes of header JSON.
    pub header_len: u64,
    /// Total bytes written: `BZE1`, length, header, body.
    pub sealed_len: u64,
    /// SM3 of the header JSON (see [`crate::header_digest`]).
    pub header_digest: [u8; 32],
}

/// Seals everything `input` yields to `output`, openable by each of `recipients`, under a
/// fresh random content key. Streams: memory stays bounded whatever the input size.
///
/// Recipients that repeat the same certificate are written once; two different keys under the
/// same serial and issuer are refused ([`Error::DuplicateRecipient`]). On error, whatever was
/// already written to `output` is not a valid envelope and should be discarded.
pub fn seal(
    recipients: &[Recipient],
    input: impl Read,
    output: impl Write,
    options: &SealOptions,
) -> Result<SealReport> {
    let key = ContentKey::generate()?;
    seal_with_content_key(recipients, &key, input, output, options)
}

/// Like [`seal`], with a content key chosen by the caller. A fresh random nonce prefix is
/// drawn for each file, but it is only 56 bits: use a key for one file (or very few), never as
/// a long-lived key.
pub fn seal_with_content_key(
    recipients: &[Recipient],
    key: &ContentKey,
    mut input: impl Read,
    mut output: impl Write,
    options: &SealOptions,
) -> Result<SealReport> {
    let chunk = options.chunk_size;
    if chunk == 0 || chunk > MAX_CHUNK {
        return Err(Error::BadChunkSize(u64::from(chunk)));
    }
    let recipients = distinct(recipients)?;
    let entries = recipients
        .iter()
        .map(|r| {
            Ok(RecipientEntry::new(
                r,
                wrap_key(r.public_key(), key.as_bytes())?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
    random_bytes(&mut nonce_prefix)?;
    let header = Header::new(chunk, nonce_prefix, entries);
    let raw = header.to_json();

    write_header(&mut output, &raw)?;
    let body = Body::new(key, &header, &raw);
    let totals = body.seal(&mut input, &mut output)?;
    Ok(SealReport {
        plaintext_len: totals.plaintext,
        chunks: totals.chunks,
        header_len: raw.len() as u64,
        sealed_len: (MAGIC.len() + 4 + raw.len()) as u64 + totals.sealed,
        header_digest: crate::header_digest(&raw),
    })
}

/// The recipients without repeats, in the order given.
fn distinct(recipients: &[Recipient]) -> Result<Vec<&Recipient>> {
    if recipients.is_empty() {
        return Err(Error::NoRecipients);
    }
    let mut out: Vec<&Recipient> = Vec::with_capacity(recipients.len());
    for r in recipients {
        match out
            .iter()
            .find(|o| o.serial() == r.serial() && o.issuer() == r.issuer())
        {
            Some(o) if o.public_key() == r.public_key() => {}
            Some(_) => {
                return Err(Error::DuplicateRecipient {
                    serial: r.serial().to_owned(),
                    issuer: r.issuer().to_owned(),
                })
            }
            None => out.push(r),
        }
    }
    Ok(out)
}
