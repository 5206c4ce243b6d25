//! Signed webhooks with retry.
//!
//! On every terminal transition the broker POSTs the session view to the
//! session's `webhook_url` with
//! `Bzt-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
//! A delivery is retried on network errors and non-2xx answers with
//! exponential backoff and full jitter; every attempt is signed afresh (so
//! the timestamp is current). In Redis mode every delivery is queued in
//! Redis before its first attempt and retried by whichever node finds it due
//! (see [`crate::store::webhooks`]), so a node that dies mid-retry loses
//! nothing; in memory mode the retries live in this process. Either way the
//! RP can read the outcome with `GET /v1/sessions/<id>`.
//!
//! A webhook URL is chosen by whoever holds an API key, so it must not turn
//! the broker into a proxy towards its own network (SSRF). The client's DNS
//! resolver drops loopback, link-local, private and unique-local addresses
//! (unless `webhooks.allowed_private_networks` lists them), and URLs naming
//! such an address literally are refused before sending: the check applies
//! to the very addresses the connection uses, so a name that resolves to a
//! public address when the session is created and to 127.0.0.1 later
//! (DNS rebinding) is refused at delivery.

use crate::config::WebhookConfig;
use crate::store::webhooks::{PendingDelivery, WebhookQueue};
use crate::store::StoreError;
use anyhow::Context;
use bzt_core::{Secret, Timestamp};
use bzt_wire::SessionView;
use hmac::{Hmac, KeyInit, Mac};
use ipnet::IpNet;
use sha2::Sha256;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// The `Bzt-Signature` header value for `body` at unix time `t`.
pub fn signature_header(secret: &Secret, t: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Is `ip` an address of the public internet? Loopback, unspecified,
/// link-local, private (RFC 1918), shared (RFC 6598, CGNAT), unique-local
/// (fc00::/7), multicast, broadcast and documentation addresses are not;
/// an IPv4-mapped IPv6 address is judged as the IPv4 address it carries.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_unspecified()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8)
        }
    }
}

/// Which addresses webhooks may reach: public ones, plus the configured
/// private networks.
#[derive(Clone, Debug, Default)]
pub struct AddressPolicy {
    allowed: Arc<Vec<IpNet>>,
}

impl AddressPolicy {
    /// From `webhooks.allowed_private_networks`; a bad entry is named.
    pub fn new(allowed: &[String]) -> anyhow::Result<Self> {
        let allowed = allowed
            .iter()
            .map(|net| {
                net.parse::<IpNet>()
                    .or_else(|_| net.parse::<IpAddr>().map(IpNet::from))
                    .with_context(|| {
                        format!(
                            "webhooks.allowed_private_networks: {net:?} is not a network \
                             (CIDR like 10.1.0.0/16) or an address"
                        )
                    })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            allowed: Arc::new(allowed),
        })
    }

    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        is_public(ip) || self.allowed.iter().any(|net| net.contains(&ip))
    }
}

/// The webhook client's resolver: the system's, minus the addresses the
/// policy refuses. Connections only ever go to what this returns.
struct FilteringResolver {
    policy: AddressPolicy,
}

