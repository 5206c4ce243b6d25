//! `bzt-load <scenario>`: see `bzt-load --help` and loadtest/RESULTS.md.

use anyhow::Context;
use bzt_loadtest::broker::{default_bzt_bin, spawn_redis, Fixture, Node, Proc, Store};
use bzt_loadtest::flows::{closed_loop, open_loop, Ctx};
use bzt_loadtest::{conversation, idle, refs, report, stats};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "bzt-load", about = "Load generator for the bzt broker")]
struct Cli {
    /// Where JSON, markdown and SVG results go.
    #[arg(long, default_value = "loadtest/results")]
    out: PathBuf,
    /// The broker binary to start (default: target/release/bzt, or $BZT_LOAD_BIN).
    #[arg(long)]
    bzt_bin: Option<PathBuf>,
    /// Drive a running broker instead of starting one (its API key must be the load test's).
    #[arg(long)]
    broker: Option<String>,
    /// Its pid, for CPU and RSS sampling.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Source addresses 127.0.0.1..=127.0.0.N for sockets.
    #[arg(long, default_value_t = 8)]
    src_ips: usize,
    /// Pin the broker nodes (and Redis) to these CPUs (`taskset -c` list);
    /// run bzt-load itself under `taskset` on others (loadtest/run.sh --pin).
    #[arg(long)]
    broker_cpus: Option<String>,
    /// Seconds of `openssl speed` and of the verify microbenchmark.
    #[arg(long, default_value_t = 3)]
    ref_seconds: u32,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Everything, small: finishes in under 2 minutes.
    Quick,
    /// Login flows on one node: open-loop rate sweep, closed-loop maximum, half-maximum.
    Flows(FlowArgs),
    /// The same on several nodes + Redis.
    Cluster {
        #[command(flatten)]
        flows: FlowArgs,
        /// Broker nodes sharing the Redis (1 separates the cost of Redis from that of more nodes).
        #[arg(long, default_value_t = 3)]
        nodes: usize,
    },
    /// N idle browser sockets: RSS per socket, push to all; and the echo server.
    Idle {
        #[arg(long, default_value_t = 100_000)]
        n: usize,
    },
    /// Signing requests per second through 1 conversation and across many.
    Conversation {
        #[arg(long, default_value_t = 1000)]
        many: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Co-signed logins (密钥拆分) against whole-key logins in the same run: a broker and a
    /// co-signing service, each its own process; broker + service CPU per flow, added latency.
    Cosign {
        /// Closed-loop workers.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Seconds measured per step (after 2 s of warm-up).
        #[arg(long, default_value_t = 6)]
        seconds: u64,
        /// Split keys enrolled (flows rotate through them).
        #[arg(long, default_value_t = 16)]
        keys: usize,
    },
    /// The reference WebSocket echo/broadcast server (used by `idle`).
    EchoServer {
        #[arg(long)]
        listen: String,
    },
}

#[derive(clap::Args, Clone)]
struct FlowArgs {
    /// Offered rates of the open-loop sweep, per second.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "250,500,1000,1500,2000,2500,3000,4000"
    )]
    rates: Vec<f64>,
    #[arg(long, default_value_t = 2)]
    warm_s: u64,
    #[arg(long, default_value_t = 6)]
    measure_s: u64,
    /// Closed-loop workers.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// The sweep stops once end-to-end p99 passes this.
    #[arg(long, default_value_t = 50.0)]
    p99_limit_ms: f64,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(cpus) = &cli.broker_cpus {
        bzt_loadtest::broker::pin_servers_to(cpus)?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(cli))
}

/// The broker nodes (started here unless `--broker`), their pids, and what they need alive.
struct Target {
    nodes: Vec<String>,
    pids: Vec<u32>,
    _procs: Vec<Node>,
    _redis: Option<Proc>,
}

