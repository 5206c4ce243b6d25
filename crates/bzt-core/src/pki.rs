//! Certificates and SM2 signatures.
//!
//! A phone proves itself with an X.509 certificate whose key is SM2 and whose
//! chain ends at a root of one of the session's accepted trust domains
//! (several roots per domain: each CA of the platform, or of the national
//! mutual-recognition system). [`TrustStore::check`] does the whole check in
//! the order the protocol names and says which part failed.
//!
//! Chain signatures are the expensive part and do not change, so their
//! outcome is cached by the SHA-256 fingerprint of the presented
//! certificates, together with the leaf's verifying key and its `Z` value
//! ([`KeptKey`]). What can change between two uses of
//! the same certificate — the clock against the validity periods, the
//! revocation list, the session's accepted domains and `expect_cert` — is
//! checked on every call. A phone that signs often thus costs one SM2 verify
//! per completion.
//!
//! Path building here is deliberately small (issuer name match plus
//! signature, CA basic constraint on intermediates, depth ≤ 5): no crate in
//! the ecosystem validates SM2 chains, so this part is written by hand.

use crate::error::DomainError;
use crate::session::ExpectCert;
use crate::time::Timestamp;
pub use bzt_crypto::KeptKey;
use der::Encode;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sm2::dsa::{Signature, VerifyingKey};
use sm2::pkcs8::der;
use std::sync::Arc;
use x509_cert::ext::pkix::BasicConstraints;
use x509_cert::Certificate;

/// SM2-with-SM3 signature algorithm.
pub use bzt_crypto::sm2sig::OID_SM2_WITH_SM3;
/// The standard SM2 distinguishing ID (GM/T 0009), kept under its old name
/// for callers of this module; the one constant lives in `bzt-crypto`.
pub use bzt_crypto::SM2_DISTID as DEFAULT_DIST_ID;
const MAX_CHAIN_DEPTH: usize = 5;
const CACHE_ENTRIES: usize = 100_000;

/// A certificate as the protocol reports it (`result.certificate`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateInfo {
    pub pem: String,
    pub serial: String,
    pub subject: String,
    pub issuer: String,
    pub not_before: Timestamp,
    pub not_after: Timestamp,
    /// The trust domain it chained to.
    pub domain: String,
}

// Serials, names and SM3 text: one format each, shared with the phone, the
// envelope and the development CA.
pub use bzt_crypto::names::{
    issuer_string, name_string, normalize_serial, serial_hex, subject_string,
};
pub use bzt_crypto::sm3_hex;

/// Parses a PEM input holding exactly one CERTIFICATE block; text around it is
/// ignored (RFC 7468). Errors are `invalid_request` and say what was wrong.
pub fn parse_pem(pem: &str) -> Result<Certificate, DomainError> {
    parse_der(&pem_to_der(pem)?)
}

fn parse_der(der: &[u8]) -> Result<Certificate, DomainError> {
    bzt_crypto::pem::parse_certificate_der(der).map_err(|e| DomainError::invalid(crypto_message(e)))
}

/// The DER bytes of a PEM input holding exactly one CERTIFICATE block.
pub fn pem_to_der(pem: &str) -> Result<Vec<u8>, DomainError> {
    bzt_crypto::pem::certificate_der(pem).map_err(|e| DomainError::invalid(crypto_message(e)))
}

/// The message of a crypto error without its category prefix ("PEM: ",
/// "certificate: "): the error code already says what kind it is.
fn crypto_message(e: bzt_crypto::Error) -> String {
    match e {
        bzt_crypto::Error::Pem(m) | bzt_crypto::Error::Certificate(m) => m,
        other => other.to_string(),
    }
}

/// Canonical PEM of a certificate.
pub fn to_pem(cert: &Certificate) -> String {
    bzt_crypto::pem::certificate_pem(cert).unwrap_or_default()
}

/// The SM2 verifying key (default distinguishing ID) of a certificate.
pub fn verifying_key(cert: &Certificate) -> Result<KeptKey, DomainError> {
    let spki = cert.tbs_certificate().subject_public_key_info();
    let bits = spki.subject_public_key.as_bytes().ok_or_else(|| {
        DomainError::untrusted("certificate public key is not a whole number of bytes")
    })?;
    VerifyingKey::from_sec1_bytes(DEFAULT_DIST_ID, bits)
        .ok()
        .and_then(KeptKey::new)
        .ok_or_else(|| DomainError::untrusted("certificate public key is not an SM2 key"))
}

