//! Reference points measured in the same run: OpenSSL's SM2 verify rate, the
//! broker's own verify path in a tight loop, and a trivial WebSocket
//! echo/broadcast server on the broker's stack (axum + tokio).

use crate::stats::round3;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::routing::{get, post};
use axum::Router;
use bzt_phone::PhoneIdentity;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// One line of `openssl speed`: the line itself and its sign/s, verify/s.
#[derive(Debug, Clone)]
pub struct SpeedLine {
    pub line: String,
    pub sign_per_s: f64,
    pub verify_per_s: f64,
}

/// `openssl speed -seconds <s> <algorithm>`, the line containing `marker`.
pub fn openssl_speed(algorithm: &str, marker: &str, seconds: u32) -> anyhow::Result<SpeedLine> {
    let out = std::process::Command::new("openssl")
        .args(["speed", "-seconds", &seconds.to_string(), algorithm])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // " 256 bits SM2 (CurveSM2)   0.0003s   0.0002s   3900.0   4400.0"
    // " 256 bits ecdsa (nistp256)   0.0000s   0.0001s  40000.0  13000.0"
    let line = text
        .lines()
        .find(|l| l.contains(marker) && l.contains("bits"))
        .ok_or_else(|| anyhow::anyhow!("no {marker} line in openssl speed output: {text}"))?;
    let nums: Vec<f64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    match nums.as_slice() {
        [.., sign, verify] => Ok(SpeedLine {
            line: line.trim().to_owned(),
            sign_per_s: *sign,
            verify_per_s: *verify,
        }),
        _ => anyhow::bail!("cannot parse {line:?}"),
    }
}

/// `openssl speed -seconds <s> sm2`: `(sign/s, verify/s)`.
pub fn openssl_sm2(seconds: u32) -> anyhow::Result<(f64, f64)> {
    let l = openssl_speed("sm2", "SM2", seconds)?;
    Ok((l.sign_per_s, l.verify_per_s))
}

/// Verifies per second on one thread through `bzt_core::pki::verify_signature`
/// with a kept key (what the broker does per completion).
pub fn broker_verify_rate(identity: &PhoneIdentity, seconds: f64) -> anyhow::Result<f64> {
    let key = bzt_core::pki::verifying_key(identity.certificate())
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let msg = b"BZT-CHALLENGE-V1\nkind:login\napp:load\nsession:x\nnonce:abc\nexpires:2030-01-01T00:00:00.000Z";
    let sig = identity.sign(msg)?;
    // Wall time bounds the loop; the rate is per CPU second of this thread,
    // as `openssl speed` counts its own CPU time.
    let start = Instant::now();
    let cpu_start = crate::stats::thread_cpu_seconds();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        for _ in 0..64 {
            bzt_core::pki::verify_signature(&key, msg, &sig)
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        }
        n += 64;
    }
    Ok(n as f64 / (crate::stats::thread_cpu_seconds() - cpu_start).max(1e-9))
}

/// Verifies per second through the broker's verify without the key's
/// precomputed table (what a key's first verify costs).
pub fn broker_first_use_verify_rate(identity: &PhoneIdentity, seconds: f64) -> anyhow::Result<f64> {
    let key = bzt_core::pki::verifying_key(identity.certificate())
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let msg = b"BZT-CHALLENGE-V1\nkind:login\napp:load\nsession:x\nnonce:abc\nexpires:2030-01-01T00:00:00.000Z";
    let sig = sm2::dsa::Signature::from_der(&identity.sign(msg)?)
        .map_err(|e| anyhow::anyhow!("signature: {e}"))?;
    // Wall time bounds the loop; the rate is per CPU second of this thread,
    // as `openssl speed` counts its own CPU time.
    let start = Instant::now();
    let cpu_start = crate::stats::thread_cpu_seconds();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        for _ in 0..64 {
            anyhow::ensure!(bzt_core::sm2verify::verify_without_table(&key, msg, &sig));
        }
        n += 64;
    }
    Ok(n as f64 / (crate::stats::thread_cpu_seconds() - cpu_start).max(1e-9))
}

