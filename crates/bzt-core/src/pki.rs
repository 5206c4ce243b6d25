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
//!
//! A presented chain is attacker-controlled input, and every edge tried costs
//! an SM2 verification, so the search is bounded on every axis (issue 13):
//! at most [`MAX_PRESENTED_CHAIN`] certificates are accepted, duplicates (and
//! copies of the leaf) are dropped before anything else, a certificate never
//! appears twice in a path, at most [`MAX_ISSUER_CANDIDATES`] intermediates
//! are tried as the issuer of one certificate, each edge is verified at most
//! once per chain, and a [`SignatureBudget`] caps the verifications of one
//! chain and of one whole completion. Running out of budget is an
//! `untrusted_certificate` refusal, never cached.

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
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages};
use x509_cert::Certificate;

/// SM2-with-SM3 signature algorithm.
pub use bzt_crypto::sm2sig::OID_SM2_WITH_SM3;
/// The standard SM2 distinguishing ID (GM/T 0009), kept under its old name
/// for callers of this module; the one constant lives in `bzt-crypto`.
pub use bzt_crypto::SM2_DISTID as DEFAULT_DIST_ID;
/// Certificates in a path, leaf and root included.
pub const MAX_CHAIN_DEPTH: usize = 5;
/// Entries of `chain_pem` accepted at all: a real path needs at most
/// `MAX_CHAIN_DEPTH - 2` intermediates; the rest is room for cross-certificates.
pub const MAX_PRESENTED_CHAIN: usize = 8;
/// Intermediates tried as the issuer of one certificate (same issuer name):
/// one per cross-certification is plenty.
pub const MAX_ISSUER_CANDIDATES: usize = 4;
/// SM2 verifications one presented chain may cost, over all trust domains.
pub const SIGNATURE_CHECKS_PER_CHAIN: u32 = 16;
/// What each certificate beyond the first adds to a completion's budget (a
/// full-depth path, uncached, plus the signature it carries).
pub const SIGNATURE_CHECKS_PER_EXTRA_CERTIFICATE: u32 = MAX_CHAIN_DEPTH as u32 + 1;
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

    /// Keys of the roots whose subject is `name_der` (a CRL's issuer).
    pub fn anchor_keys_for(&self, name_der: &[u8]) -> Vec<&KeptKey> {
        self.anchors
            .iter()
            .filter(|a| a.subject_der == name_der)
            .map(|a| &a.key)
            .collect()
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
    /// The leaf's keyUsage bits, if it has the extension.
    usage: Option<KeyUsage>,
}

/// A certificate that passed every check for one use.
#[derive(Clone, Debug)]
pub struct CheckedCertificate {
    pub info: CertificateInfo,
    /// The leaf's key, shared with the cache: verify signatures with this.
    pub key: Arc<KeptKey>,
}

/// What the leaf's key is about to be used for; checked against its
/// keyUsage extension where the certificate has one (RFC 5280 §4.2.1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyUse {
    /// Sign a challenge or the RP's bytes (every kind's signer): needs
    /// digitalSignature.
    Sign,
    /// Receive a bid file's content key (`encrypt` recipients): needs
    /// keyEncipherment or dataEncipherment.
    Encrypt,
}

/// What a check needs to know about the moment and the session.
pub struct CheckContext<'a> {
    pub usage: KeyUse,
    pub now: Timestamp,
    pub accept: &'a [String],
    pub expect: Option<&'a ExpectCert>,
    /// Is this (normalised) serial revoked?
    pub is_revoked: &'a dyn Fn(&str) -> bool,
}

/// How many SM2 verifications a piece of work (one completion) may still
/// cost. Shared by every chain checked for that work, so fifty hostile
/// recipients cannot each spend a fresh allowance.
#[derive(Debug)]
pub struct SignatureBudget {
    remaining: u32,
    limit: u32,
}

impl SignatureBudget {
    pub fn new(limit: u32) -> Self {
        Self {
            remaining: limit,
            limit,
        }
    }

