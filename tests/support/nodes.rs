//! Broker nodes as separate processes of the real binary, all pointing at
//! one Redis (or Redis Cluster), or one on its own memory store, and the
//! RP, browser and phone sides that talk to them.
//!
//! Ports: a process cannot be told to bind port 0 and report it back
//! cheaply, so each node gets a port found free by binding and releasing
//! it, and its TOML config names it.

use bzt_devca::{DevCa, LeafSpec};
use bzt_phone::{Phone, PhoneIdentity, QrText};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

pub const API_KEY: &str = "bzt-multi-node-test-key";
pub const ADMIN_TOKEN: &str = "bzt-multi-node-admin-token";
pub const WEBHOOK_SECRET: &str = "bzt-multi-node-webhook-secret";

/// What every node shares: a CA its trust domain accepts, a phone identity
/// it issued, the audit signing key (the audit trail is one chain in Redis,
/// signed by one key), and a directory for configs and logs.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub identity: PhoneIdentity,
    pub http: reqwest::Client,
    pub phone: Phone,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("bzt-nodes-")
            .tempdir()
            .unwrap();
        let ca = DevCa::generate("测试根", "bzt 测试", "platform").unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).unwrap();
        let leaf = ca
            .issue(&LeafSpec::new("张三", "示例建设有限公司"))
            .unwrap();
        let identity = PhoneIdentity::from_pem(&leaf.cert_pem, &leaf.key_pem, None).unwrap();
        bzt::store::file_audit::load_or_create_key(&dir.path().join("audit-signing-key.pem"))
            .unwrap();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(64)
            .build()
            .unwrap();
        Self {
            dir,
            identity,
            phone: Phone::new(http.clone()),
            http,
        }
    }

    /// Starts `n` nodes on `redis_url` (comma-separated: a Cluster) under
    /// one key prefix, and waits until each is ready.
    pub async fn start_nodes(&self, n: usize, redis_url: &str) -> Vec<Node> {
        self.start_nodes_with(n, redis_url, Cpus::All).await
    }

    /// [`Self::start_nodes`], each node allowed a single CPU (`taskset`),
    /// as a container with a one-CPU limit would be.
    pub async fn start_nodes_on_one_cpu(&self, n: usize, redis_url: &str) -> Vec<Node> {
        self.start_nodes_with(n, redis_url, Cpus::One).await
    }

    /// One node on its own memory store (embedded mode, audit log on
    /// disk), allowed a single CPU.
    pub async fn start_embedded_on_one_cpu(&self) -> Node {
        let mut node = Node::spawn(self, "embedded", None, "", Cpus::One);
        node.wait_ready(&self.http).await;
        node
    }

    /// One embedded node that may run on every CPU but gets the CPU time
    /// of one: a cgroup CPU quota, the limit `docker run --cpus 1` or a
    /// Kubernetes CPU limit of 1 sets. `None` when this test process may
    /// not make cgroups (not root).
    pub async fn start_embedded_under_a_quota_of_one_cpu(&self) -> Option<Node> {
        let group = CpuQuotaGroup::of_one_cpu(&format!("bzt-test-{}", std::process::id()))?;
        let mut node = Node::spawn(self, "embedded", None, "", Cpus::Quota(group));
        node.wait_ready(&self.http).await;
        Some(node)
    }

    async fn start_nodes_with(&self, n: usize, redis_url: &str, cpus: Cpus) -> Vec<Node> {
        let prefix = format!("it-{}", bzt_core::SessionId::generate());
        let mut nodes: Vec<Node> = (1..=n)
            .map(|i| {
                let name = format!("node{i}");
                Node::spawn(self, &name, Some(redis_url), &prefix, cpus.clone())
            })
            .collect();
        for node in &mut nodes {
            node.wait_ready(&self.http).await;
        }
        nodes
    }
}

/// The CPUs a node process may run on.
#[derive(Clone)]
enum Cpus {
    All,
    /// The first CPU this test may use.
    One,
    /// Every CPU, within a CPU-time quota (a cgroup of its own).
    Quota(std::sync::Arc<CpuQuotaGroup>),
}

/// A cgroup whose CPU quota is one CPU's time, removed when dropped (after
/// its processes are gone). Uses the cgroup v1 `cpu` controller where it is
/// mounted (as on the machine this project is developed on), else cgroup
/// v2's `cpu.max`.
pub struct CpuQuotaGroup {
    dir: PathBuf,
}

