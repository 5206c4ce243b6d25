//! How commands print their result: text for people, or one JSON object on stdout with
//! `--json` (for scripts; anything else then goes to stderr), and progress bars on a terminal.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

static JSON: AtomicBool = AtomicBool::new(false);

/// Set once from the global `--json` flag.
pub fn set_json(on: bool) {
    JSON.store(on, Ordering::Relaxed);
}

/// True when the result is to be printed as JSON.
pub fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// The command's result: `value` as JSON on stdout with `--json`, else `text()` prints it.
pub fn result(value: serde_json::Value, text: impl FnOnce()) {
    if json() {
        println!("{value}");
    } else {
        text();
    }
}

/// A line for people: stdout normally, stderr under `--json` (stdout holds only the JSON).
#[cfg_attr(not(feature = "demo"), allow(dead_code))]
pub fn note(line: impl std::fmt::Display) {
    if json() {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

/// A byte-count progress bar on stderr when it is a terminal; hidden otherwise (pipes, CI,
/// `--json`), so scripts and logs see no control characters.
pub fn bytes_bar(total: u64, what: &str) -> ProgressBar {
    if json() || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}
