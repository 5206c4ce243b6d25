//! Throw-away Redis servers for tests: `redis-server` as a child process on
//! a free loopback port, with its own temporary directory, no persistence,
//! killed on drop. A 3-master Redis Cluster is built the same way.
//!
//! Needs `redis-server` and `redis-cli` (Debian: `redis-server`,
//! `redis-tools`; `scripts/install-test-deps.sh` installs them). A missing
//! binary fails the test with that hint: it never silently skips.
//!
//! A watchdog shell per server kills it if the test process dies without
//! running destructors (a panic in a static, `SIGKILL`), so no stray
//! server outlives a test run.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const INSTALL_HINT: &str =
    "redis-server and redis-cli are needed by the Redis tests: run scripts/install-test-deps.sh \
     (or apt-get install redis-server redis-tools)";

/// One `redis-server` child process.
pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    /// Keeps the directory alive (and removes it at the end).
    _tmp: Option<tempfile::TempDir>,
    cluster: bool,
    child: Option<Child>,
    watchdog: Option<Child>,
}

/// A port that is free now on 127.0.0.1 (and, with `bus`, so is port + 10000,
/// Redis Cluster's bus port).
pub fn free_port(bus: bool) -> u16 {
    for _ in 0..200 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().unwrap().port();
        if !bus {
            return port;
        }
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
    panic!("no free port pair found");
}

impl RedisServer {
    /// A standalone server, ready to answer.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    fn start_with(cluster: bool) -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("bzt-redis-")
            .tempdir()
            .expect("temp dir");
        let mut last_err = String::new();
        for _ in 0..5 {
            let mut s = Self {
                port: free_port(cluster),
                dir: tmp.path().to_path_buf(),
                _tmp: None,
                cluster,
                child: None,
                watchdog: None,
            };
            match s.spawn() {
                Ok(()) => {
                    s._tmp = Some(tmp);
                    return s;
                }
                // Someone took the port between our check and the server's bind.
                Err(e) => last_err = e,
            }
        }
        panic!("redis-server did not start: {last_err}");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let port = self.port.to_string();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port, "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no", "--protected-mode", "no"])
            .args(["--daemonize", "no", "--loglevel", "warning"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join(format!("redis-{port}.log")));
        if self.cluster {
            cmd.args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf")]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run redis-server ({e}). {INSTALL_HINT}"));
        let pid = child.id();
        self.child = Some(child);
        self.watchdog = Some(watchdog(pid));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Err(format!("exited with {status}; log: {}", self.log_tail()));
            }
            if ping(self.port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("no PONG within 10 s; log: {}", self.log_tail()))
    }

    fn log_tail(&self) -> String {
        let log = self.dir.join(format!("redis-{}.log", self.port));
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    /// Kills the server (an outage). Data is gone: there is no persistence.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }

    /// Starts it again on the same port (after [`RedisServer::stop`]).
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => panic!("redis-server restart: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `PING` over a plain socket: is the server answering?
pub fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

/// Kills `pid` once this test process is gone, whatever way it went.
fn watchdog(pid: u32) -> Child {
    let me = std::process::id();
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "while kill -0 {me} 2>/dev/null && kill -0 {pid} 2>/dev/null; do sleep 1; done; kill -9 {pid} 2>/dev/null"
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sh")
}

/// A Redis Cluster of masters only, each a [`RedisServer`].
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// `n` masters (3 is Redis's minimum), slots spread evenly, state `ok`.
    pub fn start(n: usize) -> Self {
        let nodes: Vec<RedisServer> = (0..n).map(|_| RedisServer::start_with(true)).collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli ({e}). {INSTALL_HINT}"));
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Self { nodes };
        cluster.wait_ok();
        cluster
    }

    /// Seed URLs, comma-separated (what `store.redis_url` takes).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|s| s.url())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn wait_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &self.nodes {
            loop {
                let out = Command::new("redis-cli")
                    .args(["-p", &node.port.to_string(), "cluster", "info"])
                    .output()
                    .expect("redis-cli");
                let text = String::from_utf8_lossy(&out.stdout);
                if text.contains("cluster_state:ok") && text.contains("cluster_slots_ok:16384") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "cluster not ok after 30 s: {text}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}