    /// The budget of a completion that presents `certificates` leaf
    /// certificates (the signer plus any recipients).
    pub fn for_certificates(certificates: usize) -> Self {
        let extra = u32::try_from(certificates.saturating_sub(1)).unwrap_or(u32::MAX);
        Self::new(
            SIGNATURE_CHECKS_PER_CHAIN
                .saturating_add(extra.saturating_mul(SIGNATURE_CHECKS_PER_EXTRA_CERTIFICATE)),
        )
    }

    /// Verifications spent so far.
    pub fn spent(&self) -> u32 {
        self.limit - self.remaining
    }

    fn take(&mut self) -> bool {
        if self.remaining == 0 {
            return false;
        }
        self.remaining -= 1;
        true
    }
}

/// A presented chain whose signatures were checked: the time-independent
/// part of a certificate check, to be completed for one use by
/// [`VerifiedChain::check_use`]. Cheap to clone (shared with the cache).
#[derive(Clone)]
pub struct VerifiedChain(Arc<ChainCheck>, Arc<crate::crl::CrlSet>);

impl VerifiedChain {
    /// The leaf's key, to verify what it signed.
    pub fn key(&self) -> &Arc<KeptKey> {
        &self.0.key
    }

    /// The per-use checks: an accepted domain, validity at `now`,
    /// revocation, `expect_cert`. No signature verification: cheap.
    pub fn check_use(&self, ctx: &CheckContext<'_>) -> Result<CheckedCertificate, DomainError> {
        let checked = check_use(&self.0, ctx)?;
        // CRLs (crate::crl) of the path to the domain it was accepted in:
        // each certificate's issuer is the next one's subject.
        let domain = checked.info.domain.as_str();
        if let Some((_, entries)) = self.0.paths.iter().find(|(d, _)| d == domain) {
            let links: Vec<(&str, &str)> = entries
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let issuer = entries.get(i + 1).unwrap_or(e);
                    (e.serial.as_str(), issuer.subject.as_str())
                })
                .collect();
            self.1.check(domain, &links, ctx.now)?;
        }
        Ok(checked)
    }
}

/// All configured trust domains plus the chain-check cache.
pub struct TrustStore {
    domains: Vec<TrustDomain>,
    cache: quick_cache::sync::Cache<[u8; 32], Arc<ChainCheck>>,
    /// The domains' CRLs, checked on every use (not cached: they change).
    crls: Arc<crate::crl::CrlSet>,
}

impl TrustStore {
    pub fn new(domains: Vec<TrustDomain>) -> Self {
        Self {
            domains,
            cache: quick_cache::sync::Cache::new(CACHE_ENTRIES),
            crls: Arc::default(),
        }
    }

    /// The CRLs the broker loads and refreshes (see [`crate::crl`]).
    pub fn crls(&self) -> &crate::crl::CrlSet {
        &self.crls
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
        let mut budget = SignatureBudget::new(SIGNATURE_CHECKS_PER_CHAIN);
        self.verify_chain(leaf_pem, chain_pems, &mut budget)?
            .check_use(ctx)
    }

    /// The expensive, time-independent part of [`TrustStore::check`]: parse
    /// the presented certificates and find their paths to every domain's
    /// roots, spending at most `budget` (and [`SIGNATURE_CHECKS_PER_CHAIN`])
    /// SM2 verifications. Served from the cache when this exact chain was
    /// checked before. A chain too long, or too costly to search, is
    /// `untrusted_certificate`.
    pub fn verify_chain(
        &self,
        leaf_pem: &str,
        chain_pems: &[String],
        budget: &mut SignatureBudget,
    ) -> Result<VerifiedChain, DomainError> {
        self.chain_check(leaf_pem, chain_pems, budget)
            .map(|c| VerifiedChain(c, self.crls.clone()))
    }

    /// [`TrustStore::verify_chain`] only when it is a cache hit: this exact
    /// chain was verified before, so the answer costs base64 decoding and
    /// one hash, no SM2 verification. `None` for a chain never seen (or not
    /// decodable: the full check says why), which needs the costly path.
    pub fn cached_chain(&self, leaf_pem: &str, chain_pems: &[String]) -> Option<VerifiedChain> {
        let presented = Presented::decode(leaf_pem, chain_pems).ok()?;
        self.cache
            .get(&presented.fingerprint)
            .map(|c| VerifiedChain(c, self.crls.clone()))
    }
}

