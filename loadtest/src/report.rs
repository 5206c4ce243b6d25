//! Markdown tables and an SVG chart of latency against offered rate.

use serde_json::Value;
use std::fmt::Write;

fn f(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            if x.fract() == 0.0 && x.abs() < 1e15 {
                format!("{x:.0}")
            } else {
                format!("{x:.2}")
            }
        }
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub fn machine_md(m: &Value) -> String {
    format!(
        "Date: {} · machine: {} cores, {}, {} GiB RAM, kernel {} · load average at start: {} (the load generator runs on the same machine; the load average also counts whatever else ran)\n\n",
        f(&m["date_utc"]), f(&m["nproc"]), f(&m["cpu_model"]), f(&m["mem_gib"]), f(&m["kernel"]), f(&m["loadavg_start"])
    )
}

pub fn reference_md(r: &Value) -> String {
    format!(
        "| reference (one thread, the load generator's core) | per second |\n|---|---|\n| `openssl speed sm2` sign ({}) | {} |\n| `openssl speed sm2` verify | {} |\n| `openssl speed ecdsap256` verify | {} ({}× SM2) |\n| broker verify path (`bzt_core::pki::verify_signature`, kept key) | {} ({}× OpenSSL SM2) |\n| broker verify, a key's first use (no key table) | {} ({}× OpenSSL SM2) |\n\nOpenSSL's own lines:\n```\n{}\n{}\n```\n\n",
        f(&r["openssl_version"]), f(&r["openssl_sm2_sign_per_s"]), f(&r["openssl_sm2_verify_per_s"]),
        f(&r["openssl_p256_verify_per_s"]), f(&r["openssl_p256_over_sm2_verify"]),
        f(&r["broker_verify_per_s"]), f(&r["broker_over_openssl_verify"]),
        f(&r["broker_first_use_verify_per_s"]), f(&r["broker_first_use_over_openssl_verify"]),
        f(&r["openssl_sm2_line"]), f(&r["openssl_p256_line"]),
    )
}

/// A figure divided by a reference of the same run, 2 decimals.
fn ratio(v: &Value, reference: Option<f64>) -> String {
    match (v.as_f64(), reference) {
        (Some(x), Some(r)) if r > 0.0 => format!("{:.2}", x / r),
        _ => "—".into(),
    }
}

/// The flow table; `reference` (this run's) turns CPU per flow and flows/s
/// into ratios to one OpenSSL SM2 verify, comparable across runs.
pub fn steps_md(steps: &[Value], reference: &Value) -> String {
    let openssl_us = reference["openssl_verify_us"].as_f64();
    let openssl_per_s = reference["openssl_sm2_verify_per_s"].as_f64();
    let mut s = String::from(
        "| mode | offered/s | conc. | done/s | done/s ÷ OpenSSL verify/s | errors | create p50/p99 | claim p50/p99 | push p50/p99/p99.9 | end-to-end p50/p90/p99/p99.9 | broker CPU µs/flow | ÷ one OpenSSL verify | broker cores | load-generator CPU µs/flow | RSS MiB | load |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for st in steps {
        let l = &st["latency_ms"];
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} / {} | {} / {} | {} / {} / {} | {} / {} / {} / {} | {} | {} | {} | {} | {} | {} |",
            f(&st["mode"]), f(&st["offered_per_s"]), f(&st["concurrency"]), f(&st["achieved_per_s"]),
            ratio(&st["achieved_per_s"], openssl_per_s),
            errors_md(&st["errors"]),
            f(&l["create"]["p50_ms"]), f(&l["create"]["p99_ms"]),
            f(&l["claim"]["p50_ms"]), f(&l["claim"]["p99_ms"]),
            f(&l["push"]["p50_ms"]), f(&l["push"]["p99_ms"]), f(&l["push"]["p999_ms"]),
            f(&l["end_to_end"]["p50_ms"]), f(&l["end_to_end"]["p90_ms"]), f(&l["end_to_end"]["p99_ms"]), f(&l["end_to_end"]["p999_ms"]),
            f(&st["broker_cpu_us_per_flow"]), ratio(&st["broker_cpu_us_per_flow"], openssl_us), f(&st["broker_cpu_cores"]), f(&st["loadgen_cpu_us_per_flow"]), f(&st["broker_rss_mib"]), f(&st["loadavg"]),
        );
    }
    s.push_str("\nLatencies in ms. push = phone's completion sent → browser's `result` frame received; end-to-end = scheduled start → result received.\n\n");
    s
}

fn errors_md(e: &Value) -> String {
    match e.as_object() {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|(k, v)| format!("{k}: {}", f(v)))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "0".into(),
    }
}

