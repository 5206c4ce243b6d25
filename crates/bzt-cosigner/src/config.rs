//! The service's configuration: embedded defaults, then a TOML file, then
//! `BZT_COSIGNER_*` environment variables (nested keys with `__`:
//! `BZT_COSIGNER_STORE__KIND=redis`). Relative paths are relative to the file.
//!
//! Without a file the service runs in development mode: a file store and a
//! generated master key under `data_dir`, open enrolment, and the broker of
//! the README's one run command at `http://127.0.0.1:8700`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on; its own, apart from the broker's.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// This node's name in audit records (several nodes may share a Redis).
    #[serde(default)]
    pub node_name: Option<String>,
    #[serde(default)]
    pub store: StoreConfig,
    /// 16-byte SM4 master key, hex: encrypts every server share and the
    /// channel key at rest. Or `master_key_file` (hex in a file).
    #[serde(default)]
    pub master_key_hex: Option<String>,
    #[serde(default)]
    pub master_key_file: Option<PathBuf>,
    /// Where development mode keeps its store and generated master key.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// The broker whose `POST /v1/cosign/context` names what may be signed.
    #[serde(default = "default_broker_url")]
    pub broker_url: String,
    /// The service's credential at the broker (`Authorization: Bearer`).
    #[serde(default)]
    pub broker_credential: Option<String>,
    /// Bearer token that `POST /v1/keys` requires. Without it enrolment is
    /// open only in development mode.
    #[serde(default)]
    pub enrolment_token: Option<String>,
    /// Bearer token of `/v1/admin/*` and `/v1/audit`; without it they are off.
    #[serde(default)]
    pub admin_token: Option<String>,
    /// Relying parties (opening halls) that may register opening windows.
    #[serde(default)]
    pub relying_parties: Vec<RelyingPartyConfig>,
    /// Refuse a co-decryption whose envelope has no window registered by a
    /// relying party (then a broker cannot lift a time lock by omitting it).
    #[serde(default)]
    pub require_registered_opening: bool,
    /// How far a PIN proof's `issued_at` may be from now, in seconds.
    #[serde(default = "default_proof_window_s")]
    pub proof_window_s: u64,
    /// How long after enrolment the key may co-sign its own PKCS#10 request.
    #[serde(default = "default_csr_window_s")]
    pub csr_window_s: u64,
    /// Development mode; set by the embedded defaults only.
    #[serde(default)]
    pub dev_mode: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelyingPartyConfig {
    pub id: String,
    pub token: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// One JSON file: one node (embedded mode).
    #[default]
    File,
    /// Redis: several nodes share it.
    Redis,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    #[serde(default)]
    pub kind: StoreKind,
    /// The file of `kind = "file"` (default `<data_dir>/cosigner-keys.json`).
    #[serde(default)]
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub redis_url: Option<String>,
    #[serde(default)]
    pub key_prefix: Option<String>,
}

fn default_listen() -> String {
    "127.0.0.1:8710".into()
}
fn default_broker_url() -> String {
    "http://127.0.0.1:8700".into()
}
fn default_proof_window_s() -> u64 {
    120
}
fn default_csr_window_s() -> u64 {
    600
}

impl Config {
    /// Development defaults: what `bzt cosigner serve` runs without a file.
    pub fn development() -> Self {
        Self {
            listen: default_listen(),
            node_name: None,
            store: StoreConfig::default(),
            master_key_hex: None,
            master_key_file: None,
            data_dir: Some(PathBuf::from("bzt-dev-data/cosigner")),
            broker_url: default_broker_url(),
            broker_credential: None,
            enrolment_token: None,
            admin_token: None,
            relying_parties: Vec::new(),
            require_registered_opening: false,
            proof_window_s: default_proof_window_s(),
            csr_window_s: default_csr_window_s(),
            dev_mode: true,
        }
    }

    /// Loads `file` (or the development defaults without one), then the
    /// environment, and checks what a production service must have.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut figment = match file {
            None => Figment::from(Serialized::defaults(Self::development())),
            Some(path) => Figment::from(Toml::file_exact(path)),
        };
        figment = figment.merge(Env::prefixed("BZT_COSIGNER_").split("__"));
        let mut config: Self = figment
            .extract()
            .context("reading the co-signing service configuration")?;
        if let Some(dir) = file.and_then(Path::parent) {
            config.resolve_relative(dir);
        }
        config.check()?;
        Ok(config)
    }

    fn resolve_relative(&mut self, base: &Path) {
        for path in [
            &mut self.master_key_file,
            &mut self.data_dir,
            &mut self.store.path,
        ]
        .into_iter()
        .flatten()
        {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.dev_mode {
            return Ok(());
        }
        if self.master_key_hex.is_none() && self.master_key_file.is_none() {
            bail!(
                "set master_key_hex or master_key_file: the server shares are encrypted under it"
            );
        }
        if self.broker_credential.is_none() {
            bail!(
                "set broker_credential: the service fetches what to sign from the broker with it"
            );
        }
        if self.enrolment_token.is_none() {
            bail!("set enrolment_token: without it anyone could enrol keys");
        }
        if self.store.kind == StoreKind::Redis && self.store.redis_url.is_none() {
            bail!("store.kind = \"redis\" needs store.redis_url");
        }
        if self.store.kind == StoreKind::File
            && self.store.path.is_none()
            && self.data_dir.is_none()
        {
            bail!("store.kind = \"file\" needs store.path or data_dir");
        }
        Ok(())
    }

    pub fn store_path(&self) -> PathBuf {
        self.store.path.clone().unwrap_or_else(|| {
            self.data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("."))
                .join("cosigner-keys.json")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_production_file_without_a_master_key_is_refused_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cosigner.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:0\"\nbroker_credential = \"c\"\nenrolment_token = \"e\"\n",
        )
        .unwrap();
        let err = Config::load(Some(&path)).unwrap_err();
        assert!(format!("{err:#}").contains("master_key"), "{err:#}");
        std::fs::write(
            &path,
            "master_key_file = \"mk.hex\"\ndata_dir = \"data\"\nbroker_credential = \"c\"\nenrolment_token = \"e\"\n",
        )
        .unwrap();
        let config = Config::load(Some(&path)).unwrap();
        assert_eq!(config.master_key_file.unwrap(), dir.path().join("mk.hex"));
        assert!(!config.dev_mode);
    }
}
