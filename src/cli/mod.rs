//! Command-line interface.

mod audit;
mod cosigner;
#[cfg(feature = "demo")]
mod devca;
mod envelope;
#[cfg(feature = "demo")]
mod hall;
#[cfg(feature = "demo")]
mod net;
mod output;
#[cfg(feature = "demo")]
mod phone;
#[cfg(feature = "demo")]
mod seal;
mod serve;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "bzt",
    version,
    about = "QR scan-session broker for e-bidding platforms (扫码登录 / 签章 / 解密)"
)]
struct Cli {
    /// Print the command's result as one JSON object on stdout (messages go to stderr).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker (development mode when no configuration is given).
    Serve(serve::ServeArgs),
    #[cfg(feature = "demo")]
    /// Development CA issuing SM2 certificates for test phones.
    #[command(name = "dev-ca", subcommand)]
    DevCa(devca::DevCaCommand),
    /// Read and verify the audit trail of certificate use.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    #[cfg(feature = "demo")]
    /// Reference phone client: claim a QR, approve or reject, converse (会话签章).
    #[command(subcommand)]
    Phone(phone::PhoneCommand),
    /// Bid-file envelopes (多证书加密): seal to several certificates, open, inspect.
    #[command(subcommand)]
    Envelope(envelope::EnvelopeCommand),
    #[cfg(feature = "demo")]
    /// Electronic seals (电子印章, GB/T 38540): verify or show a seal or a seal signature.
    #[command(subcommand)]
    Seal(seal::SealCommand),
    #[cfg(feature = "demo")]
    /// Opening hall (开标大厅): decrypt a sealed bid file with a recipient's phone (扫码解密).
    #[command(subcommand)]
    Hall(hall::HallCommand),
    /// Co-signing service for split keys (密钥拆分): `bzt cosigner serve`.
    #[command(subcommand)]
    Cosigner(cosigner::CosignerCommand),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    output::set_json(cli.json);
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        #[cfg(feature = "demo")]
        Command::DevCa(cmd) => devca::run(cmd),
        #[cfg(feature = "demo")]
        Command::Phone(cmd) => phone::run(cmd),
        Command::Audit(cmd) => audit::run(cmd),
        Command::Envelope(cmd) => envelope::run(cmd),
        #[cfg(feature = "demo")]
        Command::Hall(cmd) => hall::run(cmd),
        Command::Cosigner(cmd) => cosigner::run(cmd),
        #[cfg(feature = "demo")]
        Command::Seal(cmd) => seal::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The async runtime: on one thread when the process may use only one CPU
/// (`taskset`, a container limited to one CPU), else one worker per CPU.
///
/// With one CPU the multi-threaded scheduler still runs a worker thread
/// beside the main one, which runs the accept loop: every connection, and
/// every wake-up between them, crosses threads for nothing. Measured on
/// `bzt-load`: −12% broker CPU per login flow on three nodes with Redis,
/// −4.5% on one node (loadtest/RESULTS.md, session 6).
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = match RuntimeShape::for_this_process() {
        RuntimeShape::OneThread => tokio::runtime::Builder::new_current_thread(),
        RuntimeShape::WorkerPerCpu => tokio::runtime::Builder::new_multi_thread(),
    };
    Ok(builder.enable_all().build()?)
}

/// Which runtime [`runtime`] builds; `serve` logs it at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RuntimeShape {
    OneThread,
    WorkerPerCpu,
}

impl RuntimeShape {
    /// Decided once per process, so the start line names the runtime built.
    fn for_this_process() -> Self {
        static SHAPE: std::sync::OnceLock<RuntimeShape> = std::sync::OnceLock::new();
        // Counts the CPUs of the process's affinity mask and cgroup quota.
        *SHAPE.get_or_init(|| match std::thread::available_parallelism() {
            Ok(n) if n.get() == 1 => Self::OneThread,
            _ => Self::WorkerPerCpu,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::OneThread => "current_thread",
            Self::WorkerPerCpu => "multi_thread",
        }
    }
}
