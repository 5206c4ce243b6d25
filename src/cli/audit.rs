//! `bzt audit show | verify`: read and check the audit trail.

use anyhow::Context;
use bzt::audit::AuditQuery;
use bzt::config::Config;
use bzt_core::Timestamp;
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Print the operations (one JSON line each), filtered.
    Show {
        #[command(flatten)]
        log: LogArgs,
        /// Only this certificate serial (hex).
        #[arg(long)]
        serial: Option<String>,
        /// Only this app.
        #[arg(long)]
        app: Option<String>,
        /// Only records at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// At most this many (0: all).
        #[arg(long, default_value_t = 0)]
        limit: usize,
    },
    /// Check the hash chain and the broker's checkpoint signatures.
    Verify {
        #[command(flatten)]
        log: LogArgs,
        /// The broker's audit signing key (PEM), to pin the checkpoint key.
        #[arg(long)]
        key: Option<PathBuf>,
    },
}

#[derive(Args)]
pub struct LogArgs {
    /// The audit log; default: the one of `--config` (or of development mode).
    #[arg(long)]
    file: Option<PathBuf>,
    #[arg(long, env = "BZT_CONFIG")]
    config: Option<PathBuf>,
}

impl LogArgs {
    fn path(&self) -> anyhow::Result<PathBuf> {
        match &self.file {
            Some(f) => Ok(f.clone()),
            None => Ok(Config::load(self.config.as_deref())?.audit_path()),
        }
    }
}

pub fn run(cmd: AuditCommand) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::Show {
            log,
            serial,
            app,
            since,
            limit,
        } => {
            let serial = serial
                .map(|s| bzt_core::pki::normalize_serial(&s).context("--serial must be hex"))
                .transpose()?;
            let since = since
                .map(|s| Timestamp::parse_rfc3339(&s).context("--since must be an RFC 3339 time"))
                .transpose()?;
            let path = log.path()?;
            let records = bzt::audit::read_matching(
                &path,
                &AuditQuery {
                    app,
                    serial,
                    since,
                    limit,
                },
            )
            .with_context(|| format!("cannot read {}", path.display()))?;
            for r in records {
                println!("{}", r.to_line());
            }
            Ok(())
        }
        AuditCommand::Verify { log, key } => {
            let path = log.path()?;
            let bytes =
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            // Lossy, so a line that is not UTF-8 is named like any other bad record.
            let text = String::from_utf8_lossy(&bytes);
            let pinned = key
                .map(|k| -> anyhow::Result<String> {
                    let signing = bzt::audit::load_existing_key(&k)?;
                    Ok(hex::encode(signing.verifying_key().to_sec1_bytes()))
                })
                .transpose()?;
            match bzt_core::audit::verify_lines(text.lines(), pinned.as_deref()) {
                Ok(v) => {
                    println!(
                        "OK: {} records, {} signed checkpoints, head {}",
                        v.records, v.checkpoints, v.head
                    );
                    if v.unsigned_tail > 0 {
                        println!(
                            "note: the last {} operations are chained but not yet covered by a signed checkpoint",
                            v.unsigned_tail
                        );
                    }
                    if pinned.is_none() {
                        println!("note: pass --key to pin the broker's checkpoint key");
                    }
                    Ok(())
                }
                Err(broken) => {
                    anyhow::bail!("audit log {} is NOT intact: {broken}", path.display())
                }
            }
        }
    }
}
