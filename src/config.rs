//! Configuration: embedded defaults, then a TOML file, then `BZT_*`
//! environment variables (nested keys with `__`: `BZT_STORE__KIND=redis`).
//!
//! Without a file the broker runs in development mode (see [`crate::dev`]):
//! memory store, generated development CAs, a demo app. With a file nothing is
//! invented: apps and trust domains must be configured.

use anyhow::{bail, Context};
use bzt_core::secret::SecretHash;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Base of every absolute URL the broker hands out (QR text, socket URLs).
    /// Defaults to `http://<listen>`.
    #[serde(default)]
    pub public_base_url: Option<String>,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub apps: Vec<AppConfig>,
    #[serde(default)]
    pub trust_domains: Vec<TrustDomainConfig>,
    #[serde(default)]
    pub revocation: RevocationConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub webhooks: WebhookConfig,
    /// Bearer token for `/v1/admin/*` (or its SHA-256 in `admin_token_sha256`).
    /// Without either, the admin API is off.
    #[serde(default)]
    pub admin_token: Option<String>,
    #[serde(default)]
    pub admin_token_sha256: Option<String>,
    /// Take the client address from `X-Forwarded-For` (only behind a proxy
    /// you control, which overwrites that header).
    #[serde(default)]
    pub trust_forwarded_for: bool,
    /// Where development mode keeps its CAs and demo app key.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub audit: AuditConfig,
    /// The co-signing service of split keys (密钥拆分, docs/key-splitting.md).
    #[serde(default)]
    pub cosigner: CosignerConfig,
    /// Seconds a node gets on SIGTERM to close its sockets (1012) and
    /// finish in-flight requests before it exits (default 10).
    #[serde(default = "default_drain_s")]
    pub shutdown_drain_s: u64,
    /// Electronic seals (GB/T 38540): whose seals the broker accepts.
    #[serde(default)]
    pub seals: SealsConfig,
    /// Development mode: serve the web demo and its RP backend. Set by the
    /// embedded defaults; never set it on a production broker.
    #[serde(default)]
    pub dev_mode: bool,
}

fn default_drain_s() -> u64 {
    10
}

fn default_listen() -> String {
    "127.0.0.1:8700".into()
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    #[default]
    Memory,
    Redis,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    #[serde(default)]
    pub kind: StoreKind,
    #[serde(default)]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key (several brokers may share one Redis).
    #[serde(default)]
    pub key_prefix: Option<String>,
    /// Redis Cluster (also implied by several comma-separated `redis_url`s,
    /// which are then the seed nodes). See docs/redis.md.
    #[serde(default)]
    pub cluster: bool,
    /// Time limit of every Redis call, milliseconds (default 500); past it
    /// the API answers 503 `unavailable`.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub api_key: Option<String>,
    /// Hex SHA-256 of the API key, so the config need not hold the key.
    #[serde(default)]
    pub api_key_sha256: Option<String>,
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    #[serde(default)]
    pub webhook_secret: Option<String>,
}

