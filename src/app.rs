//! Start-up: build the broker from a configuration, bind, serve.

use crate::broker::{Broker, BrokerParts, Revocations};
use crate::clock::Clock;
use crate::config::{Config, StoreKind};
use crate::http::limits::{Limits, FAILURE_WINDOW};
use crate::http::{self, AppState};
use crate::store::claim_failures::{FailedClaims, LocalFailedClaims};
use crate::store::records::{FileRecordSet, RecordSet};
use crate::store::redis::{RedisSettings, RedisStore};
use crate::store::AuditLog;
use crate::store::{memory::MemoryStore, RecordStore};
use crate::timers::TimerQueue;
use crate::webhook::WebhookSender;
use anyhow::{bail, Context};
use axum::serve::ListenerExt;
use axum::Router;
use bzt_core::conversation::Conversation;
use bzt_core::pki::{TrustDomain, TrustStore};
use bzt_core::Session;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use tokio::net::TcpListener;

/// A bound, ready-to-run broker. Tests build it on `127.0.0.1:0` and read [`Application::port`].
pub struct Application {
    listener: TcpListener,
    router: Router,
    broker: Arc<Broker>,
    limits: Arc<Limits>,
    crl_sources: Vec<crate::crl::DomainSources>,
    drain: crate::shutdown::Drain,
    audit_checkpoint_interval: Option<std::time::Duration>,
    /// How long in-flight requests and sockets get after the shutdown signal.
    drain_time: std::time::Duration,
}

/// The Prometheus recorder is process-global; install it once.
fn metrics_handle() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    static HANDLE: OnceLock<Option<metrics_exporter_prometheus::PrometheusHandle>> =
        OnceLock::new();
    HANDLE
        .get_or_init(|| {
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .install_recorder()
                .map_err(|e| tracing::warn!(error = %e, "metrics recorder not installed"))
                .ok()
        })
        .clone()
}

/// Runs `sweep` every `every` (a shared store's deadline polling); a
/// failed sweep is logged and tried again at the next tick.
/// How often each node looks for webhook deliveries due in the shared store.
const WEBHOOK_POLL: std::time::Duration = std::time::Duration::from_millis(500);

fn poll_every<F, Fut, E>(
    every: std::time::Duration,
    broker: Arc<Broker>,
    what: &'static str,
    sweep: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn(Arc<Broker>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: std::fmt::Display,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = sweep(broker.clone()).await {
                tracing::debug!(error = %e, what, "deadline poll failed");
            }
        }
    })
}

/// Reads the PEM files of each trust domain (a file may hold several roots).
pub fn load_trust_store(config: &Config) -> anyhow::Result<TrustStore> {
    let mut domains = Vec::new();
    for d in &config.trust_domains {
        let mut pems = Vec::new();
        for file in &d.ca_pem_files {
            let text = std::fs::read_to_string(file).with_context(|| {
                format!("trust domain {}: cannot read {}", d.name, file.display())
            })?;
            let blocks = split_pem_certificates(&text)
                .with_context(|| format!("trust domain {}: {}", d.name, file.display()))?;
            if blocks.is_empty() {
                bail!(
                    "trust domain {}: {} holds no CERTIFICATE block",
                    d.name,
                    file.display()
                );
            }
            pems.extend(blocks);
        }
        domains
            .push(TrustDomain::from_pems(&d.name, &pems).map_err(|e| anyhow::anyhow!(e.message))?);
    }
    Ok(TrustStore::new(domains))
}

/// Reads the trusted seal makers' certificates (`[seals] trusted_makers_pem_files`).
pub fn load_seal_makers(config: &Config) -> anyhow::Result<Vec<x509_cert::Certificate>> {
    let mut makers = Vec::new();
    for file in &config.seals.trusted_makers_pem_files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("seals: cannot read {}", file.display()))?;
        let certs = bzt_crypto::pem_certificates(&text)
            .with_context(|| format!("seals: {}", file.display()))?;
        if certs.is_empty() {
            bail!("seals: {} holds no CERTIFICATE block", file.display());
        }
        makers.extend(certs);
    }
    Ok(makers)
}

