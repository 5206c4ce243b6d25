//! A development certificate authority for bzt: SM2 keys, SM2-with-SM3 certificates.
//!
//! The broker trusts certificates that chain to a configured root. For development, demos and
//! tests this crate plays the CA: it makes a self-signed root ([`DevCa::generate`]), keeps it on
//! disk across restarts ([`DevCa::save`], [`DevCa::load`], [`DevCa::load_or_generate`]), and issues
//! leaf certificates for phones ([`DevCa::issue`]), including expired or not-yet-valid ones for
//! negative tests. It is *not* a production CA: no CRL, no OCSP, no policy, key files on disk.
//!
//! Every signature is SM2 over SM3 with the distinguishing ID `1234567812345678`
//! ([`SM2_DISTID`]), DER-encoded, under the algorithm OID `1.2.156.10197.1.501`; the output
//! verifies with OpenSSL 3 (`openssl verify -vfyopt distid:1234567812345678 ...`).
//!
//! # Modules
//! - [`ca`]: the CA itself, the leaf profile ([`LeafSpec`]) and the issued material ([`IssuedCert`]).
//! - [`names`], [`sm2sig`], [`keyfile`], [`pem`]: subject names and serials, SM2 signing
//!   helpers, key files and PEM, which live in the workspace's crypto crate (`bzt-crypto`) and
//!   are re-exported here so the CA's users need not name two crates.
//!
//! # Choices written down here
//! - **USCC** goes into the subject as `organizationIdentifier` (OID 2.5.4.97, PrintableString),
//!   the X.520 attribute meant for organisation registration numbers; OpenSSL prints it as
//!   `organizationIdentifier = 9135...`. `serialNumber` (2.5.4.5) was not used because it names
//!   the *subject's* serial (a device or person), is easily confused with the certificate serial,
//!   and already means other things in Chinese CA profiles. The value is the bare 18-character
//!   code (no ETSI `NTRCN-` prefix), checked for charset and GB 32100-2015 check digit.
//! - **Serial numbers** of issued certificates are 16 random bytes with the top bit cleared and
//!   the next one set: always positive, always 32 hex digits, 126 random bits.
//! - **Serial text** ([`serial_hex`]) is lowercase hex of the integer without leading zeros or
//!   colons (the broker's wire form); zero is `"0"`.
//! - **Subject layout**: `C=CN, O=<org>, [OU=<trust domain>,] [organizationIdentifier=<USCC>,]
//!   CN=<cn>`; strings are UTF8String (Chinese names are fine), `C` and the USCC PrintableString.
//! - **Key identifiers**: SKI is the SHA-1 of the subjectPublicKey bits (RFC 5280 §4.2.1.2 method
//!   1); a leaf's AKI copies the CA certificate's SKI.
//! - **Key files**: see [`keyfile`] — standard PKCS#8 `ENCRYPTED PRIVATE KEY` with
//!   PBKDF2-HMAC-SHA256 and SM4-CBC, readable by OpenSSL.

pub mod ca;

pub use bzt_crypto::{keyfile, names, pem, sm2sig, Error, Result};

pub use ca::{DevCa, IssuedCert, LeafSpec, CA_CERT_FILE, CA_KEY_FILE};
pub use keyfile::{is_encrypted_key_pem, key_from_pem, key_to_encrypted_pem, key_to_pem};
pub use names::{serial_hex, subject, uscc_check_char, validate_uscc};
pub use pem::{pem_certificate, pem_certificates};
pub use sm2sig::{
    cert_public_key, cert_verifying_key, sign_der, signing_key, verify_cert_signature, verify_der,
    SM2_DISTID,
};

/// Re-exported so users need not pin matching versions themselves.
pub use sm2;
pub use x509_cert;