impl AppConfig {
    pub fn api_key_hash(&self) -> anyhow::Result<SecretHash> {
        match (&self.api_key, &self.api_key_sha256) {
            (Some(k), None) => Ok(SecretHash::of(k.as_bytes())),
            (None, Some(h)) => SecretHash::from_hex(h)
                .with_context(|| format!("app {}: api_key_sha256 must be 64 hex digits", self.id)),
            _ => bail!(
                "app {}: set exactly one of api_key and api_key_sha256",
                self.id
            ),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustDomainConfig {
    pub name: String,
    pub ca_pem_files: Vec<PathBuf>,
    /// CRLs (PEM or DER) of this domain's roots, read at start (a bad one
    /// stops the start) and again every `crl_refresh_s`.
    #[serde(default)]
    pub crl_files: Vec<PathBuf>,
    /// CRLs fetched over HTTP(S) at start and every `crl_refresh_s` (bounds
    /// of a download, and why addresses are not filtered: `crate::crl`).
    #[serde(default)]
    pub crl_urls: Vec<String>,
    /// Seconds between two reloads of each CRL (default 3600, at least 10).
    #[serde(default)]
    pub crl_refresh_s: Option<u64>,
    /// What a CRL past its nextUpdate does: `warn` (default: a metric and a
    /// log line) or `refuse` (its CA's certificates are refused).
    #[serde(default)]
    pub crl_stale: CrlStale,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CrlStale {
    #[default]
    Warn,
    Refuse,
}

impl TrustDomainConfig {
    pub fn crl_refresh(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.crl_refresh_s.unwrap_or(3600).max(10))
    }
}

/// `[seals]`: the seal makers (制章者) whose seals a seal signature may carry.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealsConfig {
    /// PEM files of trusted maker certificates: a seal's maker certificate must be one of them
    /// or be issued by one. Empty: every seal signature is refused (development mode trusts its
    /// development CAs, which make the demo's seals).
    #[serde(default)]
    pub trusted_makers_pem_files: Vec<PathBuf>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationConfig {
    /// Hex serials refused everywhere; re-read on SIGHUP.
    #[serde(default)]
    pub serials: Vec<String>,
    /// Where the memory store keeps run-time revocations (`POST
    /// /v1/admin/revocations`) across restarts (default:
    /// `<data_dir>/revocations.json`). In Redis mode they live in Redis.
    #[serde(default)]
    pub file: Option<PathBuf>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Claim attempts per client IP per minute: a coarse flood guard, high
    /// because a mobile carrier puts thousands of phones behind one address
    /// (CGNAT). What stops guessing is `failed_claims_per_session_per_minute`.
    pub claims_per_ip_per_minute: u32,
    /// Failed claims (wrong secret, unknown session) per session id per
    /// minute, counted across all nodes in Redis mode; past it, claims of
    /// that id answer 429 until the minute is over, whatever the address
    /// they come from and whichever node they reach.
    pub failed_claims_per_session_per_minute: u32,
    /// Session creations per app per second (burst of the same size).
    pub creates_per_app_per_second: u32,
    /// WebSocket/SSE connects per client IP per minute.
    pub sockets_per_ip_per_minute: u32,
    /// Simultaneous browser sockets (WebSocket + SSE) per session, per node.
    pub sockets_per_session: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            claims_per_ip_per_minute: 3000,
            failed_claims_per_session_per_minute: 10,
            creates_per_app_per_second: 200,
            sockets_per_ip_per_minute: 6000,
            sockets_per_session: 8,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Deliveries attempted per event before giving up.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt (with jitter), capped at `max_backoff_ms`.
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    pub timeout_ms: u64,
    /// Networks (CIDR, e.g. `10.1.0.0/16`, `127.0.0.1/32`) that webhooks may
    /// reach although they are loopback, link-local, private or unique-local:
    /// RPs inside the broker's own network. Empty: public addresses only.
    #[serde(default)]
    pub allowed_private_networks: Vec<String>,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            initial_backoff_ms: 1_000,
            max_backoff_ms: 60_000,
            timeout_ms: 5_000,
            allowed_private_networks: Vec::new(),
        }
    }
}

/// `[cosigner]`: where the co-signing service of split keys is, and the
/// credentials between it and the broker. Without `credential` the context
/// endpoint (`POST /v1/cosign/context`) refuses every call; without `url`
/// and `admin_token` the admin routes for split keys are off.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CosignerConfig {
    /// The service's base URL, e.g. `http://127.0.0.1:8701`.
    #[serde(default)]
    pub url: Option<String>,
    /// The bearer token the service presents to `POST /v1/cosign/context`
    /// (or its SHA-256 in `credential_sha256`).
    #[serde(default)]
    pub credential: Option<String>,
    #[serde(default)]
    pub credential_sha256: Option<String>,
    /// The service's admin token, which the broker's admin API uses to
    /// freeze, unfreeze, revoke and unlock keys there.
    #[serde(default)]
    pub admin_token: Option<String>,
    /// Development mode: start the service as a child process listening here
    /// (the broker's port + 1, or any port). Set by the embedded defaults only.
    #[serde(skip)]
    pub dev_listen: Option<String>,
}

