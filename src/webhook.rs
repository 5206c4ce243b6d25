//! Signed webhooks with retry.
//!
//! On every terminal transition the broker POSTs the session view to the
//! session's `webhook_url` with
//! `Bzt-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
//! A delivery is retried on network errors and non-2xx answers with
//! exponential backoff and full jitter; every attempt is signed afresh (so
//! the timestamp is current). Deliveries live in this process: a node that
//! dies mid-retry loses its pending retries (see docs/security.md), while
//! the RP can always read the outcome with `GET /v1/sessions/<id>`.

use crate::config::WebhookConfig;
use bzt_core::Secret;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
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

#[derive(Clone)]
pub struct WebhookSender {
    client: reqwest::Client,
    config: WebhookConfig,
}

impl WebhookSender {
    pub fn new(config: WebhookConfig) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("bzt-webhook/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Self { client, config }
    }

    /// Queues a delivery; returns at once.
    pub fn deliver(&self, url: String, secret: Secret, view: serde_json::Value) {
        let this = self.clone();
        tokio::spawn(async move { this.deliver_with_retry(&url, &secret, &view).await });
    }

    async fn deliver_with_retry(&self, url: &str, secret: &Secret, view: &serde_json::Value) {
        let body = serde_json::to_vec(view).unwrap_or_default();
        let session = view
            .get("id")
            .and_then(|v| v.as_str())
            .unwrap_or("?")
            .to_owned();
        let mut backoff = self.config.initial_backoff_ms;
        for attempt in 1..=self.config.max_attempts {
            let t = bzt_core::Timestamp::now_utc().unix_millis() / 1000;
            let result = self
                .client
                .post(url)
                .header("content-type", "application/json")
                .header("bzt-signature", signature_header(secret, t, &body))
                .body(body.clone())
                .send()
                .await;
            let outcome = match result {
                Ok(r) if r.status().is_success() => {
                    metrics::counter!("bzt_webhook_deliveries_total", "outcome" => "ok")
                        .increment(1);
                    tracing::info!(%session, attempt, "webhook delivered");
                    return;
                }
                Ok(r) => format!("HTTP {}", r.status().as_u16()),
                Err(e) => format!("{}", e.without_url()),
            };
            metrics::counter!("bzt_webhook_deliveries_total", "outcome" => "retry").increment(1);
            if attempt == self.config.max_attempts {
                tracing::warn!(%session, attempt, %outcome, "webhook given up");
                metrics::counter!("bzt_webhook_deliveries_total", "outcome" => "given_up")
                    .increment(1);
                return;
            }
            let jitter = u64::from(u16::from_le_bytes(bzt_core::secret::random_bytes::<2>()));
            let delay = backoff / 2 + jitter % (backoff / 2 + 1);
            tracing::info!(%session, attempt, %outcome, delay_ms = delay, "webhook failed; will retry");
            tokio::time::sleep(Duration::from_millis(delay)).await;
            backoff = (backoff * 2).min(self.config.max_backoff_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
