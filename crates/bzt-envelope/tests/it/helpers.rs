//! Test fixtures: SM2 keys and certificates made by the OpenSSL CLI, and tool runners.

use std::path::{Path, PathBuf};
use std::process::Command;

use bzt_envelope::{seal, Recipient, SealOptions};
use sm2::pkcs8::DecodePrivateKey;
use sm2::SecretKey;
use tempfile::TempDir;

pub const DISTID: &str = "distid:1234567812345678";

/// The test CA's name as OpenSSL's `-subj` takes it. It carries an organizationIdentifier
/// (统一社会信用代码), which the broker writes as text.
const CA_SUBJECT: &str =
    "/C=CN/O=Bid Test/organizationIdentifier=91310000MA1FL0001X/CN=Bid Test CA";

/// The issuer string every test certificate gets, as the broker writes it.
pub const ISSUER: &str = "CN=Bid Test CA,organizationIdentifier=91310000MA1FL0001X,O=Bid Test,C=CN";

/// One certificate holder: key and certificate files, and the parsed forms.
pub struct Party {
    pub key_path: PathBuf,
    pub cert_path: PathBuf,
    pub secret: SecretKey,
    pub recipient: Recipient,
}

/// A small PKI in a temporary directory: one CA and the parties it issued.
pub struct Pki {
    pub dir: TempDir,
    pub parties: Vec<Party>,
}

impl Pki {
    /// A CA ([`CA_SUBJECT`]) issuing one certificate per name, with serials
    /// 0x00ab01, 0x00ab02, ... (the leading zero byte is deliberate).
    pub fn new(names: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let ca_key = d.join("ca.key");
        let ca_cert = d.join("ca.pem");
        genkey(&ca_key);
        openssl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            path(&ca_key),
            "-subj",
            CA_SUBJECT,
            "-sm3",
            "-sigopt",
            DISTID,
            "-days",
            "30",
            "-out",
            path(&ca_cert),
        ]);
        let parties = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let key_path = d.join(format!("{name}.key"));
                let csr = d.join(format!("{name}.csr"));
                let cert_path = d.join(format!("{name}.pem"));
                genkey(&key_path);
                openssl(&[
                    "req",
                    "-new",
                    "-key",
                    path(&key_path),
                    "-subj",
                    &format!("/CN={name}"),
                    "-sm3",
                    "-sigopt",
                    DISTID,
                    "-out",
                    path(&csr),
                ]);
                openssl(&[
                    "x509",
                    "-req",
                    "-in",
                    path(&csr),
                    "-CA",
                    path(&ca_cert),
                    "-CAkey",
                    path(&ca_key),
                    "-set_serial",
                    &format!("0x00ab{:02x}", i + 1),
                    "-sm3",
                    "-sigopt",
                    DISTID,
                    "-vfyopt",
                    DISTID,
                    "-days",
                    "30",
                    "-out",
                    path(&cert_path),
                ]);
                let secret = SecretKey::from_pkcs8_pem(&read_string(&key_path)).expect("key");
                let recipient = Recipient::from_pem(&read_string(&cert_path)).expect("cert");
                Party {
                    key_path,
                    cert_path,
                    secret,
                    recipient,
                }
            })
            .collect();
        Pki { dir, parties }
    }

    pub fn recipients(&self, n: usize) -> Vec<Recipient> {
        self.parties[..n]
            .iter()
            .map(|p| p.recipient.clone())
            .collect()
    }
}

fn genkey(out: &Path) {
    bzt_openssl_cli::new_sm2_key(Path::new("."), path(out));
}

pub fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

pub fn read_string(p: &Path) -> String {
    std::fs::read_to_string(p).expect("read file")
}

/// Runs `openssl` (in the working directory; paths are absolute) and returns its stdout; panics
/// (fails the test) if it is missing or fails.
pub fn openssl(args: &[&str]) -> Vec<u8> {
    bzt_openssl_cli::run_ok(Path::new("."), args).stdout
}

/// Runs a Python 3 script with `cryptography` available; panics if either is missing.
pub fn python(script: &str, args: &[&str]) -> Vec<u8> {
    let probe = Command::new("python3")
        .args(["-c", "import cryptography"])
        .output()
        .unwrap_or_else(|e| panic!("`python3` is required by this test: {e}"));
    assert!(
        probe.status.success(),
        "python3 lacks the `cryptography` package required by this test \
         (pip install cryptography): {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "python script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Deterministic but irregular test data.
pub fn data(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9 ^ len as u32;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Seals `plain` to `recipients` with the given chunk size; returns the whole file.
pub fn seal_bytes(recipients: &[Recipient], plain: &[u8], chunk: u32) -> Vec<u8> {
    let mut out = Vec::new();
    seal(
        recipients,
        plain,
        &mut out,
        &SealOptions { chunk_size: chunk },
    )
    .expect("seal");
    out
}

/// Length of `BZE1` + length + header JSON of a sealed file.
pub fn body_offset(file: &[u8]) -> usize {
    8 + u32::from_be_bytes(file[4..8].try_into().expect("4 bytes")) as usize
}

/// Names in a directory, sorted.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
