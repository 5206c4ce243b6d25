//! `bzt hall decrypt`: the opening hall's side of 扫码解密 on the command line. The work is
//! done by [`bzt::hall`]; this shows the QR (terminal and SVG file) and reports.

use anyhow::{bail, Context};
use bzt::hall::{DecryptOptions, HallClient, HallEvent, HallOutcome};
use clap::{Args, Subcommand};
use qrcode::render::unicode::Dense1x2;
use qrcode::{EcLevel, QrCode};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Subcommand)]
pub enum HallCommand {
    /// Open a sealed bid file with a recipient's phone: show a QR, wait for the phone to
    /// re-wrap the file's key to a one-time key, then decrypt.
    Decrypt(DecryptArgs),
}

#[derive(Args)]
pub struct DecryptArgs {
    /// The broker's base URL.
    #[arg(long, env = "BZT_BROKER_URL")]
    broker: String,
    /// The hall app's API key.
    #[arg(long, env = "BZT_API_KEY", hide_env_values = true)]
    api_key: String,
    /// Title shown on the phone (default: 开标解密：<file name>).
    #[arg(long)]
    title: Option<String>,
    /// Session lifetime in seconds (30..600; the broker's default when absent).
    #[arg(long)]
    ttl: Option<u64>,
    /// Ask the phone to pick the two digits shown here (number matching).
    #[arg(long)]
    number_match: bool,
    /// Where to write the QR as SVG (default: `<OUT>.qr.svg`, next to OUT).
    #[arg(long)]
    qr_svg: Option<PathBuf>,
    #[command(flatten)]
    tls: super::net::TlsArgs,
    /// The sealed file.
    file: PathBuf,
    /// Where to write the decrypted file (written only if the whole file authenticates).
    out: PathBuf,
}

pub fn run(cmd: HallCommand) -> anyhow::Result<()> {
    match cmd {
        HallCommand::Decrypt(a) => super::runtime()?.block_on(decrypt(a)),
    }
}

/// `<OUT>.qr.svg` in OUT's directory.
fn default_svg_path(out: &Path) -> PathBuf {
    let mut name = out
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "bzt-hall".into());
    name.push(".qr.svg");
    out.with_file_name(name)
}

fn show_qr(qr_text: &str, svg_path: &Path) -> anyhow::Result<()> {
    let code = QrCode::with_error_correction_level(qr_text.as_bytes(), EcLevel::M)
        .context("cannot encode the QR text")?;
    let terminal = code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build();
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(256, 256)
        .quiet_zone(true)
        .build();
    std::fs::write(svg_path, svg)
        .with_context(|| format!("cannot write {}", svg_path.display()))?;
    super::output::note(&terminal);
    super::output::note("请用证书 App 扫码解密 / scan with the certificate app");
    super::output::note(format!("二维码文件 / QR image: {}", svg_path.display()));
    super::output::note(format!("QR text: {qr_text}"));
    Ok(())
}

async fn decrypt(a: DecryptArgs) -> anyhow::Result<()> {
    let tls = a.tls.client_tls()?;
    let http = a.tls.http_client(&tls, Duration::from_secs(30))?;
    let client = HallClient::new(http, &a.broker, &a.api_key).with_tls(tls);
    let options = DecryptOptions {
        title: a.title.clone(),
        ttl_s: a.ttl,
        number_match: a.number_match,
    };
    let svg_path = a.qr_svg.clone().unwrap_or_else(|| default_svg_path(&a.out));
    let session = client
        .create_decrypt(&a.file, &options)
        .await
        .with_context(|| format!("cannot start decrypting {}", a.file.display()))?;
    super::output::note(format!(
        "解密会话 / decrypt session {}（有效期至 / until {}）",
        session.id, session.expires_at
    ));
    show_qr(&session.qr_text, &svg_path)?;
    let mut svg_error = None;
    let terminal = session
        .wait(|event| match event {
            HallEvent::Qr(text) => {
                if let Err(e) = show_qr(&text, &svg_path) {
                    svg_error = Some(e);
                }
            }
            HallEvent::Scanned { device, match_code } => {
                super::output::note(format!(
                    "已扫码 / scanned by {}",
                    device.as_deref().unwrap_or("(unnamed device)")
                ));
                if let Some(code) = match_code {
                    super::output::note(format!("请在手机上选择数字 / pick on the phone:  {code}"));
                }
            }
            HallEvent::Reconnecting { error, delay } => {
                eprintln!("连接中断，重连中 / reconnecting in {delay:?}: {error}");
            }
        })
        .await?;
    if let Some(e) = svg_error {
        eprintln!("warning: {e:#}");
    }
    let outcome = session.finish(&terminal, &a.out)?;
    super::output::result(outcome_json(&session.id, &a, &outcome), || {
        print_outcome(&a, &outcome)
    });
    match outcome {
        HallOutcome::Opened { .. } => Ok(()),
        HallOutcome::Rejected { reason } => bail!("the phone declined: {reason}"),
        HallOutcome::Expired => bail!("the session expired before a phone completed it"),
        HallOutcome::Cancelled => bail!("the session was cancelled"),
        HallOutcome::Failed { reason } => bail!("the session failed: {reason}"),
    }
}

/// The outcome for `--json`.
fn outcome_json(session_id: &str, a: &DecryptArgs, outcome: &HallOutcome) -> serde_json::Value {
    use serde_json::json;
    match outcome {
        HallOutcome::Opened { signer, report } => json!({
            "session": session_id,
            "outcome": "opened",
            "input": a.file,
            "output": a.out,
            "plaintext_len": report.plaintext_len,
            "signer": {
                "subject": signer.subject,
                "serial": signer.serial,
                "issuer": signer.issuer,
                "is_recipient": signer.is_recipient,
            },
        }),
        HallOutcome::Rejected { reason } => {
            json!({"session": session_id, "outcome": "rejected", "reason": reason})
        }
        HallOutcome::Expired => json!({"session": session_id, "outcome": "expired"}),
        HallOutcome::Cancelled => json!({"session": session_id, "outcome": "cancelled"}),
        HallOutcome::Failed { reason } => {
            json!({"session": session_id, "outcome": "failed", "reason": reason})
        }
    }
}

fn print_outcome(a: &DecryptArgs, outcome: &HallOutcome) {
    match outcome {
        HallOutcome::Opened { signer, report } => {
            println!(
                "已解密 / decrypted {} → {} ({} bytes)",
                a.file.display(),
                a.out.display(),
                report.plaintext_len
            );
            println!(
                "解密人 / approved by {} (serial {}, issuer {}){}",
                signer.subject,
                signer.serial,
                signer.issuer,
                if signer.is_recipient {
                    ""
                } else {
                    " — not listed among the file's recipients"
                }
            );
        }
        HallOutcome::Rejected { reason } => {
            println!("手机拒绝解密 / the phone declined: {reason}");
        }
        _ => {}
    }
}