/// The per-use checks of a verified chain, in the protocol's order.
fn check_use(
    chain: &ChainCheck,
    ctx: &CheckContext<'_>,
) -> Result<CheckedCertificate, DomainError> {
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

    check_key_usage(chain.usage, ctx.usage)?;

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

impl TrustStore {
    /// The leaf's paths, from the cache when possible. The cache key is the
    /// SHA-256 of the presented DER bytes (duplicates removed), so a hit
    /// costs base64 decoding and one hash: no X.509 parsing, no chain
    /// signatures.
    fn chain_check(
        &self,
        leaf_pem: &str,
        chain_pems: &[String],
        budget: &mut SignatureBudget,
    ) -> Result<Arc<ChainCheck>, DomainError> {
        let presented = Presented::decode(leaf_pem, chain_pems)?;
        if let Some(hit) = self.cache.get(&presented.fingerprint) {
            return Ok(hit);
        }
        let Presented {
            leaf_der,
            chain_ders,
            fingerprint,
        } = presented;

        let leaf = parse_der(&leaf_der)?;
        let mut intermediates = Vec::with_capacity(chain_ders.len());
        for (i, der) in chain_ders.iter().enumerate() {
            intermediates.push(
                parse_der(der)
                    .map_err(|e| DomainError::invalid(format!("chain_pem[{i}]: {}", e.message)))?,
            );
        }
        let key = Arc::new(verifying_key(&leaf)?);
        let mut search = PathSearch::new(&leaf, &intermediates, budget);
        let mut paths = Vec::new();
        for (d, domain) in self.domains.iter().enumerate() {
            if let Some(path) = search.find(d, &domain.anchors)? {
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
        let usage = match leaf.tbs_certificate().get_extension::<KeyUsage>() {
            Ok(found) => found.map(|(_, usage)| usage),
            Err(e) => {
                return Err(DomainError::untrusted(format!(
                    "certificate keyUsage extension does not parse: {e}"
                )))
            }
        };
        let check = Arc::new(ChainCheck {
            paths,
            leaf: info,
            key,
            usage,
        });
        self.cache.insert(fingerprint, check.clone());
        Ok(check)
    }
}

/// A presented chain decoded to DER, copies dropped, with the cache key:
/// the SHA-256 of each certificate's length and bytes, leaf first.
struct Presented {
    leaf_der: Vec<u8>,
    chain_ders: Vec<Vec<u8>>,
    fingerprint: [u8; 32],
}

impl Presented {
    fn decode(leaf_pem: &str, chain_pems: &[String]) -> Result<Self, DomainError> {
        if chain_pems.len() > MAX_PRESENTED_CHAIN {
            return Err(DomainError::untrusted(format!(
                "chain_pem holds {} certificates; at most {MAX_PRESENTED_CHAIN} are accepted: \
                 send only the intermediate CAs between your certificate and its root",
                chain_pems.len()
            )));
        }
        let leaf_der = pem_to_der(leaf_pem)?;
        let mut chain_ders: Vec<Vec<u8>> = Vec::with_capacity(chain_pems.len());
        for (i, pem) in chain_pems.iter().enumerate() {
            let der = pem_to_der(pem)
                .map_err(|e| DomainError::invalid(format!("chain_pem[{i}]: {}", e.message)))?;
            // Copies add nothing to a path and multiply the search.
            if der != leaf_der && !chain_ders.contains(&der) {
                chain_ders.push(der);
            }
        }
        let mut fp = Sha256::new();
        for der in std::iter::once(&leaf_der).chain(chain_ders.iter()) {
            fp.update((der.len() as u64).to_be_bytes());
            fp.update(der);
        }
        Ok(Self {
            leaf_der,
            chain_ders,
            fingerprint: fp.finalize().into(),
        })
    }
}

/// The leaf's keyUsage, where present, must allow `wanted`.
fn check_key_usage(usage: Option<KeyUsage>, wanted: KeyUse) -> Result<(), DomainError> {
    let Some(usage) = usage else {
        return Ok(());
    };
    let has = |bit: KeyUsages| usage.0.contains(bit);
    let allowed = match wanted {
        KeyUse::Sign => has(KeyUsages::DigitalSignature),
        KeyUse::Encrypt => has(KeyUsages::KeyEncipherment) || has(KeyUsages::DataEncipherment),
    };
    if allowed {
        return Ok(());
    }
    let names = [
        (KeyUsages::DigitalSignature, "digitalSignature"),
        (KeyUsages::NonRepudiation, "nonRepudiation"),
        (KeyUsages::KeyEncipherment, "keyEncipherment"),
        (KeyUsages::DataEncipherment, "dataEncipherment"),
        (KeyUsages::KeyAgreement, "keyAgreement"),
        (KeyUsages::KeyCertSign, "keyCertSign"),
        (KeyUsages::CRLSign, "cRLSign"),
        (KeyUsages::EncipherOnly, "encipherOnly"),
        (KeyUsages::DecipherOnly, "decipherOnly"),
    ];
    let present: Vec<&str> = names
        .iter()
        .filter(|(bit, _)| has(*bit))
        .map(|(_, name)| *name)
        .collect();
    let present = if present.is_empty() {
        "none".to_string()
    } else {
        present.join(", ")
    };
    Err(DomainError::untrusted(match wanted {
        KeyUse::Sign => format!(
            "certificate key usage lacks digitalSignature (it allows: {present}), so it cannot sign or log in"
        ),
        KeyUse::Encrypt => format!(
            "certificate key usage has neither keyEncipherment nor dataEncipherment (it allows: {present}), \
             so it cannot be a recipient of an encrypted bid file"
        ),
    }))
}

/// A certificate of the presented chain: the leaf or an intermediate (index
/// into the de-duplicated intermediates).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Node {
    Leaf,
    Intermediate(usize),
}

/// A possible issuer of a node: a root of a domain, or an intermediate.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum IssuerRef {
    Anchor { domain: usize, index: usize },
    Intermediate(usize),
}

/// Why a search stopped before it was done.
fn over_budget(intermediates: usize, spent: u32) -> DomainError {
    DomainError::untrusted(format!(
        "no path to a trusted root was found within {spent} signature checks through the \
         {intermediates} distinct certificates of chain_pem: send only the intermediate CAs \
         between your certificate and its root"
    ))
}

/// Depth-first search from the leaf to an anchor through the intermediates,
/// bounded as the module documentation says. One search serves every domain
/// of one chain: edges verified for one domain are remembered for the next.
struct PathSearch<'a> {
    leaf: &'a Certificate,
    intermediates: &'a [Certificate],
    /// Each intermediate's DER subject, and its key if it may issue (a CA
    /// with an SM2 key); `None` for those that cannot be an issuer.
    issuers: Vec<(Vec<u8>, Option<KeptKey>)>,
    /// Each edge's verification outcome, so no edge is verified twice.
    verified: std::collections::HashMap<(Node, IssuerRef), bool>,
    /// Verifications left for this chain.
    chain_left: u32,
    budget: &'a mut SignatureBudget,
}