pub fn idle_md(rows: &[Value]) -> String {
    let mut s = String::from("| server | sockets open | RSS MiB (before → with sockets) | KiB per socket | KiB per session+socket | push to all: total s | per-socket p50/p99 ms | errors | load |\n|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        let lat = if r["push_all"]["latency_from_cancel"].is_null() {
            &r["push_all"]["latency_from_broadcast"]
        } else {
            &r["push_all"]["latency_from_cancel"]
        };
        let before = if r["rss_mib"]["sessions"].is_null() {
            &r["rss_mib"]["start"]
        } else {
            &r["rss_mib"]["sessions"]
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} → {} | {} | {} | {} | {} / {} | {} | {} |",
            f(&r["target"]),
            f(&r["sockets_open"]),
            f(before),
            f(&r["rss_mib"]["sockets"]),
            f(&r["rss_kib_per_socket"]),
            f(&r["rss_kib_per_session_and_socket"]),
            f(&r["push_all"]["total_s"]),
            f(&lat["p50_ms"]),
            f(&lat["p99_ms"]),
            errors_md(&r["errors"]),
            f(&r["loadavg"]),
        );
    }
    s.push_str("\nBroker push: every session cancelled through the RP API (`DELETE`), latency from its own cancel to its `result` frame; echo server: one broadcast.\n\n");
    s
}

pub fn conversation_md(rows: &[Value]) -> String {
    let mut s = String::from("| conversations | outstanding each | requests/s | request→result p50/p90/p99/p99.9 ms | broker CPU µs/request | errors | load |\n|---|---|---|---|---|---|---|\n");
    for r in rows {
        let l = &r["latency_request_to_result"];
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} / {} / {} / {} | {} | {} | {} |",
            f(&r["conversations_open"]),
            f(&r["outstanding_per_conversation"]),
            f(&r["requests_per_s"]),
            f(&l["p50_ms"]),
            f(&l["p90_ms"]),
            f(&l["p99_ms"]),
            f(&l["p999_ms"]),
            f(&r["broker_cpu_us_per_request"]),
            errors_md(&r["errors"]),
            f(&r["loadavg"]),
        );
    }
    s.push('\n');
    s
}

/// Latency (push and end-to-end p50/p99) against offered rate, open-loop steps.
pub fn chart_svg(title: &str, steps: &[Value]) -> String {
    let pts: Vec<(f64, [f64; 4])> = steps
        .iter()
        .filter(|s| s["mode"] == "open")
        .filter_map(|s| {
            let l = &s["latency_ms"];
            Some((
                s["offered_per_s"].as_f64()?,
                [
                    l["push"]["p50_ms"].as_f64()?,
                    l["push"]["p99_ms"].as_f64()?,
                    l["end_to_end"]["p50_ms"].as_f64()?,
                    l["end_to_end"]["p99_ms"].as_f64()?,
                ],
            ))
        })
        .collect();
    let (w, h, ml, mb, mt, mr) = (720.0, 420.0, 60.0, 50.0, 40.0, 170.0);
    let xmax = pts.iter().map(|p| p.0).fold(1.0, f64::max) * 1.05;
    let ymax = pts.iter().flat_map(|p| p.1).fold(1.0, f64::max).min(500.0) * 1.1;
    let x = |v: f64| ml + v / xmax * (w - ml - mr);
    let y = |v: f64| h - mb - v.min(ymax) / ymax * (h - mb - mt);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{ml}\" y=\"24\" font-size=\"15\">{}</text>\n",
        escape(title)
    );
    let _ = writeln!(
        s,
        "<line x1=\"{ml}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>",
        h - mb,
        w - mr,
        h - mb
    );
    let _ = writeln!(
        s,
        "<line x1=\"{ml}\" y1=\"{mt}\" x2=\"{ml}\" y2=\"{}\" stroke=\"black\"/>",
        h - mb
    );
    for k in 0..=5 {
        let xv = xmax * k as f64 / 5.0;
        let yv = ymax * k as f64 / 5.0;
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{xv:.0}</text>",
            x(xv),
            h - mb + 16.0
        );
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{yv:.1}</text>",
            ml - 6.0,
            y(yv) + 4.0
        );
        let _ = writeln!(
            s,
            "<line x1=\"{ml}\" y1=\"{:.1}\" x2=\"{}\" y2=\"{:.1}\" stroke=\"#ddd\"/>",
            y(yv),
            w - mr,
            y(yv)
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">offered login flows per second</text>",
        (ml + w - mr) / 2.0,
        h - 12.0
    );
    let _ = writeln!(s, "<text x=\"16\" y=\"{:.1}\" transform=\"rotate(-90 16 {:.1})\" text-anchor=\"middle\">latency, ms</text>", h / 2.0, h / 2.0);
    let series = [
        ("push p50", "#1f77b4"),
        ("push p99", "#aec7e8"),
        ("end-to-end p50", "#d62728"),
        ("end-to-end p99", "#ff9896"),
    ];
    for (i, (name, color)) in series.iter().enumerate() {
        let path: Vec<String> = pts
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.0), y(p.1[i])))
            .collect();
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        );
        for p in &pts {
            let _ = writeln!(
                s,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"/>",
                x(p.0),
                y(p.1[i])
            );
        }
        let ly = mt + 20.0 * i as f64;
        let _ = writeln!(s, "<line x1=\"{}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{color}\" stroke-width=\"3\"/><text x=\"{}\" y=\"{}\">{name}</text>", w - mr + 10.0, w - mr + 30.0, w - mr + 35.0, ly + 4.0);
    }
    s.push_str("</svg>\n");
    s
}

fn escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
