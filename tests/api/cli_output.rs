//! The CLI as scripts and people use it: `--json` prints one JSON object on stdout; the
//! progress bar of `bzt envelope seal|open` shows on a terminal and never in a pipe.

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

fn bzt(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_bzt"))
        .args(args)
        .current_dir(dir)
        .env_remove("BZT_CONFIG")
        .output()
        .expect("run bzt");
    assert!(
        out.status.success(),
        "bzt {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
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
    let issued = json_of(&bzt(
        dir,
        &[
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
            "--json",
        ],
    ));
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
    bzt(
        dir,
        &[
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
        ],
    );
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