/// `nodes` broker nodes, on a fresh Redis if `redis` (else one embedded node).
async fn start(cli: &Cli, fx: &Fixture, nodes: usize, redis: bool) -> anyhow::Result<Target> {
    if let Some(url) = &cli.broker {
        return Ok(Target {
            nodes: vec![url.clone()],
            pids: cli.broker_pid.into_iter().collect(),
            _procs: vec![],
            _redis: None,
        });
    }
    let bin = cli.bzt_bin.clone().unwrap_or_else(default_bzt_bin);
    let (redis, store) = if redis {
        let (p, url) = spawn_redis(fx.dir.path())?;
        (
            Some(p),
            Store::Redis {
                url,
                prefix: "load".into(),
            },
        )
    } else {
        (None, Store::Memory)
    };
    let mut procs = Vec::new();
    for i in 1..=nodes {
        procs.push(Node::spawn(&bin, fx, &format!("node{i}"), &store).await?);
    }
    Ok(Target {
        nodes: procs.iter().map(|n| n.base.clone()).collect(),
        pids: procs.iter().map(Node::pid).collect(),
        _procs: procs,
        _redis: redis,
    })
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Scenario::EchoServer { listen } = &cli.scenario {
        return refs::echo_server(listen).await;
    }
    std::fs::create_dir_all(&cli.out)?;
    let machine = stats::machine();
    let fx = Fixture::new(64)?;
    let reference = {
        let id = fx.identities[0].clone();
        let secs = cli.ref_seconds;
        tokio::task::spawn_blocking(move || refs::reference_json(&id, secs)).await?
    };
    eprintln!("reference: {reference}");
    let args: Vec<String> = std::env::args().collect();
    let mut out = json!({"command": args.join(" "), "machine": machine, "reference": reference});
    let mut md = format!(
        "Command: `{}`\n\n{}{}",
        args.join(" "),
        report::machine_md(&machine),
        report::reference_md(&reference)
    );
    let name = match &cli.scenario {
        Scenario::Quick => {
            let t = start(&cli, &fx, 1, false).await?;
            let ctx = Arc::new(Ctx::new(
                t.nodes.clone(),
                fx.identities.clone(),
                cli.src_ips,
            )?);
            let fa = FlowArgs {
                rates: vec![100.0, 300.0],
                warm_s: 1,
                measure_s: 3,
                concurrency: 32,
                p99_limit_ms: 50.0,
            };
            let steps = flow_steps(ctx.clone(), &t.pids, &fa).await;
            md += &format!(
                "## Login flows (embedded node)\n\n{}",
                report::steps_md(&steps, &reference)
            );
            std::fs::write(
                cli.out.join("quick.svg"),
                report::chart_svg("bzt quick: login flow latency vs offered rate", &steps),
            )?;
            out["flows"] = json!(steps);
            let idle = idle_rows(&cli, ctx.clone(), t.pids[0], 2000).await?;
            md += &format!("## Idle sockets\n\n{}", report::idle_md(&idle));
            out["idle"] = json!(idle);
            let conv = vec![
                conversation::run(
                    ctx.clone(),
                    &t.pids,
                    1,
                    8,
                    Duration::from_secs(1),
                    Duration::from_secs(3),
                )
                .await,
                conversation::run(
                    ctx.clone(),
                    &t.pids,
                    50,
                    1,
                    Duration::from_secs(1),
                    Duration::from_secs(3),
                )
                .await,
            ];
            md += &format!("## Conversations\n\n{}", report::conversation_md(&conv));
            out["conversation"] = json!(conv);
            "quick"
        }
        Scenario::Flows(fa)
        | Scenario::Cluster {
            flows: fa,
            nodes: _,
        } => {
            let nodes = match cli.scenario {
                Scenario::Cluster { nodes, .. } => Some(nodes.max(1)),
                _ => None,
            };
            let t = match nodes {
                Some(n) => start(&cli, &fx, n, true).await?,
                None => start(&cli, &fx, 1, false).await?,
            };
            let ctx = Arc::new(Ctx::new(
                t.nodes.clone(),
                fx.identities.clone(),
                cli.src_ips,
            )?);
            let steps = flow_steps(ctx, &t.pids, fa).await;
            let (name, title) = match nodes {
                Some(n) => ("cluster", format!("{n} node(s) + Redis")),
                None => ("flows", "one embedded node".to_owned()),
            };
            md += &format!(
                "## Login flows ({title})\n\n{}",
                report::steps_md(&steps, &reference)
            );
            std::fs::write(
                cli.out.join(format!("{name}.svg")),
                report::chart_svg(
                    &format!("bzt {title}: login flow latency vs offered rate"),
                    &steps,
                ),
            )?;
            out["flows"] = json!(steps);
            name
        }
        Scenario::Idle { n } => {
            let t = start(&cli, &fx, 1, false).await?;
            let ctx = Arc::new(Ctx::new(
                t.nodes.clone(),
                fx.identities.clone(),
                cli.src_ips,
            )?);
            let idle = idle_rows(&cli, ctx, t.pids[0], *n).await?;
            md += &format!("## Idle sockets\n\n{}", report::idle_md(&idle));
            out["idle"] = json!(idle);
            "idle"
        }
        Scenario::Conversation { many, seconds } => {
            let t = start(&cli, &fx, 1, false).await?;
            let ctx = Arc::new(Ctx::new(
                t.nodes.clone(),
                fx.identities.clone(),
                cli.src_ips,
            )?);
            let m = Duration::from_secs(*seconds);
            let w = Duration::from_secs(2);
            let conv = vec![
                conversation::run(ctx.clone(), &t.pids, 1, 1, w, m).await,
                conversation::run(ctx.clone(), &t.pids, 1, 32, w, m).await,
                conversation::run(ctx.clone(), &t.pids, *many, 1, w, m).await,
            ];
            md += &format!("## Conversations\n\n{}", report::conversation_md(&conv));
            out["conversation"] = json!(conv);
            "conversation"
        }
        Scenario::Cosign {
            concurrency,
            seconds,
            keys,
        } => {
            anyhow::ensure!(
                cli.broker.is_none(),
                "cosign starts its own broker and service"
            );
            let bin = cli.bzt_bin.clone().unwrap_or_else(default_bzt_bin);
            let node = Node::spawn_with(
                &bin,
                &fx,
                "node1",
                &Store::Memory,
                &bzt_loadtest::broker::Cosigner::broker_toml(),
            )
            .await?;
            let service = bzt_loadtest::broker::Cosigner::spawn(&bin, &fx, &node.base).await?;
            let split = bzt_loadtest::cosign::enrol(&service.url, &fx, *keys).await?;
            let nodes = vec![node.base.clone()];
            let plain = Arc::new(Ctx::new(nodes.clone(), fx.identities.clone(), cli.src_ips)?);
            let cosigned = Arc::new(
                Ctx::new(nodes, fx.identities.clone(), cli.src_ips)?
                    .with_split(split, service.pid()),
            );
            let rows = bzt_loadtest::cosign::compare(
                plain,
                cosigned,
                &[node.pid()],
                *concurrency,
                Duration::from_secs(2),
                Duration::from_secs(*seconds),
            )
            .await;
            md += &format!(
                "## Co-signed logins (split keys) against whole keys\n\n{}",
                bzt_loadtest::cosign::compare_md(&rows)
            );
            out["cosign"] = json!(rows);
            "cosign"
        }
        Scenario::EchoServer { .. } => unreachable!("handled above"),
    };
    out["loadavg_end"] = json!(stats::loadavg());
    md += &format!("Load average at the end: {}\n", stats::loadavg());
    std::fs::write(
        cli.out.join(format!("{name}.json")),
        serde_json::to_string_pretty(&out)?,
    )?;
    std::fs::write(cli.out.join(format!("{name}.md")), &md)?;
    println!("{md}");
    Ok(())
}