impl<'a> PathSearch<'a> {
    fn new(
        leaf: &'a Certificate,
        intermediates: &'a [Certificate],
        budget: &'a mut SignatureBudget,
    ) -> Self {
        let issuers = intermediates
            .iter()
            .map(|ca| {
                let subject = ca.tbs_certificate().subject().to_der().unwrap_or_default();
                let key = if is_ca(ca) {
                    verifying_key(ca).ok()
                } else {
                    None
                };
                (subject, key)
            })
            .collect();
        Self {
            leaf,
            intermediates,
            issuers,
            verified: std::collections::HashMap::new(),
            chain_left: SIGNATURE_CHECKS_PER_CHAIN,
            budget,
        }
    }

    fn cert(&self, node: Node) -> &'a Certificate {
        match node {
            Node::Leaf => self.leaf,
            Node::Intermediate(i) => &self.intermediates[i],
        }
    }

    /// The path (leaf first, root last) to a root of `anchors`, if any.
    fn find(
        &mut self,
        domain: usize,
        anchors: &[Anchor],
    ) -> Result<Option<Vec<PathEntry>>, DomainError> {
        let mut path = vec![Node::Leaf];
        let Some(root) = self.walk(domain, anchors, &mut path)? else {
            return Ok(None);
        };
        let mut entries: Vec<PathEntry> = path.iter().map(|n| path_entry(self.cert(*n))).collect();
        entries.push(path_entry(&anchors[root].cert));
        Ok(Some(entries))
    }

    /// Extends `path` (whose last node is the certificate to find an issuer
    /// for) to an anchor; returns the anchor's index.
    fn walk(
        &mut self,
        domain: usize,
        anchors: &[Anchor],
        path: &mut Vec<Node>,
    ) -> Result<Option<usize>, DomainError> {
        let Some(&node) = path.last() else {
            return Ok(None);
        };
        let issuer_der = self
            .cert(node)
            .tbs_certificate()
            .issuer()
            .to_der()
            .unwrap_or_default();
        for (index, anchor) in anchors.iter().enumerate() {
            if anchor.subject_der == issuer_der
                && self.edge(node, IssuerRef::Anchor { domain, index }, &anchor.key)?
            {
                return Ok(Some(index));
            }
        }
        // The root ends the path: with it, the path may hold MAX_CHAIN_DEPTH.
        if path.len() + 1 >= MAX_CHAIN_DEPTH {
            return Ok(None);
        }
        let candidates: Vec<usize> = (0..self.issuers.len())
            .filter(|&i| {
                self.issuers[i].0 == issuer_der
                    && self.issuers[i].1.is_some()
                    && !path.contains(&Node::Intermediate(i))
            })
            .take(MAX_ISSUER_CANDIDATES)
            .collect();
        for i in candidates {
            let Some(key) = self.issuers[i].1.clone() else {
                continue;
            };
            if self.edge(node, IssuerRef::Intermediate(i), &key)? {
                path.push(Node::Intermediate(i));
                if let Some(root) = self.walk(domain, anchors, path)? {
                    return Ok(Some(root));
                }
                path.pop();
            }
        }
        Ok(None)
    }

    /// Did `issuer` (whose key is `key`) sign `node`? Verified once, within budget.
    fn edge(&mut self, node: Node, issuer: IssuerRef, key: &KeptKey) -> Result<bool, DomainError> {
        if let Some(&known) = self.verified.get(&(node, issuer)) {
            return Ok(known);
        }
        if self.chain_left == 0 || !self.budget.take() {
            let spent = SIGNATURE_CHECKS_PER_CHAIN - self.chain_left;
            return Err(over_budget(self.intermediates.len(), spent));
        }
        self.chain_left -= 1;
        let signed = signed_by(self.cert(node), key);
        self.verified.insert((node, issuer), signed);
        Ok(signed)
    }
}

