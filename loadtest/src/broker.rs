//! The broker under test as child processes (`bzt serve --config`), and what
//! they share: a CA the trust domain accepts and a pool of phone identities.

use anyhow::{bail, Context};
use bzt_devca::{DevCa, LeafSpec};
use bzt_phone::PhoneIdentity;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const API_KEY: &str = "bzt-load-test-api-key-0123456789";

/// A temp dir with the CA, configs and logs, and the phone identities.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub identities: Vec<PhoneIdentity>,
    /// The CA, kept to certify split keys enrolled during a run.
    pub ca: DevCa,
}

impl Fixture {
    /// Generates the CA and issues `n` phone certificates (kept keys, so
    /// phones sign without rebuilding them).
    pub fn new(n: usize) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("bzt-load-").tempdir()?;
        let ca = DevCa::load_or_generate(
            &dir.path().join("ca"),
            "负载测试根",
            "bzt 负载测试",
            "platform",
        )
        .context("development CA")?;
        std::fs::write(dir.path().join("ca.pem"), ca.cert_pem())?;
        let mut identities = Vec::with_capacity(n);
        for i in 0..n {
            let leaf = ca.issue(&LeafSpec::new(format!("测试用户{i}"), "示例建设有限公司"))?;
            let id = PhoneIdentity::from_pem(&leaf.cert_pem, &leaf.key_pem, None)?
                .with_device(format!("load-phone-{i}"), format!("负载手机{i}"));
            identities.push(id);
        }
        Ok(Self {
            dir,
            identities,
            ca,
        })
    }
}

/// CPUs (a `taskset -c` list) for the broker nodes and Redis, set once by
/// `bzt-load --broker-cpus`; unset, they run wherever the kernel puts them.
static SERVER_CPUS: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Pins every broker node and Redis started from now on to `cpus`.
pub fn pin_servers_to(cpus: &str) -> anyhow::Result<()> {
    SERVER_CPUS
        .set(cpus.to_owned())
        .map_err(|_| anyhow::anyhow!("server CPUs already set"))
}

/// `program`, under `taskset -c <cpus>` when servers are pinned (taskset
/// execs it, so the pid is the server's own, for CPU sampling).
fn server_command(program: &Path) -> Command {
    let mut c = match SERVER_CPUS.get() {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpus).arg(program);
            c
        }
        None => Command::new(program),
    };
    // The broker reads every BZT_* variable as configuration: the load
    // test's own knobs (BZT_LOAD_BIN, the scripts' BZT_BIN, BZT_BROKER_CPUS…)
    // would make it refuse to start. Nodes get their settings from files.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("BZT_") {
            c.env_remove(name);
        }
    }
    c
}

/// The `bzt` binary to run: `$BZT_LOAD_BIN`, else `target/release/bzt` of this workspace.
pub fn default_bzt_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BZT_LOAD_BIN") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/bzt")
}

/// A port that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Where a node keeps its sessions.
#[derive(Clone, Debug)]
pub enum Store {
    Memory,
    Redis { url: String, prefix: String },
}

/// A child process killed on drop.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(2000);
        text.get(start..).unwrap_or_default().to_owned()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One `bzt serve` node.
pub struct Node {
    pub base: String,
    pub proc: Proc,
}

impl Node {
    pub async fn spawn(
        bin: &Path,
        fx: &Fixture,
        name: &str,
        store: &Store,
    ) -> anyhow::Result<Self> {
        Self::spawn_with(bin, fx, name, store, "").await
    }

