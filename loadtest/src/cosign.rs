//! The co-signed login scenario (密钥拆分): the same login flows as [`crate::flows`], once with
//! whole keys and once with split keys co-signing through a real co-signing service, in the
//! same run, so the added latency and the broker + service CPU per flow compare like for like.

use crate::broker::Fixture;
use crate::flows::{closed_loop, open_loop, Ctx};
use bzt_phone::{Device, Enrolled, SplitIdentity, UnlockedSplit};
use serde_json::{json, Value};
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

/// The load test's PIN (six digits, as enrolment requires).
const PIN: &str = "314159";

/// Enrols `n` split keys with the service at `url`, certified by the fixture's CA, each
/// unlocked once (a PIN's PBKDF2 per flow would measure the phone, not the protocol). The
/// identities live as long as the process: a load generator's whole life.
pub async fn enrol(
    url: &str,
    fx: &Fixture,
    n: usize,
) -> anyhow::Result<Vec<UnlockedSplit<'static>>> {
    let mut keys = Vec::with_capacity(n);
    for i in 0..n {
        let cn = format!("拆分用户{i}");
        let enrolled = Enrolled::generate(url, &cn, None).await?;
        let (cert_pem, _) = fx.ca.issue_for_public_key(
            &bzt_devca::LeafSpec::new(&cn, "示例建设有限公司"),
            &enrolled.public_key()?,
        )?;
        let device = Device {
            id: format!("load-split-{i}"),
            name: format!("负载手机（拆分）{i}"),
        };
        let identity: &'static SplitIdentity =
            Box::leak(Box::new(enrolled.finish(&cert_pem, PIN, device)?));
        keys.push(identity.unlock(PIN)?);
    }
    Ok(keys)
}

/// Closed loop at `concurrency` for both kinds of key, then an open loop for both at half the
/// co-signed maximum (the latency added at equal, sustainable load).
pub async fn compare(
    plain: Arc<Ctx>,
    split: Arc<Ctx>,
    pids: &[u32],
    concurrency: usize,
    warm: Duration,
    measure: Duration,
) -> Vec<Value> {
    let mut rows = Vec::new();
    for (label, ctx) in [("whole key", &plain), ("split key", &split)] {
        let mut st = closed_loop(ctx.clone(), pids, concurrency, warm, measure).await;
        st["key"] = json!(label);
        eprintln!("{label} closed {concurrency}: {st}");
        rows.push(st);
    }
    let rate = (rows[1]["achieved_per_s"].as_f64().unwrap_or(0.0) / 2.0)
        .round()
        .max(1.0);
    for (label, ctx) in [("whole key", &plain), ("split key", &split)] {
        let mut st = open_loop(ctx.clone(), pids, rate, warm, measure, 20_000).await;
        st["key"] = json!(label);
        eprintln!("{label} open {rate}/s: {st}");
        rows.push(st);
    }
    rows
}

/// The table of [`compare`], with the latency a split key adds at the same offered rate.
pub fn compare_md(rows: &[Value]) -> String {
    let f = |v: &Value| match v {
        Value::Null => "–".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut s = String::from(
        "| key | mode | offered/s | conc. | done/s | errors | end-to-end p50/p99 ms | broker CPU µs/flow | service CPU µs/flow | broker + service µs/flow |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let broker = r["broker_cpu_us_per_flow"].as_f64();
        let service = r["cosigner_cpu"]["us_per_flow"].as_f64();
        let sum = broker.map(|b| b + service.unwrap_or(0.0));
        let e = &r["latency_ms"]["end_to_end"];
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} / {} | {} | {} | {} |",
            f(&r["key"]),
            f(&r["mode"]),
            f(&r["offered_per_s"]),
            f(&r["concurrency"]),
            f(&r["achieved_per_s"]),
            r["errors"]
                .as_object()
                .map_or(0, |m| m.values().filter_map(Value::as_u64).sum::<u64>()),
            f(&e["p50_ms"]),
            f(&e["p99_ms"]),
            f(&r["broker_cpu_us_per_flow"]),
            service.map_or("–".into(), |v| format!("{v:.1}")),
            sum.map_or("–".into(), |v| format!("{v:.1}")),
        );
    }
    if let [_, _, plain, split] = rows {
        let d = |k: &str| {
            let a = plain["latency_ms"]["end_to_end"][k].as_f64()?;
            let b = split["latency_ms"]["end_to_end"][k].as_f64()?;
            Some(b - a)
        };
        let _ = writeln!(
            s,
            "\nAdded by co-signing at {} flows/s: end-to-end p50 {} ms, p99 {} ms.",
            f(&plain["offered_per_s"]),
            d("p50_ms").map_or("–".into(), |v| format!("{v:+.2}")),
            d("p99_ms").map_or("–".into(), |v| format!("{v:+.2}")),
        );
    }
    s.push_str("\nA split key's flow adds one phone → service round trip, the service's call to the broker's context endpoint, the two-party arithmetic on both sides and the channel encryption; the service runs as its own process on the same machine.\n\n");
    s
}
