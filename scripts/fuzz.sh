#!/usr/bin/env bash
# Fuzzes every parser of outside input (crates/bzt-fuzz: QR text, claim and
# completion bodies, certificate PEM and DER, envelope header, seal ASN.1).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 60 s, every target)
#
# With a nightly Rust toolchain: coverage-guided, libFuzzer through cargo-fuzz
# (installed from crates.io if missing), each target for the given time, on
# its corpus in crates/bzt-fuzz/corpus/<target>/ (new interesting inputs are
# added there: commit the ones worth keeping). A crash leaves its input in
# crates/bzt-fuzz/fuzz/artifacts/<target>/ and fails the script.
# Without nightly: the stable harness (not coverage-guided) with a mutation
# budget sized to the time, and a different seed each run.
# The short smoke run in `cargo test` is crates/bzt-fuzz/tests/smoke.rs.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
all=(qr_text claim_body complete_body pem_chain cert_der envelope_header seal_asn1)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")

if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
  fi
  cd crates/bzt-fuzz
  for t in "${targets[@]}"; do
    echo "== libFuzzer: $t for ${seconds}s"
    cargo +nightly fuzz run --fuzz-dir fuzz "$t" "corpus/$t" -- \
      -max_total_time="$seconds" -max_len=65536 -timeout=10 -print_final_stats=1
  done
else
  echo "== no nightly toolchain: the stable harness (not coverage-guided) instead"
  # About 5,000 inputs a second per target in a debug build.
  BZT_FUZZ_ITERATIONS=$((seconds * 5000)) BZT_FUZZ_SEED="$(date +%s)" \
    cargo test -p bzt-fuzz --test smoke -- --nocapture
fi
