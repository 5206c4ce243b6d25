//! Idle browser sockets: RSS per socket, and the time to push one result to
//! each (the broker: cancel every session; the echo server: one broadcast).

use crate::flows::{connect_ws, create_session, lock, login_body, next_json, rebase, rp, Ctx, Ws};
use crate::stats::{proc_sample, round3, Errors, Lat};
use futures_util::{stream, StreamExt};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

const CONCURRENCY: usize = 256;

fn rss(pid: u32) -> u64 {
    proc_sample(pid).map_or(0, |s| s.rss_bytes)
}

/// Opens `urls.len()` sockets and reads each one's first frame.
async fn open_all(ctx: &Ctx, urls: Vec<String>, errors: &Mutex<Errors>) -> Vec<(usize, Ws)> {
    stream::iter(urls.into_iter().enumerate())
        .map(|(i, url)| async move {
            let src = ctx.src_ips[i % ctx.src_ips.len()];
            match connect_ws(&url, src).await {
                Ok(mut ws) => {
                    match tokio::time::timeout(Duration::from_secs(30), next_json(&mut ws)).await {
                        Ok(Some(_)) => Some((i, ws)),
                        _ => {
                            lock(errors).add("ws_no_first_frame");
                            None
                        }
                    }
                }
                Err(e) => {
                    lock(errors).add(e.split(':').next().unwrap_or("ws").to_owned());
                    None
                }
            }
        })
        .buffer_unordered(CONCURRENCY)
        .filter_map(|x| async move { x })
        .collect()
        .await
}

/// Waits on every socket for one more text frame; the instant it came.
fn spawn_readers(sockets: Vec<(usize, Ws)>) -> tokio::task::JoinSet<(usize, Option<Instant>)> {
    let mut set = tokio::task::JoinSet::new();
    for (i, mut ws) in sockets {
        set.spawn(async move {
            let got = tokio::time::timeout(Duration::from_secs(120), next_json(&mut ws)).await;
            let at = matches!(got, Ok(Some(_))).then(Instant::now);
            drop(ws);
            (i, at)
        });
    }
    set
}

