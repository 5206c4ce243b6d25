//! `bzt phone claim | approve | reject | converse | enroll`: the reference phone on the
//! command line.
//!
//! `approve` and `reject` act without asking (scripts, tests); `claim` shows
//! what a phone screen would show and asks on the terminal; `converse`
//! approves a `sign` session opening a conversation (会话签章) and then
//! answers its signing requests, asking for each or auto-confirming.
//!
//! A phone holds either a whole key (`--cert/--key`) or a split key
//! (`--identity DIR --pin PIN`, made by `enroll`: 密钥拆分), whose every
//! signature and decryption is co-computed with the co-signing service.

mod grants;

use anyhow::{bail, Context};
use bzt_phone::client::{ApproveExtras, Phone};
use bzt_phone::conversation::{ConversationSigner, Decision, Outcome, SignRequest};
use bzt_phone::identity::{Device, PhoneIdentity};
use bzt_phone::qr::QrText;
use bzt_phone::split::{Enrolled, SplitIdentity, UnlockedSplit};
use bzt_phone::{Claimed, DecryptOutcome};
use bzt_phone::{ConversationSocket, Kind};
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
    /// Enrol a split key (密钥拆分) with a co-signing service: the phone keeps its share masked
    /// by the PIN, the service the other; the development CA certifies the joint key (or
    /// `--csr` writes a PKCS#10 request for a real CA, co-signed by both parties).
    Enroll(EnrollArgs),
    /// 企业证书授权, member's phone: write an invitation (name, device, a receiving key) for the
    /// administrator.
    GrantInvite(grants::InviteArgs),
    /// 企业证书授权, administrator: grant the company certificate to the member of an
    /// invitation until a time; writes the offer for the member's phone.
    Grant(grants::GrantArgs),
    /// 企业证书授权, member's phone: accept an offer into its identity directory under its own PIN.
    AcceptGrant(grants::AcceptArgs),
    /// 更改证书授权结束时间 (administrator).
    Extend(grants::ExtendArgs),
    /// 证书解除授权 (administrator).
    Ungrant(grants::UngrantArgs),
    /// The grants of a company certificate and its 证书收回记录 (administrator).
    Grants(grants::AdminArgs),
}

#[derive(Args)]
pub struct EnrollArgs {
    /// The co-signing service, e.g. http://127.0.0.1:8701 (development mode prints it).
    #[arg(long)]
    cosigner: String,
    /// Six-digit PIN that masks the phone's share (asked on the terminal when not given).
    #[arg(long, env = "BZT_PHONE_PIN")]
    pin: Option<String>,
    /// Holder's name (subject CN).
    #[arg(long)]
    cn: String,
    /// Company (subject O).
    #[arg(long)]
    org: String,
    /// Output directory of the identity (cert.pem, split-key.json, device.json).
    #[arg(long)]
    out: PathBuf,
    /// Also write a PKCS#10 request for the joint key here (PEM), for a real CA.
    #[arg(long)]
    csr: Option<PathBuf>,
    /// The service's enrolment token (production services require one).
    #[arg(long, env = "BZT_COSIGNER_ENROLMENT_TOKEN")]
    enrolment_token: Option<String>,
    /// Data directory of the development broker (its development CAs).
    #[arg(long, env = "BZT_DATA_DIR", default_value = bzt::dev::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// Which development CA certifies the joint key.
    #[arg(long, default_value = "platform", value_parser = ["platform", "national"])]
    domain: String,
    /// Device name shown to the browser.
    #[arg(long, default_value = "bzt 参考手机（密钥拆分）")]
    device_name: String,
}

#[derive(Args)]
pub struct PhoneArgs {
    /// The text of the scanned QR code.
    qr_text: String,
    /// Certificate (PEM) of the phone (whole key, with `--key`).
    #[arg(long, requires = "key", conflicts_with = "identity")]
    cert: Option<PathBuf>,
    /// Private key (PEM; PKCS#8 or bzt's PIN-protected form).
    #[arg(long, requires = "cert", conflicts_with = "identity")]
    key: Option<PathBuf>,
    /// A split identity directory (made by `bzt phone enroll`; 密钥拆分), instead of
    /// `--cert/--key`; `--pin` unmasks its share.
    #[arg(long, required_unless_present = "cert")]
    identity: Option<PathBuf>,
    /// Intermediate certificates to send along (PEM bundle).
    #[arg(long)]
    chain: Option<PathBuf>,
    /// PIN of a protected key file or of a split identity (asked on the terminal when needed
    /// and not given).
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
            PhoneCommand::Enroll(a) => enroll(a).await,
            PhoneCommand::GrantInvite(a) => grants::invite(a),
            PhoneCommand::Grant(a) => grants::grant(a).await,
            PhoneCommand::AcceptGrant(a) => grants::accept(a).await,
            PhoneCommand::Extend(a) => grants::extend(a).await,
            PhoneCommand::Ungrant(a) => grants::ungrant(a).await,
            PhoneCommand::Grants(a) => grants::grants(a).await,
        }
    })
}

