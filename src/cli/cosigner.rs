//! `bzt cosigner serve`: the co-signing service for split keys (密钥拆分),
//! run as its own process with its own configuration and listen address, so
//! that a compromised broker cannot co-sign by itself. Development mode
//! (`bzt serve` without a configuration) starts it as a child process.

use anyhow::Context;
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
    /// Exit when standard input closes: how development mode's broker ends its child service
    /// even when the broker itself is killed outright.
    #[arg(long, hide = true)]
    exit_with_stdin: bool,
    /// Write the address actually bound to this file once listening: how development mode's
    /// broker learns the port of a service started on `127.0.0.1:0`.
    #[arg(long, hide = true)]
    address_file: Option<PathBuf>,
}

pub fn run(command: CosignerCommand) -> anyhow::Result<()> {
    match command {
        CosignerCommand::Serve(args) => {
            super::serve::init_tracing(args.json_logs);
            let config = bzt_cosigner::Config::load(args.config.as_deref())?;
            if args.exit_with_stdin {
                // A plain thread: the read blocks until the parent's end of the pipe closes.
                std::thread::spawn(|| {
                    let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
                    tracing::info!("the broker that started this service is gone; exiting");
                    std::process::exit(0);
                });
            }
            super::runtime()?.block_on(async move {
                let listener = tokio::net::TcpListener::bind(&config.listen)
                    .await
                    .with_context(|| format!("cannot listen on {}", config.listen))?;
                if let Some(file) = &args.address_file {
                    // Written whole, then renamed: the reader never sees half an address.
                    let partial = file.with_extension("partial");
                    std::fs::write(&partial, listener.local_addr()?.to_string())?;
                    std::fs::rename(&partial, file)?;
                }
                bzt_cosigner::serve_on(listener, config).await
            })
        }
    }
}
