#!/usr/bin/env bash
# Fuzzes every parser of outside input (crates/bzt-fuzz: QR text, claim and
# completion bodies, certificate PEM and DER, envelope header, seal ASN.1).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 60 s, every target)
#
# Coverage-guided, with libFuzzer through cargo-fuzz (installed from
# crates.io if missing), each target for the given time:
# - on a nightly Rust toolchain, with AddressSanitizer;
# - else on the stable toolchain, without a sanitizer (`--sanitizer none`;
#   RUSTC_BOOTSTRAP=1 lets stable rustc take cargo-fuzz's flags). The
#   targets and the parsers they reach are safe Rust, so a bug shows as a
#   panic, which libFuzzer reports as a crash either way.
# Inputs: the seed corpus crates/bzt-fuzz/corpus/<target>/ (committed, read
# only here). New inputs that reach new code go to
# crates/bzt-fuzz/fuzz/corpus/<target>/ (not committed: thousands a minute;
# `cargo fuzz cmin` them and copy the few worth keeping into the seed
# corpus). A crash leaves its input in crates/bzt-fuzz/fuzz/artifacts/<target>/
# and fails the script.
# BZT_FUZZ_HARNESS=1: the stable harness instead (not coverage-guided; a
# mutation budget sized to the time and a different seed each run), as the
# short smoke run in `cargo test` (crates/bzt-fuzz/tests/smoke.rs) uses it.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
all=(qr_text claim_body complete_body pem_chain cert_der envelope_header seal_asn1)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")

if [ -n "${BZT_FUZZ_HARNESS:-}" ]; then
  echo "== the stable harness (not coverage-guided)"
  # About 5,000 inputs a second per target in a debug build.
  BZT_FUZZ_ITERATIONS=$((seconds * 5000)) BZT_FUZZ_SEED="$(date +%s)" \
    cargo test -p bzt-fuzz --test smoke -- --nocapture
  exit 0
fi

if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  fuzz=(cargo +nightly fuzz)
  sanitizer=address
else
  fuzz=(env RUSTC_BOOTSTRAP=1 cargo fuzz)
  sanitizer=none
fi
if ! "${fuzz[@]}" --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
cd crates/bzt-fuzz
for t in "${targets[@]}"; do
  echo "== libFuzzer ($sanitizer sanitizer): $t for ${seconds}s"
  mkdir -p "fuzz/corpus/$t"
  "${fuzz[@]}" run --fuzz-dir fuzz --sanitizer "$sanitizer" "$t" "fuzz/corpus/$t" "corpus/$t" -- \
    -max_total_time="$seconds" -max_len=65536 -timeout=10 -print_final_stats=1
done