/// Verifies a DER SM2 signature (SM3, default ID) over `msg`.
pub fn verify_signature(key: &KeptKey, msg: &[u8], sig_der: &[u8]) -> Result<(), DomainError> {
    let sig = Signature::from_der(sig_der).map_err(|_| {
        DomainError::bad_signature("the signature is not a DER-encoded SM2 signature")
    })?;
    if bzt_crypto::sm2verify::verify(key, msg, &sig) {
        Ok(())
    } else {
        Err(DomainError::bad_signature(
            "the signature does not verify over this session's bytes with the certificate's key",
        ))
    }
}

fn validity(cert: &Certificate) -> (Timestamp, Timestamp) {
    let v = cert.tbs_certificate().validity();
    let to_ts = |t: &x509_cert::time::Time| {
        Timestamp::from_unix_millis(t.to_unix_duration().as_millis() as i64)
    };
    (to_ts(&v.not_before), to_ts(&v.not_after))
}

/// `issuer` signed `cert`: SM2-with-SM3 over its TBS bytes.
fn signed_by(cert: &Certificate, issuer_key: &KeptKey) -> bool {
    if cert.signature_algorithm().oid != OID_SM2_WITH_SM3 {
        return false;
    }
    let Ok(tbs) = cert.tbs_certificate().to_der() else {
        return false;
    };
    let Some(sig) = cert.signature().as_bytes() else {
        return false;
    };
    verify_signature(issuer_key, &tbs, sig).is_ok()
}

fn is_ca(cert: &Certificate) -> bool {
    matches!(
        cert.tbs_certificate().get_extension::<BasicConstraints>(),
        Ok(Some((_, bc))) if bc.ca
    )
}

/// A configured root CA.
struct Anchor {
    cert: Certificate,
    subject_der: Vec<u8>,
    key: KeptKey,
}

/// A named set of root CAs (`[[trust_domains]]`).
pub struct TrustDomain {
    pub name: String,
    anchors: Vec<Anchor>,
}

impl TrustDomain {
    /// Builds a domain from root certificates in PEM. Fails if a root does not
    /// parse or does not hold an SM2 key, naming which.
    pub fn from_pems(name: &str, pems: &[String]) -> Result<Self, DomainError> {
        let mut anchors = Vec::new();
        for (i, pem) in pems.iter().enumerate() {
            let cert = parse_pem(pem).map_err(|e| {
                DomainError::invalid(format!(
                    "trust domain {name}: root #{}: {}",
                    i + 1,
                    e.message
                ))
            })?;
            let key = verifying_key(&cert).map_err(|e| {
                DomainError::invalid(format!(
                    "trust domain {name}: root #{}: {}",
                    i + 1,
                    e.message
                ))
            })?;
            let subject_der = cert
                .tbs_certificate()
                .subject()
                .to_der()
                .unwrap_or_default();
            anchors.push(Anchor {
                cert,
                subject_der,
                key,
            });
        }
        Ok(Self {
            name: name.to_owned(),
            anchors,
        })
    }

    pub fn root_subjects(&self) -> Vec<String> {
        self.anchors
            .iter()
            .map(|a| subject_string(&a.cert))
            .collect()
    }
}

/// One certificate of a verified path, with what must be re-checked per use.
#[derive(Clone)]
struct PathEntry {
    serial: String,
    subject: String,
    not_before: Timestamp,
    not_after: Timestamp,
}

/// The cached, time-independent outcome of checking a presented chain.
struct ChainCheck {
    /// Each domain the leaf chains to, with the path (leaf first, root last).
    paths: Vec<(String, Vec<PathEntry>)>,
    /// What a result reports about the leaf, computed once (`domain` is
    /// filled in per use: it depends on the session's accepted domains).
    leaf: CertificateInfo,
    key: Arc<KeptKey>,
}

/// A certificate that passed every check for one use.
#[derive(Clone, Debug)]
pub struct CheckedCertificate {
    pub info: CertificateInfo,
    /// The leaf's key, shared with the cache: verify signatures with this.
    pub key: Arc<KeptKey>,
}

/// What a check needs to know about the moment and the session.
pub struct CheckContext<'a> {
    pub now: Timestamp,
    pub accept: &'a [String],
    pub expect: Option<&'a ExpectCert>,
    /// Is this (normalised) serial revoked?
    pub is_revoked: &'a dyn Fn(&str) -> bool,
}

/// All configured trust domains plus the chain-check cache.
pub struct TrustStore {
    domains: Vec<TrustDomain>,
    cache: quick_cache::sync::Cache<[u8; 32], Arc<ChainCheck>>,
}

impl TrustStore {
    pub fn new(domains: Vec<TrustDomain>) -> Self {
        Self {
            domains,
            cache: quick_cache::sync::Cache::new(CACHE_ENTRIES),
        }
    }

