//! `bzt dev-ca make-seal` and `bzt seal verify | show`: GB/T 38540 electronic seals (电子印章)
//! on the command line. Not to be confused with `bzt envelope seal`, which encrypts.

use anyhow::{bail, Context};
use bzt_seal::{Picture, Seal, SealSignature, SealSpec, SealType};
use clap::{Args, Subcommand, ValueEnum};
use sm3::Digest;
use std::path::{Path, PathBuf};
use x509_cert::der::{Decode, Encode};

#[derive(Subcommand)]
pub enum SealCommand {
    /// Verify a seal signature (SES_Signature) against the document it protects, or a seal
    /// (SESeal) on its own.
    Verify(VerifyArgs),
    /// Print a seal's or a seal signature's fields as JSON.
    Show(ShowArgs),
    /// Stamp a document with a seal offline (what the phone does for 扫码签章): writes an
    /// SES_Signature whose dataHash is the document's SM3.
    Stamp(StampArgs),
    /// Make a one-page OFD document stamped with a seal (Signs/Sign_0/SignedValue.dat over the
    /// SM3 of its Signature.xml), for an OFD reader.
    Ofd(OfdArgs),
}

/// The seal, the certificate it is bound to and that certificate's key: what stamps.
#[derive(Args)]
pub struct SealHolder {
    /// The seal (SESeal, DER), bound to `--cert`.
    #[arg(long)]
    seal: PathBuf,
    /// The signer's certificate (PEM).
    #[arg(long)]
    cert: PathBuf,
    /// The signer's private key (PKCS#8 PEM, PIN-protected or not).
    #[arg(long)]
    key: PathBuf,
    /// PIN of a protected key file.
    #[arg(long, env = "BZT_PIN")]
    pin: Option<String>,
}

/// A seal holder's files, read.
struct LoadedSeal {
    seal_der: Vec<u8>,
    cert_der: Vec<u8>,
    key: sm2::dsa::SigningKey,
}

impl SealHolder {
    fn load(&self) -> anyhow::Result<LoadedSeal> {
        let cert = bzt_devca::pem_certificate(&String::from_utf8_lossy(&read_file(&self.cert)?))
            .with_context(|| format!("{}", self.cert.display()))?;
        let secret = bzt_devca::key_from_pem(
            &String::from_utf8_lossy(&read_file(&self.key)?),
            self.pin.as_deref(),
        )
        .with_context(|| format!("{}", self.key.display()))?;
        Ok(LoadedSeal {
            seal_der: read_file(&self.seal)?,
            cert_der: cert.to_der()?,
            key: bzt_devca::signing_key(&secret)?,
        })
    }
}

fn read_file(p: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))
}

