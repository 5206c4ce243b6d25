//! The shape of the broker package (issue 16), checked on its source text.
//!
//! - The production library does not reach the demo: outside `src/demo*`,
//!   `src/dev.rs` and the CLI's development commands, no file names the demo,
//!   development mode, the hall client or the crates only they use, except
//!   `src/lib.rs` declaring them behind `#[cfg(feature = "demo")]`.
//!   (`scripts/test.sh` also builds the library and the binary with
//!   `--no-default-features`, which fails if anything outside the gate
//!   imports them.)
//! - The demo backend, the opening hall and the load generator call the broker's
//!   relying-party API only through `bzt-rp-client`: no route of it written out,
//!   no API key set by hand.

use std::path::{Path, PathBuf};

/// Names only the demo side may use.
const DEMO_NAMES: [&str; 8] = [
    "crate::demo",
    "crate::dev::",
    "crate::hall",
    "bzt_rp_client",
    "bzt_devca",
    "bzt_phone::",
    "tower_http",
    "bzt::demo",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src/") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Is `path` (relative to `src/`) the demo side: the demo itself, development
/// mode, or the binary's CLI (whose development commands are gated there)?
fn is_demo_side(rel: &Path) -> bool {
    let s = rel.to_string_lossy();
    s == "demo.rs"
        || s.starts_with("demo/")
        || s == "dev.rs"
        || s.starts_with("cli/")
        || s == "main.rs"
}

#[test]
fn the_library_outside_the_demo_names_nothing_of_it() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut offending = Vec::new();
    for path in &files {
        let rel = path.strip_prefix(src()).expect("under src/");
        if is_demo_side(rel) {
            continue;
        }
        let text = std::fs::read_to_string(path).expect("read a source file");
        let mut gated = false;
        for (n, line) in text.lines().enumerate() {
            let trimmed = line.trim_start();
            if trimmed.starts_with("//") {
                continue;
            }
            // `src/lib.rs` declares the demo modules behind the feature.
            let is_gated = gated;
            gated = trimmed.starts_with("#[cfg(feature = \"demo\")]");
            if is_gated && rel == Path::new("lib.rs") {
                continue;
            }
            for name in DEMO_NAMES {
                if line.contains(name) {
                    offending.push(format!("src/{}:{}: {}", rel.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        offending.is_empty(),
        "the production library names the demo:\n{}",
        offending.join("\n")
    );
    // The check reads the files it should: the demo's own files do name it.
    let demo = std::fs::read_to_string(src().join("demo/bidfile.rs")).expect("src/demo/bidfile.rs");
    assert!(
        demo.contains("crate::hall"),
        "the check would not see a demo import"
    );
}

/// The relying-party API's routes: the demo, the hall and the load generator call them only
/// through `bzt-rp-client`, never with a URL (and a `json!` body) of their own.
const RP_API_ROUTES: [&str; 2] = ["/v1/sessions", "/v1/conversations"];

/// The lines of `text` that call the relying-party API by hand: a route of it written out, or
/// the API key set on a request. The browser's and phone's WebSocket URLs (`.../ws?t=`) are
/// not the relying-party API.
fn hand_built_rp_calls(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim_start().starts_with("//"))
        .filter(|(_, line)| {
            let names_route =
                RP_API_ROUTES.iter().any(|r| line.contains(r)) && !line.contains("/ws?");
            names_route || line.contains("bearer_auth(")
        })
        .map(|(n, line)| (n + 1, line.trim().to_owned()))
        .collect()
}

#[test]
fn the_demo_the_hall_and_the_load_generator_call_the_broker_through_the_rp_client() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![src().join("demo.rs"), src().join("cli/hall.rs")];
    rust_files(&src().join("demo"), &mut files);
    rust_files(&root.join("loadtest/src"), &mut files);
    let mut offending = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).expect("read a source file");
        for (n, line) in hand_built_rp_calls(&text) {
            offending.push(format!("{}:{n}: {line}", path.display()));
        }
    }
    assert!(
        offending.is_empty(),
        "relying-party calls built by hand (use bzt-rp-client):\n{}",
        offending.join("\n")
    );
    // They do call the broker, through the client.
    for (file, client) in [
        ("src/demo.rs", "RpClient"),
        ("src/cli/hall.rs", "HallClient"),
        ("loadtest/src/flows.rs", "RpClient"),
    ] {
        let text = std::fs::read_to_string(root.join(file)).expect("read a source file");
        assert!(text.contains(client), "{file} does not use {client}");
    }
    // The check sees what the demo used to write.
    let old = r#"            .post(format!("{}/v1/sessions", rp.broker_url))
        let resp = req.bearer_auth(&self.api_key).send().await
        let url = format!("{}/v1/conversations/{}/ws?t={token}", base, id);"#;
    assert_eq!(
        hand_built_rp_calls(old)
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>(),
        [1, 2]
    );
}