impl CpuQuotaGroup {
    /// `None`, saying why, when this process may not make one (not root, a
    /// read-only cgroup file system as in some containers, or a cgroup v2
    /// tree without the `cpu` controller).
    fn of_one_cpu(name: &str) -> Option<std::sync::Arc<Self>> {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let root = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .is_some_and(|ids| ids.split_whitespace().nth(1) == Some("0"));
        if !root {
            eprintln!("not root: no cgroup for a CPU quota, so this check is skipped");
            return None;
        }
        let v1 = PathBuf::from("/sys/fs/cgroup/cpu");
        let (dir, limits): (PathBuf, &[(&str, &str)]) = if v1.join("cpu.cfs_quota_us").exists() {
            (
                v1.join(name),
                &[
                    ("cpu.cfs_period_us", "100000"),
                    ("cpu.cfs_quota_us", "100000"),
                ],
            )
        } else {
            (
                PathBuf::from("/sys/fs/cgroup").join(name),
                &[("cpu.max", "100000 100000")],
            )
        };
        if let Err(e) = std::fs::create_dir_all(&dir) {
            eprintln!(
                "cannot make the cgroup {} ({e}), so this check is skipped",
                dir.display()
            );
            return None;
        }
        let group = std::sync::Arc::new(Self { dir });
        for (file, value) in limits {
            let path = group.dir.join(file);
            if let Err(e) = std::fs::write(&path, value) {
                eprintln!(
                    "cannot write {value} to {} ({e}), so this check is skipped",
                    path.display()
                );
                return None;
            }
        }
        Some(group)
    }

    /// `program` started inside this group (a shell moves itself in, then
    /// becomes the program).
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(r#"echo $$ > "$0/cgroup.procs" && exec "$@""#)
            .arg(&self.dir)
            .arg(program);
        c
    }
}

impl Drop for CpuQuotaGroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The first CPU in this process's affinity list (`Cpus_allowed_list`).
fn first_allowed_cpu() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list in /proc/self/status");
    list.trim().split([',', '-']).next().unwrap().to_owned()
}

/// One `bzt serve` process.
pub struct Node {
    pub name: String,
    pub port: u16,
    pub base: String,
    /// The Redis key prefix every node of the test shares.
    pub prefix: String,
    config: PathBuf,
    log: PathBuf,
    cpus: Cpus,
    child: Option<Child>,
}

