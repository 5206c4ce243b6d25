//! Multi-recipient envelope for bid files (多证书加密): one file, sealed once, that any of
//! several SM2 certificates can open.
//!
//! # Format (docs/protocol.md, "Envelope")
//! ```text
//! "BZE1" || header length (u32, big-endian) || header (UTF-8 JSON) || body
//! header = {"v":1,"alg":"SM4-GCM-STREAM","chunk":65536,"nonce_prefix_b64":"<7 bytes>",
//!           "recipients":[{"serial":"<hex>","issuer":"<RFC 4514>","key_b64":"<wrapped key>"}]}
//! ```
//! - A random 16-byte **content key** seals the body. Each recipient entry holds it
//!   SM2-encrypted to that certificate's key, in the GM/T 0009 DER form OpenSSL reads
//!   ([`wrap_key`], [`unwrap_key`]).
//! - The **body** is the plaintext cut into `chunk`-byte chunks. There is always a final chunk,
//!   flagged as such, shorter than `chunk`: it holds `len % chunk` bytes, so it is **empty** when
//!   the plaintext length is a multiple of `chunk` (the empty file included). A plaintext of
//!   `len` bytes thus has `len / chunk + 1` chunks, and a body of `b` bytes is well formed only
//!   if `b % (chunk + 16) >= 16`.
//! - Each chunk is sealed with SM4-GCM (RFC 8998) under the content key: nonce =
//!   prefix (7) || chunk index (u32, big-endian) || 1 for the final chunk else 0; associated
//!   data = SM3 of the header bytes exactly as in the file ([`header_digest`]); sealed chunk =
//!   ciphertext || 16-byte tag.
//!
//! # Guarantees
//! - Changing any byte of the header or body, cutting the file anywhere, reordering, dropping
//!   or duplicating chunks, or appending bytes makes opening fail ([`Error::Corrupt`] or
//!   [`Error::Truncated`]): the index and final flag in each nonce fix every chunk's place,
//!   and the header digest binds every chunk to the header, recipients included.
//! - [`open_to_path`] releases nothing unless the whole file authenticates (temporary file,
//!   renamed at the end). The streaming [`open`] writes only authenticated chunks, but
//!   completeness is known only when it returns `Ok`.
//! - Memory is bounded (three batch buffers of about 2 MiB, plus the header) whatever the file
//!   size; chunks are sealed and opened on all cores, written in order.
//! - Not guaranteed: resistance to local timing attacks. The `sm2` crate is unaudited; SM4 is
//!   a table-lookup implementation (this crate's `sm4x4`, the `sm4` crate's arithmetic four
//!   blocks at a time, tested against it) and, like the `sm4` crate, not constant-time.
//!
//! # Map
//! - `header`: [`Header`], [`read_header`], [`header_digest`].
//! - `recipient`: [`Recipient`] from a certificate (serial and issuer as the broker writes them).
//! - `keys`: [`ContentKey`], [`wrap_key`], [`unwrap_key`], [`parse_reply_key`].
//! - `seal`: [`seal`], [`seal_with_content_key`]. `open`: [`open`], [`open_to_path`] and their
//!   content-key variants, [`inspect`].
//! - `stream` (internal): the chunk pipeline; `sm4x4` (internal): the SM4 block cipher.
//! - [`Error`]: one enum for everything.

mod error;
mod header;
mod keys;
mod open;
mod recipient;
mod seal;
mod sm4x4;
mod stream;

pub use error::{Error, Result};
pub use header::{header_digest, read_header, Header, RecipientEntry};
pub use keys::{parse_reply_key, unwrap_key, wrap_key, ContentKey, CONTENT_KEY_LEN};
pub use open::{
    inspect, open, open_reader_to_path, open_to_path, open_to_path_with_content_key,
    open_with_content_key, Inspection, OpenReport,
};
pub use recipient::Recipient;
pub use seal::{seal, seal_with_content_key, SealOptions, SealReport};

/// The first 4 bytes of every sealed file.
pub const MAGIC: &[u8; 4] = b"BZE1";
/// The header's `v`.
pub const VERSION: u64 = 1;
/// The header's `alg`.
pub const ALG: &str = "SM4-GCM-STREAM";
/// Default plaintext bytes per chunk.
pub const DEFAULT_CHUNK: u32 = 64 * 1024;
/// Largest chunk size written or accepted (bounds an opener's memory).
pub const MAX_CHUNK: u32 = 1024 * 1024;
/// Largest header accepted (about 4,000 recipients; bounds an opener's memory).
pub const MAX_HEADER_LEN: u32 = 1024 * 1024;
/// Bytes of nonce prefix.
pub const NONCE_PREFIX_LEN: usize = 7;
/// Bytes of GCM tag after each chunk.
pub const TAG_LEN: usize = 16;
