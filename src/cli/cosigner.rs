//! `bzt cosigner serve`: the co-signing service for split keys (密钥拆分),
//! run as its own process with its own configuration and listen address, so
//! that a compromised broker cannot co-sign by itself.

use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum CosignerCommand {
    /// Run the co-signing service (development mode when no configuration is given).
    Serve(CosignerServeArgs),
}

#[derive(Args)]
pub struct CosignerServeArgs {
    /// TOML configuration file (see docs/key-splitting.md); without it the
    /// service runs in development mode.
    #[arg(long, env = "BZT_COSIGNER_CONFIG")]
    config: Option<PathBuf>,
    /// Log as JSON lines.
    #[arg(long)]
    json_logs: bool,
}

pub fn run(command: CosignerCommand) -> anyhow::Result<()> {
    match command {
        CosignerCommand::Serve(args) => {
            use tracing_subscriber::EnvFilter;
            let filter =
                EnvFilter::try_from_env("BZT_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
            let builder = tracing_subscriber::fmt().with_env_filter(filter);
            if args.json_logs {
                builder.json().init();
            } else {
                builder.init();
            }
            let config = bzt_cosigner::Config::load(args.config.as_deref())?;
            super::runtime()?.block_on(bzt_cosigner::serve(config))
        }
    }
}
