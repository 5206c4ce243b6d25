//! The envelope header: `BZE1`, a 4-byte big-endian length, then UTF-8 JSON.

use std::io::{ErrorKind, Read, Write};

use serde::{Deserialize, Serialize};
use sm2::SecretKey;
use sm3::{Digest, Sm3};

use crate::error::{Error, Result};
use crate::keys::{unwrap_key, ContentKey};
use crate::recipient::Recipient;
use crate::{ALG, MAGIC, MAX_CHUNK, MAX_HEADER_LEN, NONCE_PREFIX_LEN, VERSION};
use bzt_crypto::normalize_serial;

/// The parsed header of an envelope.
///
/// Field names follow the wire form: `{"v":1,"alg":"SM4-GCM-STREAM","chunk":65536,
/// "nonce_prefix_b64":"...","recipients":[{"serial","issuer","key_b64"}]}`.
///
/// Unknown fields are **ignored**, not rejected: a later v1 writer may add informative fields
/// (a creation time, a tool name) and older openers must still open the file. Anything that
/// changes how the body is processed must change `v` or `alg` instead, which this build
/// refuses. Ignoring is safe because the header is authenticated as raw bytes: its SM3 digest
/// is the associated data of every chunk, so no byte of it, known field or not, can change
/// without every chunk failing. For the same reason openers always use the header bytes as
/// read from the file, never a re-serialisation of this struct.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Format version, always 1 here.
    v: u64,
    /// Body algorithm, always `SM4-GCM-STREAM` here.
    alg: String,
    /// Plaintext bytes per chunk (1..=[`MAX_CHUNK`]); the final chunk is shorter.
    chunk: u32,
    /// First 7 bytes of every chunk nonce, random per file.
    #[serde(rename = "nonce_prefix_b64", with = "b64_array")]
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
    /// One entry per certificate that can open the file, in the order given to `seal`.
    recipients: Vec<RecipientEntry>,
}

/// One recipient in a header: who, and the content key SM2-encrypted to them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientEntry {
    /// Certificate serial, lowercase hex without leading zeros.
    serial: String,
    /// Certificate issuer, RFC 4514 string.
    issuer: String,
    /// The content key SM2-encrypted to the certificate's key, GM/T 0009 DER.
    #[serde(rename = "key_b64", with = "b64_vec")]
    wrapped_key: Vec<u8>,
}

impl RecipientEntry {
    pub(crate) fn new(recipient: &Recipient, wrapped_key: Vec<u8>) -> Self {
        Self {
            serial: recipient.serial().to_owned(),
            issuer: recipient.issuer().to_owned(),
            wrapped_key,
        }
    }

    /// Certificate serial, lowercase hex without leading zeros.
    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// Certificate issuer, RFC 4514.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The wrapped content key (GM/T 0009 DER); decrypt it with [`unwrap_key`].
    pub fn wrapped_key(&self) -> &[u8] {
        &self.wrapped_key
    }
}

impl Header {
    pub(crate) fn new(
        chunk: u32,
        nonce_prefix: [u8; NONCE_PREFIX_LEN],
        recipients: Vec<RecipientEntry>,
    ) -> Self {
        Self {
            v: VERSION,
            alg: ALG.to_owned(),
            chunk,
            nonce_prefix,
            recipients,
        }
    }

    /// Parses and checks header JSON bytes (the part after `BZE1` and the length), e.g. the
    /// `envelope_header_b64` a phone receives with a `decrypt` claim.
    ///
    /// Checks: the JSON shape, `v == 1`, `alg == "SM4-GCM-STREAM"`, `chunk` in
    /// 1..=[`MAX_CHUNK`], a 7-byte nonce prefix, at least one recipient, valid base64.
    pub fn from_json(raw: &[u8]) -> Result<Self> {
        /// Version and algorithm first, so a newer file says "unsupported" rather than
        /// failing on a field it renamed.
        #[derive(Deserialize)]
        struct Probe {
            v: u64,
            alg: String,
        }
        let probe: Probe =
            serde_json::from_slice(raw).map_err(|e| Error::BadHeader(e.to_string()))?;
        if probe.v != VERSION {
            return Err(Error::UnsupportedVersion(probe.v));
        }
        if probe.alg != ALG {
            return Err(Error::UnsupportedAlgorithm(probe.alg));
        }
        let header: Header =
            serde_json::from_slice(raw).map_err(|e| Error::BadHeader(e.to_string()))?;
        if header.chunk == 0 || header.chunk > MAX_CHUNK {
            return Err(Error::BadHeader(format!(
                "chunk {} is out of range 1..={MAX_CHUNK}",
                header.chunk
            )));
        }
        if header.recipients.is_empty() {
            return Err(Error::BadHeader("no recipients".into()));
        }
        Ok(header)
    }