    pub fn domain_names(&self) -> Vec<String> {
        self.domains.iter().map(|d| d.name.clone()).collect()
    }

    pub fn domains(&self) -> &[TrustDomain] {
        &self.domains
    }

    /// Checks a presented certificate (and optional intermediates) for one
    /// use: chain to a root of an accepted domain, validity at `now`,
    /// revocation, `expect_cert`. Parse failures are `invalid_request` (they
    /// do not count as bad completions); trust failures are
    /// `untrusted_certificate` with a message that says which check failed.
    pub fn check(
        &self,
        leaf_pem: &str,
        chain_pems: &[String],
        ctx: &CheckContext<'_>,
    ) -> Result<CheckedCertificate, DomainError> {
        let chain = self.chain_check(leaf_pem, chain_pems)?;

        // Accepted domains, in the session's order of preference.
        let path = ctx
            .accept
            .iter()
            .find_map(|want| chain.paths.iter().find(|(d, _)| d == want))
            .ok_or_else(|| {
                let issuer = &chain.leaf.issuer;
                if chain.paths.is_empty() {
                    DomainError::untrusted(format!(
                        "certificate issuer \"{issuer}\" is not a CA of any configured trust domain \
                         (accepted here: {})",
                        ctx.accept.join(", ")
                    ))
                } else {
                    let found: Vec<&str> = chain.paths.iter().map(|(d, _)| d.as_str()).collect();
                    DomainError::untrusted(format!(
                        "certificate belongs to trust domain {} but this session accepts only {}",
                        found.join(", "),
                        ctx.accept.join(", ")
                    ))
                }
            })?;
        let (domain, entries) = path;

        for (i, e) in entries.iter().enumerate() {
            let which = if i == 0 {
                "certificate".to_string()
            } else {
                format!("issuing CA \"{}\"", e.subject)
            };
            if ctx.now < e.not_before {
                return Err(DomainError::untrusted(format!(
                    "{which} is not valid before {}",
                    e.not_before
                )));
            }
            if ctx.now > e.not_after {
                return Err(DomainError::untrusted(format!(
                    "{which} expired at {}",
                    e.not_after
                )));
            }
            if (ctx.is_revoked)(&e.serial) {
                return Err(DomainError::untrusted(format!(
                    "{which} (serial {}) has been revoked",
                    e.serial
                )));
            }
        }

        let (serial, issuer) = (&chain.leaf.serial, &chain.leaf.issuer);
        if let Some(expect) = ctx.expect {
            let issuer_ok = expect
                .issuer
                .as_ref()
                .is_none_or(|want| names_equal(want, issuer));
            if *serial != expect.serial || !issuer_ok {
                return Err(DomainError::untrusted(format!(
                    "this session expects certificate serial {}{}, but got serial {serial} issued by \"{issuer}\"",
                    expect.serial,
                    expect
                        .issuer
                        .as_ref()
                        .map(|i| format!(" issued by \"{i}\""))
                        .unwrap_or_default()
                )));
            }
        }

        Ok(CheckedCertificate {
            info: CertificateInfo {
                domain: domain.clone(),
                ..chain.leaf.clone()
            },
            key: chain.key.clone(),
        })
    }

    /// The leaf's paths, from the cache when possible. The cache key is the
    /// SHA-256 of the presented DER bytes, so a hit costs base64 decoding and
    /// one hash: no X.509 parsing, no chain signatures.
    fn chain_check(
        &self,
        leaf_pem: &str,
        chain_pems: &[String],
    ) -> Result<Arc<ChainCheck>, DomainError> {
        let leaf_der = pem_to_der(leaf_pem)?;
        let mut chain_ders = Vec::with_capacity(chain_pems.len());
        for (i, pem) in chain_pems.iter().enumerate() {
            chain_ders.push(
                pem_to_der(pem)
                    .map_err(|e| DomainError::invalid(format!("chain_pem[{i}]: {}", e.message)))?,
            );
        }
        let mut fp = Sha256::new();
        for der in std::iter::once(&leaf_der).chain(chain_ders.iter()) {
            fp.update((der.len() as u64).to_be_bytes());
            fp.update(der);
        }
        let fingerprint: [u8; 32] = fp.finalize().into();
        if let Some(hit) = self.cache.get(&fingerprint) {
            return Ok(hit);
        }

        let leaf = parse_der(&leaf_der)?;
        let mut intermediates = Vec::with_capacity(chain_ders.len());
        for (i, der) in chain_ders.iter().enumerate() {
            intermediates.push(
                parse_der(der)
                    .map_err(|e| DomainError::invalid(format!("chain_pem[{i}]: {}", e.message)))?,
            );
        }
        let key = Arc::new(verifying_key(&leaf)?);
        let mut paths = Vec::new();
        for domain in &self.domains {
            if let Some(path) = build_path(&leaf, &intermediates, &domain.anchors) {
                paths.push((domain.name.clone(), path));
            }
        }
        let (not_before, not_after) = validity(&leaf);
        let info = CertificateInfo {
            pem: to_pem(&leaf),
            serial: serial_hex(&leaf),
            subject: subject_string(&leaf),
            issuer: issuer_string(&leaf),
            not_before,
            not_after,
            domain: String::new(),
        };
        let check = Arc::new(ChainCheck {
            paths,
            leaf: info,
            key,
        });
        self.cache.insert(fingerprint, check.clone());
        Ok(check)
    }
}

