//! The OpenSSL 3 command line, as the workspace's tests run it: the independent implementation
//! that SM2 signatures, SM2 encryption, certificates and requests made by this code are
//! cross-checked against (and that makes keys and certificates this code must accept).
//!
//! One copy of "run it in a directory and fail loudly when it is missing or refuses", instead of
//! one per test suite. A dev-dependency only: nothing in a build depends on it.

use std::path::Path;
use std::process::{Command, Output};

/// `-pkeyopt` of SM2 signing and verification with the default distinguishing ID
/// (GB/T 35276: `1234567812345678`), which OpenSSL does not apply unless told.
pub const SM2_DISTID_OPT: &str = "distid:1234567812345678";

/// Runs `openssl args` in `dir` and answers its output whatever its exit status. Panics (a
/// failure, never a skip) when it cannot be started.
pub fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the `openssl` command (OpenSSL 3 with SM2) is required by these tests; install it (scripts/install-test-deps.sh)")
}

/// Runs `openssl args` in `dir`; panics with what it said unless it succeeded.
pub fn run_ok(dir: &Path, args: &[&str]) -> Output {
    let out = run(dir, args);
    assert!(
        out.status.success(),
        "openssl {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Writes a new SM2 private key (PKCS#8 PEM) to `dir/out`.
pub fn new_sm2_key(dir: &Path, out: &str) {
    run_ok(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:SM2",
            "-out",
            out,
        ],
    );
}

/// `openssl pkeyutl` over `msg` (written to `dir`) with SM3 and the default distinguishing ID;
/// `what` names the operation and the key, `then` what follows the input.
fn pkeyutl_sm3(dir: &Path, what: &[&str], msg: &[u8], then: &[&str]) -> Output {
    std::fs::write(dir.join("openssl-pkeyutl.msg"), msg).expect("write the message");
    let mut args = vec!["pkeyutl"];
    args.extend_from_slice(what);
    args.extend_from_slice(&[
        "-rawin",
        "-digest",
        "sm3",
        "-pkeyopt",
        SM2_DISTID_OPT,
        "-in",
        "openssl-pkeyutl.msg",
    ]);
    args.extend_from_slice(then);
    run(dir, &args)
}

/// OpenSSL's DER SM2 signature over `msg` (SM3, default distinguishing ID) with the private
/// key file `key` (PEM, in `dir`).
pub fn sign(dir: &Path, key: &str, msg: &[u8]) -> Vec<u8> {
    let out = pkeyutl_sm3(
        dir,
        &["-sign", "-inkey", key],
        msg,
        &["-out", "openssl-pkeyutl.sig"],
    );
    assert!(
        out.status.success(),
        "openssl pkeyutl -sign failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(dir.join("openssl-pkeyutl.sig")).expect("the signature openssl wrote")
}

/// Whether OpenSSL accepts the DER SM2 signature `sig` over `msg` (SM3, default distinguishing
/// ID) with the public key of the certificate file `cert` (PEM, in `dir`).
pub fn verifies_with_certificate(dir: &Path, cert: &str, msg: &[u8], sig: &[u8]) -> bool {
    std::fs::write(dir.join("openssl-verify.sig"), sig).expect("write the signature to verify");
    let out = pkeyutl_sm3(
        dir,
        &["-verify", "-certin", "-inkey", cert],
        msg,
        &["-sigfile", "openssl-verify.sig"],
    );
    let verified = out.status.success();
    if verified {
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Signature Verified Successfully"),
            "openssl pkeyutl -verify succeeded without saying so: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    verified
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_openssl_made_verifies_and_a_changed_message_does_not() {
        let dir = std::env::temp_dir().join(format!("bzt-openssl-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        new_sm2_key(&dir, "key.pem");
        run_ok(
            &dir,
            &[
                "req",
                "-new",
                "-x509",
                "-key",
                "key.pem",
                "-sm3",
                "-subj",
                "/CN=t",
                "-days",
                "1",
                "-sigopt",
                SM2_DISTID_OPT,
                "-out",
                "cert.pem",
            ],
        );
        let sig = sign(&dir, "key.pem", b"tbs");
        assert!(verifies_with_certificate(&dir, "cert.pem", b"tbs", &sig));
        assert!(!verifies_with_certificate(&dir, "cert.pem", b"tbx", &sig));
        assert!(!run(&dir, &["pkey", "-in", "no-such-key.pem"])
            .status
            .success());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
