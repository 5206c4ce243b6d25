//! Development mode: what `bzt serve` runs on without a configuration file.
//!
//! Two development CAs (trust domains `platform` and `national`, so the
//! multi-domain path is exercised from day one), a demo app and an admin
//! token, all kept in the data directory and reused on restart.

use crate::config::{AppConfig, Config, TrustDomainConfig};
use anyhow::Context;
use bzt_core::secret::{b64url, random_bytes};
use bzt_devca::DevCa;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use crate::config::write_private;
pub use crate::config::DEFAULT_DATA_DIR;
pub const DEMO_APP_ID: &str = "demo";
pub const DEMO_APP_NAME: &str = "示例交易平台";
pub const DOMAINS: [(&str, &str); 2] = [
    ("platform", "BZT 开发测试 平台 CA"),
    ("national", "BZT 开发测试 全国互认 CA"),
];

/// Secrets of development mode, generated once per data directory.
#[derive(Serialize, Deserialize)]
pub struct DevSecrets {
    pub demo_api_key: String,
    pub demo_webhook_secret: String,
    pub admin_token: String,
    /// The development co-signing service's credential at the broker (a data directory
    /// from before key splitting gets one on its next start).
    #[serde(default)]
    pub cosigner_credential: Option<String>,
    /// The development co-signing service's admin token.
    #[serde(default)]
    pub cosigner_admin_token: Option<String>,
}

pub fn data_dir(config: &Config) -> PathBuf {
    config
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
}

pub fn ca_dir(data_dir: &Path, domain: &str) -> PathBuf {
    data_dir.join("dev-ca").join(domain)
}

/// Loads or creates the development CA of `domain`.
pub fn dev_ca(data_dir: &Path, domain: &str) -> anyhow::Result<DevCa> {
    let (_, cn) = DOMAINS
        .iter()
        .find(|(d, _)| *d == domain)
        .with_context(|| {
            format!("unknown development trust domain {domain:?} (platform or national)")
        })?;
    DevCa::load_or_generate(&ca_dir(data_dir, domain), cn, "BZT Development", domain)
        .with_context(|| format!("development CA {domain}"))
}

fn load_or_create_secrets(data_dir: &Path) -> anyhow::Result<DevSecrets> {
    let file = data_dir.join("dev-secrets.json");
    let mut secrets = match std::fs::read_to_string(&file) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("{} is corrupt; delete it", file.display()))?,
        Err(_) => DevSecrets {
            demo_api_key: format!("demo_{}", b64url(&random_bytes::<24>())),
            demo_webhook_secret: b64url(&random_bytes::<24>()),
            admin_token: format!("admin_{}", b64url(&random_bytes::<24>())),
            cosigner_credential: None,
            cosigner_admin_token: None,
        },
    };
    if secrets.cosigner_credential.is_some() && secrets.cosigner_admin_token.is_some() {
        return Ok(secrets);
    }
    secrets
        .cosigner_credential
        .get_or_insert_with(|| format!("cosigner_{}", b64url(&random_bytes::<24>())));
    secrets
        .cosigner_admin_token
        .get_or_insert_with(|| format!("cosadmin_{}", b64url(&random_bytes::<24>())));
    std::fs::create_dir_all(data_dir)?;
    write_private(&file, &serde_json::to_string_pretty(&secrets)?)?;
    Ok(secrets)
}

/// Fills `config` (defaults plus environment) with the development setup.
pub fn embedded(mut config: Config) -> anyhow::Result<(Config, DevSecrets)> {
    let dir = data_dir(&config);
    for (domain, _) in DOMAINS {
        dev_ca(&dir, domain)?;
    }
    let secrets = load_or_create_secrets(&dir)?;
    if config.trust_domains.is_empty() {
        config.trust_domains = DOMAINS
            .iter()
            .map(|(d, _)| TrustDomainConfig {
                name: (*d).into(),
                ca_pem_files: vec![ca_dir(&dir, d).join(bzt_devca::CA_CERT_FILE)],
                ..Default::default()
            })
            .collect();
    }
    if config.seals.trusted_makers_pem_files.is_empty() {
        // The development CAs double as seal makers (`bzt dev-ca make-seal`).
        config.seals.trusted_makers_pem_files = DOMAINS
            .iter()
            .map(|(d, _)| ca_dir(&dir, d).join(bzt_devca::CA_CERT_FILE))
            .collect();
    }
    if config.apps.is_empty() {
        let base = config.public_base_url();
        let mut origins = vec![base.clone()];
        // The same page opened as localhost or 127.0.0.1.
        if base.contains("127.0.0.1") {
            origins.push(base.replace("127.0.0.1", "localhost"));
        }
        config.apps.push(AppConfig {
            id: DEMO_APP_ID.into(),
            name: DEMO_APP_NAME.into(),
            api_key: Some(secrets.demo_api_key.clone()),
            api_key_sha256: None,
            allowed_origins: origins,
            webhook_secret: Some(secrets.demo_webhook_secret.clone()),
        });
    }
    if config.admin_token.is_none() && config.admin_token_sha256.is_none() {
        config.admin_token = Some(secrets.admin_token.clone());
    }
    // The co-signing service of split keys runs beside the broker, as a child process
    // ([`DevCosigner::start`], which also sets `[cosigner] url`), unless `url` names one already.
    if config.cosigner.url.is_none() {
        config.cosigner.dev_listen = Some(cosigner_listen(&config.listen)?);
        config.cosigner.credential = secrets.cosigner_credential.clone();
        config.cosigner.credential_sha256 = None;
        config.cosigner.admin_token = secrets.cosigner_admin_token.clone();
    }
    config.dev_mode = true;
    Ok((config, secrets))
}

