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

pub const DEFAULT_DATA_DIR: &str = "bzt-data";
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
    if let Ok(text) = std::fs::read_to_string(&file) {
        return serde_json::from_str(&text)
            .with_context(|| format!("{} is corrupt; delete it", file.display()));
    }
    let secrets = DevSecrets {
        demo_api_key: format!("demo_{}", b64url(&random_bytes::<24>())),
        demo_webhook_secret: b64url(&random_bytes::<24>()),
        admin_token: format!("admin_{}", b64url(&random_bytes::<24>())),
    };
    std::fs::create_dir_all(data_dir)?;
    write_private(&file, &serde_json::to_string_pretty(&secrets)?)?;
    Ok(secrets)
}

pub(crate) fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
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
    config.dev_mode = true;
    Ok((config, secrets))
}
