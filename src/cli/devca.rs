//! `bzt dev-ca init | issue`.

use anyhow::Context;
use bzt_devca::LeafSpec;
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum DevCaCommand {
    /// Create the development CAs (platform and national) in the data directory.
    Init(DataDirArg),
    /// Issue an SM2 certificate and key for a test phone.
    Issue(IssueArgs),
    /// Make an electronic seal (GB/T 38540 SESeal) bound to a certificate; the development CA
    /// is the seal maker (制章者).
    MakeSeal(super::seal::MakeSealArgs),
}

#[derive(Args)]
pub struct DataDirArg {
    /// Data directory of the development broker.
    #[arg(long, env = "BZT_DATA_DIR", default_value = bzt::dev::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
}

#[derive(Args)]
pub struct IssueArgs {
    #[command(flatten)]
    data: DataDirArg,
    /// Holder's name (subject CN).
    #[arg(long)]
    cn: String,
    /// Company (subject O).
    #[arg(long)]
    org: String,
    /// 统一社会信用代码 (18 characters, checked).
    #[arg(long)]
    uscc: Option<String>,
    /// Which development CA issues it.
    #[arg(long, default_value = "platform", value_parser = ["platform", "national"])]
    domain: String,
    /// Days of validity from now; negative makes an already-expired certificate (tests).
    #[arg(long, default_value_t = 365, allow_hyphen_values = true)]
    days: i64,
    /// Protect the private key file with this PIN.
    #[arg(long)]
    pin: Option<String>,
    /// Output directory (cert.pem, key.pem, chain.pem).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(cmd: DevCaCommand) -> anyhow::Result<()> {
    match cmd {
        DevCaCommand::Init(a) => {
            for (domain, _) in bzt::dev::DOMAINS {
                let ca = bzt::dev::dev_ca(&a.data_dir, domain)?;
                println!(
                    "{domain}: {} ({})",
                    ca.subject(),
                    bzt::dev::ca_dir(&a.data_dir, domain)
                        .join(bzt_devca::CA_CERT_FILE)
                        .display()
                );
            }
            Ok(())
        }
        DevCaCommand::Issue(a) => issue(a),
        DevCaCommand::MakeSeal(a) => super::seal::make_seal(a),
    }
}

fn issue(a: IssueArgs) -> anyhow::Result<()> {
    let ca = bzt::dev::dev_ca(&a.data.data_dir, &a.domain)?;
    let now = time::OffsetDateTime::now_utc();
    let (not_before, not_after) = if a.days >= 0 {
        (
            now - time::Duration::minutes(1),
            now + time::Duration::days(a.days),
        )
    } else {
        (
            now + time::Duration::days(a.days * 2),
            now + time::Duration::days(a.days),
        )
    };
    let mut spec = LeafSpec::new(&a.cn, &a.org).with_validity(not_before, not_after);
    if let Some(u) = &a.uscc {
        spec = spec.with_uscc(u);
    }
    let issued = ca.issue(&spec)?;
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    std::fs::write(a.out.join("cert.pem"), &issued.cert_pem)?;
    std::fs::write(a.out.join("chain.pem"), ca.cert_pem())?;
    let key = match &a.pin {
        Some(pin) => issued.encrypted_key_pem(pin)?,
        None => issued.key_pem.clone(),
    };
    bzt::config::write_private(&a.out.join("key.pem"), &key)?;
    let json = serde_json::json!({
        "serial": issued.serial_hex,
        "domain": a.domain,
        "cert": a.out.join("cert.pem"),
        "key": a.out.join("key.pem"),
        "chain": a.out.join("chain.pem"),
        "pin_protected": a.pin.is_some(),
    });
    super::output::result(json, || {
        println!("issued serial {} by the {} CA", issued.serial_hex, a.domain);
        println!(
            "  {}/cert.pem\n  {}/key.pem{}",
            a.out.display(),
            a.out.display(),
            if a.pin.is_some() {
                " (PIN-protected)"
            } else {
                ""
            }
        );
    });
    Ok(())
}
