//! `bzt audit show | verify | export`: read and check the audit trail, from
//! the audit file or, in Redis mode, from the Redis stream.

use anyhow::Context;
use bzt::config::{Config, StoreKind};
use bzt::store::redis::{RedisAuditLog, RedisSettings};
use bzt::store::AuditQuery;
use bzt_core::audit::Record;
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
        /// Only operations by this member of a granted company certificate (name or device id).
        #[arg(long)]
        delegate: Option<String>,
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
    /// Print every record as stored, checkpoints included (JSON lines that
    /// `bzt audit verify --file` accepts): archives a Redis stream.
    Export {
        #[command(flatten)]
        log: LogArgs,
    },
}

#[derive(Args)]
pub struct LogArgs {
    /// The audit log file; default: the trail of `--config` (or of development mode).
    #[arg(long, conflicts_with = "redis")]
    file: Option<PathBuf>,
    /// The Redis audit stream instead (`redis://...`; several comma-separated
    /// URLs: a Cluster's seed nodes).
    #[arg(long)]
    redis: Option<String>,
    /// The Redis key prefix (`[store] key_prefix`; default `bzt`).
    #[arg(long, requires = "redis")]
    prefix: Option<String>,
    #[arg(long, env = "BZT_CONFIG")]
    config: Option<PathBuf>,
}

/// Where the trail is.
enum Source {
    File(PathBuf),
    Redis(RedisSettings),
}

impl LogArgs {
    fn source(&self) -> anyhow::Result<Source> {
        if let Some(f) = &self.file {
            return Ok(Source::File(f.clone()));
        }
        if let Some(url) = &self.redis {
            let mut s = RedisSettings::new(url);
            if let Some(p) = &self.prefix {
                s.key_prefix = p.clone();
            }
            s.timeout = std::time::Duration::from_secs(5);
            return Ok(Source::Redis(s));
        }
        let config = Config::load(self.config.as_deref())?;
        Ok(match config.store.kind {
            StoreKind::Memory => Source::File(config.audit_path()),
            StoreKind::Redis => Source::Redis(bzt::app::redis_settings(&config)?),
        })
    }
}

impl Source {
    fn name(&self) -> String {
        match self {
            Source::File(p) => p.display().to_string(),
            Source::Redis(s) => format!("{}:{{audit}} on {}", s.key_prefix, s.urls.join(",")),
        }
    }

    fn matching(&self, q: &AuditQuery) -> anyhow::Result<Vec<Record>> {
        match self {
            Source::File(path) => bzt::store::file_audit::read_matching(path, q)
                .with_context(|| format!("cannot read {}", path.display())),
            Source::Redis(s) => super::runtime()?.block_on(async {
                let log = RedisAuditLog::open_read_only(s).await?;
                Ok(log.matching(q).await?)
            }),
        }
    }

    /// Every record line, as stored.
    fn lines(&self) -> anyhow::Result<Vec<String>> {
        match self {
            Source::File(path) => {
                let bytes = std::fs::read(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                // Lossy, so a line that is not UTF-8 is named like any other bad record.
                Ok(String::from_utf8_lossy(&bytes)
                    .lines()
                    .map(str::to_owned)
                    .collect())
            }
            Source::Redis(s) => super::runtime()?.block_on(async {
                let log = RedisAuditLog::open_read_only(s).await?;
                Ok(log.lines().await?)
            }),
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
            delegate,
            limit,
        } => {
            let serial = serial
                .map(|s| bzt_core::pki::normalize_serial(&s).context("--serial must be hex"))
                .transpose()?;
            let since = since
                .map(|s| Timestamp::parse_rfc3339(&s).context("--since must be an RFC 3339 time"))
                .transpose()?;
            let records = log.source()?.matching(&AuditQuery {
                app,
                serial,
                since,
                delegate,
                limit,
            })?;
            for r in records {
                println!("{}", r.to_line());
            }
            Ok(())
        }
        AuditCommand::Export { log } => {
            for line in log.source()?.lines()? {
                println!("{line}");
            }
            Ok(())
        }
        AuditCommand::Verify { log, key } => {
            let source = log.source()?;
            let lines = source.lines()?;
            let pinned = key
                .map(|k| -> anyhow::Result<String> {
                    let signing = bzt::store::file_audit::load_existing_key(&k)?;
                    Ok(hex::encode(signing.verifying_key().to_sec1_bytes()))
                })
                .transpose()?;
            match bzt_core::audit::verify_lines(lines.iter().map(String::as_str), pinned.as_deref())
            {
                Ok(v) => {
                    if super::output::json() {
                        println!(
                            "{}",
                            serde_json::json!({
                                "intact": true,
                                "records": v.records,
                                "checkpoints": v.checkpoints,
                                "head": v.head,
                                "unsigned_tail": v.unsigned_tail,
                                "key_pinned": pinned.is_some(),
                            })
                        );
                        return Ok(());
                    }
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
                    anyhow::bail!("audit log {} is NOT intact: {broken}", source.name())
                }
            }
        }
    }
}
