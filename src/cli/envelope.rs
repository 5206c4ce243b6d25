//! `bzt envelope seal | open | inspect`: bid-file envelopes (多证书加密) on the command line,
//! plus the phone's `encrypt` / `decrypt` extras used by `bzt phone approve`.

use super::output;
use anyhow::Context;
use bzt_envelope::{
    inspect, open_reader_to_path, seal, Inspection, Recipient, SealOptions, CONTENT_KEY_LEN,
};
#[cfg(feature = "demo")]
use bzt_phone::{ApproveExtras, Claimed, DecryptRefusal, Kind, PhoneIdentity};
use clap::{Args, Subcommand};
use serde_json::json;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum EnvelopeCommand {
    /// Seal a file so that each of the given certificates can open it.
    Seal(SealArgs),
    /// Open a sealed file with a recipient's certificate and private key. Nothing is written
    /// unless the whole file authenticates.
    Open(OpenArgs),
    /// Show who can open a sealed file and how big it is (no key needed).
    Inspect(InspectArgs),
}

#[derive(Args)]
pub struct SealArgs {
    /// A recipient certificate (PEM); repeat for each certificate that may open the file.
    #[arg(long = "to", value_name = "CERT", required = true)]
    to: Vec<PathBuf>,
    /// The plain file.
    input: PathBuf,
    /// Where to write the sealed file (replaced only once sealing succeeded).
    output: PathBuf,
}

#[derive(Args)]
pub struct OpenArgs {
    /// The recipient's private key (PEM; PKCS#8, SEC1 or bzt's PIN-protected form).
    #[arg(long)]
    key: PathBuf,
    /// PIN of a protected key file (asked on the terminal when needed and not given).
    #[arg(long, env = "BZT_KEY_PIN")]
    pin: Option<String>,
    /// The recipient's certificate (PEM; the first certificate of the file is used).
    #[arg(long)]
    cert: PathBuf,
    /// The sealed file.
    input: PathBuf,
    /// Where to write the plain file.
    output: PathBuf,
}

#[derive(Args)]
pub struct InspectArgs {
    /// The sealed file.
    file: PathBuf,
}