/// Where the development service listens: the broker's port plus one (8701 beside 8700, a
/// port people can type), or a port the service itself picks when the broker's is picked by the
/// system (`:0`, as tests run it): probing for a free port and handing it over would race with
/// every other process binding ports meanwhile.
fn cosigner_listen(listen: &str) -> anyhow::Result<String> {
    let port = listen
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .with_context(|| format!("listen = {listen:?} has no port"))?;
    Ok(match port {
        0 | u16::MAX => "127.0.0.1:0".to_string(),
        port => format!("127.0.0.1:{}", port + 1),
    })
}

/// The development co-signing service: `bzt cosigner serve` as a separate process (so, as in
/// production, the broker cannot co-sign by itself), with its own generated configuration in
/// `<data_dir>/cosigner/cosigner.toml`. Killed when this handle is dropped.
pub struct DevCosigner {
    child: tokio::process::Child,
    pub url: String,
}

impl DevCosigner {
    /// Starts the service when development mode asked for one (`[cosigner] dev_listen`), waits
    /// until it answers and points `config.cosigner.url` at it. `broker_url` is where the
    /// service asks for contexts (the broker's own address, so the broker binds first).
    pub async fn start(config: &mut Config, broker_url: &str) -> anyhow::Result<Option<Self>> {
        let Some(listen) = config.cosigner.dev_listen.clone() else {
            return Ok(None);
        };
        let started = match Self::start_on(config, broker_url, &listen).await {
            // Port + 1 is taken by something else: any port will do, the banner prints it.
            Err(e) if !listen.ends_with(":0") => {
                tracing::warn!(error = %format!("{e:#}"), %listen, "development co-signing service: trying any free port");
                Self::start_on(config, broker_url, "127.0.0.1:0").await?
            }
            started => started?,
        };
        config.cosigner.url = Some(started.url.clone());
        Ok(Some(started))
    }

    async fn start_on(config: &Config, broker_url: &str, listen: &str) -> anyhow::Result<Self> {
        let dir = data_dir(config).join("cosigner");
        std::fs::create_dir_all(&dir)?;
        let dir = std::fs::canonicalize(&dir)?;
        let toml_text = format!(
            "# Generated by `bzt serve` in development mode; rewritten on every start.\n\
             dev_mode = true\n\
             listen = {listen:?}\n\
             data_dir = {data:?}\n\
             broker_url = {broker_url:?}\n\
             broker_credential = {credential:?}\n\
             admin_token = {admin:?}\n",
            data = dir.display().to_string(),
            credential = config.cosigner.credential.clone().unwrap_or_default(),
            admin = config.cosigner.admin_token.clone().unwrap_or_default(),
        );
        let file = dir.join("cosigner.toml");
        write_private(&file, &toml_text)?;
        // The service writes the address it bound here; a stale one from the last run must not
        // be read as this one's.
        let address_file = dir.join("listening-address");
        match std::fs::remove_file(&address_file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        let exe = std::env::current_exe().context("cannot find the bzt executable")?;
        let child = tokio::process::Command::new(exe)
            .args(["cosigner", "serve", "--exit-with-stdin", "--config"])
            .arg(&file)
            .arg("--address-file")
            .arg(&address_file)
            .env_remove("BZT_COSIGNER_CONFIG")
            // Its stdin is a pipe from this process: closed when the broker dies, however.
            .stdin(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start the development co-signing service")?;
        let mut this = Self {
            child,
            url: String::new(),
        };
        this.url = this.wait_until_answering(&address_file).await?;
        Ok(this)
    }

    /// Waits until the service has written its address and answers `GET /v1/info` there; its
    /// base URL.
    async fn wait_until_answering(&mut self, address_file: &Path) -> anyhow::Result<String> {
        const PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);
        let http = reqwest::Client::new();
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("the development co-signing service exited ({status})");
            }
            if let Ok(address) = std::fs::read_to_string(address_file) {
                let url = format!("http://{}", address.trim());
                if http
                    .get(format!("{url}/v1/info"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
                {
                    return Ok(url);
                }
            }
            if std::time::Instant::now() > deadline {
                anyhow::bail!(
                    "the development co-signing service did not answer within {} s",
                    PATIENCE.as_secs()
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}