#[derive(Args)]
pub struct OfdArgs {
    #[command(flatten)]
    holder: SealHolder,
    /// The page's title.
    #[arg(long, default_value = "投标函")]
    title: String,
    /// A line of text on the page; repeatable.
    #[arg(long = "line")]
    lines: Vec<String>,
    /// Where to write the .ofd file.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
pub struct StampArgs {
    #[command(flatten)]
    holder: SealHolder,
    /// The document to protect.
    #[arg(long)]
    data: PathBuf,
    /// What is protected, written into propertyInfo (ASCII).
    #[arg(long, default_value = "document")]
    property_info: String,
    /// Where to write the SES_Signature (DER).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum SealKind {
    /// 单位公章, bound to the company's certificate (40 × 40 mm by default).
    Company,
    /// 个人私章 or handwritten signature, bound to a person's certificate (20 × 20 mm).
    Personal,
}

#[derive(Args)]
pub struct MakeSealArgs {
    /// Data directory of the development broker (its CA is the seal maker).
    #[arg(long, env = "BZT_DATA_DIR", default_value = bzt::dev::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// Which development CA makes the seal.
    #[arg(long, default_value = "platform", value_parser = ["platform", "national"])]
    domain: String,
    /// The owner's certificate (PEM): the seal is bound to it.
    #[arg(long)]
    owner_cert: PathBuf,
    /// The seal's name, e.g. 示例建设有限公司.
    #[arg(long)]
    name: String,
    /// The picture (PNG, JPG, GIF, BMP or SVG).
    #[arg(long)]
    picture: PathBuf,
    /// Company seal or personal seal.
    #[arg(long = "type", value_enum, default_value = "company")]
    kind: SealKind,
    /// Display size in millimetres, WIDTHxHEIGHT (default 40x40 company, 20x20 personal).
    #[arg(long)]
    size_mm: Option<String>,
    /// Days of validity from now; negative makes an already-expired seal (tests).
    #[arg(long, default_value_t = 365, allow_hyphen_values = true)]
    days: i64,
    /// The seal's code (esID, ASCII); a random one by default.
    #[arg(long)]
    es_id: Option<String>,
    /// Where to write the seal (DER).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The SES_Signature or SESeal file (DER).
    file: PathBuf,
    /// The protected document: its SM3 must be the signature's dataHash.
    #[arg(long, conflicts_with = "hash")]
    data: Option<PathBuf>,
    /// Or the SM3 of the protected data, hex.
    #[arg(long)]
    hash: Option<String>,
    /// A trusted seal maker's certificate (PEM); repeat for several. Default: the configuration's
    /// `[seals] trusted_makers_pem_files` with `--config`, else the development CAs.
    #[arg(long = "maker")]
    makers: Vec<PathBuf>,
    /// Broker configuration whose trusted makers to use.
    #[arg(long, env = "BZT_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory of the development broker (its CAs are the trusted makers by default).
    #[arg(long, env = "BZT_DATA_DIR", default_value = bzt::dev::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
}

#[derive(Args)]
pub struct ShowArgs {
    /// The SES_Signature or SESeal file (DER).
    file: PathBuf,
    /// Also write the seal's picture to this file.
    #[arg(long)]
    picture_out: Option<PathBuf>,
}

pub fn run(cmd: SealCommand) -> anyhow::Result<()> {
    match cmd {
        SealCommand::Verify(a) => verify(a),
        SealCommand::Show(a) => show(a),
        SealCommand::Stamp(a) => stamp(a),
        SealCommand::Ofd(a) => ofd(a),
    }
}

/// The picture type by the file's first bytes (the extension may lie).
pub fn picture_type(data: &[u8]) -> Option<&'static str> {
    if data.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("PNG")
    } else if data.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("JPG")
    } else if data.starts_with(b"GIF8") {
        Some("GIF")
    } else if data.starts_with(b"BM") {
        Some("BMP")
    } else if std::str::from_utf8(&data[..data.len().min(512)]).is_ok_and(|t| t.contains("<svg")) {
        Some("SVG")
    } else {
        None
    }
}