/// `n` idle browser sockets on the broker at `ctx.nodes[0]` (pid `pid`).
pub async fn broker_idle(ctx: Arc<Ctx>, pid: u32, n: usize) -> Value {
    let base = ctx.nodes[0].clone();
    let errors = Mutex::new(Errors::default());
    let rss_start = rss(pid);
    let t = Instant::now();
    let body = login_body(600);
    let created: Vec<(usize, String, String)> = stream::iter(0..n)
        .map(|i| {
            let ctx = ctx.clone();
            let base = base.clone();
            let body = body.clone();
            let errors = &errors;
            async move {
                match create_session(&ctx.http, &base, &body).await {
                    Ok((id, _, ws)) => Some((i, id, rebase(&ws, &base))),
                    Err(e) => {
                        lock(errors).add(e);
                        None
                    }
                }
            }
        })
        .buffer_unordered(CONCURRENCY)
        .filter_map(|x| async move { x })
        .collect()
        .await;
    let create_s = t.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_sessions = rss(pid);
    let ids: Vec<String> = created.iter().map(|(_, id, _)| id.clone()).collect();
    let urls: Vec<String> = created.into_iter().map(|(_, _, u)| u).collect();
    let t = Instant::now();
    let sockets = open_all(&ctx, urls, &errors).await;
    let connect_s = t.elapsed().as_secs_f64();
    let open = sockets.len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_sockets = rss(pid);
    // Push one result to each: cancel every session (RP API) and time the
    // `result` frame on each socket from its own cancel.
    let base_t = Instant::now();
    let sent: Arc<Vec<AtomicU64>> =
        Arc::new((0..ids.len()).map(|_| AtomicU64::new(u64::MAX)).collect());
    let mut readers = spawn_readers(sockets);
    let cpu0 = proc_sample(pid).map(|s| s.cpu).unwrap_or_default();
    let t = Instant::now();
    stream::iter(ids.into_iter().enumerate())
        .map(|(i, id)| {
            let ctx = ctx.clone();
            let base = base.clone();
            let sent = sent.clone();
            let errors = &errors;
            async move {
                sent[i].store(base_t.elapsed().as_micros() as u64, Ordering::Relaxed);
                let r = rp(&ctx.http, &base).cancel_session(&id).await;
                if r.is_err() {
                    lock(errors).add("cancel_failed");
                }
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<()>()
        .await;
    let mut lat = Lat::new();
    let mut last = t;
    let mut got = 0usize;
    while let Some(r) = readers.join_next().await {
        if let Ok((i, Some(at))) = r {
            got += 1;
            last = last.max(at);
            let s = sent[i].load(Ordering::Relaxed);
            if s != u64::MAX {
                lat.record((at - base_t).saturating_sub(Duration::from_micros(s)));
            }
        }
    }
    let cpu = proc_sample(pid)
        .map(|s| s.cpu)
        .unwrap_or_default()
        .saturating_sub(cpu0);
    let per_socket = (rss_sockets.saturating_sub(rss_sessions)) as f64 / open.max(1) as f64;
    let per_both = (rss_sockets.saturating_sub(rss_start)) as f64 / open.max(1) as f64;
    json!({
        "target": "broker",
        "requested": n,
        "sessions_created": n - lock(&errors).0.iter().filter(|(k, _)| k.starts_with("create")).map(|(_, v)| *v as usize).sum::<usize>(),
        "sockets_open": open,
        "create_s": round3(create_s),
        "connect_s": round3(connect_s),
        "rss_mib": {"start": mib(rss_start), "sessions": mib(rss_sessions), "sockets": mib(rss_sockets)},
        "rss_kib_per_socket": round3(per_socket / 1024.0),
        "rss_kib_per_session_and_socket": round3(per_both / 1024.0),
        "push_all": {"received": got, "total_s": round3((last - t).as_secs_f64()), "latency_from_cancel": lat.summary(), "broker_cpu_s": round3(cpu.as_secs_f64())},
        "errors": lock(&errors).to_json(),
        "loadavg": crate::stats::loadavg(),
    })
}

/// The same against the echo/broadcast server at `base` (pid `pid`).
pub async fn echo_idle(ctx: Arc<Ctx>, base: &str, pid: u32, n: usize) -> Value {
    let errors = Mutex::new(Errors::default());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_start = rss(pid);
    let url = format!("{}/ws", base.replacen("http", "ws", 1));
    let t = Instant::now();
    let sockets = open_all(&ctx, vec![url; n], &errors).await;
    let connect_s = t.elapsed().as_secs_f64();
    let open = sockets.len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_sockets = rss(pid);
    let mut readers = spawn_readers(sockets);
    let t = Instant::now();
    let r = ctx
        .http
        .post(format!("{base}/broadcast"))
        .body("{\"type\":\"result\",\"status\":\"cancelled\"}")
        .send()
        .await;
    if !matches!(&r, Ok(r) if r.status() == 200) {
        lock(&errors).add("broadcast_failed");
    }
    let mut lat = Lat::new();
    let mut got = 0usize;
    while let Some(r) = readers.join_next().await {
        if let Ok((_, Some(at))) = r {
            got += 1;
            lat.record(at - t);
        }
    }
    json!({
        "target": "echo_server",
        "requested": n,
        "sockets_open": open,
        "connect_s": round3(connect_s),
        "rss_mib": {"start": mib(rss_start), "sockets": mib(rss_sockets)},
        "rss_kib_per_socket": round3((rss_sockets.saturating_sub(rss_start)) as f64 / open.max(1) as f64 / 1024.0),
        "push_all": {"received": got, "total_s": round3(lat.ms(1.0) / 1000.0), "latency_from_broadcast": lat.summary()},
        "errors": lock(&errors).to_json(),
        "loadavg": crate::stats::loadavg(),
    })
}

fn mib(b: u64) -> f64 {
    round3(b as f64 / 1048576.0)
}
