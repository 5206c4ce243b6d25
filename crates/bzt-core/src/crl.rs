//! Certificate revocation lists (RFC 5280 §5) of a trust domain's CAs.
//!
//! A CRL counts only if its SM2-with-SM3 signature verifies with the key of
//! a root of its trust domain whose subject is the CRL's issuer. OpenSSL
//! 3.0 cannot verify SM2 CRL signatures (shared/INTEROP.md), and no crate
//! validates SM2 revocation, so the check is written here: the TBS DER of
//! `x509_cert::crl::CertificateList`, verified like a certificate's.
//!
//! [`CrlSet`] holds, per trust domain, the last good CRL of each configured
//! source. The per-use check ([`CrlSet::check`]) refuses a path any of whose
//! certificates is listed by the CRL of its issuer; a CRL past its
//! `nextUpdate` is *stale*: with [`StalePolicy::Refuse`] the paths it covers
//! (and, while a source has never loaded, every path of the domain) are
//! refused, with [`StalePolicy::Warn`] they pass and the broker raises a
//! metric ([`CrlSet::status`]).

use crate::error::DomainError;
use crate::pki::{name_string, normalize_serial, TrustDomain, OID_SM2_WITH_SM3};
use crate::time::Timestamp;
use der::{Decode, DecodePem, Encode};
use sm2::pkcs8::der;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use x509_cert::crl::CertificateList;

/// What a stale CRL (past `nextUpdate`) does to the certificates it covers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StalePolicy {
    /// Accept, and let the operator see a warning metric.
    #[default]
    Warn,
    /// Refuse: no fresh revocation information, no login.
    Refuse,
}

/// A CRL whose signature verified.
#[derive(Clone, Debug)]
pub struct Crl {
    /// The issuer, RFC 4514 (as [`crate::pki::name_string`] writes names).
    pub issuer: String,
    pub this_update: Timestamp,
    pub next_update: Option<Timestamp>,
    /// Normalised hex serials.
    revoked: HashSet<String>,
}

fn to_ts(t: &x509_cert::time::Time) -> Timestamp {
    Timestamp::from_unix_millis(t.to_unix_duration().as_millis() as i64)
}

impl Crl {
    /// Parses a CRL (PEM `X509 CRL` or DER) and checks its signature against
    /// the roots of `domain`. Every failure names what was wrong.
    pub fn parse_and_verify(bytes: &[u8], domain: &TrustDomain) -> Result<Self, DomainError> {
        let bad = |m: String| DomainError::invalid(format!("CRL: {m}"));
        let list: CertificateList = if bytes.starts_with(b"-----BEGIN") {
            CertificateList::from_pem(bytes).map_err(|e| bad(format!("not a PEM X509 CRL: {e}")))?
        } else {
            CertificateList::from_der(bytes).map_err(|e| bad(format!("not a DER CRL: {e}")))?
        };
        let tbs = &list.tbs_cert_list;
        let issuer = name_string(&tbs.issuer);
        if list.signature_algorithm.oid != OID_SM2_WITH_SM3
            || tbs.signature.oid != list.signature_algorithm.oid
        {
            return Err(bad(format!(
                "issuer \"{issuer}\": signature algorithm {} is not SM2-with-SM3",
                list.signature_algorithm.oid
            )));
        }
        let issuer_der = tbs
            .issuer
            .to_der()
            .map_err(|e| bad(format!("issuer name: {e}")))?;
        let tbs_der = tbs.to_der().map_err(|e| bad(format!("TBS: {e}")))?;
        let signature = list
            .signature
            .as_bytes()
            .ok_or_else(|| bad("signature is not a whole number of bytes".into()))?;
        let keys = domain.anchor_keys_for(&issuer_der);
        if keys.is_empty() {
            return Err(bad(format!(
                "issuer \"{issuer}\" is not a root of trust domain {}",
                domain.name
            )));
        }
        if !keys
            .iter()
            .any(|k| crate::pki::verify_signature(k, &tbs_der, signature).is_ok())
        {
            return Err(bad(format!(
                "the signature does not verify with the key of \"{issuer}\" (trust domain {}): \
                 the CRL is damaged or forged",
                domain.name
            )));
        }
        let revoked = tbs
            .revoked_certificates
            .iter()
            .flatten()
            .map(|r| {
                normalize_serial(&hex::encode(r.serial_number.as_bytes()))
                    .unwrap_or_else(|| "0".into())
            })
            .collect();
        Ok(Self {
            issuer,
            this_update: to_ts(&tbs.this_update),
            next_update: tbs.next_update.as_ref().map(to_ts),
            revoked,
        })
    }

