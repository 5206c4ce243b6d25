//! `bzt phone grant-invite | grant | accept-grant | extend | ungrant | grants`:
//! 企业证书授权 with split keys (docs/key-splitting.md). The administrator's
//! requests are co-signed with its own share (`--identity --pin`); the
//! member's phone accepts under its own PIN.

use anyhow::Context;
use bzt_phone::grants::{GrantInvite, GrantOffer};
use bzt_phone::identity::Device;
use bzt_phone::split::SplitIdentity;
use clap::Args;
use std::path::PathBuf;

use super::{cli_device_id, prompt};

#[derive(Args)]
pub struct InviteArgs {
    /// The member's name (shown in results and audit as the delegate).
    #[arg(long)]
    name: String,
    /// The member's identity directory to be (the receiving key is kept there).
    #[arg(long)]
    dir: PathBuf,
    /// Where to write the invitation (JSON) for the administrator.
    #[arg(long)]
    out: PathBuf,
    /// Device id (defaults to this host's).
    #[arg(long)]
    device_id: Option<String>,
    /// Device name shown to the browser.
    #[arg(long, default_value = "bzt 参考手机（被授权人）")]
    device_name: String,
}

#[derive(Args)]
pub struct AdminArgs {
    /// The administrator's split identity directory (the company certificate's owner).
    #[arg(long)]
    identity: PathBuf,
    /// The administrator's PIN (asked on the terminal when not given).
    #[arg(long, env = "BZT_PHONE_PIN")]
    pin: Option<String>,
}

#[derive(Args)]
pub struct GrantArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// The member's invitation (from `bzt phone grant-invite`).
    #[arg(long)]
    invite: PathBuf,
    /// End of the grant, RFC 3339 (e.g. 2026-12-31T18:00:00+08:00).
    #[arg(long)]
    until: String,
    /// Where to write the offer for the member's phone.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
pub struct AcceptArgs {
    /// The directory the invitation was made in; the identity is written there.
    #[arg(long)]
    dir: PathBuf,
    /// The administrator's offer.
    #[arg(long)]
    offer: PathBuf,
    /// The member's own six-digit PIN (asked on the terminal when not given).
    #[arg(long, env = "BZT_PHONE_PIN")]
    pin: Option<String>,
}

#[derive(Args)]
pub struct ExtendArgs {
    #[command(flatten)]
    admin: AdminArgs,
    #[arg(long)]
    grant: String,
    /// The new end, RFC 3339.
    #[arg(long)]
    until: String,
}

#[derive(Args)]
pub struct UngrantArgs {
    #[command(flatten)]
    admin: AdminArgs,
    #[arg(long)]
    grant: String,
}

fn pin_of(given: &Option<String>, question: &str) -> anyhow::Result<String> {
    match given {
        Some(p) => Ok(p.clone()),
        None => prompt(question),
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &PathBuf) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} does not parse", path.display()))
}

fn write_json<T: serde::Serialize>(path: &PathBuf, value: &T) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(value)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

fn print_list(list: &bzt_cosigner::wire::GrantList) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(list)?);
    Ok(())
}

pub fn invite(a: InviteArgs) -> anyhow::Result<()> {
    let device = Device {
        id: a.device_id.unwrap_or_else(cli_device_id),
        name: a.device_name,
    };
    let invite = bzt_phone::grants::invite(&a.dir, &a.name, device)?;
    write_json(&a.out, &invite)?;
    println!(
        "授权邀请 / invitation for the administrator: {} (receiving key kept in {})",
        a.out.display(),
        a.dir.display()
    );
    Ok(())
}

pub async fn grant(a: GrantArgs) -> anyhow::Result<()> {
    let identity = SplitIdentity::load(&a.admin.identity)?;
    let pin = pin_of(&a.admin.pin, "管理员 PIN 码: ")?;
    let invite: GrantInvite = read_json(&a.invite)?;
    let unlocked = identity.unlock(&pin)?;
    let (list, offer) = unlocked
        .grant(&invite, &a.until)
        .await
        .context("the grant was refused")?;
    write_json(&a.out, &offer)?;
    println!(
        "已授权 / granted to {} until {}: grant {} (offer for the member's phone: {})",
        invite.name,
        a.until,
        offer.package.grant_id,
        a.out.display()
    );
    print_list(&list)
}

pub async fn accept(a: AcceptArgs) -> anyhow::Result<()> {
    let offer: GrantOffer = read_json(&a.offer)?;
    let pin = pin_of(&a.pin, "请设置六位数字 PIN 码: ")?;
    let identity = bzt_phone::grants::accept(&a.dir, &offer, &pin)
        .await
        .context("accepting the grant failed")?;
    println!(
        "已接受授权 / accepted: company certificate serial {} until {}; use: bzt phone approve '<QR text>' --identity {} --pin <PIN>",
        identity.serial_hex(),
        offer.package.end,
        a.dir.display()
    );
    Ok(())
}

pub async fn extend(a: ExtendArgs) -> anyhow::Result<()> {
    let identity = SplitIdentity::load(&a.admin.identity)?;
    let pin = pin_of(&a.admin.pin, "管理员 PIN 码: ")?;
    let list = identity.unlock(&pin)?.extend(&a.grant, &a.until).await?;
    print_list(&list)
}

pub async fn ungrant(a: UngrantArgs) -> anyhow::Result<()> {
    let identity = SplitIdentity::load(&a.admin.identity)?;
    let pin = pin_of(&a.admin.pin, "管理员 PIN 码: ")?;
    let list = identity.unlock(&pin)?.ungrant(&a.grant).await?;
    print_list(&list)
}

pub async fn grants(a: AdminArgs) -> anyhow::Result<()> {
    let identity = SplitIdentity::load(&a.identity)?;
    let pin = pin_of(&a.pin, "管理员 PIN 码: ")?;
    let list = identity.unlock(&pin)?.grants().await?;
    print_list(&list)
}