    /// The exact bytes written to a file for this header (compact JSON, fields in wire order).
    pub(crate) fn to_json(&self) -> Vec<u8> {
        // Serialising plain strings, integers and byte arrays cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Plaintext bytes per chunk.
    pub fn chunk_size(&self) -> u32 {
        self.chunk
    }

    /// The 7-byte nonce prefix.
    pub fn nonce_prefix(&self) -> [u8; NONCE_PREFIX_LEN] {
        self.nonce_prefix
    }

    /// The recipients, in header order.
    pub fn recipients(&self) -> &[RecipientEntry] {
        &self.recipients
    }

    /// The entry for the certificate with this serial and issuer, if any.
    ///
    /// The serial is compared case-insensitively and without leading zeros (the protocol's rule
    /// for serials); the issuer must match exactly, as [`Recipient::issuer`] renders it.
    pub fn find_recipient(&self, serial: &str, issuer: &str) -> Option<&RecipientEntry> {
        let serial = normalize_serial(serial)?;
        self.recipients.iter().find(|e| {
            normalize_serial(&e.serial).as_deref() == Some(serial.as_str()) && e.issuer == issuer
        })
    }

    /// Recovers the content key with a recipient's private key and certificate: finds the
    /// certificate's entry and unwraps it. This is the phone's step in a `decrypt` session,
    /// before it re-wraps the key to the hall's `reply_key` with [`crate::wrap_key`].
    ///
    /// Errors: [`Error::KeyMismatch`] if `secret` is not the key of `recipient`,
    /// [`Error::NotARecipient`] (listing the recipients) if the certificate has no entry,
    /// [`Error::UnwrapFailed`] / [`Error::BadContentKey`] if the entry does not decrypt to 16 bytes.
    pub fn content_key(&self, secret: &SecretKey, recipient: &Recipient) -> Result<ContentKey> {
        if secret.public_key() != *recipient.public_key() {
            return Err(Error::KeyMismatch {
                serial: recipient.serial().to_owned(),
                issuer: recipient.issuer().to_owned(),
            });
        }
        let entry = self
            .find_recipient(recipient.serial(), recipient.issuer())
            .ok_or_else(|| Error::NotARecipient {
                recipients: self
                    .recipients
                    .iter()
                    .map(|e| (e.serial.clone(), e.issuer.clone()))
                    .collect(),
            })?;
        let key = unwrap_key(secret, &entry.wrapped_key)?;
        ContentKey::from_slice(&key)
    }
}

/// SM3 of the header's JSON bytes as they appear in the file. It is the associated data of
/// every chunk, and the value of the `envelope:` line in a `decrypt` challenge (as lowercase hex).
pub fn header_digest(raw: &[u8]) -> [u8; 32] {
    Sm3::digest(raw).into()
}

/// Reads `BZE1`, the length and the header from the start of `reader`, and leaves the reader
/// at the first byte of the body. Returns the parsed header and its raw JSON bytes (hash
/// those, never a re-serialisation, see [`header_digest`]).
///
/// Errors: [`Error::NotAnEnvelope`], [`Error::Truncated`], [`Error::BadHeader`] (also for a
/// header longer than [`MAX_HEADER_LEN`]), [`Error::UnsupportedVersion`],
/// [`Error::UnsupportedAlgorithm`], [`Error::Io`].
pub fn read_header<R: Read>(mut reader: R) -> Result<(Header, Vec<u8>)> {
    let mut prefix = [0u8; 8];
    let got = read_full(&mut reader, &mut prefix)?;
    if got == 0 || prefix[..got.min(4)] != MAGIC[..got.min(4)] {
        return Err(Error::NotAnEnvelope);
    }
    if got < prefix.len() {
        return Err(Error::Truncated(
            "the input ends inside the envelope's first 8 bytes",
        ));
    }
    let len = u32::from_be_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]);
    if len > MAX_HEADER_LEN {
        return Err(Error::BadHeader(format!(
            "header length {len} exceeds the limit of {MAX_HEADER_LEN} bytes"
        )));
    }
    let mut raw = vec![0u8; len as usize];
    if read_full(&mut reader, &mut raw)? < raw.len() {
        return Err(Error::Truncated("the input ends inside the header"));
    }
    let header = Header::from_json(&raw)?;
    Ok((header, raw))
}

