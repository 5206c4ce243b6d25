//! `bzt phone claim | approve | reject | converse`: the reference phone on the command line.
//!
//! `approve` and `reject` act without asking (scripts, tests); `claim` shows
//! what a phone screen would show and asks on the terminal; `converse`
//! approves a `sign` session opening a conversation (会话签章) and then
//! answers its signing requests, asking for each or auto-confirming.

use anyhow::{bail, Context};
use bzt_phone::client::{ApproveExtras, Phone};
use bzt_phone::conversation::{Decision, Outcome, SignRequest};
use bzt_phone::identity::PhoneIdentity;
use bzt_phone::qr::QrText;
use bzt_phone::{Kind, PhoneConversation};
use clap::{Args, Subcommand};
use std::io::{BufRead, IsTerminal, Write};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;

/// Per-request timeout of the phone's HTTP calls.
const HTTP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

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
    /// Claim the QR of a `sign` session, approve it opening a conversation
    /// (会话签章), then answer its signing requests until it ends.
    Converse {
        #[command(flatten)]
        phone: PhoneArgs,
        /// Sign every request without asking (自动确认).
        #[arg(long)]
        auto_confirm: bool,
        /// End the conversation after answering this many requests.
        #[arg(long, value_name = "N")]
        max: Option<u64>,
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
    /// `encrypt` sessions: a colleague's certificate (PEM) that may also open the bid file;
    /// repeatable. The phone's own certificate is always included.
    #[arg(long = "recipient", value_name = "CERT")]
    recipients: Vec<PathBuf>,
    /// 扫码签章 with a seal: the directory of this phone's seals (`*.der` / `*.seal`, as
    /// `bzt dev-ca make-seal` writes them).
    #[arg(long, value_name = "DIR")]
    seals: Option<PathBuf>,
    /// The seal to stamp with (its esID or name); asked on the terminal when several fit.
    #[arg(long, value_name = "ESID_OR_NAME")]
    seal: Option<String>,
    #[command(flatten)]
    tls: super::net::TlsArgs,
}