impl reqwest::dns::Resolve for FilteringResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let (permitted, refused): (Vec<SocketAddr>, Vec<SocketAddr>) =
                found.into_iter().partition(|a| policy.permits(a.ip()));
            if permitted.is_empty() {
                let refused: Vec<String> = refused.iter().map(|a| a.ip().to_string()).collect();
                return Err(Box::new(std::io::Error::other(format!(
                    "{host} resolves only to addresses webhooks may not reach ({}); \
                     list the network in webhooks.allowed_private_networks to allow it",
                    refused.join(", ")
                )))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(permitted.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[derive(Clone)]
pub struct WebhookSender {
    client: reqwest::Client,
    config: WebhookConfig,
    policy: AddressPolicy,
    /// Where deliveries wait between attempts when nodes share a store.
    queue: Option<Arc<dyn WebhookQueue>>,
}

/// How many due deliveries one poll claims.
const CLAIM_BATCH: usize = 32;

impl WebhookSender {
    /// Fails (at start-up) if the allow-list does not parse or the client
    /// cannot be built: a default client would silently drop the timeout,
    /// the no-redirect policy and the address filter.
    pub fn new(config: WebhookConfig) -> anyhow::Result<Self> {
        let policy = AddressPolicy::new(&config.allowed_private_networks)?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            // Through a proxy, the address checked would be the proxy's.
            .no_proxy()
            .user_agent(concat!("bzt-webhook/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(FilteringResolver {
                policy: policy.clone(),
            }))
            .build()
            .context("cannot build the webhook HTTP client")?;
        Ok(Self {
            client,
            config,
            policy,
            queue: None,
        })
    }

    /// Keeps pending deliveries in `queue` (shared by every node) instead of
    /// this process; some node must then call [`Self::retry_due`] regularly.
    pub fn with_queue(mut self, queue: Arc<dyn WebhookQueue>) -> Self {
        self.queue = Some(queue);
        self
    }

    /// Whether deliveries wait in a shared queue (and must be polled for).
    pub fn is_queued(&self) -> bool {
        self.queue.is_some()
    }

    /// A claimed delivery is this node's for the HTTP time limit and a margin.
    fn lease(&self) -> Duration {
        Duration::from_millis(self.config.timeout_ms) + Duration::from_secs(10)
    }

    /// A URL naming a refused address literally (no DNS involved, so the
    /// resolver never sees it); `None` for names and permitted addresses.
    fn refused_literal(&self, url: &str) -> Option<IpAddr> {
        let parsed = reqwest::Url::parse(url).ok()?;
        let ip = match parsed.host()? {
            url::Host::Ipv4(v4) => IpAddr::V4(v4),
            url::Host::Ipv6(v6) => IpAddr::V6(v6),
            url::Host::Domain(_) => return None,
        };
        (!self.policy.permits(ip)).then_some(ip)
    }

    /// Queues a delivery; returns at once.
    pub fn deliver(&self, app_id: &str, url: String, secret: Secret, view: SessionView) {
        let this = self.clone();
        let Some(queue) = self.queue.clone() else {
            tokio::spawn(async move { this.deliver_with_retry(&url, &secret, &view).await });
            return;
        };
        let delivery = PendingDelivery {
            id: format!("{}.{}", view.id, view.status),
            app_id: app_id.to_owned(),
            url,
            body: serde_json::to_string(&view).unwrap_or_default(),
            attempts: 0,
            backoff_ms: self.config.initial_backoff_ms,
        };
        tokio::spawn(async move {
            // Stored (leased to this node for its first attempt) before it
            // is attempted: from here on, a node that dies loses nothing.
            let leased = Timestamp::now_utc().plus_millis(this.lease().as_millis() as i64);
            if let Err(e) = queue.put(&delivery, leased).await {
                tracing::warn!(id = %delivery.id, error = %e, "webhook not queued in the store; retrying it in this process only");
                this.deliver_with_retry(&delivery.url, &secret, &view).await;
                return;
            }
            this.attempt_queued(&queue, delivery, &secret).await;
        });
    }

    /// Attempts the deliveries of the shared queue that are due, each
    /// claimed by this node only; `secret_of` gives an app's webhook secret.
    pub async fn retry_due(
        &self,
        secret_of: impl Fn(&str) -> Option<Secret>,
    ) -> Result<usize, StoreError> {
        let Some(queue) = &self.queue else {
            return Ok(0);
        };
        let now = Timestamp::now_utc();
        let lease_until = now.plus_millis(self.lease().as_millis() as i64);
        let due = queue.claim_due(now, lease_until, CLAIM_BATCH).await?;
        let n = due.len();
        let attempts = due.into_iter().map(|d| async {
            match secret_of(&d.app_id) {
                Some(secret) => self.attempt_queued(queue, d, &secret).await,
                None => {
                    tracing::warn!(id = %d.id, app = %d.app_id, "webhook dropped: its app has no webhook_secret any more");
                    let _ = queue.done(&d.id).await;
                }
            }
        });
        futures_util::future::join_all(attempts).await;
        Ok(n)
    }

    /// One attempt of a queued delivery, then: forgotten (delivered, given
    /// up, refused) or put back with its next due time.
    async fn attempt_queued(
        &self,
        queue: &Arc<dyn WebhookQueue>,
        mut d: PendingDelivery,
        secret: &Secret,
    ) {
        let session = d.id.clone();
        let forget = |why: &'static str| async move {
            if let Err(e) = queue.done(&session).await {
                tracing::warn!(id = %session, error = %e, why, "could not remove a finished webhook delivery; it may be attempted again");
            }
        };
        if let Some(ip) = self.refused_literal(&d.url) {
            tracing::warn!(id = %d.id, %ip, "webhook refused: its URL names an address webhooks may not reach (see webhooks.allowed_private_networks)");
            metrics::counter!("bzt_webhook_deliveries_total", "outcome" => "refused").increment(1);
            return forget("refused").await;
        }
        d.attempts += 1;
        let attempt = d.attempts;
        match self.send_once(&d.url, secret, d.body.as_bytes()).await {
            Ok(()) => {
                tracing::info!(id = %d.id, attempt, "webhook delivered");
                forget("delivered").await
            }
            Err(outcome) if attempt >= self.config.max_attempts => {
                tracing::warn!(id = %d.id, attempt, %outcome, "webhook given up");
                metrics::counter!("bzt_webhook_deliveries_total", "outcome" => "given_up")
                    .increment(1);
                forget("given up").await
            }
            Err(outcome) => {
                let delay = jittered(d.backoff_ms);
                d.backoff_ms = (d.backoff_ms * 2).min(self.config.max_backoff_ms);
                tracing::info!(id = %d.id, attempt, %outcome, delay_ms = delay, "webhook failed; will retry");
                let at = Timestamp::now_utc().plus_millis(delay as i64);
                if let Err(e) = queue.put(&d, at).await {
                    // Still leased: it comes back when the lease ends.
                    tracing::warn!(id = %d.id, error = %e, "could not reschedule a webhook delivery");
                }
            }
        }
    }

    /// One signed POST; `Err` says what went wrong (for the log).
    async fn send_once(&self, url: &str, secret: &Secret, body: &[u8]) -> Result<(), String> {
        let t = Timestamp::now_utc().unix_millis() / 1000;
        let result = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("bzt-signature", signature_header(secret, t, body))
            .body(body.to_vec())
            .send()
            .await;
        let outcome = match result {
            Ok(r) if r.status().is_success() => {
                metrics::counter!("bzt_webhook_deliveries_total", "outcome" => "ok").increment(1);
                return Ok(());
            }
            Ok(r) => format!("HTTP {}", r.status().as_u16()),
            Err(e) => format!("{}", e.without_url()),
        };
        metrics::counter!("bzt_webhook_deliveries_total", "outcome" => "retry").increment(1);
        Err(outcome)
    }

    async fn deliver_with_retry(&self, url: &str, secret: &Secret, view: &SessionView) {
        let body = serde_json::to_vec(view).unwrap_or_default();
        let session = view.id.clone();
        if let Some(ip) = self.refused_literal(url) {
            // Retrying cannot change a literal address.
            tracing::warn!(%session, %ip, "webhook refused: its URL names an address webhooks may not reach (see webhooks.allowed_private_networks)");
            metrics::counter!("bzt_webhook_deliveries_total", "outcome" => "refused").increment(1);
            return;
        }
        let mut backoff = self.config.initial_backoff_ms;
        for attempt in 1..=self.config.max_attempts {
            let outcome = match self.send_once(url, secret, &body).await {
                Ok(()) => {
                    tracing::info!(%session, attempt, "webhook delivered");
                    return;
                }
                Err(outcome) => outcome,
            };
            if attempt == self.config.max_attempts {
                tracing::warn!(%session, attempt, %outcome, "webhook given up");
                metrics::counter!("bzt_webhook_deliveries_total", "outcome" => "given_up")
                    .increment(1);
                return;
            }
            let delay = jittered(backoff);
            tracing::info!(%session, attempt, %outcome, delay_ms = delay, "webhook failed; will retry");
            tokio::time::sleep(Duration::from_millis(delay)).await;
            backoff = (backoff * 2).min(self.config.max_backoff_ms);
        }
    }
}

/// Full jitter over the upper half: a delay in `[backoff/2, backoff]` ms.
fn jittered(backoff: u64) -> u64 {
    let jitter = u64::from(u16::from_le_bytes(bzt_core::secret::random_bytes::<2>()));
    backoff / 2 + jitter % (backoff / 2 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_reachable_unless_allowed() {
        let never: Vec<&str> = vec![
            "127.0.0.1",
            "127.8.9.10",
            "0.0.0.0",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "192.0.2.1",
            "2001:db8::1",
        ];
        let policy = AddressPolicy::new(&[]).unwrap();
        for ip in never {
            assert!(!policy.permits(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "100.128.0.1",
            "2400:3200::1",
            "::ffff:8.8.8.8",
        ] {
            assert!(policy.permits(ip.parse().unwrap()), "{ip}");
        }
        let lan = AddressPolicy::new(&["10.1.0.0/16".into(), "::1".into()]).unwrap();
        assert!(lan.permits("10.1.2.3".parse().unwrap()));
        assert!(lan.permits("::1".parse().unwrap()));
        assert!(!lan.permits("10.2.0.1".parse().unwrap()));
        let e = AddressPolicy::new(&["10.1/16".into()]).unwrap_err();
        assert!(e.to_string().contains("allowed_private_networks"), "{e}");
    }

    #[test]
    fn signature_matches_an_independent_hmac() {
        // Reference value from Python: hmac.new(b"whsec", b"1700000000.{}", hashlib.sha256).hexdigest()
        let secret = Secret::from_presented("whsec").unwrap();
        let header = signature_header(&secret, 1_700_000_000, b"{}");
        assert_eq!(
            header,
            "t=1700000000,v1=7d44587dddbaf4c7f70fef20f48cd594834ffea1641e3ac227b84408298738af"
        );
    }
}