/// Writes `BZE1`, the length and `raw`.
pub(crate) fn write_header<W: Write + ?Sized>(output: &mut W, raw: &[u8]) -> Result<()> {
    let len = u32::try_from(raw.len())
        .ok()
        .filter(|&l| l <= MAX_HEADER_LEN)
        .ok_or_else(|| {
            Error::BadHeader(format!(
                "header of {} bytes exceeds the limit of {MAX_HEADER_LEN} (too many recipients?)",
                raw.len()
            ))
        })?;
    output.write_all(MAGIC)?;
    output.write_all(&len.to_be_bytes())?;
    output.write_all(raw)?;
    Ok(())
}

/// Reads until `buf` is full or the input ends; returns the number of bytes read.
pub(crate) fn read_full<R: Read + ?Sized>(reader: &mut R, buf: &mut [u8]) -> Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(filled)
}

mod b64_array {
    use base64::{engine::general_purpose::STANDARD as B64, Engine as _};
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer, const N: usize>(v: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        let text = String::deserialize(d)?;
        let bytes = B64.decode(text).map_err(D::Error::custom)?;
        let len = bytes.len();
        bytes
            .try_into()
            .map_err(|_| D::Error::custom(format!("expected {N} bytes of base64, got {len}")))
    }
}

mod b64_vec {
    use base64::{engine::general_purpose::STANDARD as B64, Engine as _};
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        B64.decode(text).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        br#"{"v":1,"alg":"SM4-GCM-STREAM","chunk":65536,"nonce_prefix_b64":"AAECAwQFBg==","recipients":[{"serial":"1a","issuer":"CN=CA","key_b64":"MAA="}]}"#.to_vec()
    }

    #[test]
    fn wire_form_round_trips_byte_for_byte() {
        let raw = sample();
        let header = Header::from_json(&raw).unwrap();
        assert_eq!(header.nonce_prefix(), [0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(header.recipients()[0].wrapped_key(), &[0x30, 0]);
        assert_eq!(header.to_json(), raw);
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let raw = String::from_utf8(sample()).unwrap().replace(
            r#""v":1,"#,
            r#""v":1,"created":"2026-11-01T00:00:00.000Z","#,
        );
        assert!(Header::from_json(raw.as_bytes()).is_ok());
    }

    #[test]
    fn checks_version_alg_chunk_prefix() {
        let text = String::from_utf8(sample()).unwrap();
        let bad = |from: &str, to: &str| Header::from_json(text.replace(from, to).as_bytes());
        assert!(matches!(
            bad(r#""v":1"#, r#""v":2"#),
            Err(Error::UnsupportedVersion(2))
        ));
        assert!(matches!(
            bad("SM4-GCM-STREAM", "AES-GCM"),
            Err(Error::UnsupportedAlgorithm(a)) if a == "AES-GCM"
        ));
        assert!(matches!(bad("65536", "0"), Err(Error::BadHeader(_))));
        assert!(matches!(bad("65536", "1048577"), Err(Error::BadHeader(_))));
        assert!(matches!(
            bad("AAECAwQFBg==", "AAECAwQF"),
            Err(Error::BadHeader(_))
        ));
        assert!(matches!(bad("MAA=", "M*A="), Err(Error::BadHeader(_))));
        assert!(matches!(
            bad(r#""issuer":"CN=CA","#, ""),
            Err(Error::BadHeader(_))
        ));
        let empty = r#"{"v":1,"alg":"SM4-GCM-STREAM","chunk":1,"nonce_prefix_b64":"AAECAwQFBg==","recipients":[]}"#;
        assert!(matches!(
            Header::from_json(empty.as_bytes()),
            Err(Error::BadHeader(_))
        ));
    }

    #[test]
    fn find_recipient_normalises_serial_only() {
        let header = Header::from_json(&sample()).unwrap();
        assert!(header.find_recipient("001A", "CN=CA").is_some());
        assert!(header.find_recipient("1a", "CN=ca").is_none());
        assert!(header.find_recipient("1b", "CN=CA").is_none());
    }

    #[test]
    fn read_header_framing() {
        let raw = sample();
        let mut file = Vec::new();
        write_header(&mut file, &raw).unwrap();
        file.extend_from_slice(b"body");
        let mut input = &file[..];
        let (_, got) = read_header(&mut input).unwrap();
        assert_eq!(got, raw);
        assert_eq!(input, b"body");

        assert!(matches!(read_header(&b"BZ"[..]), Err(Error::Truncated(_))));
        assert!(matches!(
            read_header(&b"PK\x03\x04...."[..]),
            Err(Error::NotAnEnvelope)
        ));
        assert!(matches!(read_header(&file[..20]), Err(Error::Truncated(_))));
        let huge = [&MAGIC[..], &(MAX_HEADER_LEN + 1).to_be_bytes()].concat();
        assert!(matches!(read_header(&huge[..]), Err(Error::BadHeader(_))));
    }
}
