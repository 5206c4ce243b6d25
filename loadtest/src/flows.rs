//! Full login flows: an RP creates a session, a browser waits on its socket,
//! a phone claims, signs with SM2 and completes, and the browser gets the
//! result pushed. Open loop at a target rate, or closed loop for the maximum.

use crate::broker::API_KEY;
use crate::stats::{proc_sample, round3, Errors, Lat};
use bzt_phone::{
    approval_body, check_approval, signed_approval_body, ApproveExtras, Phone, PhoneIdentity,
    QrText, UnlockedSplit,
};
use bzt_rp_client::{CreateSession, Kind, RpClient, RpError};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

pub type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// What every flow shares.
pub struct Ctx {
    pub http: reqwest::Client,
    pub phone: Phone,
    /// Base URLs of the nodes; flow `i` creates and waits on node `i % n` and
    /// its phone claims on node `(i + 1) % n` (so pushes cross nodes).
    pub nodes: Vec<String>,
    pub identities: Vec<PhoneIdentity>,
    /// Source addresses for sockets (127.0.0.x), so ports do not run out.
    pub src_ips: Vec<Ipv4Addr>,
    /// Split keys (密钥拆分), unlocked once: when present, every flow's signature is co-signed
    /// with the co-signing service instead of made with `identities`.
    pub split: Vec<UnlockedSplit<'static>>,
    /// The co-signing service's pid, for its CPU per flow.
    pub cosigner_pid: Option<u32>,
}

impl Ctx {
    pub fn new(
        nodes: Vec<String>,
        identities: Vec<PhoneIdentity>,
        src_ips: usize,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(4096)
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            phone: Phone::new(http.clone()),
            http,
            nodes,
            identities,
            src_ips: (1..=src_ips.max(1))
                .map(|i| Ipv4Addr::new(127, 0, 0, i as u8))
                .collect(),
            split: Vec::new(),
            cosigner_pid: None,
        })
    }

    /// The same context signing with split keys through the service whose pid is `cosigner_pid`.
    pub fn with_split(mut self, split: Vec<UnlockedSplit<'static>>, cosigner_pid: u32) -> Self {
        self.split = split;
        self.cosigner_pid = Some(cosigner_pid);
        self
    }
}

/// `scheme://host:port/path` → the same path on `base`'s host (`ws:` kept).
pub fn rebase(url: &str, base: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    let host = base.split_once("://").map_or(base, |(_, h)| h);
    format!("{scheme}://{host}{path}")
}

/// Opens a WebSocket from source address `src`.
pub async fn connect_ws(url: &str, src: Ipv4Addr) -> Result<Ws, String> {
    let hostport = url
        .split_once("://")
        .and_then(|(_, r)| r.split('/').next())
        .ok_or("bad ws url")?;
    let addr: SocketAddr = hostport.parse().map_err(|_| "ws url host is not ip:port")?;
    let sock = tokio::net::TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    sock.bind(SocketAddr::new(IpAddr::V4(src), 0))
        .map_err(|e| format!("bind: {e}"))?;
    let stream = sock
        .connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).ok();
    let (ws, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .map_err(|e| format!("ws_handshake: {e}"))?;
    Ok(ws)
}

