//! Opening a sealed file, and looking inside one without a key.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use sm2::SecretKey;

use crate::error::Result;
use crate::header::{header_digest, read_header, Header};
use crate::keys::ContentKey;
use crate::recipient::Recipient;
use crate::stream::{body_layout, Body};
use crate::MAGIC;

/// What [`open`] released.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenReport {
    /// Plaintext bytes written.
    pub plaintext_len: u64,
    /// Chunks authenticated, the final one included.
    pub chunks: u64,
}

/// How an opener gets the content key.
enum Unlock<'a> {
    Recipient(&'a SecretKey, &'a Recipient),
    ContentKey(&'a ContentKey),
}

/// Opens a sealed file with a recipient's private key and certificate, streaming the plaintext
/// to `output`.
///
/// `output` receives plaintext batch by batch, each batch only after all its chunks
/// authenticated, so it only ever holds a prefix of the genuine plaintext. But the file is only
/// known to be complete (not truncated, nothing appended) when this returns `Ok`: on `Err`,
/// discard what was written. [`open_to_path`] does that for you.
///
/// Errors: [`Error::KeyMismatch`](crate::Error::KeyMismatch),
/// [`Error::NotARecipient`](crate::Error::NotARecipient) naming the recipients,
/// [`Error::Corrupt`](crate::Error::Corrupt), [`Error::Truncated`](crate::Error::Truncated),
/// header errors as in [`read_header`], [`Error::Io`](crate::Error::Io).
pub fn open(
    secret: &SecretKey,
    recipient: &Recipient,
    input: impl Read,
    output: impl Write,
) -> Result<OpenReport> {
    open_stream(Unlock::Recipient(secret, recipient), input, output)
}

/// Like [`open`], with the content key itself: the opening hall's path, which receives the
/// content key re-wrapped to its one-time key and unwraps it with [`crate::unwrap_key`].
pub fn open_with_content_key(
    key: &ContentKey,
    input: impl Read,
    output: impl Write,
) -> Result<OpenReport> {
    open_stream(Unlock::ContentKey(key), input, output)
}

/// Opens the sealed file at `in_path` into `out_path`, releasing nothing unless the whole file
/// authenticates.
///
/// The plaintext goes to a temporary file (`.bzt-open-*`, mode 0600) in `out_path`'s
/// directory, which is synced and renamed to `out_path` only after the final chunk verified; an
/// existing `out_path` is then replaced. On any error the temporary file is deleted and
/// `out_path` is left as it was. (If the process is killed mid-way, the temporary file can
/// remain.)
pub fn open_to_path(
    secret: &SecretKey,
    recipient: &Recipient,
    in_path: impl AsRef<Path>,
    out_path: impl AsRef<Path>,
) -> Result<OpenReport> {
    let input = File::open(in_path.as_ref())?;
    open_file(
        Unlock::Recipient(secret, recipient),
        input,
        out_path.as_ref(),
    )
}

/// Like [`open_to_path`], reading the sealed file from `input` (e.g. a reader that reports
/// progress), with the same all-or-nothing release to `out_path`.
pub fn open_reader_to_path(
    secret: &SecretKey,
    recipient: &Recipient,
    input: impl Read,
    out_path: impl AsRef<Path>,
) -> Result<OpenReport> {
    open_file(
        Unlock::Recipient(secret, recipient),
        input,
        out_path.as_ref(),
    )
}

/// Like [`open_to_path`], with the content key itself (see [`open_with_content_key`]).
pub fn open_to_path_with_content_key(
    key: &ContentKey,
    in_path: impl AsRef<Path>,
    out_path: impl AsRef<Path>,
) -> Result<OpenReport> {
    let input = File::open(in_path.as_ref())?;
    open_file(Unlock::ContentKey(key), input, out_path.as_ref())
}

fn open_stream(
    unlock: Unlock<'_>,
    mut input: impl Read,
    mut output: impl Write,
) -> Result<OpenReport> {
    let (header, raw) = read_header(&mut input)?;
    let key = match unlock {
        Unlock::Recipient(secret, recipient) => header.content_key(secret, recipient)?,
        Unlock::ContentKey(key) => key.clone(),
    };
    let totals = Body::new(&key, &header, &raw).open(&mut input, &mut output)?;
    Ok(OpenReport {
        plaintext_len: totals.plaintext,
        chunks: totals.chunks,
    })
}

fn open_file(unlock: Unlock<'_>, input: impl Read, out_path: &Path) -> Result<OpenReport> {
    let dir = match out_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut temp = tempfile::Builder::new()
        .prefix(".bzt-open-")
        .suffix(".part")
        .tempfile_in(dir)?;
    // Dropping `temp` on any early return deletes it.
    let report = open_stream(unlock, input, temp.as_file_mut())?;
    temp.as_file().sync_all()?;
    temp.persist(out_path).map_err(|e| e.error)?;
    Ok(report)
}

/// What [`inspect`] found, without any key: who can open the file and how big it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inspection {
    /// The parsed header (recipients, chunk size, nonce prefix).
    pub header: Header,
    /// SM3 of the header JSON (the AAD, and the `envelope:` line of a `decrypt` challenge).
    pub header_digest: [u8; 32],
    /// Bytes of header JSON.
    pub header_len: u64,
    /// Bytes after the header.
    pub body_len: u64,
    /// Chunks in the body, or `None` if `body_len` fits no well-formed body (it is cut short
    /// or has bytes appended). A `Some` does not mean the chunks authenticate.
    pub chunks: Option<u64>,
    /// Plaintext bytes the body would open to, derived from `body_len`; `None` as for `chunks`.
    pub plaintext_len: Option<u64>,
}

impl Inspection {
    /// Total file size: `BZE1`, length, header, body.
    pub fn file_len(&self) -> u64 {
        (MAGIC.len() + 4) as u64 + self.header_len + self.body_len
    }
}

/// Reads a sealed file's header and measures its body, without opening anything. Reads the
/// whole input (to count the body).
pub fn inspect(mut input: impl Read) -> Result<Inspection> {
    let (header, raw) = read_header(&mut input)?;
    let body_len = io::copy(&mut input, &mut io::sink())?;
    let layout = body_layout(header.chunk_size(), body_len);
    Ok(Inspection {
        header_digest: header_digest(&raw),
        header_len: raw.len() as u64,
        body_len,
        chunks: layout.map(|(chunks, _)| chunks),
        plaintext_len: layout.map(|(_, plain)| plain),
        header,
    })
}