    /// Past `nextUpdate` (a CRL without one never goes stale).
    pub fn is_stale(&self, now: Timestamp) -> bool {
        self.next_update.is_some_and(|n| now > n)
    }

    pub fn lists(&self, serial: &str) -> bool {
        self.revoked.contains(serial)
    }

    pub fn len(&self) -> usize {
        self.revoked.len()
    }

    pub fn is_empty(&self) -> bool {
        self.revoked.is_empty()
    }
}

/// One configured source's state, for metrics and logs.
#[derive(Clone, Debug)]
pub struct CrlStatus {
    pub domain: String,
    pub source: String,
    /// `None`: never loaded.
    pub crl: Option<Arc<Crl>>,
    pub stale: bool,
}

#[derive(Default)]
struct DomainCrls {
    policy: StalePolicy,
    /// Source name → its last good CRL.
    sources: Vec<(String, Option<Arc<Crl>>)>,
}

/// The CRLs of every trust domain (see the module doc).
#[derive(Default)]
pub struct CrlSet {
    domains: RwLock<HashMap<String, DomainCrls>>,
}

impl CrlSet {
    /// Declares the sources of `domain` (none loaded yet).
    pub fn configure(&self, domain: &str, policy: StalePolicy, sources: &[String]) {
        let d = DomainCrls {
            policy,
            sources: sources.iter().map(|s| (s.clone(), None)).collect(),
        };
        self.write().insert(domain.to_owned(), d);
    }

    /// Installs a verified CRL for a declared source, replacing the last one.
    pub fn install(&self, domain: &str, source: &str, crl: Crl) {
        if let Some(d) = self.write().get_mut(domain) {
            if let Some(slot) = d.sources.iter_mut().find(|(s, _)| s == source) {
                slot.1 = Some(Arc::new(crl));
            }
        }
    }

    /// Every source's state at `now`.
    pub fn status(&self, now: Timestamp) -> Vec<CrlStatus> {
        let domains = self.read();
        let mut out = Vec::new();
        for (domain, d) in domains.iter() {
            for (source, crl) in &d.sources {
                out.push(CrlStatus {
                    domain: domain.clone(),
                    source: source.clone(),
                    stale: crl.as_ref().is_none_or(|c| c.is_stale(now)),
                    crl: crl.clone(),
                });
            }
        }
        out
    }

    /// The per-use check of a path in `domain`: `links` are `(serial,
    /// issuer)` of each certificate, leaf first (a root is its own issuer).
    pub fn check(
        &self,
        domain: &str,
        links: &[(&str, &str)],
        now: Timestamp,
    ) -> Result<(), DomainError> {
        let domains = self.read();
        let Some(d) = domains.get(domain) else {
            return Ok(());
        };
        for (source, crl) in &d.sources {
            let Some(crl) = crl else {
                if d.policy == StalePolicy::Refuse {
                    return Err(DomainError::untrusted(format!(
                        "no CRL could be loaded yet from {source} (trust domain {domain}, \
                         crl_stale = \"refuse\")"
                    )));
                }
                continue;
            };
            for (i, (serial, issuer)) in links.iter().enumerate() {
                if *issuer != crl.issuer {
                    continue;
                }
                let which = if i == 0 {
                    "certificate".to_owned()
                } else {
                    "issuing CA".to_owned()
                };
                if crl.lists(serial) {
                    return Err(DomainError::untrusted(format!(
                        "{which} (serial {serial}) is revoked by the CRL of \"{issuer}\""
                    )));
                }
                if d.policy == StalePolicy::Refuse && crl.is_stale(now) {
                    return Err(DomainError::untrusted(format!(
                        "the CRL of \"{issuer}\" is stale (nextUpdate {} has passed) and \
                         trust domain {domain} refuses on a stale CRL",
                        crl.next_update.map(|t| t.to_string()).unwrap_or_default()
                    )));
                }
            }
        }
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, DomainCrls>> {
        self.domains.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, DomainCrls>> {
        self.domains.write().unwrap_or_else(|p| p.into_inner())
    }
}