enum Mode {
    Ask,
    Approve,
    Reject(String),
}

pub(super) fn prompt(question: &str) -> anyhow::Result<String> {
    eprint!("{question}");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim().to_owned())
}

/// The phone's key: whole (`--cert/--key`) or split (`--identity`).
enum Holder {
    Whole(PhoneIdentity),
    Split {
        identity: SplitIdentity,
        pin: String,
    },
}

impl Holder {
    fn device(&self) -> &Device {
        match self {
            Holder::Whole(i) => &i.device,
            Holder::Split { identity, .. } => identity.device(),
        }
    }
}

pub(super) fn cli_device_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "cli".into());
    format!("bzt-cli-{host}")
}

fn load_identity(a: &PhoneArgs) -> anyhow::Result<Holder> {
    if let Some(dir) = &a.identity {
        let identity = SplitIdentity::load(dir)
            .with_context(|| format!("cannot load the split identity in {}", dir.display()))?
            .with_device(cli_device_id(), a.device_name.clone());
        let pin = match &a.pin {
            Some(p) => p.clone(),
            None => prompt("请输入密钥拆分 PIN 码: ")?,
        };
        return Ok(Holder::Split { identity, pin });
    }
    let (Some(cert), Some(key)) = (&a.cert, &a.key) else {
        bail!("give --cert and --key (a whole key) or --identity DIR (a split key)");
    };
    let key_text =
        std::fs::read_to_string(key).with_context(|| format!("cannot read {}", key.display()))?;
    let pin = match (&a.pin, bzt_crypto::is_encrypted_key_pem(&key_text)) {
        (Some(p), _) => Some(p.clone()),
        (None, true) => Some(prompt("请输入证书 PIN 码: ")?),
        (None, false) => None,
    };
    let mut identity = PhoneIdentity::from_files(cert, key, pin.as_deref())?;
    identity = identity.with_device(cli_device_id(), a.device_name.clone());
    if let Some(chain) = &a.chain {
        let text = std::fs::read_to_string(chain)
            .with_context(|| format!("cannot read {}", chain.display()))?;
        let chain_pems = bzt::app::split_pem_certificates(&text)
            .with_context(|| format!("{}", chain.display()))?;
        identity = identity.with_chain(chain_pems);
    }
    Ok(Holder::Whole(identity))
}

/// Approves a claimed session with a split key: co-signs (and for `decrypt` co-decrypts)
/// with the service.
async fn approve_split(
    phone: &Phone,
    claimed: &Claimed,
    key: &UnlockedSplit<'_>,
    colleagues: &[String],
    match_code: Option<String>,
    a: &PhoneArgs,
) -> anyhow::Result<bzt_phone::CompleteAnswer> {
    if claimed.seal.is_some() {
        let cert_der = x509_cert::der::Encode::to_der(key.identity().certificate())?;
        let seal = match pick_seal(&cert_der, a) {
            Ok(seal) => seal,
            Err(e) => {
                let _ = phone.reject(claimed, "没有可用的印章").await;
                return Err(e.context("the session was declined"));
            }
        };
        println!("使用印章：{}", bzt_phone::describe_seal_zh(&seal));
        let extras = ApproveExtras {
            match_code,
            ..Default::default()
        };
        return Ok(phone
            .approve_with_seal_split(claimed, key, &seal, extras)
            .await?);
    }
    Ok(match claimed.kind {
        Kind::Encrypt => {
            phone
                .approve_encrypt_split(claimed, key, colleagues, match_code)
                .await?
        }
        Kind::Decrypt => match phone
            .approve_decrypt_split(claimed, key, match_code)
            .await?
        {
            DecryptOutcome::Approved(answer) => answer,
            DecryptOutcome::Rejected { refusal, answer } => {
                println!(
                    "无法解密，已拒绝 (session {} → {})",
                    answer.id, answer.status
                );
                bail!("cannot decrypt: {refusal}");
            }
        },
        _ => {
            let extras = ApproveExtras {
                match_code,
                ..Default::default()
            };
            phone.approve_split(claimed, key, extras).await?
        }
    })
}

