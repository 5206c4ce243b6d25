//! `sm2-bench`: SM2 verifies per second on one thread, for each verify path
//! the broker has had, on the same key, message and signature. Run through
//! loadtest/sm2-bench.sh, which pins it and measures `openssl speed sm2` on
//! the same core in the same invocation; `--only PATH --iters N` runs one
//! path N times (for `valgrind --tool=callgrind` instruction counts).

use bzt_core::sm2verify::{self, KeptKey};
use bzt_loadtest::stats::thread_cpu_seconds;
use clap::Parser;
use sm2::dsa::signature::{Signer, Verifier};
use sm2::dsa::{Signature, SigningKey, VerifyingKey};
use sm2::elliptic_curve::group::Group;
use sm2::elliptic_curve::ops::{MulByGeneratorVartime, Reduce};
use sm2::elliptic_curve::point::AffineCoordinates;
use sm2::{FieldBytes, ProjectivePoint, Scalar};
use sm3::{Digest, Sm3};
use std::hint::black_box;
use std::time::Instant;

#[derive(Parser)]
#[command(name = "sm2-bench", about = "SM2 verifies per second, one thread")]
struct Cli {
    /// Seconds per path.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Run only this path, `--iters` times, and print nothing but a count.
    #[arg(long, value_enum)]
    only: Option<Path>,
    #[arg(long, default_value_t = 1000)]
    iters: u64,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq)]
enum Path {
    /// The broker now, a kept key with its table (what a repeated signer costs).
    Kept,
    /// The broker now, without the key's table (a key's first verify).
    Once,
    /// The broker before this change: the `sm2` crate's variable-time
    /// arithmetic (`mul_by_generator_vartime` + `mul_vartime`), commit 8ff7408.
    Before,
    /// The `sm2` crate's own (constant-time) verify.
    Crate,
}

const ALL: [Path; 4] = [Path::Kept, Path::Once, Path::Before, Path::Crate];

struct Fixture {
    vk: VerifyingKey,
    kept: KeptKey,
    z: [u8; 32],
    msg: Vec<u8>,
    sig: Signature,
}

fn fixture() -> anyhow::Result<Fixture> {
    let sk = SigningKey::from_slice(bzt_core::pki::DEFAULT_DIST_ID, &[0x42; 32])
        .map_err(|e| anyhow::anyhow!("key: {e}"))?;
    let vk = sk.verifying_key().clone();
    let msg = b"BZT-CHALLENGE-V1\nkind:login\napp:load\nsession:x\nnonce:abc\nexpires:2030-01-01T00:00:00.000Z".to_vec();
    let sig: Signature = sk.sign(&msg);
    let kept = KeptKey::new(vk.clone()).ok_or_else(|| anyhow::anyhow!("kept key"))?;
    // The first use pays no table; the second builds it.
    anyhow::ensure!(sm2verify::verify(&kept, &msg, &sig) && sm2verify::verify(&kept, &msg, &sig));
    let z = z_of(&vk);
    Ok(Fixture {
        vk,
        kept,
        z,
        msg,
        sig,
    })
}

/// `Z` as the old path kept it (the same bytes the broker hashes).
fn z_of(vk: &VerifyingKey) -> [u8; 32] {
    const PARAMS: &str = "FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E9332C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7BC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0";
    let params: Vec<u8> = (0..PARAMS.len() / 2)
        .filter_map(|i| u8::from_str_radix(&PARAMS[2 * i..2 * i + 2], 16).ok())
        .collect();
    let id = vk.distid().as_bytes();
    let point = vk.to_sec1_bytes();
    let mut h = Sm3::new();
    h.update(((id.len() * 8) as u16).to_be_bytes());
    h.update(id);
    h.update(&params);
    h.update(&point[1..]);
    h.finalize().into()
}

/// The verify of commit 8ff7408, kept here as the "before" reference.
fn before_verify(vk: &VerifyingKey, z: &[u8; 32], msg: &[u8], sig: &Signature) -> bool {
    let e_bytes: [u8; 32] = Sm3::new()
        .chain_update(z)
        .chain_update(msg)
        .finalize()
        .into();
    let e = <Scalar as Reduce<FieldBytes>>::reduce(&FieldBytes::from(e_bytes));
    let (r, s) = (sig.r(), sig.s());
    let t = *r + *s;
    if bool::from(t.is_zero()) {
        return false;
    }
    let p = ProjectivePoint::from(*vk.as_affine());
    let point = ProjectivePoint::mul_by_generator_vartime(&s) + p.mul_vartime(&t);
    if bool::from(point.is_identity()) {
        return false;
    }
    let x1 = <Scalar as Reduce<FieldBytes>>::reduce(&point.to_affine().x());
    *r == e + x1
}

fn run_once(fx: &Fixture, path: Path) -> bool {
    match path {
        Path::Kept => sm2verify::verify(&fx.kept, black_box(&fx.msg), &fx.sig),
        Path::Once => sm2verify::verify_without_table(&fx.kept, black_box(&fx.msg), &fx.sig),
        Path::Before => before_verify(&fx.vk, &fx.z, black_box(&fx.msg), &fx.sig),
        Path::Crate => fx.vk.verify(black_box(&fx.msg), &fx.sig).is_ok(),
    }
}

/// Verifies per CPU second of this thread (`openssl speed` too divides by
/// its CPU user time, so time the core spent on other processes counts in
/// neither), run for `seconds` of wall time.
fn rate(fx: &Fixture, path: Path, seconds: f64) -> anyhow::Result<f64> {
    let start = Instant::now();
    let cpu_start = thread_cpu_seconds();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        for _ in 0..16 {
            anyhow::ensure!(run_once(fx, path), "{path:?} refused a valid signature");
        }
        n += 16;
    }
    Ok(n as f64 / (thread_cpu_seconds() - cpu_start).max(1e-9))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let fx = fixture()?;
    for path in ALL {
        anyhow::ensure!(run_once(&fx, path), "{path:?} refused a valid signature");
        let mut bad = fx.msg.clone();
        bad[0] ^= 1;
        anyhow::ensure!(
            !match path {
                Path::Kept => sm2verify::verify(&fx.kept, &bad, &fx.sig),
                Path::Once => sm2verify::verify_without_table(&fx.kept, &bad, &fx.sig),
                Path::Before => before_verify(&fx.vk, &fx.z, &bad, &fx.sig),
                Path::Crate => fx.vk.verify(&bad, &fx.sig).is_ok(),
            },
            "{path:?} accepted a changed message"
        );
    }
    if let Some(path) = cli.only {
        let mut ok = 0u64;
        for _ in 0..cli.iters {
            ok += run_once(&fx, path) as u64;
        }
        println!("{ok}");
        return Ok(());
    }
    for path in ALL {
        let r = rate(&fx, path, cli.seconds)?;
        println!(
            "RESULT path={} verify_per_s={r:.1} us_per_verify={:.2}",
            format!("{path:?}").to_lowercase(),
            1e6 / r
        );
    }
    Ok(())
}
