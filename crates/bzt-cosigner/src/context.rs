//! Where the service learns what it may sign: the broker's
//! `POST /v1/cosign/context`, asked with the service's own credential and the
//! phone's token for the session (which the broker checks), never the phone's
//! word for the bytes.

use std::time::Duration;

use async_trait::async_trait;

use crate::error::ServiceError;
use crate::wire::{BrokerContext, BrokerContextRequest, ErrorBody};

#[async_trait]
pub trait ContextSource: Send + Sync {
    async fn fetch(&self, request: &BrokerContextRequest) -> Result<BrokerContext, ServiceError>;
}

/// The broker over HTTP.
pub struct BrokerContextClient {
    http: reqwest::Client,
    url: String,
    credential: Option<String>,
}

impl BrokerContextClient {
    pub fn new(broker_url: &str, credential: Option<String>) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            url: format!("{}/v1/cosign/context", broker_url.trim_end_matches('/')),
            credential,
        })
    }
}

#[async_trait]
impl ContextSource for BrokerContextClient {
    async fn fetch(&self, request: &BrokerContextRequest) -> Result<BrokerContext, ServiceError> {
        let mut builder = self.http.post(&self.url).json(request);
        if let Some(credential) = &self.credential {
            builder = builder.bearer_auth(credential);
        }
        let resp = builder.send().await.map_err(|e| {
            tracing::warn!(error = %e, "broker context endpoint unreachable");
            ServiceError::unavailable("the broker could not be asked what to sign; retry")
        })?;
        let status = resp.status();
        if status.is_success() {
            return resp.json().await.map_err(|e| {
                tracing::warn!(error = %e, "broker context answer unreadable");
                ServiceError::unavailable("the broker's answer could not be read; retry")
            });
        }
        let code = resp
            .json::<ErrorBody>()
            .await
            .map(|b| b.error.code)
            .unwrap_or_default();
        tracing::info!(%status, %code, "broker refused the context");
        if status == reqwest::StatusCode::UNAUTHORIZED {
            tracing::error!(
                "the broker does not accept this service's credential (broker_credential)"
            );
            return Err(ServiceError::unavailable(
                "the service is not authorised at the broker",
            ));
        }
        Err(ServiceError::not_requested(
            "no pending session or conversation request of the broker asked this phone for it",
        ))
    }
}