    /// [`Node::spawn`] with `extra` appended to its configuration (a `[cosigner]` table).
    pub async fn spawn_with(
        bin: &Path,
        fx: &Fixture,
        name: &str,
        store: &Store,
        extra: &str,
    ) -> anyhow::Result<Self> {
        let port = free_port()?;
        let base = format!("http://127.0.0.1:{port}");
        let store_toml = match store {
            Store::Memory => "kind = \"memory\"".to_owned(),
            Store::Redis { url, prefix } => format!(
                "kind = \"redis\"\nredis_url = \"{url}\"\nkey_prefix = \"{prefix}\"\ntimeout_ms = 2000"
            ),
        };
        // Nodes sharing a store append to one audit stream, signed with one
        // key (the first node creates it; they start one after another).
        let audit_toml = match store {
            Store::Memory => "",
            Store::Redis { .. } => "[audit]\nsigning_key_file = \"audit-signing-key.pem\"\n",
        };
        let config = fx.dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                r#"listen = "127.0.0.1:{port}"
public_base_url = "{base}"
data_dir = "{name}-data"
[store]
{store_toml}
[limits]
claims_per_ip_per_minute = 1000000000
creates_per_app_per_second = 1000000000
sockets_per_ip_per_minute = 1000000000
sockets_per_session = 8
{audit_toml}[[apps]]
id = "load"
name = "负载测试平台"
api_key = "{API_KEY}"
[[trust_domains]]
name = "platform"
ca_pem_files = ["ca.pem"]
{extra}"#
            ),
        )?;
        let log = fx.dir.path().join(format!("{name}.log"));
        let out = std::fs::File::create(&log)?;
        if !bin.exists() {
            bail!(
                "no broker binary at {} (cargo build --release --bin bzt, or set BZT_LOAD_BIN)",
                bin.display()
            );
        }
        let child = server_command(bin)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env("BZT_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let mut node = Self {
            base,
            proc: Proc {
                name: name.to_owned(),
                child,
                log,
            },
        };
        node.wait_ready().await?;
        Ok(node)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.proc.child.try_wait() {
                bail!(
                    "{} exited with {status}: {}",
                    self.proc.name,
                    self.proc.log_tail()
                );
            }
            if let Ok(r) = http.get(format!("{}/readyz", self.base)).send().await {
                if r.status() == 200 {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "{} not ready in 30 s: {}",
                    self.proc.name,
                    self.proc.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
}

/// A throwaway `redis-server` (no persistence).
pub fn spawn_redis(dir: &Path) -> anyhow::Result<(Proc, String)> {
    let port = free_port()?;
    let log = dir.join("redis.log");
    let out = std::fs::File::create(&log)?;
    let child = server_command(Path::new("redis-server"))
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .context("start redis-server (apt-get install redis-server)")?;
    let proc = Proc {
        name: "redis".into(),
        child,
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let mut buf = [0u8; 7];
            if s.write_all(b"PING\r\n").is_ok()
                && s.read_exact(&mut buf).is_ok()
                && &buf == b"+PONG\r\n"
            {
                return Ok((proc, format!("redis://127.0.0.1:{port}")));
            }
        }
        if Instant::now() > deadline {
            bail!("redis-server not answering: {}", proc.log_tail());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The co-signing service of split keys (`bzt cosigner serve`), a process of its own as in
/// production, for the broker at `broker` (which must accept [`COSIGNER_CREDENTIAL`]).
pub struct Cosigner {
    pub url: String,
    pub proc: Proc,
}

/// The credential the load test's co-signing service presents to its broker.
pub const COSIGNER_CREDENTIAL: &str = "bzt-load-cosigner-credential-0123456789";

impl Cosigner {
    /// The broker's configuration table that accepts this service.
    pub fn broker_toml() -> String {
        format!("[cosigner]\ncredential = \"{COSIGNER_CREDENTIAL}\"\n")
    }

    pub async fn spawn(bin: &Path, fx: &Fixture, broker: &str) -> anyhow::Result<Self> {
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}");
        let config = fx.dir.path().join("cosigner.toml");
        std::fs::write(
            &config,
            format!(
                r#"dev_mode = true
listen = "127.0.0.1:{port}"
data_dir = "cosigner-data"
broker_url = "{broker}"
broker_credential = "{COSIGNER_CREDENTIAL}"
"#
            ),
        )?;
        let log = fx.dir.path().join("cosigner.log");
        let out = std::fs::File::create(&log)?;
        // On the broker's CPUs (`--broker-cpus`): it is server work too.
        let child = server_command(bin)
            .args(["cosigner", "serve", "--config"])
            .arg(&config)
            .env("BZT_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("start {} cosigner serve", bin.display()))?;
        let mut me = Self {
            url,
            proc: Proc {
                name: "cosigner".into(),
                child,
                log,
            },
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = me.proc.child.try_wait() {
                bail!(
                    "the co-signing service exited with {status}: {}",
                    me.proc.log_tail()
                );
            }
            if let Ok(r) = http.get(format!("{}/v1/info", me.url)).send().await {
                if r.status() == 200 {
                    return Ok(me);
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "the co-signing service is not ready in 30 s: {}",
                    me.proc.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
}
