//! Serializes or parses one stored session record (an approved login as a
//! Redis node keeps it, 2.3 KB: `approved-session.json` beside this file)
//! N times, for counting instructions per operation:
//!
//!   cargo build --release -p bzt-core --example record_json
//!   valgrind --tool=callgrind target/release/examples/record_json parse 1000
//!   valgrind --tool=callgrind target/release/examples/record_json none 1000
//!
//! (the difference of the two totals over N is one parse; `serialize`
//! likewise). A node on Redis does this several times per login flow
//! (loadtest/RESULTS.md, session 7).

use bzt_core::session::Session;
use std::hint::black_box;

const RECORD: &str = include_str!("approved-session.json");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let what = args.next().unwrap_or_default();
    let n: usize = args.next().map_or(Ok(1000), |s| s.parse())?;
    let session: Session = serde_json::from_str(RECORD)?;
    let mut bytes = 0;
    for _ in 0..n {
        match what.as_str() {
            "parse" => {
                let s: Session = serde_json::from_str(black_box(RECORD))?;
                bytes += s.id.as_str().len();
            }
            "serialize" => bytes += serde_json::to_string(black_box(&session))?.len(),
            "none" => {}
            _ => return Err("usage: record_json parse|serialize|none [N]".into()),
        }
    }
    println!("{what} x{n}: {bytes}");
    Ok(())
}
