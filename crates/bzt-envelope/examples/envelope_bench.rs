//! Seals and opens one file and prints throughput and peak memory.
//!
//! ```text
//! cargo run --release -p bzt-envelope --example envelope_bench -- [SIZE] [--input FILE] [--dir DIR]
//! ```
//! SIZE is bytes with an optional K/M/G suffix (powers of 1024), default 1G; it is ignored when
//! `--input` names an existing plaintext file. Work files go to DIR (default: the system temp
//! directory) and are deleted at the end. MB/s counts plaintext bytes, 1 MB = 10^6 bytes.
//! CPU seconds (user + system, all threads) are printed too, so that runs on a busy machine can
//! still be compared per CPU-second. Peak RSS is the process's VmHWM.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use bzt_envelope::{open, open_to_path, seal, Recipient, SealOptions};
use sm2::SecretKey;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res<()> {
    let mut size: u64 = 1 << 30;
    let mut input: Option<PathBuf> = None;
    let mut dir = std::env::temp_dir();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--input" => input = Some(args.next().ok_or("--input needs a path")?.into()),
            "--dir" => dir = args.next().ok_or("--dir needs a path")?.into(),
            "-h" | "--help" => {
                println!("envelope_bench [SIZE e.g. 64M, 1G] [--input FILE] [--dir DIR]");
                return Ok(());
            }
            other => size = parse_size(other)?,
        }
    }

    let work = tempfile::Builder::new()
        .prefix("envelope-bench-")
        .tempdir_in(&dir)?;
    let plain_path = match input {
        Some(p) => {
            size = std::fs::metadata(&p)?.len();
            p
        }
        None => {
            let p = work.path().join("plain.bin");
            generate(&p, size)?;
            p
        }
    };
    let sealed_path = work.path().join("sealed.bze");
    let out_path = work.path().join("opened.bin");

    let secret = loop {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| e.to_string())?;
        if let Ok(s) = SecretKey::from_slice(&bytes) {
            break s;
        }
    };
    let recipient = Recipient::new("1", "CN=bench", secret.public_key())?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("plaintext: {size} bytes, threads: {threads}");

    let mut chunks = 0;
    let seal_t = measure(|| {
        let report = seal(
            std::slice::from_ref(&recipient),
            File::open(&plain_path)?,
            File::create(&sealed_path)?,
            &SealOptions::default(),
        )?;
        chunks = report.chunks;
        Ok(())
    })?;
    seal_t.print("seal", size, &format!("{chunks} chunks"));
    let open_t = measure(|| {
        open(&secret, &recipient, File::open(&sealed_path)?, io::sink())?;
        Ok(())
    })?;
    open_t.print("open (sink)", size, "");
    let path_t = measure(|| {
        open_to_path(&secret, &recipient, &sealed_path, &out_path)?;
        Ok(())
    })?;
    path_t.print("open_to_path", size, "temp file + fsync + rename");

    if !same_contents(&plain_path, &out_path)? {
        return Err("opened file differs from the plaintext".into());
    }
    println!("opened file is byte-identical");
    let rss = vm_hwm_kib()?;
    println!("peak RSS (VmHWM): {rss} KiB");
    // Machine-readable line for loadtest/envelope-bench.sh.
    println!(
        "RESULT seal_mbps={:.1} seal_cpu_s={:.2} open_mbps={:.1} open_cpu_s={:.2} \
         open_to_path_mbps={:.1} open_to_path_cpu_s={:.2} peak_rss_kib={rss} threads={threads}",
        mbps(size, seal_t.wall),
        seal_t.cpu,
        mbps(size, open_t.wall),
        open_t.cpu,
        mbps(size, path_t.wall),
        path_t.cpu,
    );
    Ok(())
}

/// Wall-clock and CPU seconds of one phase.
struct Timing {
    wall: f64,
    cpu: f64,
}

impl Timing {
    fn print(&self, what: &str, size: u64, note: &str) {
        println!(
            "{what:<13} {:8.1} MB/s ({:.2} s, {:.2} CPU s) {note}",
            mbps(size, self.wall),
            self.wall,
            self.cpu
        );
    }
}

fn measure(f: impl FnOnce() -> Res<()>) -> Res<Timing> {
    let (start, cpu) = (Instant::now(), cpu_seconds()?);
    f()?;
    Ok(Timing {
        wall: start.elapsed().as_secs_f64(),
        cpu: cpu_seconds()? - cpu,
    })
}

/// User + system CPU seconds of this process, all threads: fields 14 and 15 of
/// /proc/self/stat, in clock ticks of 1/100 s (the value on mainstream Linux).
fn cpu_seconds() -> Res<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the parenthesised command name, which may contain spaces.
    let rest = stat.rsplit_once(')').ok_or("bad /proc/self/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11).ok_or("no utime")?.parse()?;
    let stime: u64 = fields.get(12).ok_or("no stime")?.parse()?;
    Ok((utime + stime) as f64 / 100.0)
}

fn parse_size(text: &str) -> Res<u64> {
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, ""),
    };
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KIB" => 10,
        "M" | "MIB" => 20,
        "G" | "GIB" => 30,
        _ => return Err(format!("bad size {text:?}").into()),
    };
    Ok(digits.parse::<u64>()? << shift)
}

fn mbps(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / 1e6 / seconds
}

/// Writes `size` pseudo-random bytes (xorshift; incompressible enough for a cipher).
fn generate(path: &Path, size: u64) -> Res<()> {
    let mut out = io::BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for word in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes()[..word.len()]);
        }
        let n = left.min(buf.len() as u64) as usize;
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    out.flush()?;
    Ok(())
}

fn same_contents(a: &Path, b: &Path) -> Res<bool> {
    let mut a = BufReader::with_capacity(1 << 20, File::open(a)?);
    let mut b = BufReader::with_capacity(1 << 20, File::open(b)?);
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = read_full(&mut a, &mut x)?;
        let m = read_full(&mut b, &mut y)?;
        if n != m || x[..n] != y[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

fn vm_hwm_kib() -> Res<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .ok_or("no VmHWM in /proc/self/status")?;
    Ok(line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?)
}
