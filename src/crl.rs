//! Where the trust domains' CRLs come from (`crl_files`, `crl_urls`) and
//! when they are read again; what a CRL says and how it is checked is in
//! [`bzt_core::crl`].
//!
//! - At start every CRL file must load and verify, or the broker does not
//!   start (a damaged CRL is an operator's mistake to see at once). A URL
//!   that cannot be fetched is logged and retried at the next refresh.
//! - Every `crl_refresh_s` each source is read again. A refresh that fails
//!   (unreadable, bad signature, another issuer) keeps the last good CRL,
//!   logs an error and counts `bzt_crl_refresh_failures_total`.
//! - `bzt_crl_stale{domain,source}` is 1 while a source has no CRL or its
//!   CRL is past `nextUpdate` (updated whenever `/metrics` is read and on
//!   every refresh).

use crate::config::{Config, CrlStale};
use bzt_core::crl::{Crl, StalePolicy};
use bzt_core::pki::{TrustDomain, TrustStore};
use bzt_core::Timestamp;
use std::path::PathBuf;
use std::time::Duration;

/// Largest CRL accepted from a URL.
const MAX_CRL_BYTES: usize = 16 * 1024 * 1024;

#[derive(Clone, Debug)]
enum Source {
    File(PathBuf),
    Url(String),
}

impl Source {
    fn name(&self) -> String {
        match self {
            Source::File(p) => p.display().to_string(),
            Source::Url(u) => u.clone(),
        }
    }
}

/// The CRL sources of one trust domain.
#[derive(Clone, Debug)]
pub struct DomainSources {
    domain: String,
    sources: Vec<Source>,
    every: Duration,
}

/// Reads every domain's CRLs into `trust` (see the module doc for what
/// stops the start); answers the sources to refresh.
pub async fn load_at_start(
    config: &Config,
    trust: &TrustStore,
) -> anyhow::Result<Vec<DomainSources>> {
    let mut all = Vec::new();
    for d in &config.trust_domains {
        let sources: Vec<Source> = d
            .crl_files
            .iter()
            .cloned()
            .map(Source::File)
            .chain(d.crl_urls.iter().cloned().map(Source::Url))
            .collect();
        if sources.is_empty() {
            continue;
        }
        let policy = match d.crl_stale {
            CrlStale::Warn => StalePolicy::Warn,
            CrlStale::Refuse => StalePolicy::Refuse,
        };
        let names: Vec<String> = sources.iter().map(Source::name).collect();
        trust.crls().configure(&d.name, policy, &names);
        let domain = trust
            .domains()
            .iter()
            .find(|t| t.name == d.name)
            .ok_or_else(|| anyhow::anyhow!("trust domain {} is not loaded", d.name))?;
        for source in &sources {
            match load(source, domain).await {
                Ok(crl) => install(trust, &d.name, source, crl),
                Err(e) if matches!(source, Source::File(_)) => {
                    anyhow::bail!("trust domain {}: {e}", d.name)
                }
                Err(e) => {
                    tracing::error!(domain = %d.name, source = %source.name(), error = %e, "CRL not loaded; retried at the next refresh")
                }
            }
        }
        all.push(DomainSources {
            domain: d.name.clone(),
            sources,
            every: d.crl_refresh(),
        });
    }
    Ok(all)
}

fn install(trust: &TrustStore, domain: &str, source: &Source, crl: Crl) {
    tracing::info!(
        %domain,
        source = %source.name(),
        issuer = %crl.issuer,
        revoked = crl.len(),
        next_update = ?crl.next_update.map(|t| t.to_string()),
        "CRL loaded"
    );
    trust.crls().install(domain, &source.name(), crl);
}

async fn load(source: &Source, domain: &TrustDomain) -> Result<Crl, String> {
    let bytes = match source {
        Source::File(p) => tokio::fs::read(p)
            .await
            .map_err(|e| format!("cannot read CRL {}: {e}", p.display()))?,
        Source::Url(u) => fetch(u).await?,
    };
    Crl::parse_and_verify(&bytes, domain).map_err(|e| format!("{}: {}", source.name(), e.message))
}

async fn fetch(url: &str) -> Result<Vec<u8>, String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("cannot fetch CRL {url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("cannot fetch CRL {url}: HTTP {}", resp.status()));
    }
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_CRL_BYTES as u64)
    {
        return Err(format!("CRL {url} is larger than {MAX_CRL_BYTES} bytes"));
    }
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("cannot fetch CRL {url}: {e}"))?;
    if body.len() > MAX_CRL_BYTES {
        return Err(format!("CRL {url} is larger than {MAX_CRL_BYTES} bytes"));
    }
    Ok(body.to_vec())
}

/// Reloads one domain's sources every `every`, forever.
pub async fn refresh_forever(
    broker: std::sync::Arc<crate::broker::Broker>,
    sources: DomainSources,
) {
    let mut tick = tokio::time::interval(sources.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is now: loaded at start already
    loop {
        tick.tick().await;
        refresh_once(broker.trust(), &sources).await;
        record_metrics(broker.trust(), broker.now(), true);
    }
}

/// Reloads each source once; a failure keeps the last good CRL.
pub async fn refresh_once(trust: &TrustStore, sources: &DomainSources) {
    let Some(domain) = trust.domains().iter().find(|t| t.name == sources.domain) else {
        return;
    };
    for source in &sources.sources {
        match load(source, domain).await {
            Ok(crl) => install(trust, &sources.domain, source, crl),
            Err(e) => {
                metrics::counter!("bzt_crl_refresh_failures_total", "domain" => sources.domain.clone())
                    .increment(1);
                tracing::error!(domain = %sources.domain, source = %source.name(), error = %e, "CRL refresh failed; keeping the last good CRL");
            }
        }
    }
}

/// Sets `bzt_crl_stale` (and `bzt_crl_next_update_seconds`) for every source.
pub fn record_metrics(trust: &TrustStore, now: Timestamp, log: bool) {
    for s in trust.crls().status(now) {
        let labels = [("domain", s.domain.clone()), ("source", s.source.clone())];
        metrics::gauge!("bzt_crl_stale", &labels).set(if s.stale { 1.0 } else { 0.0 });
        if let Some(next) = s.crl.as_ref().and_then(|c| c.next_update) {
            metrics::gauge!("bzt_crl_next_update_seconds", &labels)
                .set(next.unix_millis() as f64 / 1000.0);
        }
        if s.stale && log {
            tracing::warn!(domain = %s.domain, source = %s.source, "CRL is stale (past nextUpdate, or never loaded)");
        }
    }
}
