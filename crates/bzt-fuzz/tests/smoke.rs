//! The fuzz targets on stable Rust, bounded: every input of each target's
//! corpus (`corpus/<target>/`), then `BZT_FUZZ_ITERATIONS` (default 3000)
//! mutations of them per target: bit flips, byte changes, cuts, splices,
//! repeats and interesting values, from a fixed seed (`BZT_FUZZ_SEED` to
//! vary it), so a failure replays. A panicking input is written to
//! `target/fuzz-failures/<target>-<n>` and named in the failure.
//!
//! Not coverage-guided: `scripts/fuzz.sh` runs the same targets under
//! libFuzzer. This run keeps every target compiling, keeps the corpus
//! passing, and catches the shallow bugs in seconds.

use std::path::{Path, PathBuf};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// xorshift64*: a fixed, dependency-free stream, so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: &[&[u8]] = &[
    b"\x00",
    b"\xff",
    b"\x7f",
    b"\x80",
    b"\x81\xff",
    b"\x84\xff\xff\xff\xff",
    b"\"",
    b"\\u0000",
    b"{}",
    b"[]",
    b"null",
    b"-----BEGIN CERTIFICATE-----\n",
    b"-----END CERTIFICATE-----\n",
    b"#",
    b"/q/",
    b"%",
    "\u{202e}".as_bytes(),
    b"99999999999999999999",
];

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut data = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(4) {
        let len = data.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = rng.next() as u8;
            }
            2 if len > 0 => {
                let cut = rng.below(len);
                data.truncate(cut);
            }
            3 if len > 0 => {
                let start = rng.below(len);
                let end = start + rng.below(len - start + 1);
                data.drain(start..end);
            }
            4 => {
                let other = &seeds[rng.below(seeds.len())];
                if !other.is_empty() {
                    let start = rng.below(other.len());
                    let piece = other[start..].to_vec();
                    let at = rng.below(len + 1);
                    data.splice(at..at, piece);
                }
            }
            5 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(16)).min(len);
                let piece = data[start..end].to_vec();
                for _ in 0..1 + rng.below(8) {
                    data.splice(start..start, piece.iter().copied());
                }
            }
            _ => {
                let piece = INTERESTING[rng.below(INTERESTING.len())];
                let at = rng.below(len + 1);
                data.splice(at..at, piece.iter().copied());
            }
        }
    }
    data
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `target` on `input`; on a panic, keeps the input and says where.
fn run_one(name: &str, target: bzt_fuzz::Target, input: &[u8], n: u64) -> Result<(), String> {
    let copy = input.to_vec();
    match std::panic::catch_unwind(move || target(&copy)) {
        Ok(()) => Ok(()),
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/fuzz-failures");
            let _ = std::fs::create_dir_all(&dir);
            let path = dir.join(format!("{name}-{n}"));
            let _ = std::fs::write(&path, input);
            Err(format!(
                "target {name} panicked ({why}) on the input saved as {}",
                path.display()
            ))
        }
    }
}

#[test]
fn every_target_survives_its_corpus_and_mutations_of_it() {
    let iterations = env_number("BZT_FUZZ_ITERATIONS", 3000);
    let seed = env_number("BZT_FUZZ_SEED", 0x6274_7a66_757a_7a31);
    let mut failures = Vec::new();
    for (name, target) in bzt_fuzz::TARGETS {
        let seeds = corpus(name);
        assert!(!seeds.is_empty(), "corpus/{name} is empty");
        for (n, input) in seeds.iter().enumerate() {
            if let Err(e) = run_one(name, *target, input, n as u64) {
                failures.push(e);
            }
        }
        let mut rng = Rng(seed ^ name.len() as u64 ^ (name.as_bytes()[0] as u64) << 32);
        for n in 0..iterations {
            let input = mutate(&mut rng, &seeds);
            if let Err(e) = run_one(name, *target, &input, 1_000_000 + n) {
                failures.push(e);
                break;
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_target_has_a_corpus_and_a_libfuzzer_entry() {
    let fuzz_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
    for (name, _) in bzt_fuzz::TARGETS {
        assert!(corpus_dir(name).is_dir(), "corpus/{name} is missing");
        let entry = fuzz_dir.join(format!("{name}.rs"));
        let text =
            std::fs::read_to_string(&entry).unwrap_or_else(|e| panic!("{}: {e}", entry.display()));
        assert!(
            text.contains(&format!("bzt_fuzz::{name}(")),
            "{} must call bzt_fuzz::{name}",
            entry.display()
        );
    }
}
