#!/usr/bin/env bash
# SM2 verify speed of the broker against OpenSSL, on one pinned core, in one run:
#   loadtest/sm2-bench.sh [SECONDS] [--callgrind]
# Runs `openssl speed -seconds S sm2 ecdsap256`, then sm2-bench (every verify
# path the broker has had, S seconds each), then OpenSSL again, all under
# `taskset -c $BZT_BENCH_CPU` (default: the last CPU), and reports each path
# as a ratio to the mean of the two OpenSSL SM2 verify readings. Timing
# moves with whatever else runs on the machine; the ratio of two figures
# measured minutes apart on the same core moves much less.
# --callgrind also counts instructions per verify of each path with
# valgrind (repeatable under load: use it to compare versions).
# Writes loadtest/results/sm2-verify.md.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
seconds=3
callgrind=0
for a in "$@"; do
  case "$a" in
    --callgrind) callgrind=1 ;;
    *[!0-9]*) echo "usage: $0 [SECONDS] [--callgrind]" >&2; exit 2 ;;
    *) seconds=$a ;;
  esac
done
command -v openssl >/dev/null || { echo "openssl is required" >&2; exit 1; }
CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
  cargo build --release --quiet -p bzt-loadtest --bin sm2-bench
bench="$root/target/release/sm2-bench"
out="$root/loadtest/results/sm2-verify.md"
cpu="${BZT_BENCH_CPU:-$(($(nproc) - 1))}"
pin=()
if command -v taskset >/dev/null; then pin=(taskset -c "$cpu"); fi
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

speed_lines() {
  "${pin[@]}" openssl speed -seconds "$seconds" sm2 ecdsap256 2>/dev/null |
    grep -E 'bits (SM2|ecdsa \(nistp256\))'
}
verify_of() { awk -v m="$1" '$0 ~ m { print $NF }'; }

echo "openssl speed (before)" >&2
before=$(speed_lines)
echo "$before" >&2
echo "sm2-bench" >&2
results=$("${pin[@]}" "$bench" --seconds "$seconds")
echo "$results" >&2
echo "openssl speed (after)" >&2
after=$(speed_lines)
echo "$after" >&2
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

sm2_ref=$(awk -v a="$(verify_of SM2 <<<"$before")" -v b="$(verify_of SM2 <<<"$after")" \
  'BEGIN { printf "%.1f", (a + b) / 2 }')
p256_ref=$(awk -v a="$(verify_of nistp256 <<<"$before")" -v b="$(verify_of nistp256 <<<"$after")" \
  'BEGIN { printf "%.1f", (a + b) / 2 }')
field() { sed -n "s/.*path=$1 .*verify_per_s=\([^ ]*\).*/\1/p" <<<"$results"; }
ratio() { awk -v x="$1" -v r="$sm2_ref" 'BEGIN { printf "%.2f", x / r }'; }

declare -A instr
if [ "$callgrind" = 1 ]; then
  command -v valgrind >/dev/null || { echo "--callgrind needs valgrind" >&2; exit 1; }
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  # Instructions of N and 2N verifies; the difference over N leaves out setup.
  count() {
    valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.$1.$2" "$bench" --only "$1" --iters "$2" \
      >/dev/null 2>"$tmp/log.$1.$2"
    sed -n 's/^summary: \([0-9]*\).*/\1/p' "$tmp/cg.$1.$2"
  }
  for path in kept once before crate; do
    echo "callgrind $path" >&2
    a=$(count "$path" 50)
    b=$(count "$path" 100)
    instr[$path]=$(( (b - a) / 50 ))
  done
fi
icount() { if [ -n "${instr[$1]:-}" ]; then printf "%'d" "${instr[$1]}"; else echo "—"; fi; }

cat >"$out" <<MD
# SM2 verify: the broker against OpenSSL

Run by \`loadtest/sm2-bench.sh $*\` on $(date -u +%Y-%m-%dT%H:%M:%SZ), every process pinned to
CPU ${cpu} ($(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'),
$(openssl version), $(rustc --version)). Load average before / after: ${load_before} / ${load_after}.

| verify path (one thread, same key, message, signature) | verifies/s | ÷ OpenSSL SM2 verify | instructions per verify (callgrind) |
|---|---|---|---|
| broker, kept key with its table (\`sm2verify::verify\`) | $(field kept) | **$(ratio "$(field kept)")×** | $(icount kept) |
| broker, a key's first use (\`sm2verify::verify_without_table\`) | $(field once) | **$(ratio "$(field once)")×** | $(icount once) |
| before: the \`sm2\` crate's variable-time arithmetic (commit 8ff7408) | $(field before) | $(ratio "$(field before)")× | $(icount before) |
| the \`sm2\` crate's own verify (constant time) | $(field crate) | $(ratio "$(field crate)")× | $(icount crate) |
| \`openssl speed sm2\` verify, mean of before and after | ${sm2_ref} | 1.00× | — |
| \`openssl speed ecdsap256\` verify, mean | ${p256_ref} | $(ratio "$p256_ref")× | — |

OpenSSL's own lines, before and after the bench:
\`\`\`
${before}
${after}
\`\`\`
MD
cat "$out"