/// Splits a PEM bundle into single-certificate PEM strings (other blocks and
/// text around them ignored; a block that does not decode is an error).
pub fn split_pem_certificates(text: &str) -> anyhow::Result<Vec<String>> {
    let mut pems = Vec::new();
    for block in bzt_crypto::pem::pem_blocks(text)? {
        if block.label == "CERTIFICATE" {
            pems.push(bzt_crypto::pem::to_pem(&block.label, &block.der)?);
        }
    }
    Ok(pems)
}

/// `[store]` as the Redis store wants it.
pub fn redis_settings(config: &Config) -> anyhow::Result<RedisSettings> {
    let url = config
        .store
        .redis_url
        .as_deref()
        .context("store.kind = \"redis\" needs store.redis_url")?;
    let mut s = RedisSettings::new(url);
    s.cluster |= config.store.cluster;
    if let Some(p) = &config.store.key_prefix {
        s.key_prefix = p.clone();
    }
    if let Some(ms) = config.store.timeout_ms {
        s.timeout = std::time::Duration::from_millis(ms.max(1));
    }
    s.validate().map_err(anyhow::Error::msg)?;
    Ok(s)
}

type Stores = (
    Arc<dyn RecordStore<Session>>,
    Arc<dyn RecordStore<Conversation>>,
    Arc<dyn AuditLog>,
    Arc<dyn RecordSet>,
    Option<Arc<dyn crate::store::webhooks::WebhookQueue>>,
    Arc<dyn FailedClaims>,
);

/// Sessions, conversations, the audit trail, the run-time revocations and
/// pending webhooks and the failed claims per QR code: in this process
/// (memory store, audit file, revocations file, retry tasks, a local
/// budget) or shared by every node on one Redis (docs/redis.md).
async fn build_stores(config: &Config) -> anyhow::Result<Stores> {
    let key = crate::store::file_audit::load_or_create_key(&config.audit_key_path())?;
    let every = config.audit.checkpoint_every;
    let max_failed_claims = config.limits.failed_claims_per_session_per_minute;
    Ok(match config.store.kind {
        StoreKind::Memory => (
            Arc::new(MemoryStore::<Session>::new()),
            Arc::new(MemoryStore::<Conversation>::new()),
            Arc::new(crate::store::file_audit::FileAuditLog::open(
                &config.audit_path(),
                key,
                every,
            )?),
            Arc::new(FileRecordSet::open(&config.revocations_path())?),
            None,
            Arc::new(LocalFailedClaims::new(max_failed_claims, FAILURE_WINDOW)),
        ),
        StoreKind::Redis => {
            let settings = redis_settings(config)?;
            let redis = Arc::new(RedisStore::connect(settings.clone()).await?);
            let failed_claims = redis
                .failed_claims(&settings, max_failed_claims, FAILURE_WINDOW)
                .await?;
            let audit = redis.audit_log(key, every).await?;
            if config.audit.path.is_some() {
                tracing::warn!(
                    "[audit] path is ignored with the Redis store: the audit trail is the stream {}",
                    audit.stream()
                );
            }
            let revocations = Arc::new(redis.record_set(crate::broker::revocations::RECORD_SET));
            let webhooks = Arc::new(redis.webhook_queue());
            (
                redis.clone(),
                redis,
                Arc::new(audit),
                revocations,
                Some(webhooks as Arc<dyn crate::store::webhooks::WebhookQueue>),
                Arc::new(failed_claims),
            )
        }
    })
}

