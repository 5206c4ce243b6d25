//! PEM blocks with text around them (RFC 7468 §5.2: "explanatory text" before, between and after
//! blocks is ignored), as found in certificate bundles and files written by other tools.

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
        let end = block
            .find(&end_marker)
            .ok_or_else(|| Error::Pem(format!("no {end_marker} line")))?
            + end_marker.len();
        let (decoded_label, der) = pem::decode_vec(&block.as_bytes()[..end])
            .map_err(|e| Error::Pem(format!("cannot decode the {label} block: {e}")))?;
        blocks.push(PemBlock {
            label: decoded_label.to_string(),
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
        .map(|b| {
            Certificate::from_der(&b.der)
                .map_err(|e| Error::Certificate(format!("cannot parse certificate: {e}")))
        })
        .collect()
}

/// Parses the one certificate in `text`: exactly one `CERTIFICATE` block, text around it ignored.
pub fn pem_certificate(text: &str) -> Result<Certificate, Error> {
    let mut certs = pem_certificates(text)?;
    match certs.len() {
        1 => Ok(certs.remove(0)),
        0 => Err(Error::Pem("no CERTIFICATE block".into())),
        n => Err(Error::Pem(format!(
            "{n} CERTIFICATE blocks where exactly one was expected"
        ))),
    }
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
    fn broken_blocks_are_errors() {
        assert!(pem_blocks("-----BEGIN X-----\nYWJj\n").is_err());
        assert!(pem_blocks("-----BEGIN X-----\n!!!!\n-----END X-----\n").is_err());
        assert!(pem_blocks("no pem here").unwrap().is_empty());
        assert!(pem_certificate("no pem here").is_err());
    }
}
