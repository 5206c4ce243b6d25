#!/usr/bin/env bash
# SM2 verify speed of the broker against OpenSSL, on one pinned core, in one run:
#   loadtest/sm2-bench.sh [SECONDS] [--rounds R] [--callgrind]
# R rounds (default 3) of `openssl speed -seconds S sm2 ecdsap256` then
# sm2-bench (every verify path the broker has had, S seconds each), all under
# `taskset -c $BZT_BENCH_CPU` (default: the last CPU); each path's ratio is
# to the OpenSSL SM2 verify rate of its own round, reported as the median and
# range over the rounds. Both sides divide by their own CPU time (OpenSSL by
# its user time, sm2-bench by its thread's CPU time), so time the core spent
# on other processes counts in neither; caches and the sibling hyperthread
# are still shared, hence the rounds.
# --callgrind also counts instructions per verify of each path with
# valgrind (repeatable under load: use it to compare versions).
# Writes loadtest/results/sm2-verify.md.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
seconds=3
rounds=3
callgrind=0
while [ $# -gt 0 ]; do
  case "$1" in
    --callgrind) callgrind=1 ;;
    --rounds) rounds=$2; shift ;;
    *[!0-9]*) echo "usage: $0 [SECONDS] [--rounds R] [--callgrind]" >&2; exit 2 ;;
    *) seconds=$1 ;;
  esac
  shift
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

# Rounds of (OpenSSL, every path): each path's ratio is to the OpenSSL
# reading just before it; the table gives the median and the range.
lines=""
all_results=""
for round in $(seq "$rounds"); do
  echo "round $round: openssl speed" >&2
  l=$(speed_lines)
  echo "$l" >&2
  lines+="$l"$'\n'
  sm2=$(verify_of SM2 <<<"$l")
  p256=$(verify_of nistp256 <<<"$l")
  echo "round $round: sm2-bench" >&2
  r=$("${pin[@]}" "$bench" --seconds "$seconds")
  echo "$r" >&2
  all_results+=$(sed "s/\$/ openssl_sm2=$sm2 openssl_p256=$p256/" <<<"$r")$'\n'
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# "median (min–max)" of a column over the rounds, for one path.
summary() {
  sed -n "s/.*path=$1 .*$2=\([^ ]*\).*/\1/p" <<<"$all_results" | sort -g |
    awk '{ v[NR] = $1 } END { if (NR == 0) { print "—"; exit }
      m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
      if (NR == 1) printf "%.2f", m; else printf "%.2f (%.2f–%.2f)", m, v[1], v[NR] }'
}
# Per round: this path's rate over the OpenSSL verify rate of the same round.
ratios() {
  awk -v p="path=$1" '$0 ~ p" " {
      for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
      printf "path=%s ratio=%.4f p256=%.4f\n", f["path"], f["verify_per_s"] / f["openssl_sm2"], f["openssl_p256"] / f["openssl_sm2"] }' <<<"$all_results"
}
ratio_summary() {
  local r
  r=$(ratios "$1")
  sed -n "s/.*ratio=\([^ ]*\).*/\1/p" <<<"$r" | sort -g |
    awk '{ v[NR] = $1 } END { if (NR == 0) { print "—"; exit }
      m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
      if (NR == 1) printf "%.2f×", m; else printf "%.2f× (%.2f–%.2f)", m, v[1], v[NR] }'
}
p256_summary() {
  ratios kept | sed -n "s/.*p256=\([^ ]*\).*/\1/p" | sort -g |
    awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
      printf "%.2f×", m }'
}
openssl_summary() {
  awk -v m="$1" '$0 ~ m { print $NF }' <<<"$lines" | sort -g |
    awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
      printf "%.1f", m }'
}

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
$(openssl version), $(rustc --version)). ${rounds} rounds of ${seconds} s per path; rates per CPU
second; load average before / after: ${load_before} / ${load_after}.

| verify path (one thread, same key, message, signature) | verifies per CPU-second, median (range) | ÷ OpenSSL SM2 verify of the same round | instructions per verify (callgrind) |
|---|---|---|---|
| broker, kept key with its table (\`sm2verify::verify\`) | $(summary kept verify_per_s) | **$(ratio_summary kept)** | $(icount kept) |
| broker, a key's first use (\`sm2verify::verify_without_table\`) | $(summary once verify_per_s) | **$(ratio_summary once)** | $(icount once) |
| before: the \`sm2\` crate's variable-time arithmetic (commit 8ff7408) | $(summary before verify_per_s) | $(ratio_summary before) | $(icount before) |
| the \`sm2\` crate's own verify (constant time) | $(summary crate verify_per_s) | $(ratio_summary crate) | $(icount crate) |
| \`openssl speed sm2\` verify | $(openssl_summary SM2) | 1.00× | — |
| \`openssl speed ecdsap256\` verify | $(openssl_summary nistp256) | $(p256_summary) | — |

OpenSSL's own lines, one pair per round:
\`\`\`
${lines%$'\n'}
\`\`\`
MD
cat "$out"
