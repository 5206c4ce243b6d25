//! Fuzz targets for the parsers that take outside input: the QR text, the
//! phone's claim and completion bodies, certificates as PEM chains and as
//! DER, the envelope header, and seal ASN.1.
//!
//! Each target takes arbitrary bytes and must return without panicking,
//! whatever they are; a few also check a property that must hold for every
//! input they accept (named in the target). They are driven two ways:
//! - `tests/smoke.rs` (stable Rust, part of `cargo test`): each target over
//!   its corpus in `corpus/<target>/` and a bounded number of mutations of
//!   it, in seconds;
//! - `scripts/fuzz.sh`: coverage-guided with libFuzzer (`fuzz/`, cargo-fuzz,
//!   nightly Rust) for a bounded time per target, growing the corpus.

use std::io::Cursor;

/// A fuzz target: any bytes in, no panic out.
pub type Target = fn(&[u8]);

/// Every target, by the name of its corpus directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("qr_text", qr_text),
    ("claim_body", claim_body),
    ("complete_body", complete_body),
    ("pem_chain", pem_chain),
    ("cert_der", cert_der),
    ("envelope_header", envelope_header),
    ("seal_asn1", seal_asn1),
];

/// The QR text, as the broker and the reference phone read it. Property:
/// what the broker accepts names a valid session id.
pub fn qr_text(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = bzt_phone::qr::QrText::parse(&text);
    if let Ok((id, _secret)) = bzt::broker::parse_qr_text(&text) {
        assert!(
            bzt_core::SessionId::parse(id.as_str()).is_some(),
            "the broker accepted a QR text naming an invalid id"
        );
    }
}

/// `POST /v1/claim` bodies, read and checked as the endpoint does.
pub fn claim_body(data: &[u8]) {
    let _ = bzt::http::read_claim_body(data);
}

/// `POST /v1/sessions/<id>/complete` bodies, read as the endpoint does, and
/// the certificates they carry parsed as the broker then parses them.
pub fn complete_body(data: &[u8]) {
    if let Ok(bzt::http::PhoneAnswer::Approve(completion)) = bzt::http::read_complete_body(data) {
        certificates_of(&completion.certificate_pem);
        for pem in &completion.chain_pem {
            certificates_of(pem);
        }
        for pem in completion.recipients_pem.iter().flatten() {
            certificates_of(pem);
        }
    }
}

/// Certificate PEM text (a leaf, a chain element, a recipient).
pub fn pem_chain(data: &[u8]) {
    certificates_of(&String::from_utf8_lossy(data));
}

fn certificates_of(pem: &str) {
    if let Ok(cert) = bzt_core::pki::parse_pem(pem) {
        let _ = bzt_core::pki::verifying_key(&cert);
        let _ = bzt_envelope::Recipient::from_certificate(&cert);
    }
}

/// Certificate DER. Property: a certificate that decodes survives PEM
/// encoding and the broker's PEM reader unchanged.
pub fn cert_der(data: &[u8]) {
    use x509_cert::der::Decode;
    let Ok(cert) = x509_cert::Certificate::from_der(data) else {
        return;
    };
    let _ = bzt_core::pki::verifying_key(&cert);
    let pem = bzt_core::pki::to_pem(&cert);
    if !pem.is_empty() {
        let again = bzt_core::pki::parse_pem(&pem);
        assert!(
            again.as_ref().is_ok_and(|c| *c == cert),
            "a decoded certificate did not survive PEM: {again:?}"
        );
    }
}

/// The envelope (bid file) header, as the hall and the phone read it.
pub fn envelope_header(data: &[u8]) {
    if let Ok((header, raw)) = bzt_envelope::read_header(Cursor::new(data)) {
        let _ = bzt_envelope::header_digest(&raw);
        for r in header.recipients() {
            let _ = header.find_recipient(r.serial(), r.issuer());
        }
    }
}

/// GB/T 38540 seals and seal signatures (DER).
pub fn seal_asn1(data: &[u8]) {
    let _ = bzt_seal::Seal::from_der(data);
    let _ = bzt_seal::SealSignature::from_der(data);
}
