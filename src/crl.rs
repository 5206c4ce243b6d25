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

/// How long one CRL download may take, connection and body included.
const FETCH_TIME_LIMIT: Duration = Duration::from_secs(10);
/// Redirects followed per download.
const MAX_REDIRECTS: usize = 3;

/// Downloads a CRL. The URL is the operator's (configuration, never a
/// certificate's distribution point), so addresses are not filtered (see
/// docs/security.md, "CRL downloads"); what the server may steer is bounded:
/// at most [`MAX_REDIRECTS`] redirects and none to another scheme (an
/// `https` URL never continues over plain `http`), [`FETCH_TIME_LIMIT`] in
/// all, and [`MAX_CRL_BYTES`] counted while reading, so an endless body is
/// cut off instead of filling memory.
async fn fetch(url: &str) -> Result<Vec<u8>, String> {
    fetch_capped(url, MAX_CRL_BYTES, FETCH_TIME_LIMIT).await
}

/// [`fetch`] with its caps given (tests use smaller ones).
async fn fetch_capped(
    url: &str,
    max_bytes: usize,
    time_limit: Duration,
) -> Result<Vec<u8>, String> {
    let policy = reqwest::redirect::Policy::custom(|attempt| {
        let from = attempt.previous().first().map(|u| u.scheme().to_owned());
        if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
        } else if from.as_deref() != Some(attempt.url().scheme()) {
            let to = attempt.url().to_string();
            attempt.error(format!("refused a redirect to another scheme ({to})"))
        } else {
            attempt.follow()
        }
    });
    let client = reqwest::Client::builder()
        // reqwest's total timeout: connecting, headers and the whole body.
        .timeout(time_limit)
        .redirect(policy)
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let cannot = |e: reqwest::Error| {
        // The redirect policy's reason sits in the error's source chain.
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text = format!("{text}: {s}");
            source = s.source();
        }
        format!("cannot fetch CRL {url}: {text}")
    };
    let mut resp = client.get(url).send().await.map_err(cannot)?;
    if !resp.status().is_success() {
        return Err(format!("cannot fetch CRL {url}: HTTP {}", resp.status()));
    }
    let too_large = || format!("CRL {url} is larger than {max_bytes} bytes");
    if resp.content_length().is_some_and(|n| n > max_bytes as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(cannot)? {
        if body.len() + chunk.len() > max_bytes {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-shot HTTP server answering every connection with `answer`.
    async fn serve(answer: Vec<u8>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = sock.read(&mut buf).await;
                    let _ = sock.write_all(&answer).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        format!("http://{addr}/ca.crl")
    }

    fn redirect_to(location: &str) -> Vec<u8> {
        format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .into_bytes()
    }

    #[tokio::test]
    async fn a_redirect_to_another_scheme_is_refused() {
        let url = serve(redirect_to("https://127.0.0.1:1/ca.crl")).await;
        let err = fetch(&url).await.unwrap_err();
        assert!(err.contains("redirect to another scheme"), "{err}");
    }

    #[tokio::test]
    async fn same_scheme_redirects_are_followed_a_few_times_only() {
        let target =
            serve(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nCRL".to_vec())
                .await;
        let once = serve(redirect_to(&target)).await;
        assert_eq!(fetch(&once).await.unwrap(), b"CRL");
        // A redirect to itself: a loop, cut after MAX_REDIRECTS.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let self_url = format!("http://{}/loop", listener.local_addr().unwrap());
        let answer = redirect_to(&self_url);
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let _ = sock.write_all(&answer).await;
                let _ = sock.shutdown().await;
            }
        });
        let err = fetch(&self_url).await.unwrap_err();
        assert!(err.contains("more than 3 redirects"), "{err}");
    }

    #[tokio::test]
    async fn a_body_past_the_cap_is_cut_off_even_without_a_length() {
        // Chunked, no Content-Length: only counting while reading catches it.
        let mut answer =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
        for _ in 0..8 {
            answer.extend_from_slice(b"400\r\n");
            answer.extend_from_slice(&[b'x'; 0x400]);
            answer.extend_from_slice(b"\r\n");
        }
        answer.extend_from_slice(b"0\r\n\r\n");
        let url = serve(answer).await;
        let err = fetch_capped(&url, 4096, FETCH_TIME_LIMIT)
            .await
            .unwrap_err();
        assert!(err.contains("larger than 4096 bytes"), "{err}");
        assert_eq!(
            fetch_capped(&url, 8192, FETCH_TIME_LIMIT)
                .await
                .unwrap()
                .len(),
            8192
        );
    }

    /// A server that answers at once and then trickles the body, one byte
    /// every 50 ms (a 1,000-byte CRL would take 50 s): the download is
    /// abandoned when its time limit is reached, not when the body ends.
    /// The limit is 10 s in production; the test gives 1 s.
    #[tokio::test]
    async fn a_trickled_body_is_abandoned_at_the_time_limit() {
        assert_eq!(FETCH_TIME_LIMIT, Duration::from_secs(10));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/ca.crl", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = sock.read(&mut buf).await;
                    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n";
                    if sock.write_all(head).await.is_err() {
                        return;
                    }
                    for _ in 0..1000 {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        if sock.write_all(b"x").await.is_err() {
                            return; // the client gave up
                        }
                    }
                });
            }
        });
        let limit = Duration::from_secs(1);
        let started = std::time::Instant::now();
        let fetched = tokio::time::timeout(limit * 5, fetch_capped(&url, MAX_CRL_BYTES, limit))
            .await
            .expect("the download is abandoned by its own time limit");
        let took = started.elapsed();
        let err = fetched.unwrap_err();
        assert!(err.contains("cannot fetch CRL"), "{err}");
        assert!(
            took >= limit && took < limit * 2,
            "abandoned after {took:?}, the limit is {limit:?}"
        );
    }
}
