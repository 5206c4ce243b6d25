//! Conversations (会话签章): signing requests per second through one
//! conversation, and across many, each phone auto-confirming.

use crate::flows::{connect_ws, create_session, lock, next_json, rp, rp_code, Ctx, Ws};
use crate::stats::{round3, Errors, Lat};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bzt_phone::{approval_body, ApproveExtras, ConversationSocket, QrText};
use bzt_rp_client::{ConversationLimits, CreateSession, Display, Kind, SessionResult};
use futures_util::{stream, StreamExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Requests one conversation takes (the broker's upper bound for
/// `max_requests`); then its workers move on to a fresh one.
const REQUESTS_PER_CONVERSATION: u64 = 1000;

/// An open conversation: its id, the results seen on the requester socket,
/// and how many requests were handed out for it.
struct Conv {
    id: String,
    results: Mutex<HashMap<String, (Instant, String)>>,
    notify: Notify,
    posted: AtomicU64,
}

/// The conversation a group of workers currently uses: replaced by a new
/// one (a new scan, in real life) once it has taken its requests.
struct Slot {
    i: usize,
    current: tokio::sync::Mutex<Arc<Conv>>,
}

impl Slot {
    /// The conversation to post to next, opening a fresh one when the
    /// current one has handed out all its requests.
    async fn next(
        &self,
        ctx: &Arc<Ctx>,
        tasks: &Mutex<tokio::task::JoinSet<()>>,
        rotations: &AtomicU64,
    ) -> Result<Arc<Conv>, String> {
        let mut cur = self.current.lock().await;
        if cur.posted.fetch_add(1, Ordering::Relaxed) < REQUESTS_PER_CONVERSATION {
            return Ok(cur.clone());
        }
        let fresh = open(ctx.clone(), self.i, tasks).await?;
        fresh.posted.store(1, Ordering::Relaxed);
        rotations.fetch_add(1, Ordering::Relaxed);
        *cur = fresh.clone();
        Ok(fresh)
    }
}

/// Opens a conversation through a `sign` session, starts its phone
/// (auto-confirm) and requester socket tasks.
async fn open(
    ctx: Arc<Ctx>,
    i: usize,
    tasks: &Mutex<tokio::task::JoinSet<()>>,
) -> Result<Arc<Conv>, String> {
    let base = ctx.nodes[0].clone();
    let identity = ctx.identities[i % ctx.identities.len()].clone();
    let mut body = CreateSession::new(Kind::Sign, "会话签章 负载测试");
    body.ttl_s = Some(120);
    body.tbs_b64 = Some(STANDARD.encode(b"open conversation"));
    body.conversation = Some(ConversationLimits {
        max_requests: Some(REQUESTS_PER_CONVERSATION as u32),
        idle_s: Some(600),
        max_s: Some(7200),
    });
    let (sid, qr_text, _) = create_session(&ctx.http, &base, &body).await?;
    let qr = QrText::parse(&qr_text).map_err(|_| "qr_parse")?;
    let claimed = ctx
        .phone
        .claim(&qr, &identity)
        .await
        .map_err(|e| format!("claim: {e}"))?;
    let extras = ApproveExtras {
        open_conversation: true,
        ..Default::default()
    };
    let body = approval_body(&claimed, &identity, &extras).map_err(|e| format!("sign: {e}"))?;
    let done = ctx
        .phone
        .complete_raw(&claimed, &body)
        .await
        .map_err(|e| format!("complete: {e}"))?;
    let grant = done
        .conversation
        .ok_or("no conversation in the complete answer")?;
    let view = rp(&ctx.http, &base)
        .get_session(&sid)
        .await
        .map_err(|e| format!("get session: {e}"))?;
    let token = match view.result {
        Some(Some(SessionResult::Approved(approved))) => approved.conversation.map(|c| c.token),
        _ => None,
    }
    .ok_or("no conversation token")?;
    let mut phone_sock = ConversationSocket::connect(&claimed.base_url, &grant)
        .await
        .map_err(|e| format!("phone socket: {e}"))?
        .with_timeouts(Duration::from_secs(30), Duration::from_secs(600));
    let url = format!(
        "{}/v1/conversations/{}/ws?t={token}",
        base.replacen("http", "ws", 1),
        grant.id
    );
    let mut req_ws: Ws = connect_ws(&url, ctx.src_ips[i % ctx.src_ips.len()]).await?;
    let conv = Arc::new(Conv {
        id: grant.id.clone(),
        results: Mutex::new(HashMap::new()),
        notify: Notify::new(),
        posted: AtomicU64::new(0),
    });
    let mut set = lock(tasks);
    set.spawn(async move {
        let _ = phone_sock
            .run_auto_confirm(&identity, |_, _| ControlFlow::Continue(()))
            .await;
    });
    let c = conv.clone();
    set.spawn(async move {
        while let Some(v) = next_json(&mut req_ws).await {
            if v["type"] == "request_result" {
                if let Some(rid) = v["request_id"].as_str() {
                    let status = v["status"].as_str().unwrap_or("").to_owned();
                    lock(&c.results).insert(rid.to_owned(), (Instant::now(), status));
                    c.notify.notify_waiters();
                }
            }
        }
    });
    Ok(conv)
}

/// One request: POST, then wait for its `request_result` on the requester socket.
async fn one_request(ctx: &Ctx, conv: &Conv, n: u64) -> Result<Duration, String> {
    let base = &ctx.nodes[0];
    let t0 = Instant::now();
    let display = Display {
        title: "签署".into(),
        detail: None,
    };
    let sent = rp(&ctx.http, base)
        .send_conversation_request(&conv.id, format!("合同第{n}页").as_bytes(), &display)
        .await
        .map_err(|e| rp_code("request", &e))?;
    let rid = sent.request_id;
    let deadline = t0 + Duration::from_secs(60);
    loop {
        let notified = conv.notify.notified();
        if let Some((at, status)) = lock(&conv.results).remove(&rid) {
            return if status == "approved" {
                Ok(at - t0)
            } else {
                Err(format!("result_{status}"))
            };
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return Err("result_timeout".into());
        }
    }
}

/// `conversations` conversations, `per_conv` requests outstanding in each.
pub async fn run(
    ctx: Arc<Ctx>,
    pids: &[u32],
    conversations: usize,
    per_conv: usize,
    warm: Duration,
    measure: Duration,
) -> Value {
    let tasks = Arc::new(Mutex::new(tokio::task::JoinSet::new()));
    let mut errors = Errors::default();
    let t = Instant::now();
    let opened: Vec<Result<Arc<Conv>, String>> = stream::iter(0..conversations)
        .map(|i| open(ctx.clone(), i, &tasks))
        .buffer_unordered(64)
        .collect()
        .await;
    let open_s = t.elapsed().as_secs_f64();
    let slots: Vec<Arc<Slot>> = opened
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| {
            r.map_err(|e| errors.add(format!("open: {}", e.split(':').next().unwrap_or(""))))
                .ok()
                .map(|c| {
                    Arc::new(Slot {
                        i,
                        current: tokio::sync::Mutex::new(c),
                    })
                })
        })
        .collect();
    let rotations = Arc::new(AtomicU64::new(0));
    let stats = Arc::new(Mutex::new((Lat::new(), Errors::default(), 0u64)));
    let start = Instant::now();
    let from = start + warm;
    let end = from + measure;
    let mut workers = tokio::task::JoinSet::new();
    for (ci, slot) in slots.iter().enumerate() {
        for w in 0..per_conv {
            let (ctx, slot, stats) = (ctx.clone(), slot.clone(), stats.clone());
            let (tasks, rotations) = (tasks.clone(), rotations.clone());
            workers.spawn(async move {
                let mut k = (ci * 1000 + w) as u64 * 1_000_000;
                while Instant::now() < end {
                    let at = Instant::now();
                    let r = match slot.next(&ctx, &tasks, &rotations).await {
                        Ok(conv) => one_request(&ctx, &conv, k).await,
                        Err(e) => Err(format!("open: {}", e.split(':').next().unwrap_or(""))),
                    };
                    k += 1;
                    if at >= from && Instant::now() <= end {
                        let mut s = lock(&stats);
                        match r {
                            Ok(d) => {
                                s.0.record(d);
                                s.2 += 1;
                            }
                            Err(e) => s.1.add(e),
                        }
                    }
                }
            });
        }
    }
    tokio::time::sleep_until(from).await;
    let cpu0: Duration = pids
        .iter()
        .filter_map(|p| crate::stats::proc_sample(*p))
        .map(|s| s.cpu)
        .sum();
    tokio::time::sleep_until(end).await;
    let cpu1: Duration = pids
        .iter()
        .filter_map(|p| crate::stats::proc_sample(*p))
        .map(|s| s.cpu)
        .sum();
    while workers.join_next().await.is_some() {}
    lock(&tasks).abort_all();
    let s = lock(&stats);
    errors.merge(&s.1);
    let cpu = cpu1.saturating_sub(cpu0);
    json!({
        "conversations_requested": conversations,
        "conversations_open": slots.len(),
        "conversations_rotated": rotations.load(Ordering::Relaxed),
        "open_s": round3(open_s),
        "outstanding_per_conversation": per_conv,
        "measured_s": round3(measure.as_secs_f64()),
        "completed": s.2,
        "requests_per_s": round3(s.2 as f64 / measure.as_secs_f64()),
        "latency_request_to_result": s.0.summary(),
        "broker_cpu_cores": round3(cpu.as_secs_f64() / measure.as_secs_f64()),
        "broker_cpu_us_per_request": if s.2 == 0 { Value::Null } else { json!(round3(cpu.as_secs_f64() * 1e6 / s.2 as f64)) },
        "errors": errors.to_json(),
        "loadavg": crate::stats::loadavg(),
    })
}