/// Open-loop sweep until p99 breaks the limit, closed-loop maximum, then half of it.
async fn flow_steps(ctx: Arc<Ctx>, pids: &[u32], fa: &FlowArgs) -> Vec<Value> {
    let warm = Duration::from_secs(fa.warm_s);
    let measure = Duration::from_secs(fa.measure_s);
    let mut steps = Vec::new();
    for &rate in &fa.rates {
        let st = open_loop(ctx.clone(), pids, rate, warm, measure, 20_000).await;
        eprintln!("open {rate}/s: {st}");
        let p99 = st["latency_ms"]["end_to_end"]["p99_ms"]
            .as_f64()
            .unwrap_or(f64::MAX);
        let err = st["error_rate"].as_f64().unwrap_or(1.0);
        let achieved = st["achieved_per_s"].as_f64().unwrap_or(0.0);
        steps.push(st);
        if p99 > fa.p99_limit_ms || err > 0.01 || achieved < 0.9 * rate {
            break;
        }
    }
    let max = closed_loop(ctx.clone(), pids, fa.concurrency, warm, measure).await;
    eprintln!("closed {}: {max}", fa.concurrency);
    let half = max["achieved_per_s"].as_f64().unwrap_or(0.0) / 2.0;
    steps.push(max);
    if half >= 1.0 {
        let mut st = open_loop(ctx, pids, half.round(), warm, measure, 20_000).await;
        st["mode"] = json!("open (half max)");
        eprintln!("half max: {st}");
        steps.push(st);
    }
    steps
}

async fn idle_rows(cli: &Cli, ctx: Arc<Ctx>, pid: u32, n: usize) -> anyhow::Result<Vec<Value>> {
    let broker = idle::broker_idle(ctx.clone(), pid, n).await;
    eprintln!("idle broker: {broker}");
    let port = bzt_loadtest::broker::free_port()?;
    let log = std::fs::File::create(cli.out.join("echo-server.log"))?;
    let child = std::process::Command::new(std::env::current_exe()?)
        .args(["echo-server", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("start the echo server")?;
    let echo = Proc {
        name: "echo".into(),
        child,
        log: cli.out.join("echo-server.log"),
    };
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..200 {
        if ctx.http.get(format!("{base}/healthz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let e = idle::echo_idle(ctx, &base, echo.pid(), n).await;
    eprintln!("idle echo: {e}");
    drop(echo);
    let _ = std::fs::remove_file(cli.out.join("echo-server.log"));
    Ok(vec![broker, e])
}