/// Depth-first search from the leaf to an anchor through the intermediates.
fn build_path(
    leaf: &Certificate,
    intermediates: &[Certificate],
    anchors: &[Anchor],
) -> Option<Vec<PathEntry>> {
    fn entry(cert: &Certificate) -> PathEntry {
        let (not_before, not_after) = validity(cert);
        PathEntry {
            serial: serial_hex(cert),
            subject: subject_string(cert),
            not_before,
            not_after,
        }
    }
    fn walk(
        cert: &Certificate,
        intermediates: &[Certificate],
        anchors: &[Anchor],
        depth: usize,
        path: &mut Vec<PathEntry>,
    ) -> bool {
        if depth > MAX_CHAIN_DEPTH {
            return false;
        }
        let issuer_der = cert.tbs_certificate().issuer().to_der().unwrap_or_default();
        for anchor in anchors {
            if anchor.subject_der == issuer_der && signed_by(cert, &anchor.key) {
                path.push(entry(&anchor.cert));
                return true;
            }
        }
        for ca in intermediates {
            let subject = ca.tbs_certificate().subject().to_der().unwrap_or_default();
            if subject != issuer_der || !is_ca(ca) || std::ptr::eq(ca, cert) {
                continue;
            }
            let Ok(ca_key) = verifying_key(ca) else {
                continue;
            };
            if signed_by(cert, &ca_key) {
                path.push(entry(ca));
                if walk(ca, intermediates, anchors, depth + 1, path) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![entry(leaf)];
    walk(leaf, intermediates, anchors, 1, &mut path).then_some(path)
}

/// Compares two RFC 4514 strings leniently: case and spaces around `,`/`=`
/// differ between tools that print the same name.
pub fn names_equal(a: &str, b: &str) -> bool {
    fn norm(s: &str) -> String {
        s.split(',')
            .map(|rdn| {
                rdn.split('=')
                    .map(|p| p.trim().to_lowercase())
                    .collect::<Vec<_>>()
                    .join("=")
            })
            .collect::<Vec<_>>()
            .join(",")
    }
    norm(a) == norm(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_normalised() {
        assert_eq!(normalize_serial("00AB:CD").as_deref(), Some("abcd"));
        assert_eq!(normalize_serial("0000").as_deref(), Some("0"));
        assert_eq!(normalize_serial("xyz"), None);
        assert_eq!(normalize_serial(""), None);
    }

    #[test]
    fn pem_needs_exactly_one_block() {
        assert!(parse_pem("no pem here").is_err());
        let two = "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n".repeat(2);
        let e = parse_pem(&two).unwrap_err();
        assert!(e.message.contains("found 2"), "{e}");
        let garbage = "hello\n-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\nbye";
        let e = parse_pem(garbage).unwrap_err();
        assert!(e.message.contains("X.509"), "{e}");
    }

    #[test]
    fn names_compare_leniently() {
        assert!(names_equal("CN=Root CA,O=Demo", "cn = root ca, o=demo"));
        assert!(!names_equal("CN=Root CA,O=Demo", "CN=Other,O=Demo"));
    }
}

#[cfg(test)]
mod chain_tests {
    use super::*;
    use crate::session::ExpectCert;
    use bzt_devca::{DevCa, LeafSpec};

    fn store(cas: &[(&str, &DevCa)]) -> TrustStore {
        TrustStore::new(
            cas.iter()
                .map(|(name, ca)| {
                    TrustDomain::from_pems(name, &[ca.cert_pem().to_owned()]).unwrap()
                })
                .collect(),
        )
    }

    fn ctx<'a>(accept: &'a [String], revoked: &'a dyn Fn(&str) -> bool) -> CheckContext<'a> {
        CheckContext {
            now: Timestamp::now_utc(),
            accept,
            expect: None,
            is_revoked: revoked,
        }
    }

    #[test]
    fn checks_say_which_part_failed() {
        let platform = DevCa::generate("平台CA", "Org", "platform").unwrap();
        let national = DevCa::generate("互认CA", "Org", "national").unwrap();
        let stranger = DevCa::generate("Other CA", "Org", "platform").unwrap();
        let trust = store(&[("platform", &platform), ("national", &national)]);
        let both = vec!["platform".to_string(), "national".to_string()];
        let never = |_: &str| false;

        let leaf = platform
            .issue(&LeafSpec::new("张三", "示例建设有限公司").with_uscc("91350100M000100Y43"))
            .unwrap();
        let ok = trust
            .check(&leaf.cert_pem, &[], &ctx(&both, &never))
            .unwrap();
        assert_eq!(ok.info.domain, "platform");
        assert_eq!(ok.info.serial, leaf.serial_hex);
        assert!(
            ok.info
                .subject
                .contains("organizationIdentifier=91350100M000100Y43"),
            "{}",
            ok.info.subject
        );
        assert!(
            ok.info.subject.starts_with("CN=张三"),
            "{}",
            ok.info.subject
        );

        let only_national = vec!["national".to_string()];
        let e = trust
            .check(&leaf.cert_pem, &[], &ctx(&only_national, &never))
            .unwrap_err();
        assert!(e.message.contains("accepts only national"), "{e}");

        let foreign = stranger.issue(&LeafSpec::new("李四", "Org")).unwrap();
        let e = trust
            .check(&foreign.cert_pem, &[], &ctx(&both, &never))
            .unwrap_err();
        assert_eq!(e.code, crate::ErrorCode::UntrustedCertificate);
        assert!(
            e.message
                .contains("not a CA of any configured trust domain"),
            "{e}"
        );

        let now = time::OffsetDateTime::now_utc();
        let old = platform
            .issue(&LeafSpec::new("王五", "Org").with_validity(
                now - time::Duration::days(30),
                now - time::Duration::days(1),
            ))
            .unwrap();
        let e = trust
            .check(&old.cert_pem, &[], &ctx(&both, &never))
            .unwrap_err();
        assert!(e.message.contains("expired at"), "{e}");

        let serial = leaf.serial_hex.clone();
        let revoked = move |s: &str| s == serial;
        let e = trust
            .check(&leaf.cert_pem, &[], &ctx(&both, &revoked))
            .unwrap_err();
        assert!(e.message.contains("revoked"), "{e}");

        let expect = ExpectCert {
            serial: "abc".into(),
            issuer: None,
        };
        let mut c = ctx(&both, &never);
        c.expect = Some(&expect);
        let e = trust.check(&leaf.cert_pem, &[], &c).unwrap_err();
        assert!(e.message.contains("expects certificate serial abc"), "{e}");
        let right = ExpectCert {
            serial: leaf.serial_hex.clone(),
            issuer: Some(issuer_string(&parse_pem(&leaf.cert_pem).unwrap()).to_lowercase()),
        };
        c.expect = Some(&right);
        assert!(trust.check(&leaf.cert_pem, &[], &c).is_ok());
    }

    #[test]
    fn signatures_verify_with_the_cached_key_only_over_their_bytes() {
        use sm2::dsa::signature::Signer;
        let ca = DevCa::generate("CA", "Org", "platform").unwrap();
        let trust = store(&[("platform", &ca)]);
        let leaf = ca.issue(&LeafSpec::new("张三", "Org")).unwrap();
        let never = |_: &str| false;
        let accept = vec!["platform".to_string()];
        let first = trust
            .check(&leaf.cert_pem, &[], &ctx(&accept, &never))
            .unwrap();
        let second = trust
            .check(&leaf.cert_pem, &[], &ctx(&accept, &never))
            .unwrap();
        assert!(
            Arc::ptr_eq(&first.key, &second.key),
            "the chain check is cached"
        );

        let secret = bzt_devca::key_from_pem(&leaf.key_pem, None).unwrap();
        let signer = sm2::dsa::SigningKey::new(DEFAULT_DIST_ID, &secret).unwrap();
        let sig: sm2::dsa::Signature = signer.sign(b"tbs");
        let der = sig.to_der();
        assert!(verify_signature(&first.key, b"tbs", der.as_bytes()).is_ok());
        let e = verify_signature(&first.key, b"other", der.as_bytes()).unwrap_err();
        assert_eq!(e.code, crate::ErrorCode::BadSignature);
        let e = verify_signature(&first.key, b"tbs", b"\x30\x00").unwrap_err();
        assert!(e.message.contains("DER"), "{e}");
    }
}