pub fn make_seal(a: MakeSealArgs) -> anyhow::Result<()> {
    let maker = bzt::dev::dev_ca(&a.data_dir, &a.domain)?;
    let owner_pem = std::fs::read_to_string(&a.owner_cert)
        .with_context(|| format!("cannot read {}", a.owner_cert.display()))?;
    let owner = bzt_devca::pem_certificate(&owner_pem)
        .with_context(|| format!("{}", a.owner_cert.display()))?;
    let data = read_file(&a.picture)?;
    let Some(picture_type) = picture_type(&data) else {
        bail!(
            "{} is not a PNG, JPG, GIF, BMP or SVG picture",
            a.picture.display()
        );
    };
    let (seal_type, default_mm) = match a.kind {
        SealKind::Company => (SealType::Company, (40, 40)),
        SealKind::Personal => (SealType::Personal, (20, 20)),
    };
    let (width_mm, height_mm) = match &a.size_mm {
        None => default_mm,
        Some(s) => parse_size(s)?,
    };
    // Seals keep whole seconds (GeneralizedTime without fraction).
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    let (valid_start, valid_end) = if a.days >= 0 {
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
    let es_id = a.es_id.unwrap_or_else(|| {
        format!(
            "BZT{}",
            uuid::Uuid::new_v4().simple().to_string().to_uppercase()
        )
    });
    let spec = SealSpec {
        es_id: es_id.clone(),
        seal_type,
        name: a.name.clone(),
        owner_certs: vec![owner.to_der()?],
        created: now,
        valid_start,
        valid_end,
        picture: Picture {
            picture_type: picture_type.into(),
            data,
            width_mm,
            height_mm,
        },
    };
    let der = bzt_seal::make_seal(&spec, &maker.certificate().to_der()?, maker.signing_key())?;
    std::fs::write(&a.out, &der).with_context(|| format!("cannot write {}", a.out.display()))?;
    println!(
        "made {} seal \"{}\" (esID {es_id}) for certificate serial {}, valid until {}, maker \"{}\"",
        seal_type.as_str(),
        a.name,
        bzt_devca::serial_hex(&owner),
        rfc3339(valid_end),
        maker.subject()
    );
    println!("  {}", a.out.display());
    Ok(())
}

fn parse_size(s: &str) -> anyhow::Result<(u32, u32)> {
    let bad =
        || anyhow::anyhow!("--size-mm {s:?}: expected WIDTHxHEIGHT in millimetres, e.g. 40x40");
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(bad)?;
    let (w, h) = (
        w.trim().parse::<u32>().map_err(|_| bad())?,
        h.trim().parse::<u32>().map_err(|_| bad())?,
    );
    if w == 0 || h == 0 || w > 1000 || h > 1000 {
        return Err(bad());
    }
    Ok((w, h))
}

fn trusted_makers(a: &VerifyArgs) -> anyhow::Result<Vec<x509_cert::Certificate>> {
    let files: Vec<PathBuf> = if !a.makers.is_empty() {
        a.makers.clone()
    } else if let Some(c) = &a.config {
        bzt::config::Config::load(Some(c))?
            .seals
            .trusted_makers_pem_files
    } else {
        bzt::dev::DOMAINS
            .iter()
            .map(|(d, _)| bzt::dev::ca_dir(&a.data_dir, d).join(bzt_devca::CA_CERT_FILE))
            .filter(|p| p.exists())
            .collect()
    };
    if files.is_empty() {
        bail!("no trusted seal maker: pass --maker PEM (or --config with [seals] trusted_makers_pem_files)");
    }
    let mut certs = Vec::new();
    for f in files {
        let text =
            std::fs::read_to_string(&f).with_context(|| format!("cannot read {}", f.display()))?;
        certs.extend(
            bzt_devca::pem_certificates(&text).with_context(|| format!("{}", f.display()))?,
        );
    }
    Ok(certs)
}

/// A seal signature starts `SEQUENCE { SEQUENCE { INTEGER 4, ...`; a seal `SEQUENCE { SEQUENCE
/// { SEQUENCE { IA5String "ES"`: try the signature first, and name the seal only if it reads as one.
enum Read {
    Signature(Box<SealSignature>),
    Seal(Box<Seal>),
}

fn read(file: &Path) -> anyhow::Result<Read> {
    let der = read_file(file)?;
    match SealSignature::from_der(&der) {
        Ok(s) => Ok(Read::Signature(Box::new(s))),
        Err(sig_err) => match Seal::from_der(&der) {
            Ok(s) => Ok(Read::Seal(Box::new(s))),
            Err(_) => bail!("{} is not a seal signature: {sig_err}", file.display()),
        },
    }
}

fn verify(a: VerifyArgs) -> anyhow::Result<()> {
    let makers = trusted_makers(&a)?;
    let now = time::OffsetDateTime::now_utc();
    let shown = a.file.display();
    match read(&a.file)? {
        Read::Seal(seal) => {
            bzt_seal::verify_seal(&seal, &makers, now)
                .map_err(|e| anyhow::anyhow!("seal {shown} does NOT verify: {e}"))?;
            println!(
                "OK: seal \"{}\" (esID {}), valid {} to {}, made by a trusted maker",
                seal.name(),
                seal.es_id(),
                rfc3339(seal.valid_start()),
                rfc3339(seal.valid_end())
            );
        }
        Read::Signature(sig) => {
            let hash = match (&a.data, &a.hash) {
                (Some(d), _) => sm3::Sm3::digest(read_file(d)?).to_vec(),
                (None, Some(h)) => hex::decode(h.trim()).context("--hash must be hex")?,
                (None, None) => {
                    bail!("a seal signature protects data: pass --data DOCUMENT or --hash SM3HEX")
                }
            };
            let ok = bzt_seal::verify_signature(&sig, &makers, &hash, now)
                .map_err(|e| anyhow::anyhow!("seal signature {shown} does NOT verify: {e}"))?;
            let seal = sig.seal();
            println!(
                "OK: stamped {} by \"{}\" (serial {}) with seal \"{}\" (esID {}), made by \"{}\"; propertyInfo {}",
                rfc3339(ok.time_info),
                ok.signer.tbs_certificate().subject(),
                bzt_devca::serial_hex(&ok.signer),
                seal.name(),
                seal.es_id(),
                ok.maker.tbs_certificate().subject(),
                sig.property_info()
            );
        }
    }
    Ok(())
}

fn stamp(a: StampArgs) -> anyhow::Result<()> {
    let holder = a.holder.load()?;
    let hash = sm3::Sm3::digest(read_file(&a.data)?);
    let der = bzt_seal::sign_with_seal(
        &holder.seal_der,
        &holder.cert_der,
        &holder.key,
        &hash,
        &a.property_info,
        time::OffsetDateTime::now_utc(),
    )?;
    std::fs::write(&a.out, der).with_context(|| format!("cannot write {}", a.out.display()))?;
    println!(
        "stamped {} (SM3 {}) into {}",
        a.data.display(),
        hex::encode(hash),
        a.out.display()
    );
    Ok(())
}

fn ofd(a: OfdArgs) -> anyhow::Result<()> {
    let holder = a.holder.load()?;
    let picture = Seal::from_der(&holder.seal_der)?.picture();
    let now = time::OffsetDateTime::now_utc();
    let lines: Vec<&str> = a.lines.iter().map(String::as_str).collect();
    let doc = bzt_seal::ofd::OnePageOfd::new(
        &a.title,
        &lines,
        bzt_seal::ofd::StampBox {
            x_mm: 120.0,
            y_mm: 45.0 + 10.0 * lines.len() as f64,
            width_mm: f64::from(picture.width_mm),
            height_mm: f64::from(picture.height_mm),
        },
        now,
    );
    let ses = bzt_seal::sign_with_seal(
        &holder.seal_der,
        &holder.cert_der,
        &holder.key,
        &doc.data_hash(),
        bzt_seal::ofd::PROPERTY_INFO,
        now,
    )?;
    std::fs::write(&a.out, doc.finish(&ses))
        .with_context(|| format!("cannot write {}", a.out.display()))?;
    println!(
        "wrote {} (seal signature in Doc_0/Signs/Sign_0/SignedValue.dat)",
        a.out.display()
    );
    Ok(())
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

fn seal_json(seal: &Seal) -> serde_json::Value {
    let p = seal.picture();
    serde_json::json!({
        "es_id": seal.es_id(),
        "name": seal.name(),
        "type": seal.seal_type().map(|t| t.as_str()).unwrap_or("other"),
        "type_code": seal.seal_type_code(),
        "valid_start": rfc3339(seal.valid_start()),
        "valid_end": rfc3339(seal.valid_end()),
        "picture": {"type": p.picture_type, "bytes": p.data.len(), "width_mm": p.width_mm, "height_mm": p.height_mm},
        "maker": x509_cert::Certificate::from_der(seal.maker_cert_der()).map(|c| c.tbs_certificate().subject().to_string()).unwrap_or_default(),
    })
}

fn show(a: ShowArgs) -> anyhow::Result<()> {
    let (v, seal) = match read(&a.file)? {
        Read::Seal(s) => (serde_json::json!({"seal": seal_json(&s)}), *s),
        Read::Signature(sig) => (
            serde_json::json!({
                "seal": seal_json(sig.seal()),
                "time_info": rfc3339(sig.time_info()),
                "data_hash": hex::encode(sig.data_hash()),
                "property_info": sig.property_info(),
                "signer": x509_cert::Certificate::from_der(sig.signer_cert_der()).map(|c| c.tbs_certificate().subject().to_string()).unwrap_or_default(),
            }),
            sig.seal().clone(),
        ),
    };
    println!("{}", serde_json::to_string_pretty(&v)?);
    if let Some(out) = &a.picture_out {
        std::fs::write(out, seal.picture().data)
            .with_context(|| format!("cannot write {}", out.display()))?;
    }
    Ok(())
}