/// The next JSON text frame; `None` when the socket ended.
pub async fn next_json(ws: &mut Ws) -> Option<Value> {
    loop {
        match ws.next().await? {
            Ok(Message::Text(t)) => return serde_json::from_str(t.as_str()).ok(),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// The relying-party API of node `base` (cheap: the HTTP pool is shared).
pub fn rp(http: &reqwest::Client, base: &str) -> RpClient {
    RpClient::new(http.clone(), base, API_KEY)
}

/// A short error code for the report: `<what>_<protocol code>`, or `<what>_transport`.
pub fn rp_code(what: &str, e: &RpError) -> String {
    match e {
        RpError::Broker { code, .. } => format!("{what}_{code}"),
        RpError::Transport(m) if m.contains("timed out") => format!("{what}_timeout"),
        RpError::Transport(_) => format!("{what}_transport"),
        RpError::Protocol(_) => format!("{what}_body"),
    }
}

/// POST /v1/sessions; `(id, qr_text, ws_url)`.
pub async fn create_session(
    http: &reqwest::Client,
    base: &str,
    body: &CreateSession,
) -> Result<(String, String, String), String> {
    let created = rp(http, base)
        .create_session(body)
        .await
        .map_err(|e| rp_code("create", &e))?;
    Ok((created.id, created.qr_text, created.ws_url))
}

/// A `login` session body of the load test.
pub fn login_body(ttl_s: u64) -> CreateSession {
    let mut body = CreateSession::new(Kind::Login, "登录 负载测试平台");
    body.ttl_s = Some(u32::try_from(ttl_s).unwrap_or(u32::MAX));
    body
}

fn phone_code(what: &str, e: &bzt_phone::Error) -> String {
    match e.broker() {
        Some(b) => format!("{what}_{}", b.code),
        None => format!("{what}_client"),
    }
}

fn cosign_code(e: &bzt_phone::Error) -> String {
    match e {
        bzt_phone::Error::Cosigner(c) => format!("cosign_{}", c.code().unwrap_or("client")),
        other => phone_code("cosign", other),
    }
}

/// Timings of one flow.
pub struct FlowTimes {
    pub create: Duration,
    pub claim: Duration,
    pub push: Duration,
    pub e2e: Duration,
}

/// One login flow; `intended` is when it was scheduled (end-to-end counts
/// from there, so a late start is not hidden).
pub async fn one_flow(ctx: &Ctx, i: usize, intended: Instant) -> Result<FlowTimes, String> {
    let n = ctx.nodes.len();
    let rp = &ctx.nodes[i % n];
    let phone_node = &ctx.nodes[(i + 1) % n];
    let identity = &ctx.identities[i % ctx.identities.len()];
    let t0 = Instant::now();
    let (_id, qr_text, ws_url) = create_session(&ctx.http, rp, &login_body(120)).await?;
    let t1 = Instant::now();
    let mut ws = connect_ws(&rebase(&ws_url, rp), ctx.src_ips[i % ctx.src_ips.len()]).await?;
    match next_json(&mut ws).await {
        Some(v) if v["type"] == "snapshot" => {}
        _ => return Err("ws_no_snapshot".into()),
    }
    let browser = async move {
        loop {
            match next_json(&mut ws).await {
                Some(v) if v["type"] == "result" => {
                    return Ok::<_, String>((
                        Instant::now(),
                        v["status"].as_str().unwrap_or("").to_owned(),
                    ))
                }
                Some(_) => {}
                None => return Err("ws_closed_before_result".to_owned()),
            }
        }
    };
    let phone = async {
        let qr = QrText::parse(&rebase(&qr_text, phone_node)).map_err(|_| "qr_parse".to_owned())?;
        let t2 = Instant::now();
        let split = (!ctx.split.is_empty()).then(|| &ctx.split[i % ctx.split.len()]);
        let device = match split {
            Some(key) => key.identity().device(),
            None => &identity.device,
        };
        let claimed = ctx
            .phone
            .claim_as(&qr, device)
            .await
            .map_err(|e| phone_code("claim", &e))?;
        let claim = t2.elapsed();
        let extras = ApproveExtras::default();
        let body = match split {
            None => {
                approval_body(&claimed, identity, &extras).map_err(|e| phone_code("sign", &e))?
            }
            Some(key) => {
                check_approval(&claimed, &extras).map_err(|e| phone_code("sign", &e))?;
                let signature = key
                    .sign_session(&claimed)
                    .await
                    .map_err(|e| cosign_code(&e))?;
                signed_approval_body(
                    key.identity().certificate_pem(),
                    &key.identity().chain_pem,
                    &signature,
                    &extras,
                )
                .map_err(|e| phone_code("sign", &e))?
            }
        };
        let sent = Instant::now();
        ctx.phone
            .complete_raw(&claimed, &body)
            .await
            .map_err(|e| phone_code("complete", &e))?;
        Ok::<_, String>((claim, sent))
    };
    // Each side has its own deadline, so a timeout says which side stalled:
    // the phone's requests, or the push to a browser whose flow completed.
    let limit = Duration::from_secs(30);
    let (b, p) = tokio::join!(
        tokio::time::timeout(limit, browser),
        tokio::time::timeout(limit, phone)
    );
    let (claim, sent) = p.map_err(|_| "phone_timeout".to_owned())??;
    let (got, status) = b.map_err(|_| "push_timeout".to_owned())??;
    if status != "approved" {
        return Err(format!("result_{status}"));
    }
    Ok(FlowTimes {
        create: t1 - t0,
        claim,
        push: got.saturating_duration_since(sent),
        e2e: got.saturating_duration_since(intended),
    })
}

/// Histograms and errors of one run.
#[derive(Default)]
pub struct FlowStats {
    pub create: Lat,
    pub claim: Lat,
    pub push: Lat,
    pub e2e: Lat,
    pub errors: Errors,
    pub ok: u64,
}

impl FlowStats {
    fn add(&mut self, r: Result<FlowTimes, String>) {
        match r {
            Ok(t) => {
                self.ok += 1;
                self.create.record(t.create);
                self.claim.record(t.claim);
                self.push.record(t.push);
                self.e2e.record(t.e2e);
            }
            Err(code) => self.errors.add(code),
        }
    }
}

/// CPU used so far by the brokers (`pids`) and by this load generator, and
/// the brokers' RSS: with both on one machine, their sum per flow is what
/// bounds the rate.
#[derive(Clone, Copy)]
struct CpuMark {
    broker: Duration,
    loadgen: Duration,
    /// The co-signing service, when the flows co-sign.
    cosigner: Option<Duration>,
    rss: u64,
}

fn cpu_of(pids: &[u32], cosigner_pid: Option<u32>) -> CpuMark {
    let (broker, rss) = pids
        .iter()
        .filter_map(|p| proc_sample(*p))
        .fold((Duration::ZERO, 0), |(c, r), s| {
            (c + s.cpu, r + s.rss_bytes)
        });
    let loadgen = proc_sample(std::process::id())
        .map(|s| s.cpu)
        .unwrap_or_default();
    CpuMark {
        broker,
        loadgen,
        cosigner: cosigner_pid.and_then(proc_sample).map(|s| s.cpu),
        rss,
    }
}

impl CpuMark {
    fn since(self, start: CpuMark) -> CpuMark {
        CpuMark {
            broker: self.broker.saturating_sub(start.broker),
            loadgen: self.loadgen.saturating_sub(start.loadgen),
            cosigner: self
                .cosigner
                .zip(start.cosigner)
                .map(|(now, then)| now.saturating_sub(then)),
            rss: self.rss,
        }
    }
}

fn step_json(
    mode: &str,
    offered: Option<f64>,
    concurrency: Option<usize>,
    measured: Duration,
    st: &FlowStats,
    cpu: CpuMark,
) -> Value {
    let per_flow = |d: Duration| {
        if st.ok == 0 {
            Value::Null
        } else {
            json!(round3(d.as_secs_f64() * 1e6 / st.ok as f64))
        }
    };
    let secs = measured.as_secs_f64().max(1e-9);
    let achieved = st.ok as f64 / secs;
    let attempts = st.ok + st.errors.total();
    let cosigner = cpu.cosigner.map(|c| {
        json!({
            "cores": round3(c.as_secs_f64() / secs),
            "us_per_flow": per_flow(c),
        })
    });
    json!({
        "mode": mode,
        "offered_per_s": offered,
        "concurrency": concurrency,
        "measured_s": round3(secs),
        "completed": st.ok,
        "achieved_per_s": round3(achieved),
        "error_rate": if attempts == 0 { 0.0 } else { round3(st.errors.total() as f64 / attempts as f64) },
        "errors": st.errors.to_json(),
        "latency_ms": {
            "create": st.create.summary(),
            "claim": st.claim.summary(),
            "push": st.push.summary(),
            "end_to_end": st.e2e.summary(),
        },
        "broker_cpu_s": round3(cpu.broker.as_secs_f64()),
        "broker_cpu_cores": round3(cpu.broker.as_secs_f64() / secs),
        "broker_cpu_us_per_flow": per_flow(cpu.broker),
        "loadgen_cpu_cores": round3(cpu.loadgen.as_secs_f64() / secs),
        "loadgen_cpu_us_per_flow": per_flow(cpu.loadgen),
        "broker_rss_mib": round3(cpu.rss as f64 / 1048576.0),
        "cosigner_cpu": cosigner,
        "loadavg": crate::stats::loadavg(),
    })
}

/// Open loop: flows started at `rate`/s regardless of completions, for
/// `warm` (not counted) then `measure`. At most `max_inflight` at once (more
/// count as `overload_skipped`).
pub async fn open_loop(
    ctx: Arc<Ctx>,
    pids: &[u32],
    rate: f64,
    warm: Duration,
    measure: Duration,
    max_inflight: usize,
) -> Value {
    let stats = Arc::new(Mutex::new(FlowStats::default()));
    let start = Instant::now();
    let measure_from = start + warm;
    let end = measure_from + measure;
    let mut set = tokio::task::JoinSet::new();
    let mut cpu0 = None;
    let mut i = 0usize;
    loop {
        let at = start + Duration::from_secs_f64(i as f64 / rate);
        if at >= end {
            break;
        }
        tokio::time::sleep_until(at).await;
        if cpu0.is_none() && at >= measure_from {
            cpu0 = Some(cpu_of(pids, ctx.cosigner_pid));
        }
        while set.try_join_next().is_some() {}
        let counted = at >= measure_from;
        if set.len() >= max_inflight {
            if counted {
                lock(&stats).errors.add("overload_skipped");
            }
        } else {
            let ctx = ctx.clone();
            let stats = stats.clone();
            set.spawn(async move {
                let r = one_flow(&ctx, i, at).await;
                if counted {
                    lock(&stats).add(r);
                }
            });
        }
        i += 1;
    }
    while set.join_next().await.is_some() {}
    let end = cpu_of(pids, ctx.cosigner_pid);
    let cpu = end.since(cpu0.unwrap_or(end));
    let st = lock(&stats);
    step_json("open", Some(rate), None, measure, &st, cpu)
}

/// Closed loop: `concurrency` workers each running flows back to back.
pub async fn closed_loop(
    ctx: Arc<Ctx>,
    pids: &[u32],
    concurrency: usize,
    warm: Duration,
    measure: Duration,
) -> Value {
    let stats = Arc::new(Mutex::new(FlowStats::default()));
    let start = Instant::now();
    let measure_from = start + warm;
    let end = measure_from + measure;
    let mut set = tokio::task::JoinSet::new();
    for w in 0..concurrency {
        let ctx = ctx.clone();
        let stats = stats.clone();
        set.spawn(async move {
            let mut k = 0usize;
            loop {
                let at = Instant::now();
                if at >= end {
                    break;
                }
                let r = one_flow(&ctx, w + k * concurrency, at).await;
                if at >= measure_from && Instant::now() <= end {
                    lock(&stats).add(r);
                }
                k += 1;
            }
        });
    }
    let cosigner_pid = ctx.cosigner_pid;
    tokio::time::sleep_until(measure_from).await;
    let cpu0 = cpu_of(pids, cosigner_pid);
    tokio::time::sleep_until(end).await;
    let cpu1 = cpu_of(pids, cosigner_pid);
    while set.join_next().await.is_some() {}
    let st = lock(&stats);
    step_json(
        "closed",
        None,
        Some(concurrency),
        measure,
        &st,
        cpu1.since(cpu0),
    )
}

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