async fn flow(a: PhoneArgs, mode: Mode) -> anyhow::Result<()> {
    let holder = load_identity(&a)?;
    let colleagues = super::envelope::read_recipients(&a.recipients)?;
    let qr = QrText::parse(&a.qr_text)?;
    let tls = a.tls.client_tls()?;
    let phone = Phone::new(a.tls.http_client(&tls, HTTP_TIMEOUT)?);
    let claimed = phone.claim_as(&qr, holder.device()).await?;
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
            println!("已拒绝 (session {} → {})", answer.id, answer.status)
        });
        return Ok(());
    }
    let match_code = match_code(&a, &claimed)?;
    let identity = match holder {
        Holder::Whole(identity) => identity,
        Holder::Split { identity, pin } => {
            let key = identity.unlock(&pin)?;
            let answer = approve_split(&phone, &claimed, &key, &colleagues, match_code, &a).await?;
            println!(
                "已签名（密钥拆分，协同签名）(session {} → {}, version {})",
                answer.id, answer.status, answer.version
            );
            return Ok(());
        }
    };
    // encrypt: own certificate + --recipient; decrypt: re-wrap the file's key (or decline).
    let extras = match super::envelope::phone_extras(&claimed, &identity, &colleagues, match_code)?
    {
        super::envelope::PhoneExtras::Approve(extras) => extras,
        super::envelope::PhoneExtras::Refuse(refusal) => {
            let answer = phone.reject(&claimed, &refusal.reason()).await?;
            super::output::note(format!(
                "无法解密，已拒绝 (session {} → {})",
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
            "已签名 (session {} → {}, version {})",
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
    let seal = match pick_seal(&x509_cert::der::Encode::to_der(identity.certificate())?, a) {
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
fn pick_seal(cert_der: &[u8], a: &PhoneArgs) -> anyhow::Result<bzt_seal::Seal> {
    let dir = a
        .seals
        .as_ref()
        .context("this session asks for a seal signature (扫码签章): pass --seals DIR")?;
    let wallet = bzt_phone::SealWallet::load_dir(dir)?;
    let usable = wallet.usable_with(cert_der, time::OffsetDateTime::now_utc());
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
    let holder = load_identity(&a)?;
    let qr = QrText::parse(&a.qr_text)?;
    let tls = a.tls.client_tls()?;
    let phone = Phone::new(a.tls.http_client(&tls, HTTP_TIMEOUT)?);
    let claimed = phone.claim_as(&qr, holder.device()).await?;
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
    let unlocked = match &holder {
        Holder::Split { identity, pin } => Some(identity.unlock(pin)?),
        Holder::Whole(_) => None,
    };
    let answer = match (&holder, &unlocked) {
        (_, Some(key)) => phone.approve_split(&claimed, key, extras).await?,
        (Holder::Whole(identity), None) => {
            approve_claimed(&phone, &claimed, identity, extras, &a).await?
        }
        (Holder::Split { .. }, None) => unreachable!("a split key is unlocked above"),
    };
    let grant = answer
        .conversation
        .context("the broker approved the session but opened no conversation")?;
    println!(
        "已签名并开启会话 / conversation opened: {}（有效期至 / until {}）",
        grant.id, grant.expires_at
    );
    let mut socket = ConversationSocket::connect_with_tls(&claimed.base_url, &grant, tls).await?;
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
        let signer = match (&holder, &unlocked) {
            (_, Some(key)) => ConversationSigner::Split {
                key,
                phone_token: grant.phone_token.clone(),
            },
            (Holder::Whole(identity), None) => ConversationSigner::Whole(identity),
            (Holder::Split { .. }, None) => unreachable!("a split key is unlocked above"),
        };
        let run = socket.run(signer, decide, on_answered);
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
        bzt_phone::ended_by_label_zh(&ended.by),
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

/// `enroll`: key generation with the service, then the development CA (or a PKCS#10 request).
async fn enroll(a: EnrollArgs) -> anyhow::Result<()> {
    let pin = match &a.pin {
        Some(p) => p.clone(),
        None => prompt("请设置六位数字 PIN 码: ")?,
    };
    bzt_phone::split::check_pin(&pin)?;
    if a.out.join(bzt_phone::split::SPLIT_KEY_FILE).exists() {
        bail!(
            "{} already holds a split key; choose another --out",
            a.out.display()
        );
    }
    let label = format!("{} / {}", a.cn, a.org);
    let enrolled = Enrolled::generate(&a.cosigner, &label, a.enrolment_token.as_deref())
        .await
        .context("enrolment with the co-signing service failed")?;
    println!(
        "已与协同签名服务生成拆分密钥 / split key generated: key id {}",
        enrolled.key_id()
    );
    if let Some(csr) = &a.csr {
        let subject = bzt_devca::subject(&a.cn, &a.org, None, None)?;
        let pem = enrolled.certificate_request(subject).await?;
        std::fs::write(csr, pem).with_context(|| format!("cannot write {}", csr.display()))?;
        println!(
            "证书请求（双方协同签名）/ PKCS#10 request co-signed by both parties: {}",
            csr.display()
        );
    }
    let ca = bzt::dev::dev_ca(&a.data_dir, &a.domain)?;
    let spec = bzt_devca::LeafSpec::new(&a.cn, &a.org);
    let device = Device {
        id: cli_device_id(),
        name: a.device_name.clone(),
    };
    let (cert_pem, _) = ca.issue_for_public_key(&spec, &enrolled.public_key()?)?;
    let identity = enrolled.finish(&cert_pem, &pin, device)?;
    identity.save(&a.out)?;
    println!(
        "证书已签发 / certified by the development CA ({}): serial {}",
        a.domain,
        identity.serial_hex()
    );
    println!(
        "身份目录 / identity directory: {} (no whole private key; the share is masked by the PIN)",
        a.out.display()
    );
    println!(
        "使用 / use: bzt phone approve '<QR text>' --identity {} --pin <PIN>",
        a.out.display()
    );
    Ok(())
}