pub fn run(cmd: PhoneCommand) -> anyhow::Result<()> {
    super::runtime()?.block_on(async move {
        match cmd {
            PhoneCommand::Claim(a) => flow(a, Mode::Ask).await,
            PhoneCommand::Approve(a) => flow(a, Mode::Approve).await,
            PhoneCommand::Reject { phone, reason } => flow(phone, Mode::Reject(reason)).await,
            PhoneCommand::Converse {
                phone,
                auto_confirm,
                max,
            } => converse(phone, auto_confirm, max).await,
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
    let pin = match (&a.pin, bzt_crypto::is_encrypted_key_pem(&key_text)) {
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
        let chain_pems = bzt::app::split_pem_certificates(&text)
            .with_context(|| format!("{}", chain.display()))?;
        identity = identity.with_chain(chain_pems);
    }
    Ok(identity)
}

async fn flow(a: PhoneArgs, mode: Mode) -> anyhow::Result<()> {
    let identity = load_identity(&a)?;
    let colleagues = super::envelope::read_recipients(&a.recipients)?;
    let qr = QrText::parse(&a.qr_text)?;
    let tls = a.tls.client_tls()?;
    let phone = Phone::new(a.tls.http_client(&tls, HTTP_TIMEOUT)?);
    let claimed = phone.claim(&qr, &identity).await?;
    super::output::note(claimed.describe_zh());

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
        let json = serde_json::json!({
            "session": answer.id, "status": answer.status, "reason": reason,
        });
        super::output::result(json, || {
            println!("已拒绝 (session {} → {:?})", answer.id, answer.status)
        });
        return Ok(());
    }
    let match_code = match_code(&a, &claimed)?;
    // encrypt: own certificate + --recipient; decrypt: re-wrap the file's key (or decline).
    let extras = match super::envelope::phone_extras(&claimed, &identity, &colleagues, match_code)?
    {
        super::envelope::PhoneExtras::Approve(extras) => extras,
        super::envelope::PhoneExtras::Refuse(refusal) => {
            let answer = phone.reject(&claimed, &refusal.reason()).await?;
            super::output::note(format!(
                "无法解密，已拒绝 (session {} → {:?})",
                answer.id, answer.status
            ));
            bail!("cannot decrypt: {refusal}");
        }
    };
    let answer = approve_claimed(&phone, &claimed, &identity, extras, &a).await?;
    let json = serde_json::json!({
        "session": answer.id, "status": answer.status, "version": answer.version,
    });
    super::output::result(json, || {
        println!(
            "已签名 (session {} → {:?}, version {})",
            answer.id, answer.status, answer.version
        )
    });
    Ok(())
}

/// Approves, stamping with a seal when the session asks for one (扫码签章 with a seal).
async fn approve_claimed(
    phone: &Phone,
    claimed: &bzt_phone::Claimed,
    identity: &PhoneIdentity,
    extras: ApproveExtras,
    a: &PhoneArgs,
) -> anyhow::Result<bzt_phone::CompleteAnswer> {
    if claimed.seal.is_none() {
        return Ok(phone.approve(claimed, identity, extras).await?);
    }
    let seal = match pick_seal(identity, a) {
        Ok(seal) => seal,
        Err(e) => {
            // The claim is one-time: release the session rather than leave it hanging.
            let _ = phone.reject(claimed, "没有可用的印章").await;
            return Err(e.context("the session was declined"));
        }
    };
    println!("使用印章：{}", bzt_phone::describe_seal_zh(&seal));
    Ok(phone
        .approve_with_seal(claimed, identity, &seal, extras)
        .await?)
}

/// The seal to stamp with: among this phone's seals usable with its certificate now, the one
/// named by `--seal`, the only one, or the one picked on the terminal.
fn pick_seal(identity: &PhoneIdentity, a: &PhoneArgs) -> anyhow::Result<bzt_seal::Seal> {
    let dir = a
        .seals
        .as_ref()
        .context("this session asks for a seal signature (扫码签章): pass --seals DIR")?;
    let wallet = bzt_phone::SealWallet::load_dir(dir)?;
    let usable = wallet.usable(identity, time::OffsetDateTime::now_utc());
    if usable.is_empty() {
        bail!(
            "none of the {} seals in {} is bound to this certificate and valid now",
            wallet.seals().len(),
            dir.display()
        );
    }
    if let Some(key) = &a.seal {
        return usable
            .into_iter()
            .find(|s| s.es_id() == key || s.name() == key)
            .cloned()
            .with_context(|| format!("no usable seal with esID or name {key:?}"));
    }
    if usable.len() == 1 {
        return Ok(usable[0].clone());
    }
    for (i, s) in usable.iter().enumerate() {
        println!("  [{}] {}", i + 1, bzt_phone::describe_seal_zh(s));
    }
    let pick = prompt(&format!("请选择印章 [1-{}]: ", usable.len()))?;
    let i: usize = pick.parse().context("not a number")?;
    usable
        .get(i.wrapping_sub(1))
        .map(|s| (*s).clone())
        .context("no such seal")
}

/// The number-matching pick: `--match-code`, else asked on the terminal when
/// the session uses number matching.
fn match_code(a: &PhoneArgs, claimed: &bzt_phone::Claimed) -> anyhow::Result<Option<String>> {
    let code = match (&a.match_code, &claimed.match_choices) {
        (Some(c), _) => Some(c.clone()),
        (None, Some(choices)) => Some(prompt(&format!(
            "请选择电脑上显示的数字 {}: ",
            choices.join(" / ")
        ))?),
        (None, None) => None,
    };
    if claimed.match_choices.is_some() && code.is_none() {
        bail!("this session uses number matching: pass --match-code");
    }
    Ok(code)
}

/// `converse`: approve a `sign` session opening a conversation, then answer
/// its requests until it ends (by either side, a limit, `--max`, Ctrl-C or
/// end of input).
async fn converse(a: PhoneArgs, auto_confirm: bool, max: Option<u64>) -> anyhow::Result<()> {
    let identity = load_identity(&a)?;
    let qr = QrText::parse(&a.qr_text)?;
    let tls = a.tls.client_tls()?;
    let phone = Phone::new(a.tls.http_client(&tls, HTTP_TIMEOUT)?);
    let claimed = phone.claim(&qr, &identity).await?;
    println!("{}", claimed.describe_zh());
    if claimed.kind != Kind::Sign || !claimed.conversation_allowed {
        // The claim is one-time: release the session rather than leave it hanging.
        let _ = phone.reject(&claimed, "此请求不支持会话签章").await;
        bail!(
            "this session does not allow a conversation (it must be kind sign, created with \
             `conversation`); it was declined"
        );
    }
    let match_code = match_code(&a, &claimed)?;
    let extras = ApproveExtras {
        match_code,
        open_conversation: true,
        ..Default::default()
    };
    let answer = approve_claimed(&phone, &claimed, &identity, extras, &a).await?;
    let grant = answer
        .conversation
        .context("the broker approved the session but opened no conversation")?;
    println!(
        "已签名并开启会话 / conversation opened: {}（有效期至 / until {}）",
        grant.id, grant.expires_at
    );
    let mut socket = PhoneConversation::connect_with_tls(&claimed.base_url, &grant, tls).await?;
    if auto_confirm {
        println!("自动确认已开启：之后的签章请求将不再询问 / auto-confirm is on");
    }
    if let Some(n) = max {
        println!("最多处理 {n} 个请求 / ending after {n} requests");
    }
    println!("按 Ctrl-C 结束会话 / Ctrl-C ends the conversation");

    // Lines typed on the terminal, for the y/n questions; end of input (EOF,
    // Ctrl-D on a terminal) ends the conversation.
    let (lines_tx, lines_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let (eof_tx, mut eof_rx) = tokio::sync::watch::channel(false);
    let watch_stdin = !auto_confirm || std::io::stdin().is_terminal();
    if watch_stdin {
        // A plain thread: a blocking read would keep a tokio runtime from shutting down.
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
            drop(lines_tx);
            let _ = eof_tx.send(true);
        });
    }
    let lines = Arc::new(tokio::sync::Mutex::new(lines_rx));
    let terminal_eof = watch_stdin && std::io::stdin().is_terminal();

    let mut counts = (0u64, 0u64, 0u64); // approved, rejected, refused
    let mut answered = 0u64;
    let on_answered = |r: &SignRequest, outcome: &Outcome| {
        let title = r.clean_title();
        match outcome {
            Outcome::Approved {
                auto_confirmed: true,
            } => {
                counts.0 += 1;
                println!("自动确认 #{} {title} → 已签名 / signed", r.seq);
            }
            Outcome::Approved { .. } => {
                counts.0 += 1;
                println!("已签名 / signed #{} {title}", r.seq);
            }
            Outcome::AnsweredBeforeReconnect => {
                counts.0 += 1;
                println!(
                    "已签名（重连前已送达）/ signed before a reconnect #{} {title}",
                    r.seq
                );
            }
            Outcome::Rejected { .. } => {
                counts.1 += 1;
                println!("已拒绝 / declined #{} {title}", r.seq);
            }
            Outcome::Refused(e) => {
                counts.2 += 1;
                println!(
                    "未被接受 / refused #{} {title}: {} {}",
                    r.seq, e.code, e.message
                );
            }
        }
        answered += 1;
        if max.is_some_and(|n| answered >= n) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    let decide = |r: &SignRequest| {
        let text = r.describe_zh();
        let lines = lines.clone();
        async move {
            if auto_confirm {
                return Decision::Approve {
                    auto_confirmed: true,
                };
            }
            println!("{text}");
            eprint!("签署此请求? / sign it? [y/N, q 结束会话 / q ends] ");
            let _ = std::io::stderr().flush();
            match lines.lock().await.recv().await {
                None => {
                    eprintln!();
                    Decision::End
                }
                Some(l) => match l.trim() {
                    "y" | "Y" | "yes" | "是" => Decision::Approve {
                        auto_confirmed: false,
                    },
                    "q" | "Q" => Decision::End,
                    _ => Decision::Reject("用户拒绝".into()),
                },
            }
        }
    };

    let finished = {
        let run = socket.run(&identity, decide, on_answered);
        tokio::pin!(run);
        tokio::select! {
            r = &mut run => Some(r),
            _ = tokio::signal::ctrl_c() => None,
            _ = eof_rx.wait_for(|eof| *eof), if terminal_eof => None,
        }
    };
    let ended = match finished {
        Some(r) => r?.ended,
        None => {
            println!();
            match socket.end().await {
                Err(e) if e.is_reconnectable() => {
                    socket.reconnect_with_backoff().await?;
                    socket.end().await?
                }
                other => other?,
            }
        }
    };
    println!(
        "会话已结束：{} / conversation {} ended by {}{}",
        ended.by.label_zh(),
        socket.conversation_id(),
        ended.by,
        ended.at.map(|t| format!(" at {t}")).unwrap_or_default()
    );
    println!(
        "已签名 {} 个，已拒绝 {} 个，未被接受 {} 个 / signed {}, declined {}, refused {}",
        counts.0, counts.1, counts.2, counts.0, counts.1, counts.2
    );
    Ok(())
}