impl CosignerConfig {
    pub fn credential_hash(&self) -> anyhow::Result<Option<SecretHash>> {
        match (&self.credential, &self.credential_sha256) {
            (None, None) => Ok(None),
            (Some(t), None) => Ok(Some(SecretHash::of(t.as_bytes()))),
            (None, Some(h)) => Ok(Some(
                SecretHash::from_hex(h)
                    .context("cosigner.credential_sha256 must be 64 hex digits")?,
            )),
            _ => bail!("set at most one of cosigner.credential and cosigner.credential_sha256"),
        }
    }
}

/// The audit trail of certificate use (`[audit]`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The JSON-lines log (default: `<data_dir>/audit.jsonl`).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// The broker's SM2 key signing checkpoints (default:
    /// `<data_dir>/audit-signing-key.pem`, created on first start).
    #[serde(default)]
    pub signing_key_file: Option<PathBuf>,
    /// Operations between two signed checkpoints.
    #[serde(default = "AuditConfig::default_checkpoint_every")]
    pub checkpoint_every: u64,
    /// Seconds after which a signed checkpoint covers any operation still
    /// unsigned, however few operations came (default 60; 0: off).
    #[serde(default = "AuditConfig::default_checkpoint_interval_s")]
    pub checkpoint_interval_s: u64,
}

impl AuditConfig {
    fn default_checkpoint_every() -> u64 {
        100
    }

    fn default_checkpoint_interval_s() -> u64 {
        60
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            path: None,
            signing_key_file: None,
            checkpoint_every: Self::default_checkpoint_every(),
            checkpoint_interval_s: Self::default_checkpoint_interval_s(),
        }
    }
}

impl Config {
    /// Where relative defaults (audit log, development CAs) live.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("bzt-data"))
    }

    pub fn audit_path(&self) -> PathBuf {
        self.audit
            .path
            .clone()
            .unwrap_or_else(|| self.data_dir().join("audit.jsonl"))
    }

    pub fn revocations_path(&self) -> PathBuf {
        self.revocation
            .file
            .clone()
            .unwrap_or_else(|| self.data_dir().join("revocations.json"))
    }

    pub fn audit_key_path(&self) -> PathBuf {
        self.audit
            .signing_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir().join("audit-signing-key.pem"))
    }

    /// The defaults every source is layered over.
    pub fn defaults() -> Self {
        Self {
            listen: default_listen(),
            public_base_url: None,
            store: StoreConfig::default(),
            apps: Vec::new(),
            trust_domains: Vec::new(),
            revocation: RevocationConfig::default(),
            limits: LimitsConfig::default(),
            webhooks: WebhookConfig::default(),
            admin_token: None,
            admin_token_sha256: None,
            trust_forwarded_for: false,
            data_dir: None,
            audit: AuditConfig::default(),
            cosigner: CosignerConfig::default(),
            shutdown_drain_s: default_drain_s(),
            seals: SealsConfig::default(),
            dev_mode: false,
        }
    }

    /// Loads `file` (if any) over the defaults, then the environment. Relative
    /// paths in the file are made relative to the file's directory.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut fig = Figment::from(Serialized::defaults(Self::defaults()));
        if let Some(f) = file {
            if !f.exists() {
                bail!("config file {} does not exist", f.display());
            }
            fig = fig.merge(Toml::file(f));
        }
        // BZT_CONFIG names the file and BZT_LOG the log filter: not config keys.
        fig = fig.merge(Env::prefixed("BZT_").split("__").ignore(&["config", "log"]));
        let mut cfg: Config = fig.extract().context("invalid configuration")?;
        if let Some(f) = file {
            let base = f.parent().unwrap_or(Path::new("."));
            cfg.resolve_paths(base);
        }
        Ok(cfg)
    }

    fn resolve_paths(&mut self, base: &Path) {
        for d in &mut self.trust_domains {
            for p in d.ca_pem_files.iter_mut().chain(d.crl_files.iter_mut()) {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
        for p in &mut self.seals.trusted_makers_pem_files {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        for p in [
            &mut self.audit.path,
            &mut self.audit.signing_key_file,
            &mut self.revocation.file,
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if let Some(p) = &mut self.data_dir {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }

    pub fn public_base_url(&self) -> String {
        self.public_base_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
            .trim_end_matches('/')
            .to_owned()
    }

    /// Checks what serde cannot: at least one app and trust domain, unique
    /// ids, readable CA files.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.apps.is_empty() {
            bail!("no [[apps]] configured: the broker would refuse every request");
        }
        if self.trust_domains.is_empty() {
            bail!("no [[trust_domains]] configured: no certificate could ever be accepted");
        }
        let mut ids = std::collections::HashSet::new();
        for app in &self.apps {
            if app.id.is_empty()
                || !app
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                bail!("app id {:?} must be non-empty [A-Za-z0-9_-]", app.id);
            }
            if !ids.insert(&app.id) {
                bail!("app id {} is configured twice", app.id);
            }
            app.api_key_hash()?;
        }
        let mut names = std::collections::HashSet::new();
        for d in &self.trust_domains {
            if !names.insert(&d.name) {
                bail!("trust domain {} is configured twice", d.name);
            }
            if d.ca_pem_files.is_empty() {
                bail!("trust domain {} lists no ca_pem_files", d.name);
            }
        }
        if self.store.kind == StoreKind::Redis && self.store.redis_url.is_none() {
            bail!("store.kind = \"redis\" needs store.redis_url");
        }
        self.cosigner.credential_hash()?;
        if let Some(url) = &self.cosigner.url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                bail!("cosigner.url must be an http(s) URL, got {url:?}");
            }
        }
        if self.limits.sockets_per_session == 0 {
            bail!("limits.sockets_per_session must be at least 1");
        }
        Ok(())
    }

    pub fn admin_token_hash(&self) -> anyhow::Result<Option<SecretHash>> {
        match (&self.admin_token, &self.admin_token_sha256) {
            (None, None) => Ok(None),
            (Some(t), None) => Ok(Some(SecretHash::of(t.as_bytes()))),
            (None, Some(h)) => Ok(Some(
                SecretHash::from_hex(h).context("admin_token_sha256 must be 64 hex digits")?,
            )),
            _ => bail!("set at most one of admin_token and admin_token_sha256"),
        }
    }
}