/// The reference block of every report: OpenSSL's SM2 and P-256 lines and
/// the broker's verify, all on the load generator's core, in this run.
pub fn reference_json(identity: &PhoneIdentity, openssl_seconds: u32) -> Value {
    let sm2_line = openssl_speed("sm2", "SM2", openssl_seconds);
    let p256_line = openssl_speed("ecdsap256", "nistp256", openssl_seconds);
    let openssl = sm2_line
        .as_ref()
        .map(|l| (l.sign_per_s, l.verify_per_s))
        .map_err(|e| anyhow::anyhow!("{e}"));
    let ours = broker_verify_rate(identity, f64::from(openssl_seconds));
    let first_use = broker_first_use_verify_rate(identity, f64::from(openssl_seconds));
    let (o_sign, o_verify) = openssl
        .as_ref()
        .map(|x| (json!(x.0), json!(x.1)))
        .unwrap_or((Value::Null, Value::Null));
    let ratio = match (&openssl, &ours) {
        (Ok((_, ov)), Ok(bv)) if *ov > 0.0 => json!(round3(bv / ov)),
        _ => Value::Null,
    };
    json!({
        "openssl_version": std::process::Command::new("openssl").arg("version").output().ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()),
        "openssl_sm2_sign_per_s": o_sign,
        "openssl_sm2_verify_per_s": o_verify,
        "openssl_error": openssl.as_ref().err().map(|e| e.to_string()),
        "broker_verify_per_s": ours.as_ref().ok().map(|v| round3(*v)),
        "broker_verify_error": ours.as_ref().err().map(|e| e.to_string()),
        "broker_over_openssl_verify": ratio,
        "broker_first_use_verify_per_s": first_use.as_ref().ok().map(|v| round3(*v)),
        "broker_first_use_over_openssl_verify": match (&openssl, &first_use) {
            (Ok((_, ov)), Ok(bv)) if *ov > 0.0 => json!(round3(bv / ov)),
            _ => Value::Null,
        },
        "openssl_sm2_line": sm2_line.as_ref().ok().map(|l| l.line.clone()),
        "openssl_p256_line": p256_line.as_ref().ok().map(|l| l.line.clone()),
        "openssl_p256_verify_per_s": p256_line.as_ref().ok().map(|l| l.verify_per_s),
        "openssl_p256_over_sm2_verify": match (&p256_line, &openssl) {
            (Ok(p), Ok((_, ov))) if *ov > 0.0 => json!(round3(p.verify_per_s / ov)),
            _ => Value::Null,
        },
        "openssl_verify_us": o_verify.as_f64().map(|v| round3(1e6 / v)),
        "loadavg": crate::stats::loadavg(),
    })
}

/// The echo/broadcast server: `GET /ws` sends a hello frame, echoes text and
/// forwards every broadcast; `POST /broadcast` sends its body to every socket.
pub async fn echo_server(listen: &str) -> anyhow::Result<()> {
    let (tx, _) = broadcast::channel::<String>(16);
    let app = Router::new()
        .route("/ws", get(ws_handler))
        .route(
            "/broadcast",
            post(
                |State(tx): State<broadcast::Sender<String>>, body: String| async move {
                    let n = tx.send(body).unwrap_or(0);
                    n.to_string()
                },
            ),
        )
        .route("/healthz", get(|| async { "ok" }))
        .with_state(tx);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

async fn ws_handler(
    ws: WebSocketUpgrade,
    State(tx): State<broadcast::Sender<String>>,
) -> axum::response::Response {
    let rx = tx.subscribe();
    ws.on_upgrade(move |socket| echo_socket(socket, rx))
}

async fn echo_socket(mut socket: WebSocket, mut rx: broadcast::Receiver<String>) {
    if socket
        .send(Message::Text("{\"type\":\"hello\"}".into()))
        .await
        .is_err()
    {
        return;
    }
    let mut ping = tokio::time::interval(Duration::from_secs(25));
    ping.tick().await;
    loop {
        tokio::select! {
            m = socket.recv() => match m {
                Some(Ok(Message::Text(t))) => {
                    if socket.send(Message::Text(t)).await.is_err() { return; }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            b = rx.recv() => match b {
                Ok(text) => {
                    if socket.send(Message::Text(text.into())).await.is_err() { return; }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = ping.tick() => {
                if socket.send(Message::Ping(Vec::new().into())).await.is_err() { return; }
            }
        }
    }
}