/// Signs the audit chain's head every `every` (on the broker's clock) if an
/// operation is still unsigned: the unsigned tail, which could be cut off
/// without a trace, is never older than `every`.
async fn checkpoint_every(broker: Arc<Broker>, every: std::time::Duration) {
    loop {
        let next = broker.now().plus_millis(every.as_millis() as i64);
        broker.clock().sleep_until(next).await;
        if let Err(e) = broker.checkpoint_audit_if_unsigned().await {
            tracing::warn!(error = %e, "timed audit checkpoint failed; trying at the next interval");
        }
    }
}

impl Application {
    /// Builds the broker and binds `config.listen`. `extra` routes (the
    /// development demo) are merged into the router.
    pub async fn build(
        config: &Config,
        clock: Arc<dyn Clock>,
        extra: Option<Router<AppState>>,
    ) -> anyhow::Result<Self> {
        Self::build_on(Self::bind(config).await?, config, clock, extra).await
    }

    /// Binds `config.listen`: for a caller that must know the broker's address before it
    /// builds the broker (development mode starts the co-signing service in between).
    pub async fn bind(config: &Config) -> anyhow::Result<TcpListener> {
        TcpListener::bind(&config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))
    }

    /// [`Application::build`] on a listener already bound.
    pub async fn build_on(
        listener: TcpListener,
        config: &Config,
        clock: Arc<dyn Clock>,
        extra: Option<Router<AppState>>,
    ) -> anyhow::Result<Self> {
        config.validate()?;
        let (store, conversations, audit, revocation_records, webhook_queue, failed_claims) =
            build_stores(config).await?;
        let mut webhooks = WebhookSender::new(config.webhooks.clone())?;
        if let Some(queue) = webhook_queue {
            webhooks = webhooks.with_queue(queue);
        }
        let mut public_base_url = config.public_base_url();
        if config.public_base_url.is_none() {
            // Port 0 (tests): advertise the port actually bound.
            public_base_url = format!("http://{}", listener.local_addr()?);
        }
        let trust = load_trust_store(config)?;
        let crl_sources = crate::crl::load_at_start(config, &trust).await?;
        crate::crl::record_metrics(&trust, clock.now(), true);
        let broker = Arc::new(Broker::new(BrokerParts {
            store,
            conversations,
            audit,
            trust: Arc::new(trust),
            cert_checks: crate::cert_checks::CheckPool::per_cpu(),
            seal_makers: Arc::new(load_seal_makers(config)?),
            revocations: Revocations::open(&config.revocation.serials, revocation_records).await?,
            apps: crate::apps::Apps::from_config(&config.apps)?,
            clock,
            timers: TimerQueue::new(),
            webhooks,
            public_base_url,
        }));
        let limits = Arc::new(Limits::with_failed_claims(&config.limits, failed_claims));
        let state = AppState {
            broker: broker.clone(),
            limits: limits.clone(),
            admin_token: config.admin_token_hash()?,
            trust_forwarded_for: config.trust_forwarded_for,
            metrics: metrics_handle(),
            cosigner_credential: config.cosigner.credential_hash()?,
            cosigner_admin: config.cosigner.url.as_deref().map(|url| {
                Arc::new(crate::broker::cosigner::CosignerAdmin::new(
                    url,
                    config.cosigner.admin_token.clone(),
                ))
            }),
            drain: crate::shutdown::Drain::default(),
        };
        let drain = state.drain.clone();
        let router = http::router(state, extra);
        Ok(Self {
            listener,
            router,
            broker,
            limits,
            crl_sources,
            drain,
            drain_time: std::time::Duration::from_secs(config.shutdown_drain_s),
            audit_checkpoint_interval: (config.audit.checkpoint_interval_s > 0)
                .then(|| std::time::Duration::from_secs(config.audit.checkpoint_interval_s)),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    pub fn broker(&self) -> Arc<Broker> {
        self.broker.clone()
    }

    /// Serves until `shutdown` resolves, with the background tasks (timers,
    /// limiter housekeeping) running alongside.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let timers = tokio::spawn(self.broker.clone().run_timers());
        // A shared store: also sweep expiries that other nodes' timers own
        // (their node may be gone).
        let expiry_poll = self.broker.expiry_poll_interval().map(|every| {
            poll_every(every, self.broker.clone(), "expiry", |b| async move {
                b.sweep_expiries().await?;
                // QR rotations of sessions whose creating node may be gone.
                b.sweep_rotations().await.map(|_| ())
            })
        });
        let conversation_poll = self.broker.conversation_poll_interval().map(|every| {
            poll_every(
                every,
                self.broker.clone(),
                "conversation deadline",
                |b| async move { b.sweep_conversation_deadlines().await },
            )
        });
        // Other nodes' revocations: seen here within one poll.
        let revocation_poll = self.broker.revocations().poll_interval().map(|every| {
            poll_every(every, self.broker.clone(), "revocations", |b| async move {
                b.revocations().refresh().await.map(|_| ())
            })
        });
        // Webhooks waiting in the shared store: retried by whichever node
        // finds them due (their node may be gone).
        let webhook_poll = self.broker.webhooks_queued().then(|| {
            poll_every(
                WEBHOOK_POLL,
                self.broker.clone(),
                "webhook",
                |b| async move { b.retry_due_webhooks().await.map(|_| ()) },
            )
        });
        let audit_checkpoints = self
            .audit_checkpoint_interval
            .map(|every| tokio::spawn(checkpoint_every(self.broker.clone(), every)));
        let crl_refresh: Vec<_> = self
            .crl_sources
            .iter()
            .map(|s| tokio::spawn(crate::crl::refresh_forever(self.broker.clone(), s.clone())))
            .collect();
        let limits = self.limits.clone();
        let housekeeping = tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                tick.tick().await;
                limits.shrink();
            }
        });
        let service = self
            .router
            .into_make_service_with_connect_info::<SocketAddr>();
        // Every frame the broker sends is small and latency-bound (a push, a
        // result, a conversation request): without TCP_NODELAY, Nagle holds a
        // second small write until the peer's delayed ACK, ~40 ms later.
        let listener = self.listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "could not set TCP_NODELAY");
            }
        });
        // On the signal: sockets are told to reconnect elsewhere (1012), the
        // listener closes, in-flight requests finish, all within drain_time.
        let drain = self.drain.clone();
        let signal = {
            let drain = drain.clone();
            async move {
                shutdown.await;
                tracing::info!(
                    sockets = drain.open_sockets(),
                    "draining: closing sockets with 1012, finishing requests"
                );
                drain.begin();
            }
        };
        let drain_time = self.drain_time;
        let serve = std::future::IntoFuture::into_future(
            axum::serve(listener, service).with_graceful_shutdown(signal),
        );
        let over = async {
            drain.started().await;
            tokio::time::sleep(drain_time).await;
        };
        let began = tokio::time::Instant::now();
        let served = tokio::select! {
            served = serve => served,
            _ = over => {
                tracing::warn!("drain time over; dropping the requests still open");
                Ok(())
            }
        };
        if drain.is_draining() {
            // Upgraded sockets are not the server's to wait for: give their
            // close frames the rest of the drain time.
            let left = drain_time.saturating_sub(began.elapsed());
            if tokio::time::timeout(left, drain.sockets_closed())
                .await
                .is_err()
            {
                tracing::warn!(
                    sockets = drain.open_sockets(),
                    "sockets still open at the end of the drain time"
                );
            }
        }
        timers.abort();
        housekeeping.abort();
        for r in crl_refresh {
            r.abort();
        }
        if let Some(c) = audit_checkpoints {
            c.abort();
        }
        for p in [
            expiry_poll,
            conversation_poll,
            revocation_poll,
            webhook_poll,
        ]
        .into_iter()
        .flatten()
        {
            p.abort();
        }
        served.context("server error")
    }
}
