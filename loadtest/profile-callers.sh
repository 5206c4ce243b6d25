#!/usr/bin/env bash
# Where the broker's CPU goes, by caller: loadtest/profile-callers.sh [MEASURE_S] [OUT_DIR]
#
# profile-flows.sh shows leaf functions, and the broker's leaf profile is flat
# (no function above 4%). This one builds the broker with frame pointers (in
# target/frame-pointers, so the usual release build is left alone), records
# call graphs (`perf record -g`) while `bzt-load` runs, and prints for the
# broker's own functions and the libraries they call the share of samples
# that have each one on the stack (inclusive), which is what points at a
# caller: e.g. a `format!` that is cheap per call and made often.
#
# BZT_SCENARIO=flows (one node, memory store; default) or cluster (3 nodes +
# Redis, recorded together); BZT_RATES sets the open-loop rates (default 200:
# mostly the closed loop); BZT_MATCH is a regular expression of the frames to
# list (default: bzt, serde, redis, hyper, tokio, tracing and friends).
# Needs perf and python3; the load generator is target/release/bzt-load
# (built here if missing).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
measure=${1:-4}
out=${2:-$(mktemp -d /tmp/bzt-callers.XXXXXX)}
mkdir -p "$out"
command -v perf >/dev/null || { echo "perf is required" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 is required" >&2; exit 1; }
scenario=${BZT_SCENARIO:-flows}
case "$scenario" in
  flows) nodes=1 ;;
  cluster) nodes=3 ;;
  *) echo "BZT_SCENARIO is flows or cluster" >&2; exit 2 ;;
esac
rates=${BZT_RATES:-200}
match=${BZT_MATCH:-'bzt|serde|redis::|hyper::proto|tokio_tungstenite|tracing|metrics|uuid|getrandom|Timestamp|sm3'}
[ -x target/release/bzt-load ] || cargo build --release --quiet -p bzt-loadtest --bin bzt-load
CARGO_TARGET_DIR=target/frame-pointers RUSTFLAGS="-C force-frame-pointers=yes" \
  CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
  cargo build --release --quiet -p bzt --bin bzt
bin=$root/target/frame-pointers/release/bzt
unset BZT_SCENARIO BZT_RATES BZT_MATCH
ulimit -n 65536 2>/dev/null || true
taskset -c 1 target/release/bzt-load --out "$out" --ref-seconds 1 --bzt-bin "$bin" --broker-cpus 0 \
  "$scenario" --rates "$rates" --warm-s 1 --measure-s "$measure" >"$out/load.stdout" 2>"$out/load.log" &
load=$!
brokers=""
for _ in $(seq 2400); do
  brokers=$(pgrep -d, -P "$load" -x bzt || true)
  [ "$(echo "$brokers" | tr , '\n' | grep -c .)" -ge "$nodes" ] && break
  sleep 0.05
done
[ -n "$brokers" ] || { echo "no broker started: see $out/load.log" >&2; wait "$load"; exit 1; }
perf record -q -F 999 -g -p "$brokers" -o "$out/perf.data" 2>"$out/perf.log" &
perf_pid=$!
wait "$load"
wait "$perf_pid" || true
perf script -i "$out/perf.data" 2>/dev/null >"$out/stacks.txt"
python3 - "$out/stacks.txt" "$match" <<'EOF'
import collections, re, sys
path, match = sys.argv[1], re.compile(sys.argv[2])
stacks, cur = [], []
for line in open(path):
    if not line.strip():
        if cur:
            stacks.append(cur)
        cur = []
    elif line[0] in ' \t':
        parts = line.strip().split(' ', 1)
        if len(parts) == 2:
            cur.append(re.sub(r'\+0x[0-9a-f]+ \(.*\)$', '', parts[1]))
if cur:
    stacks.append(cur)
inclusive = collections.Counter()
for s in stacks:
    for f in set(s):
        inclusive[f] += 1
print(f"== {len(stacks)} samples; share of samples with the frame on the stack ==")
shown = 0
for f, n in inclusive.most_common():
    if match.search(f):
        print(f"{100 * n / len(stacks):6.1f}%  {f[:160]}")
        shown += 1
        if shown == 120:
            break
EOF
echo "== flows report =="
grep -E '^\| (open|closed)' "$out/$scenario.md" || true
echo "(perf data and stacks in $out)"
