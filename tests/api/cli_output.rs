//! The CLI as scripts and people use it: `--json` prints one JSON object on stdout; the
//! progress bar of `bzt envelope seal|open` shows on a terminal and never in a pipe.

use crate::envelope_flows::bzt;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

/// The development CA issues 张三 a certificate and key into `alice/` (`bzt dev-ca issue`,
/// with `more` arguments such as `--json`).
fn issue_alice(dir: &Path, more: &[&str]) -> Output {
    let mut args = vec![
        "dev-ca",
        "issue",
        "--data-dir",
        "data",
        "--cn",
        "张三",
        "--org",
        "示例公司",
        "--out",
        "alice",
    ];
    args.extend_from_slice(more);
    bzt(dir, &args)
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[test]
fn json_results_and_no_progress_bar_in_a_pipe() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let issued = json_of(&issue_alice(dir, &["--json"]));
    assert_eq!(issued["domain"], "platform");
    let serial = issued["serial"].as_str().unwrap().to_owned();
    assert!(serial.chars().all(|c| c.is_ascii_hexdigit()), "{serial}");

    let plain: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(dir.join("bid.bin"), &plain).unwrap();
    let sealed = bzt(
        dir,
        &[
            "--json",
            "envelope",
            "seal",
            "--to",
            "alice/cert.pem",
            "bid.bin",
            "bid.bze",
        ],
    );
    assert!(
        sealed.stderr.is_empty(),
        "nothing on stderr in a pipe: {:?}",
        String::from_utf8_lossy(&sealed.stderr)
    );
    let sealed = json_of(&sealed);
    assert_eq!(sealed["plaintext_len"], 300_000);
    assert_eq!(sealed["recipients"][0]["serial"], serial.as_str());
    assert_eq!(sealed["header_sm3"].as_str().unwrap().len(), 64);

    let opened = bzt(
        dir,
        &[
            "envelope",
            "open",
            "--key",
            "alice/key.pem",
            "--cert",
            "alice/cert.pem",
            "bid.bze",
            "back.bin",
            "--json",
        ],
    );
    assert!(
        opened.stderr.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&opened.stderr)
    );
    assert_eq!(json_of(&opened)["plaintext_len"], 300_000);
    assert_eq!(std::fs::read(dir.join("back.bin")).unwrap(), plain);

    // Text stays the default.
    let text = bzt(dir, &["envelope", "inspect", "bid.bze"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("可解密证书"));
}

#[test]
fn a_terminal_sees_the_progress_bar() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    issue_alice(dir, &[]);
    std::fs::write(dir.join("bid.bin"), vec![7u8; 2_000_000]).unwrap();
    // `script` gives the command a pseudo-terminal, as a person's shell would.
    let command = format!(
        "{} envelope seal --to alice/cert.pem bid.bin bid.bze",
        env!("CARGO_BIN_EXE_bzt")
    );
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(dir)
        .env_remove("BZT_CONFIG")
        .output()
        .expect("run script (util-linux)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(
        screen.contains("加密 / sealing"),
        "the bar is drawn on a terminal: {screen}"
    );
    assert!(screen.contains("已加密"), "{screen}");
}
