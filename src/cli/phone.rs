//! `bzt phone claim | approve | reject`: the reference phone on the command line.
//!
//! `approve` and `reject` act without asking (scripts, tests); `claim` shows
//! what a phone screen would show and asks on the terminal.

use anyhow::{bail, Context};
use bzt_phone::client::{ApproveExtras, Phone};
use bzt_phone::identity::PhoneIdentity;
use bzt_phone::qr::QrText;
use clap::{Args, Subcommand};
use std::io::{BufRead, Write};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum PhoneCommand {
    /// Claim a QR, show the request, and ask whether to sign.
    Claim(PhoneArgs),
    /// Claim a QR and sign at once.
    Approve(PhoneArgs),
    /// Claim a QR and decline.
    Reject {
        #[command(flatten)]
        phone: PhoneArgs,
        /// Reason shown to the RP.
        #[arg(long, default_value = "用户拒绝")]
        reason: String,
    },
}

#[derive(Args)]
pub struct PhoneArgs {
    /// The text of the scanned QR code.
    qr_text: String,
    /// Certificate (PEM) of the phone.
    #[arg(long)]
    cert: PathBuf,
    /// Private key (PEM; PKCS#8 or bzt's PIN-protected form).
    #[arg(long)]
    key: PathBuf,
    /// Intermediate certificates to send along (PEM bundle).
    #[arg(long)]
    chain: Option<PathBuf>,
    /// PIN of a protected key file (asked on the terminal when needed and not given).
    #[arg(long, env = "BZT_PHONE_PIN")]
    pin: Option<String>,
    /// Device name shown to the browser.
    #[arg(long, default_value = "bzt 参考手机")]
    device_name: String,
    /// Number-matching pick (the two digits the browser shows).
    #[arg(long)]
    match_code: Option<String>,
}

pub fn run(cmd: PhoneCommand) -> anyhow::Result<()> {
    super::runtime()?.block_on(async move {
        match cmd {
            PhoneCommand::Claim(a) => flow(a, Mode::Ask).await,
            PhoneCommand::Approve(a) => flow(a, Mode::Approve).await,
            PhoneCommand::Reject { phone, reason } => flow(phone, Mode::Reject(reason)).await,
        }
    })
}

enum Mode {
    Ask,
    Approve,
    Reject(String),
}

fn prompt(question: &str) -> anyhow::Result<String> {
    eprint!("{question}");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim().to_owned())
}

fn load_identity(a: &PhoneArgs) -> anyhow::Result<PhoneIdentity> {
    let key_text = std::fs::read_to_string(&a.key)
        .with_context(|| format!("cannot read {}", a.key.display()))?;
    let pin = match (&a.pin, bzt_devca::is_encrypted_key_pem(&key_text)) {
        (Some(p), _) => Some(p.clone()),
        (None, true) => Some(prompt("请输入证书 PIN 码: ")?),
        (None, false) => None,
    };
    let mut identity = PhoneIdentity::from_files(&a.cert, &a.key, pin.as_deref())?;
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "cli".into());
    identity = identity.with_device(format!("bzt-cli-{host}"), a.device_name.clone());
    if let Some(chain) = &a.chain {
        let text = std::fs::read_to_string(chain)
            .with_context(|| format!("cannot read {}", chain.display()))?;
        identity = identity.with_chain(bzt::app::split_pem_certificates(&text));
    }
    Ok(identity)
}

async fn flow(a: PhoneArgs, mode: Mode) -> anyhow::Result<()> {
    let identity = load_identity(&a)?;
    let qr = QrText::parse(&a.qr_text)?;
    let phone = Phone::new(reqwest::Client::new());
    let claimed = phone.claim(&qr, &identity).await?;
    println!("{}", claimed.describe_zh());

    let approve = match &mode {
        Mode::Approve => true,
        Mode::Reject(_) => false,
        Mode::Ask => matches!(
            prompt("确认使用证书签名? [y/N] ")?.as_str(),
            "y" | "Y" | "yes"
        ),
    };
    if !approve {
        let reason = match mode {
            Mode::Reject(r) => r,
            _ => "用户拒绝".into(),
        };
        let answer = phone.reject(&claimed, &reason).await?;
        println!("已拒绝 (session {} → {:?})", answer.id, answer.status);
        return Ok(());
    }
    let match_code = match (&a.match_code, &claimed.match_choices) {
        (Some(c), _) => Some(c.clone()),
        (None, Some(choices)) => Some(prompt(&format!(
            "请选择电脑上显示的数字 {}: ",
            choices.join(" / ")
        ))?),
        (None, None) => None,
    };
    if claimed.match_choices.is_some() && match_code.is_none() {
        bail!("this session uses number matching: pass --match-code");
    }
    let answer = phone
        .approve(
            &claimed,
            &identity,
            ApproveExtras {
                match_code,
                ..Default::default()
            },
        )
        .await?;
    println!(
        "已签名 (session {} → {:?}, version {})",
        answer.id, answer.status, answer.version
    );
    Ok(())
}