fn path_entry(cert: &Certificate) -> PathEntry {
    let (not_before, not_after) = validity(cert);
    PathEntry {
        serial: serial_hex(cert),
        subject: subject_string(cert),
        not_before,
        not_after,
    }
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
            usage: KeyUse::Sign,
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

    /// A root, `depth` sub-CAs below it, and a leaf of the last: the chain a
    /// phone would present (nearest issuer first), and the leaf.
    fn path_of(root: &DevCa, depth: usize) -> (Vec<String>, bzt_devca::IssuedCert) {
        let mut cas: Vec<DevCa> = Vec::new();
        for level in 1..=depth {
            let parent = cas.last().unwrap_or(root);
            cas.push(
                parent
                    .issue_ca(&format!("Sub {level}"), "Org", "platform")
                    .unwrap(),
            );
        }
        let issuer = cas.last().unwrap_or(root);
        let leaf = issuer.issue(&LeafSpec::new("张三", "Org")).unwrap();
        let chain = cas
            .iter()
            .rev()
            .map(|ca| ca.cert_pem().to_owned())
            .collect();
        (chain, leaf)
    }

    #[test]
    fn paths_through_sub_cas_verify_each_edge_once_and_up_to_five_certificates() {
        let root = DevCa::generate("Root", "Org", "platform").unwrap();
        let trust = store(&[("platform", &root)]);
        let accept = vec!["platform".to_string()];
        let never = |_: &str| false;

        let (chain, leaf) = path_of(&root, 3);
        let mut budget = SignatureBudget::new(100);
        let verified = trust
            .verify_chain(&leaf.cert_pem, &chain, &mut budget)
            .unwrap();
        assert_eq!(budget.spent(), 4, "leaf → sub 3 → sub 2 → sub 1 → root");
        assert_eq!(
            verified
                .check_use(&ctx(&accept, &never))
                .unwrap()
                .info
                .domain,
            "platform"
        );

        // Copies and the leaf itself add nothing: same cache entry, no new work.
        let mut padded = chain.clone();
        padded.extend([chain[0].clone(), chain[2].clone(), leaf.cert_pem.clone()]);
        let mut budget = SignatureBudget::new(100);
        trust
            .verify_chain(&leaf.cert_pem, &padded, &mut budget)
            .unwrap();
        assert_eq!(budget.spent(), 0, "a cache hit");

        // Six certificates in the path: longer than followed.
        let (chain, leaf) = path_of(&root, 4);
        let e = trust
            .check(&leaf.cert_pem, &chain, &ctx(&accept, &never))
            .unwrap_err();
        assert_eq!(e.code, crate::ErrorCode::UntrustedCertificate);
    }

    #[test]
    fn copies_of_a_self_signed_ca_cost_a_few_verifications_not_n_to_the_depth() {
        let root = DevCa::generate("Root", "Org", "platform").unwrap();
        let evil = DevCa::generate("Evil", "Evil", "evil").unwrap();
        let trust = store(&[("platform", &root)]);
        let leaf = evil.issue(&LeafSpec::new("x", "Evil")).unwrap();
        let copies = vec![evil.cert_pem().to_owned(); MAX_PRESENTED_CHAIN];
        let mut budget = SignatureBudget::new(1000);
        let verified = trust
            .verify_chain(&leaf.cert_pem, &copies, &mut budget)
            .unwrap();
        // leaf ← evil, and evil ← evil is not followed (a path never repeats a certificate).
        assert_eq!(budget.spent(), 1);
        let accept = vec!["platform".to_string()];
        let never = |_: &str| false;
        let e = verified.check_use(&ctx(&accept, &never)).unwrap_err();
        assert!(
            e.message
                .contains("not a CA of any configured trust domain"),
            "{e}"
        );

        let too_many = vec![evil.cert_pem().to_owned(); MAX_PRESENTED_CHAIN + 1];
        let e = trust
            .verify_chain(&leaf.cert_pem, &too_many, &mut budget)
            .err()
            .unwrap();
        assert_eq!(e.code, crate::ErrorCode::UntrustedCertificate);
        assert!(e.message.contains("chain_pem holds 9 certificates"), "{e}");
    }

    #[test]
    fn a_search_over_budget_is_refused_and_not_cached() {
        let root = DevCa::generate("Root", "Org", "platform").unwrap();
        let trust = store(&[("platform", &root)]);
        let (chain, leaf) = path_of(&root, 2);
        let mut budget = SignatureBudget::new(2);
        let e = trust
            .verify_chain(&leaf.cert_pem, &chain, &mut budget)
            .err()
            .unwrap();
        assert_eq!(e.code, crate::ErrorCode::UntrustedCertificate);
        assert!(e.message.contains("within 2 signature checks"), "{e}");
        // The same chain within a budget that suffices: checked afresh, accepted.
        let mut budget = SignatureBudget::new(3);
        assert!(trust
            .verify_chain(&leaf.cert_pem, &chain, &mut budget)
            .is_ok());
        assert_eq!(budget.spent(), 3);
    }

    #[test]
    fn only_a_chain_verified_before_is_answered_from_the_cache() {
        let root = DevCa::generate("Root", "Org", "platform").unwrap();
        let trust = store(&[("platform", &root)]);
        let (chain, leaf) = path_of(&root, 1);
        assert!(
            trust.cached_chain(&leaf.cert_pem, &chain).is_none(),
            "never seen"
        );
        // Refused for its budget: not cached, so still not answered cheaply.
        assert!(trust
            .verify_chain(&leaf.cert_pem, &chain, &mut SignatureBudget::new(1))
            .is_err());
        assert!(trust.cached_chain(&leaf.cert_pem, &chain).is_none());

        let mut budget = SignatureBudget::new(SIGNATURE_CHECKS_PER_CHAIN);
        let verified = trust
            .verify_chain(&leaf.cert_pem, &chain, &mut budget)
            .unwrap();
        let cached = trust.cached_chain(&leaf.cert_pem, &chain).unwrap();
        assert!(Arc::ptr_eq(verified.key(), cached.key()));
        // The same leaf with another (or no) chain is another cache entry.
        assert!(trust.cached_chain(&leaf.cert_pem, &[]).is_none());
        assert!(trust.cached_chain("not a certificate", &chain).is_none());
        // The per-use checks still run on what the cache answers.
        let revoked = |s: &str| s == leaf.serial_hex;
        let accept = vec!["platform".to_string()];
        let e = cached.check_use(&ctx(&accept, &revoked)).err().unwrap();
        assert!(e.message.contains("revoked"), "{e}");
    }

    #[test]
    fn roots_named_like_the_trusted_one_are_tried_a_bounded_number_of_times() {
        let root = DevCa::generate("Root", "Org", "platform").unwrap();
        let trust = store(&[("platform", &root)]);
        let impostors: Vec<DevCa> = (0..MAX_PRESENTED_CHAIN)
            .map(|_| DevCa::generate("Root", "Org", "platform").unwrap())
            .collect();
        // The leaf comes from the last impostor, beyond the candidates tried.
        let leaf = impostors[MAX_PRESENTED_CHAIN - 1]
            .issue(&LeafSpec::new("x", "Org"))
            .unwrap();
        let chain: Vec<String> = impostors.iter().map(|c| c.cert_pem().to_owned()).collect();
        let mut budget = SignatureBudget::new(1000);
        let verified = trust
            .verify_chain(&leaf.cert_pem, &chain, &mut budget)
            .unwrap();
        assert_eq!(
            budget.spent() as usize,
            1 + MAX_ISSUER_CANDIDATES,
            "the root, then the candidates"
        );
        let accept = vec!["platform".to_string()];
        let never = |_: &str| false;
        assert!(verified.check_use(&ctx(&accept, &never)).is_err());
    }

    #[test]
    fn a_completion_budget_grows_with_its_certificates() {
        assert_eq!(
            SignatureBudget::for_certificates(1).remaining,
            SIGNATURE_CHECKS_PER_CHAIN
        );
        assert_eq!(
            SignatureBudget::for_certificates(51).remaining,
            SIGNATURE_CHECKS_PER_CHAIN + 50 * SIGNATURE_CHECKS_PER_EXTRA_CERTIFICATE
        );
    }

    #[test]
    fn key_usage_where_present_decides_what_a_leaf_may_do() {
        use x509_cert::ext::pkix::{KeyUsage, KeyUsages};
        let root = DevCa::generate("Root", "Org", "platform").unwrap();
        let trust = store(&[("platform", &root)]);
        let accept = vec!["platform".to_string()];
        let never = |_: &str| false;
        let leaf = |usage: KeyUsage| {
            root.issue(&LeafSpec::new("x", "Org").with_key_usage(usage))
                .unwrap()
        };
        let encipher_only = leaf(KeyUsage(KeyUsages::KeyEncipherment.into()));
        let sign_only = leaf(KeyUsage(KeyUsages::DigitalSignature.into()));
        let data_only = leaf(KeyUsage(KeyUsages::DataEncipherment.into()));
        let mut c = ctx(&accept, &never);

        let e = trust.check(&encipher_only.cert_pem, &[], &c).unwrap_err();
        assert_eq!(e.code, crate::ErrorCode::UntrustedCertificate);
        assert!(
            e.message
                .contains("lacks digitalSignature (it allows: keyEncipherment)"),
            "{e}"
        );
        assert!(trust.check(&sign_only.cert_pem, &[], &c).is_ok());

        c.usage = KeyUse::Encrypt;
        let e = trust.check(&sign_only.cert_pem, &[], &c).unwrap_err();
        assert!(
            e.message
                .contains("neither keyEncipherment nor dataEncipherment"),
            "{e}"
        );
        assert!(trust.check(&encipher_only.cert_pem, &[], &c).is_ok());
        assert!(trust.check(&data_only.cert_pem, &[], &c).is_ok());
    }
}