impl Node {
    /// A node on `redis_url` under `prefix`, or on a memory store.
    fn spawn(fx: &Fixture, name: &str, redis_url: Option<&str>, prefix: &str, cpus: Cpus) -> Self {
        let port = super::redis::free_port(false);
        let base = format!("http://127.0.0.1:{port}");
        let config = fx.dir.path().join(format!("{name}.toml"));
        let store = match redis_url {
            // Generous for a loaded 2-core test machine running six servers;
            // production keeps the 500 ms default.
            Some(url) => format!(
                "kind = \"redis\"\nredis_url = \"{url}\"\nkey_prefix = \"{prefix}\"\ntimeout_ms = 2000"
            ),
            None => "kind = \"memory\"".to_owned(),
        };
        std::fs::write(
            &config,
            format!(
                r#"listen = "127.0.0.1:{port}"
public_base_url = "{base}"
data_dir = "{name}-data"
admin_token = "{ADMIN_TOKEN}"
[store]
{store}
[limits]
claims_per_ip_per_minute = 1000000
creates_per_app_per_second = 1000000
sockets_per_ip_per_minute = 1000000
sockets_per_session = 8
[audit]
signing_key_file = "audit-signing-key.pem"
checkpoint_every = 5
[webhooks]
# The test's webhook receiver listens on loopback.
allowed_private_networks = ["127.0.0.1/32"]
[[apps]]
id = "demo"
name = "示例交易平台"
api_key = "{API_KEY}"
webhook_secret = "{WEBHOOK_SECRET}"
[[trust_domains]]
name = "platform"
ca_pem_files = ["ca.pem"]
"#
            ),
        )
        .unwrap();
        let mut node = Self {
            name: name.to_owned(),
            port,
            base,
            prefix: prefix.to_owned(),
            config,
            log: fx.dir.path().join(format!("{name}.log")),
            cpus,
            child: None,
        };
        node.start();
        node
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let bin = env!("CARGO_BIN_EXE_bzt");
        let mut command = match &self.cpus {
            Cpus::All => Command::new(bin),
            Cpus::One => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(first_allowed_cpu()).arg(bin);
                c
            }
            Cpus::Quota(group) => group.command(bin),
        };
        let child = command
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            // Warnings, and the start line (it names the runtime).
            .env("BZT_LOG", "warn,bzt::cli=info")
            .env_remove("BZT_CONFIG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start the bzt binary");
        self.child = Some(child);
    }

    /// Waits for `/readyz` to answer 200 (the process is up and Redis reachable).
    pub async fn wait_ready(&mut self, http: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut moves = 0;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                let taken = format!("cannot listen on 127.0.0.1:{}: Address", self.port);
                if moves < 5 && self.log().contains(&taken) {
                    // Another process took the port between `free_port` and
                    // the node's bind (an outgoing connection's ephemeral
                    // port, say): the node starts again on another one.
                    moves += 1;
                    self.move_to(super::redis::free_port(false));
                    continue;
                }
                panic!("{} exited with {status}: {}", self.name, self.log());
            }
            if let Ok(r) = http.get(format!("{}/readyz", self.base)).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready in 30 s: {}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts the node again on `port` (its configuration rewritten).
    fn move_to(&mut self, port: u16) {
        let config = std::fs::read_to_string(&self.config).unwrap();
        let old = format!("127.0.0.1:{}", self.port);
        let new = format!("127.0.0.1:{port}");
        std::fs::write(&self.config, config.replace(&old, &new)).unwrap();
        self.port = port;
        self.base = format!("http://{new}");
        self.child = None;
        self.start();
    }

    /// SIGKILL: no shutdown, no goodbye to its sockets.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGKILL, then the same node (port, config, data) again, ready.
    pub async fn restart(&mut self, http: &reqwest::Client) {
        self.kill();
        self.start();
        self.wait_ready(http).await;
    }

    /// SIGTERM, then waits up to `within` for the process to exit; its exit code.
    pub fn terminate(&mut self, within: Duration) -> Option<i32> {
        let child = self.child.as_mut()?;
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {}", child.id());
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return status.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The same URL, on this node (`http://host:port/...` or `ws://...`).
    pub fn rebase(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").expect("absolute URL");
        let path = rest.find('/').map_or("", |i| &rest[i..]);
        format!("{scheme}://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The create answer's useful parts.
#[derive(Clone, Debug)]
pub struct Created {
    pub id: String,
    pub qr_text: String,
    pub ws_url: String,
}

/// `POST /v1/sessions` on `node`; the raw answer on any non-201.
pub async fn try_create(
    http: &reqwest::Client,
    node: &Node,
    ttl_s: u32,
) -> Result<Created, (u16, Value, Option<String>)> {
    let r = http
        .post(format!("{}/v1/sessions", node.base))
        .bearer_auth(API_KEY)
        .json(&json!({ "kind": "login", "ttl_s": ttl_s, "display": { "title": "登录 示例交易平台" } }))
        .send()
        .await
        .map_err(|e| (0, json!(e.to_string()), None))?;
    let status = r.status().as_u16();
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: Value = r.json().await.unwrap_or(Value::Null);
    if status != 201 {
        return Err((status, body, retry_after));
    }
    Ok(Created {
        id: body["id"].as_str().unwrap().to_owned(),
        qr_text: body["qr_text"].as_str().unwrap().to_owned(),
        ws_url: body["ws_url"].as_str().unwrap().to_owned(),
    })
}

pub async fn create(http: &reqwest::Client, node: &Node, ttl_s: u32) -> Created {
    try_create(http, node, ttl_s)
        .await
        .unwrap_or_else(|e| panic!("create on {}: {e:?}", node.name))
}

/// `GET url` as the RP (the test app's API key): the JSON answer of a 200.
pub async fn rp_get(http: &reqwest::Client, url: String) -> Value {
    let r = http.get(&url).bearer_auth(API_KEY).send().await.unwrap();
    assert_eq!(r.status(), 200, "GET {url}");
    r.json().await.unwrap()
}

/// The QR text as a phone would scan it, pointed at `node`.
pub fn qr_on(node: &Node, qr_text: &str) -> QrText {
    QrText::parse(&node.rebase(qr_text)).unwrap()
}

/// A browser's WebSocket.
pub struct Browser {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

/// What a browser saw until its socket ended.
#[derive(Debug, Default)]
pub struct Seen {
    pub events: Vec<Value>,
    /// The close frame's code, if the server sent one.
    pub close_code: Option<u16>,
}

impl Seen {
    pub fn of_type(&self, t: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| e["type"] == t).collect()
    }
}

impl Browser {
    pub async fn connect(ws_url: &str) -> Result<Self, String> {
        let (ws, _) = tokio_tungstenite::connect_async(ws_url)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Self { ws })
    }

    /// The next JSON event; `None` if the socket ended (or `within` passed).
    pub async fn next_event(&mut self, within: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??;
            match msg {
                Ok(Message::Text(t)) => return serde_json::from_str(t.as_str()).ok(),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Every event until the server closes the socket (or `within` passes).
    pub async fn until_closed(mut self, within: Duration) -> Seen {
        let mut seen = Seen::default();
        let deadline = tokio::time::Instant::now() + within;
        while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, self.ws.next()).await {
            match msg {
                Ok(Message::Text(t)) => {
                    if let Ok(v) = serde_json::from_str(t.as_str()) {
                        seen.events.push(v);
                    }
                }
                Ok(Message::Close(frame)) => {
                    seen.close_code = frame.map(|f| u16::from(f.code));
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let _ = self.ws.close(None).await;
        seen
    }

    pub async fn send_json(&mut self, v: &Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .unwrap();
    }
}
