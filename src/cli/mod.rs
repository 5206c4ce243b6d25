//! Command-line interface.

mod audit;
mod cosigner;
mod devca;
mod envelope;
mod hall;
mod net;
mod output;
mod phone;
mod phone_grants;
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
    /// Development CA issuing SM2 certificates for test phones.
    #[command(name = "dev-ca", subcommand)]
    DevCa(devca::DevCaCommand),
    /// Read and verify the audit trail of certificate use.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Reference phone client: claim a QR, approve or reject, converse (会话签章).
    #[command(subcommand)]
    Phone(phone::PhoneCommand),
    /// Bid-file envelopes (多证书加密): seal to several certificates, open, inspect.
    #[command(subcommand)]
    Envelope(envelope::EnvelopeCommand),
    /// Electronic seals (电子印章, GB/T 38540): verify or show a seal or a seal signature.
    #[command(subcommand)]
    Seal(seal::SealCommand),
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
        Command::DevCa(cmd) => devca::run(cmd),
        Command::Phone(cmd) => phone::run(cmd),
        Command::Audit(cmd) => audit::run(cmd),
        Command::Envelope(cmd) => envelope::run(cmd),
        Command::Hall(cmd) => hall::run(cmd),
        Command::Cosigner(cmd) => cosigner::run(cmd),
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

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
