//! The OpenSSL 3 CLI as these cross-checks run it. (The other crates' suites share
//! `bzt-openssl-cli`; this bottom crate names no workspace crate, not even for its tests.)

use std::path::Path;
use std::process::{Command, Output};

/// Runs `openssl args` in `dir`; fails the test with what it said unless it succeeded.
pub fn openssl(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl on PATH (scripts/install-test-deps.sh)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Writes a new SM2 private key (PEM) to `dir/out`.
pub fn new_sm2_key(dir: &Path, out: &str) {
    openssl(
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
