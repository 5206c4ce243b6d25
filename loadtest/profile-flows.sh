#!/usr/bin/env bash
# Where the broker's CPU goes during login flows:
#   loadtest/profile-flows.sh [MEASURE_S] [OUT_DIR]
# Runs `bzt-load flows` (one node, memory store; or, with
# BZT_SCENARIO=cluster, `bzt-load cluster`: 3 nodes + Redis, all three nodes
# recorded together) with the broker pinned to CPU
# $BZT_BROKER_CPUS (default 0) and the load generator to $BZT_LOAD_CPUS
# (default 1), records the broker with `perf record` (leaf frames, 999 Hz)
# for its whole life, and prints the share of samples per group of symbols
# and the top symbols. Needs perf. BZT_BIN=<path> profiles another broker
# binary (e.g. an older build) with this load generator; BZT_LOAD=<path> uses
# that load generator and builds nothing; BZT_RATES sets the open-loop rates.
#
# BZT_CALLERS=1 profiles by caller instead: the broker is built with frame
# pointers (in target/frame-pointers, leaving the usual release build alone),
# recorded with call graphs (`perf record -g`), and loadtest/callers.py prints
# the share of samples with each of the broker's functions on the stack
# (BZT_MATCH: a regular expression of the frames to list). Needs python3.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
measure=${1:-5}
out=${2:-$(mktemp -d /tmp/bzt-profile.XXXXXX)}
mkdir -p "$out"
command -v perf >/dev/null || { echo "perf is required" >&2; exit 1; }
callers=${BZT_CALLERS:-}
if [ -z "${BZT_LOAD:-}" ]; then
  CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
    cargo build --release --quiet -p bzt --bin bzt -p bzt-loadtest --bin bzt-load
fi
bin=${BZT_BIN:-$root/target/release/bzt}
graph=()
if [ -n "$callers" ]; then
  command -v python3 >/dev/null || { echo "python3 is required for BZT_CALLERS" >&2; exit 1; }
  if [ -z "${BZT_BIN:-}" ]; then
    CARGO_TARGET_DIR=target/frame-pointers RUSTFLAGS="-C force-frame-pointers=yes" \
      CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
      cargo build --release --quiet -p bzt --bin bzt
    bin=$root/target/frame-pointers/release/bzt
  fi
  graph=(-g)
fi
match=${BZT_MATCH:-}
load_bin=${BZT_LOAD:-target/release/bzt-load}
scenario=${BZT_SCENARIO:-flows}
case "$scenario" in
  flows) nodes=1 ;;
  cluster) nodes=3 ;;
  *) echo "BZT_SCENARIO is flows or cluster" >&2; exit 2 ;;
esac
rates=${BZT_RATES:-250,1000}
load_cpus=${BZT_LOAD_CPUS:-1}
broker_cpus=${BZT_BROKER_CPUS:-0}
# The broker reads BZT_* variables as configuration: keep this script's own
# knobs from reaching it.
unset BZT_BIN BZT_LOAD BZT_SCENARIO BZT_RATES BZT_LOAD_CPUS BZT_BROKER_CPUS BZT_CALLERS BZT_MATCH
ulimit -n 65536 2>/dev/null || true
taskset -c "$load_cpus" "$load_bin" --out "$out" --ref-seconds 1 \
  --bzt-bin "$bin" --broker-cpus "$broker_cpus" \
  "$scenario" --rates "$rates" --warm-s 1 --measure-s "$measure" >"$out/flows.stdout" 2>"$out/flows.log" &
load=$!
brokers=""
comm=$(basename "$bin" | cut -c1-15) # the kernel's process name: 15 characters
for _ in $(seq 2400); do
  brokers=$(pgrep -d, -P "$load" -x "$comm" || true)
  [ "$(echo "$brokers" | tr , '\n' | grep -c .)" -ge "$nodes" ] && break
  sleep 0.05
done
[ -n "$brokers" ] || { echo "no broker started: see $out/flows.log" >&2; wait "$load"; exit 1; }
perf record -q -F 999 "${graph[@]}" -p "$brokers" -o "$out/perf.data" 2>"$out/perf.log" &
perf_pid=$!
wait "$load"
wait "$perf_pid" || true
if [ -n "$callers" ]; then
  perf script -i "$out/perf.data" 2>/dev/null >"$out/stacks.txt"
  python3 "$root/loadtest/callers.py" "$out/stacks.txt" ${match:+"$match"}
  echo "== flows report =="
  grep -E '^\| (open|closed)' "$out/$scenario.md" || true
  exit 0
fi
perf report -i "$out/perf.data" --no-children --sort dso,sym --stdio 2>/dev/null |
  grep -E '^ +[0-9.]+%' >"$out/symbols.txt"
# Group leaf symbols into the parts of a flow.
awk '
  { pct = $1; sub(/%/, "", pct); line = $0
    g = "other (binary)"
    if (line ~ /\[kernel/) {
      if (line ~ /fdatasync|ext4|jbd2|blk_|nvme|virtio_blk|iomap|writeback|filemap|xfs_/) g = "kernel: audit file sync"
      else if (line ~ /tcp|ip_|skb|sock|net_|inet|__dev_|loopback|napi|netif|nf_/) g = "kernel: TCP loopback"
      else if (line ~ /sched|futex|epoll|switch|wake|schedule|pick_|enqueue|dequeue|update_curr|ttwu/) g = "kernel: scheduler, futex, epoll"
      else g = "kernel: other (syscalls, memory)"
    } else if (line ~ /bzt::store::redis/) g = "Redis store (bzt)"
    else if (line ~ /redis::|combine::/) g = "Redis client (redis-rs)"
    else if (line ~ /sm2_field|sm2_point|sm2_verify|bzt_crypto/) g = "SM2 verify (bzt_crypto)"
    else if (line ~ /fiat|primeorder|primefield|sm2::|crypto_bigint|elliptic_curve/) g = "sm2 crate arithmetic"
    else if (line ~ /sm3|Sm3|compress/) g = "SM3"
    else if (line ~ /sha2|Sha256|sha256/) g = "SHA-256 (cache keys, HMAC)"
    else if (line ~ /malloc|free|realloc|_int_|tcache|calloc|cfree/) g = "malloc/free"
    else if (line ~ /memcpy|memmove|memset|memcmp|strlen/) g = "memcpy and friends"
    else if (line ~ /serde_json|serde::|ryu|itoa/) g = "JSON"
    else if (line ~ /hyper|http::|httparse|axum|tower|matchit/) g = "HTTP: hyper, axum, tower"
    else if (line ~ /tungstenite|websocket/) g = "WebSocket"
    else if (line ~ /tokio|mio/) g = "tokio runtime"
    else if (line ~ /libc\.so|libc-|pthread|__GI_|syscall/) g = "libc other"
    share[g] += pct }
  END { for (g in share) printf "%6.1f%%  %s\n", share[g], g }' "$out/symbols.txt" | sort -rn >"$out/groups.txt"
echo "== broker CPU by part ($(grep -c . "$out/symbols.txt") symbols, perf data in $out) =="
cat "$out/groups.txt"
echo "== top symbols =="
head -25 "$out/symbols.txt"
echo "== flows report =="
grep -E '^\| (open|closed)' "$out/$scenario.md" || true
