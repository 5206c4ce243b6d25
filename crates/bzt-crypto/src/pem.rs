//! PEM blocks with text around them (RFC 7468 §5.2: "explanatory text" before, between and after
//! blocks is ignored), as found in certificate bundles and files written by other tools.
//!
//! The one PEM reader of the workspace. It reads the lax form of RFC 7468 §3 (any line width,
//! CRLF or LF, whitespace inside the base64), as phones, browsers and other tools write it; the
//! strict reader of the `der` crate refuses lines longer than 64 characters.

use base64::Engine;
use der::{pem, Decode};
use x509_cert::Certificate;

use crate::Error;

/// One decoded PEM block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PemBlock {
    /// The type label, e.g. `CERTIFICATE` or `ENCRYPTED PRIVATE KEY`.
    pub label: String,
    /// The decoded DER bytes.
    pub der: Vec<u8>,
}

/// Finds and decodes every PEM block in `text`, in order, ignoring text around them.
///
/// A block whose base64 does not decode, or whose `-----END` line is missing or has another
/// label, is an error rather than silently skipped.
pub fn pem_blocks(text: &str) -> Result<Vec<PemBlock>, Error> {
    const BEGIN: &str = "-----BEGIN ";
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let block = &rest[start..];
        let label_end = block[BEGIN.len()..]
            .find("-----")
            .ok_or_else(|| Error::Pem("unterminated -----BEGIN line".into()))?;
        let label = &block[BEGIN.len()..BEGIN.len() + label_end];
        let end_marker = format!("-----END {label}-----");
        // The END line is looked for after the BEGIN line: the two may
        // share their dashes (`-----BEGIN X-----END X-----`, found by fuzzing).
        let body_start = BEGIN.len() + label_end + "-----".len();
        let body_end = body_start
            + block[body_start..]
                .find(&end_marker)
                .ok_or_else(|| Error::Pem(format!("no {end_marker} line")))?;
        let end = body_end + end_marker.len();
        let body: String = block[body_start..body_end]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|e| Error::Pem(format!("the {label} block is not valid base64: {e}")))?;
        blocks.push(PemBlock {
            label: label.to_string(),
            der,
        });
        rest = &block[end..];
    }
    Ok(blocks)
}

/// Parses every `CERTIFICATE` block of `text`, in order (other blocks are ignored).
pub fn pem_certificates(text: &str) -> Result<Vec<Certificate>, Error> {
    pem_blocks(text)?
        .into_iter()
        .filter(|b| b.label == "CERTIFICATE")
        .map(|b| parse_certificate_der(&b.der))
        .collect()
}

/// Parses the one certificate in `text`: exactly one `CERTIFICATE` block, text around it ignored.
pub fn pem_certificate(text: &str) -> Result<Certificate, Error> {
    parse_certificate_der(&certificate_der(text)?)
}

/// The DER bytes of the one `CERTIFICATE` block in `text` (text around it ignored), without
/// parsing them: the broker fingerprints the bytes before it spends time on X.509.
pub fn certificate_der(text: &str) -> Result<Vec<u8>, Error> {
    let mut ders: Vec<Vec<u8>> = pem_blocks(text)?
        .into_iter()
        .filter(|b| b.label == "CERTIFICATE")
        .map(|b| b.der)
        .collect();
    match ders.len() {
        1 => Ok(ders.remove(0)),
        n => Err(Error::Pem(format!(
            "expected exactly one PEM CERTIFICATE block, found {n}"
        ))),
    }
}

/// Parses DER bytes as an X.509 certificate.
pub fn parse_certificate_der(der: &[u8]) -> Result<Certificate, Error> {
    Certificate::from_der(der)
        .map_err(|e| Error::Certificate(format!("the certificate does not parse as X.509: {e}")))
}

/// The PEM of a certificate: one `CERTIFICATE` block, 64-character lines, LF line ends.
pub fn certificate_pem(cert: &Certificate) -> Result<String, Error> {
    use der::Encode;
    let der = cert
        .to_der()
        .map_err(|e| Error::Certificate(format!("cannot encode the certificate: {e}")))?;
    to_pem("CERTIFICATE", &der)
}

/// Encodes `der` as a PEM block with LF line ends.
pub fn to_pem(label: &str, der: &[u8]) -> Result<String, Error> {
    pem::encode_string(label, pem::LineEnding::LF, der)
        .map_err(|e| Error::Pem(format!("cannot encode {label}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn begin_and_end_sharing_their_dashes_is_an_error_not_a_panic() {
        // Found by the fuzz smoke run (crates/bzt-fuzz): the END marker was
        // looked for from the start of the BEGIN line, inside it.
        for text in [
            "-----BEGIN CERTIFICATE-----END CERTIFICATE-----",
            "-----BEGIN CERTIFICATE------END CERTIFICATE-----",
            "-----BEGIN X-----END X-----",
        ] {
            let e = pem_blocks(text).unwrap_err();
            assert!(e.to_string().contains("no -----END"), "{text}: {e}");
        }
        assert!(pem_certificate("-----BEGIN CERTIFICATE-----END CERTIFICATE-----").is_err());
    }

    #[test]
    fn blocks_are_found_between_text() {
        let a = to_pem("THING", b"abc").unwrap();
        let b = to_pem("OTHER THING", b"defg").unwrap();
        let text = format!("Subject: x\n{a}some words\n{b}\ntrailer");
        let blocks = pem_blocks(&text).unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].label, "THING");
        assert_eq!(blocks[0].der, b"abc");
        assert_eq!(blocks[1].label, "OTHER THING");
        assert_eq!(blocks[1].der, b"defg");
    }

    #[test]
    fn any_line_width_and_crlf_are_read() {
        let b64 =
            "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NTY3ODk=";
        let text = format!("-----BEGIN THING-----\r\n{b64}\r\n-----END THING-----\r\n");
        let blocks = pem_blocks(&text).unwrap();
        assert_eq!(
            blocks[0].der,
            b"abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz0123456789"
        );
        let e = pem_certificate("x").unwrap_err().to_string();
        assert!(e.contains("found 0"), "{e}");
    }

    #[test]
    fn broken_blocks_are_errors() {
        assert!(pem_blocks("-----BEGIN X-----\nYWJj\n").is_err());
        assert!(pem_blocks("-----BEGIN X-----\n!!!!\n-----END X-----\n").is_err());
        assert!(pem_blocks("no pem here").unwrap().is_empty());
        assert!(pem_certificate("no pem here").is_err());
    }
}