/// Where development mode and the development tools keep their CAs and secrets.
pub const DEFAULT_DATA_DIR: &str = "bzt-data";

/// Writes a secret (a key, a token file) readable by its owner only.
pub fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_environment_with_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bzt.toml");
        std::fs::write(
            &file,
            r#"
listen = "127.0.0.1:9000"
[store]
kind = "memory"
[[apps]]
id = "demo"
name = "示例交易平台"
api_key = "k"
allowed_origins = ["http://127.0.0.1:9000"]
[[trust_domains]]
name = "platform"
ca_pem_files = ["ca/root.pem"]
"#,
        )
        .unwrap();
        // figment's Jail API fixes the closure's error type.
        #[allow(clippy::result_large_err)]
        figment::Jail::expect_with(|jail| {
            jail.set_env("BZT_LOG", "debug");
            jail.set_env("BZT_STORE__KIND", "redis");
            jail.set_env("BZT_STORE__REDIS_URL", "redis://127.0.0.1:1");
            let cfg = Config::load(Some(&file)).map_err(|e| e.to_string())?;
            assert_eq!(cfg.listen, "127.0.0.1:9000");
            assert_eq!(cfg.store.kind, StoreKind::Redis);
            assert_eq!(
                cfg.trust_domains[0].ca_pem_files[0],
                dir.path().join("ca/root.pem")
            );
            assert_eq!(cfg.public_base_url(), "http://127.0.0.1:9000");
            cfg.validate().map_err(|e| e.to_string())?;
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bzt.toml");
        std::fs::write(&file, "lisen = \"x\"\n").unwrap();
        let err = Config::load(Some(&file)).unwrap_err();
        assert!(format!("{err:#}").contains("lisen"), "{err:#}");
    }
}
