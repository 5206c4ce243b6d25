//! `bzt cosigner serve`: the co-signing service of split keys (密钥拆分), a process of its own
//! beside the broker (docs/key-splitting.md). Development mode starts it as a child process.

use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum CosignerCommand {
    /// Run the co-signing service (development mode when no configuration is given).
    Serve(ServeArgs),
}

#[derive(Args)]
pub struct ServeArgs {
    /// TOML configuration file of the service (not the broker's).
    #[arg(long, env = "BZT_COSIGNER_CONFIG")]
    config: Option<PathBuf>,
    /// Exit when standard input closes: how development mode's broker ends its child service
    /// even when the broker itself is killed outright.
    #[arg(long, hide = true)]
    exit_with_stdin: bool,
}

pub fn run(cmd: CosignerCommand) -> anyhow::Result<()> {
    match cmd {
        CosignerCommand::Serve(a) => {
            super::serve::init_tracing(false);
            let config = bzt_cosigner::Config::load(a.config.as_deref())?;
            if a.exit_with_stdin {
                // A plain thread: the read blocks until the parent's end of the pipe closes.
                std::thread::spawn(|| {
                    let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
                    tracing::info!("the broker that started this service is gone; exiting");
                    std::process::exit(0);
                });
            }
            super::runtime()?.block_on(bzt_cosigner::serve(config))
        }
    }
}
