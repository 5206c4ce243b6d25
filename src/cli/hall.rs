//! `bzt hall decrypt`: the opening hall's side of 扫码解密 on the command line. The work is
//! done by [`bzt::hall`]; this shows the QR (terminal and SVG file) and reports.

use anyhow::{bail, Context};
use bzt::hall::{
    CosignerRegistration, DecryptOptions, HallClient, HallEvent, HallOutcome, OpeningWindow,
};
use clap::{Args, Subcommand};
use qrcode::render::unicode::Dense1x2;
use qrcode::{EcLevel, QrCode};
use std::path::{Path, PathBuf};
use std::time::Duration;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

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
    /// The opening time (开标时间, RFC 3339, e.g. 2026-12-06T09:00:00+08:00): no decryption
    /// before it. When it is ahead, the window is registered at once and the QR is shown at
    /// that time.
    #[arg(long, value_parser = parse_time)]
    opening: Option<OffsetDateTime>,
    /// The decryption deadline (RFC 3339; default: 24 hours after the opening time).
    #[arg(long, value_parser = parse_time, requires = "opening")]
    deadline: Option<OffsetDateTime>,
    /// The co-signing service of split keys (密钥拆分): the opening window is registered there
    /// first (`POST /v1/openings`), so it refuses to co-decrypt outside it whatever the broker says.
    #[arg(long, env = "BZT_COSIGNER_URL", requires_all = ["opening", "cosigner_token"])]
    cosigner: Option<String>,
    /// The hall's relying-party token at the co-signing service.
    #[arg(
        long,
        env = "BZT_COSIGNER_TOKEN",
        hide_env_values = true,
        requires = "cosigner"
    )]
    cosigner_token: Option<String>,
    #[command(flatten)]
    tls: super::net::TlsArgs,
    /// The sealed file.
    file: PathBuf,
    /// Where to write the decrypted file (written only if the whole file authenticates).
    out: PathBuf,
}

fn parse_time(s: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(s, &Rfc3339)
        .map_err(|e| format!("{s:?} is not an RFC 3339 time (2026-12-06T09:00:00+08:00): {e}"))
}

fn rfc3339(t: OffsetDateTime) -> anyhow::Result<String> {
    Ok(t.to_offset(time::UtcOffset::UTC).format(&Rfc3339)?)
}

/// The default decryption deadline after the opening time.
const DEFAULT_DECRYPT_HOURS: i64 = 24;

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
    let opening = match a.opening {
        Some(from) => {
            let until = a
                .deadline
                .unwrap_or(from + time::Duration::hours(DEFAULT_DECRYPT_HOURS));
            if until <= from {
                bail!("--deadline must be after --opening");
            }
            Some((from, until))
        }
        None => None,
    };
    let options = DecryptOptions {
        title: a.title.clone(),
        ttl_s: a.ttl,
        number_match: a.number_match,
        opening: opening
            .map(|(from, until)| -> anyhow::Result<_> {
                Ok(OpeningWindow {
                    not_before: rfc3339(from)?,
                    not_after: rfc3339(until)?,
                })
            })
            .transpose()?,
        cosigner: a
            .cosigner
            .clone()
            .zip(a.cosigner_token.clone())
            .map(|(url, token)| CosignerRegistration { url, token }),
    };
    let options = match opening {
        Some((from, _)) => {
            wait_for_opening(&client, &a, &options, from).await?;
            // Registered already: the session is created with the window only.
            DecryptOptions {
                cosigner: None,
                ..options
            }
        }
        None => options,
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

/// Registers the window with the co-signing service now (when one is given), then sleeps until
/// the opening time: a session lives minutes, the wait before an opening may be hours.
async fn wait_for_opening(
    client: &HallClient,
    a: &DecryptArgs,
    options: &DecryptOptions,
    from: OffsetDateTime,
) -> anyhow::Result<()> {
    if let Some(cosigner) = &options.cosigner {
        let file = std::fs::File::open(&a.file)
            .with_context(|| format!("cannot read {}", a.file.display()))?;
        let (_, header_raw) = bzt_envelope::read_header(std::io::BufReader::new(file))?;
        if let Some(window) = &options.opening {
            client
                .register_opening(cosigner, &header_raw, window)
                .await?;
        }
        super::output::note(format!(
            "开标时间已登记到协同签名服务 / opening window registered with {}",
            cosigner.url
        ));
    }
    let ahead = from - OffsetDateTime::now_utc();
    if ahead.is_positive() {
        super::output::note(format!(
            "等待开标 / waiting for the opening time {}（{} s）",
            rfc3339(from)?,
            ahead.whole_seconds()
        ));
        tokio::time::sleep(ahead.unsigned_abs()).await;
    }
    Ok(())
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