pub fn run(cmd: EnvelopeCommand) -> anyhow::Result<()> {
    match cmd {
        EnvelopeCommand::Seal(a) => seal_cmd(a),
        EnvelopeCommand::Open(a) => open_cmd(a),
        EnvelopeCommand::Inspect(a) => inspect_cmd(a),
    }
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// The first certificate of a PEM file.
fn first_certificate(path: &Path) -> anyhow::Result<x509_cert::Certificate> {
    bzt_crypto::pem_certificates(&read(path)?)
        .with_context(|| format!("{}", path.display()))?
        .into_iter()
        .next()
        .with_context(|| format!("{} holds no CERTIFICATE block", path.display()))
}

fn seal_cmd(a: SealArgs) -> anyhow::Result<()> {
    let recipients =
        a.to.iter()
            .map(|p| {
                Recipient::from_certificate(&first_certificate(p)?)
                    .with_context(|| format!("{}", p.display()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
    let input = std::fs::File::open(&a.input)
        .with_context(|| format!("cannot read {}", a.input.display()))?;
    let bar = output::bytes_bar(
        input.metadata().map(|m| m.len()).unwrap_or(0),
        "加密 / sealing",
    );
    let input = bar.wrap_read(input);
    let dir = match a.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // A temporary file renamed at the end: a failed seal leaves no half-written envelope.
    let mut temp = tempfile::Builder::new()
        .prefix(".bzt-seal-")
        .suffix(".part")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    let report = {
        let mut out = BufWriter::new(temp.as_file_mut());
        let report = seal(&recipients, input, &mut out, &SealOptions::default())?;
        out.flush()?;
        report
    };
    bar.finish_and_clear();
    temp.as_file().sync_all()?;
    temp.persist(&a.output)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write {}", a.output.display()))?;
    let json = json!({
        "input": a.input,
        "output": a.output,
        "plaintext_len": report.plaintext_len,
        "sealed_len": report.sealed_len,
        "chunks": report.chunks,
        "header_sm3": hex::encode(report.header_digest),
        "recipients": recipients
            .iter()
            .map(|r| json!({"serial": r.serial(), "issuer": r.issuer()}))
            .collect::<Vec<_>>(),
    });
    output::result(json, || {
        println!(
            "已加密 / sealed {} → {} ({} → {} bytes, {} chunks)",
            a.input.display(),
            a.output.display(),
            report.plaintext_len,
            report.sealed_len,
            report.chunks
        );
        println!(
            "信封头 SM3 / header SM3: {}",
            hex::encode(report.header_digest)
        );
        println!("可解密证书 / recipients ({}):", recipients.len());
        for r in &recipients {
            println!("  serial {}  issuer {}", r.serial(), r.issuer());
        }
    });
    Ok(())
}

fn open_cmd(a: OpenArgs) -> anyhow::Result<()> {
    let key_text = read(&a.key)?;
    let pin = match (&a.pin, bzt_crypto::is_encrypted_key_pem(&key_text)) {
        (Some(p), _) => Some(p.clone()),
        (None, true) => Some(prompt("请输入私钥 PIN 码 / key PIN: ")?),
        (None, false) => None,
    };
    let secret = bzt_crypto::key_from_pem(&key_text, pin.as_deref())
        .with_context(|| format!("{}", a.key.display()))?;
    let recipient = Recipient::from_certificate(&first_certificate(&a.cert)?)
        .with_context(|| format!("{}", a.cert.display()))?;
    let cannot_open = || {
        format!(
            "cannot open {} (nothing was written to {})",
            a.input.display(),
            a.output.display()
        )
    };
    let input = std::fs::File::open(&a.input).with_context(cannot_open)?;
    let bar = output::bytes_bar(
        input.metadata().map(|m| m.len()).unwrap_or(0),
        "解密 / opening",
    );
    let report = open_reader_to_path(&secret, &recipient, bar.wrap_read(input), &a.output)
        .with_context(cannot_open)?;
    bar.finish_and_clear();
    let json = json!({
        "input": a.input,
        "output": a.output,
        "plaintext_len": report.plaintext_len,
        "chunks": report.chunks,
    });
    output::result(json, || {
        println!(
            "已解密 / opened {} → {} ({} bytes, {} chunks)",
            a.input.display(),
            a.output.display(),
            report.plaintext_len,
            report.chunks
        );
    });
    Ok(())
}

fn prompt(question: &str) -> anyhow::Result<String> {
    eprint!("{question}");
    std::io::stderr().flush()?;
    let mut line = String::new();
    BufReader::new(std::io::stdin()).read_line(&mut line)?;
    Ok(line.trim().to_owned())
}

fn inspect_cmd(a: InspectArgs) -> anyhow::Result<()> {
    let file = std::fs::File::open(&a.file)
        .with_context(|| format!("cannot read {}", a.file.display()))?;
    let i = inspect(BufReader::new(file)).with_context(|| format!("{}", a.file.display()))?;
    if output::json() {
        println!("{}", serde_json::to_string_pretty(&inspection_json(&i))?);
        return Ok(());
    }
    let h = &i.header;
    println!("文件 / file: {} ({} bytes)", a.file.display(), i.file_len());
    println!(
        "格式 / format: BZE1 v1 SM4-GCM-STREAM, chunk {} bytes",
        h.chunk_size()
    );
    println!("信封头 SM3 / header SM3: {}", hex::encode(i.header_digest));
    println!(
        "信封头 / header: {} bytes; 密文 / body: {} bytes",
        i.header_len, i.body_len
    );
    match (i.plaintext_len, i.chunks) {
        (Some(p), Some(c)) => println!("明文 / plaintext: {p} bytes in {c} chunks"),
        _ => println!("密文长度不完整 / the body is cut short or has bytes appended"),
    }
    println!("可解密证书 / recipients ({}):", h.recipients().len());
    for r in h.recipients() {
        println!("  serial {}  issuer {}", r.serial(), r.issuer());
    }
    Ok(())
}

fn inspection_json(i: &Inspection) -> serde_json::Value {
    json!({
        "file_len": i.file_len(),
        "header_len": i.header_len,
        "header_sm3": hex::encode(i.header_digest),
        "body_len": i.body_len,
        "chunk": i.header.chunk_size(),
        "chunks": i.chunks,
        "plaintext_len": i.plaintext_len,
        "content_key_bits": CONTENT_KEY_LEN * 8,
        "recipients": i.header.recipients().iter().map(|r| json!({
            "serial": r.serial(),
            "issuer": r.issuer(),
        })).collect::<Vec<_>>(),
    })
}

// ---- `bzt phone approve` for encrypt and decrypt ------------------------------------------

#[cfg(feature = "demo")] // used by `phone` and `hall`
/// Reads `--recipient` certificate files (one certificate each) for an `encrypt` approval.
pub(super) fn read_recipients(paths: &[PathBuf]) -> anyhow::Result<Vec<String>> {
    paths
        .iter()
        .map(|p| {
            let text = read(p)?;
            bzt_crypto::pem_certificate(&text).with_context(|| format!("{}", p.display()))?;
            Ok(text)
        })
        .collect()
}

#[cfg(feature = "demo")] // used by `phone` and `hall`
/// What `bzt phone approve` sends for this session.
pub(super) enum PhoneExtras {
    /// Approve with these extras.
    Approve(ApproveExtras),
    /// The phone cannot decrypt: reject with the refusal's reason.
    Refuse(DecryptRefusal),
}

#[cfg(feature = "demo")] // used by `phone` and `hall`
/// The approval extras for `claimed`: `encrypt` names the phone's own certificate and the
/// colleagues' (`--recipient`); `decrypt` unwraps the phone's entry of the envelope and
/// re-wraps the content key to the hall's one-time key.
pub(super) fn phone_extras(
    claimed: &Claimed,
    identity: &PhoneIdentity,
    colleagues_pem: &[String],
    match_code: Option<String>,
) -> anyhow::Result<PhoneExtras> {
    let mut extras = ApproveExtras {
        match_code,
        ..Default::default()
    };
    if claimed.kind != Kind::Encrypt && !colleagues_pem.is_empty() {
        eprintln!("注意 / note: --recipient only applies to encrypt sessions; ignored");
    }
    match claimed.kind {
        Kind::Encrypt => {
            extras.recipients_pem = bzt_phone::encrypt_recipients(identity, colleagues_pem)?;
            println!(
                "投标文件可由 {} 个证书解密 / the bid file will open with {} certificates:",
                extras.recipients_pem.len(),
                extras.recipients_pem.len()
            );
            for pem in &extras.recipients_pem {
                let r = Recipient::from_pem(pem)?;
                println!("  serial {}  issuer {}", r.serial(), r.issuer());
            }
        }
        Kind::Decrypt => {
            match bzt_phone::decrypt_answer(claimed, identity, &identity.secret_key()) {
                Ok(wrapped) => extras.wrapped_key_b64 = Some(wrapped),
                Err(refusal) => return Ok(PhoneExtras::Refuse(refusal)),
            }
        }
        _ => {}
    }
    Ok(PhoneExtras::Approve(extras))
}
