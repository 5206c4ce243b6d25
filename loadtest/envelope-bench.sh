#!/usr/bin/env bash
# Envelope throughput: seals and opens one file with bzt-envelope (release build, all cores)
# and times `openssl enc -sm4-cbc` (one core, OpenSSL's own SM4) on the same file in the same
# run. Writes the figures to loadtest/results/envelope.md.
#
# Usage: loadtest/envelope-bench.sh [SIZE_MIB]     (default 1024, i.e. 1 GiB)
# Needs: cargo, openssl (3.x), awk. Work files go to $TMPDIR (default /tmp), about 3x SIZE,
# and are removed at the end. MB/s = 10^6 plaintext bytes per second of wall-clock time;
# "MB per CPU-s" divides by user + system CPU seconds instead, which stays comparable when
# other work shares the machine.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
size_mib=${1:-1024}
out="$root/loadtest/results/envelope.md"
work=$(mktemp -d "${TMPDIR:-/tmp}/envelope-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT

command -v openssl >/dev/null || { echo "openssl is required" >&2; exit 1; }
cd "$root"
cargo build --release --quiet -p bzt-envelope --example envelope_bench
bench="$root/target/release/examples/envelope_bench"

echo "generating ${size_mib} MiB of random plaintext in $work" >&2
head -c $((size_mib * 1024 * 1024)) /dev/urandom >"$work/plain.bin"
bytes=$(stat -c %s "$work/plain.bin")
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# Runs a command; prints "wall_seconds cpu_seconds" (cpu = user + system).
timed() {
  local TIMEFORMAT='%R %U %S' t
  t=$( { time "$@" >/dev/null; } 2>&1 )
  awk '{ printf "%.3f %.3f\n", $1, $2 + $3 }' <<<"$t"
}
rate() { awk -v n="$bytes" -v s="$1" 'BEGIN { printf "%.1f", n / 1e6 / s }'; }

key=$(openssl rand -hex 16)
iv=$(openssl rand -hex 16)
echo "openssl enc -sm4-cbc" >&2
read -r enc_wall enc_cpu < <(timed openssl enc -sm4-cbc -K "$key" -iv "$iv" \
  -in "$work/plain.bin" -out "$work/plain.cbc")
read -r dec_wall dec_cpu < <(timed openssl enc -d -sm4-cbc -K "$key" -iv "$iv" \
  -in "$work/plain.cbc" -out /dev/null)
rm -f "$work/plain.cbc"

echo "envelope_bench" >&2
bench_out=$("$bench" --input "$work/plain.bin" --dir "$work")
echo "$bench_out" >&2
result=$(grep '^RESULT ' <<<"$bench_out")
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$result"; }
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

cat >"$out" <<MD
# Envelope throughput

Run by \`loadtest/envelope-bench.sh ${size_mib}\` on $(date -u +%Y-%m-%dT%H:%M:%SZ).

| | MB/s (wall clock) | MB per CPU-second |
|---|---|---|
| bzt-envelope seal (file to file) | $(field seal_mbps) | $(rate "$(field seal_cpu_s)") |
| bzt-envelope open (file to /dev/null) | $(field open_mbps) | $(rate "$(field open_cpu_s)") |
| bzt-envelope open_to_path (temp file, fsync, rename) | $(field open_to_path_mbps) | $(rate "$(field open_to_path_cpu_s)") |
| openssl enc -sm4-cbc (encrypt, file to file) | $(rate "$enc_wall") | $(rate "$enc_cpu") |
| openssl enc -d -sm4-cbc (decrypt, file to /dev/null) | $(rate "$dec_wall") | $(rate "$dec_cpu") |

- Plaintext: ${bytes} bytes of random data, chunk 65536, one recipient; the opened file was
  compared byte for byte with the input.
- Peak RSS of the bench process (VmHWM, seal + both opens): $(field peak_rss_kib) KiB.
- bzt-envelope used $(field threads) worker threads (all cores); \`openssl enc\` uses one.
- MB/s = 10^6 plaintext bytes per wall-clock second, input in the page cache. MB per
  CPU-second counts user + system time of all threads: on an idle machine with N cores,
  bzt-envelope's wall-clock rate approaches N times its per-CPU-second rate.
- Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'),
  $(openssl version), $(rustc --version).
- Load average before / after: ${load_before} / ${load_after}. Above the core count, other
  work shared the cores and the wall-clock figures understate both tools.
MD
cat "$out"
