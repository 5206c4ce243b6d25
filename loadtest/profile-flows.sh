#!/usr/bin/env bash
# Where the broker's CPU goes during login flows:
#   loadtest/profile-flows.sh [MEASURE_S] [OUT_DIR]
# Runs `bzt-load flows` (one node, memory store) with the broker pinned to CPU
# $BZT_BROKER_CPUS (default 0) and the load generator to $BZT_LOAD_CPUS
# (default 1), records the broker with `perf record` (leaf frames, 999 Hz)
# for its whole life, and prints the share of samples per group of symbols
# and the top symbols. Needs perf. BZT_BIN=<path> profiles another broker
# binary (e.g. an older build) with this load generator.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
measure=${1:-5}
out=${2:-$(mktemp -d /tmp/bzt-profile.XXXXXX)}
mkdir -p "$out"
command -v perf >/dev/null || { echo "perf is required" >&2; exit 1; }
CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
  cargo build --release --quiet -p bzt --bin bzt -p bzt-loadtest --bin bzt-load
bin=${BZT_BIN:-$root/target/release/bzt}
ulimit -n 65536 2>/dev/null || true
taskset -c "${BZT_LOAD_CPUS:-1}" target/release/bzt-load --out "$out" --ref-seconds 1 \
  --bzt-bin "$bin" --broker-cpus "${BZT_BROKER_CPUS:-0}" \
  flows --rates 250,1000 --warm-s 1 --measure-s "$measure" >"$out/flows.stdout" 2>"$out/flows.log" &
load=$!
broker=""
for _ in $(seq 600); do
  broker=$(pgrep -P "$load" -x bzt || true)
  [ -n "$broker" ] && break
  sleep 0.05
done
[ -n "$broker" ] || { echo "no broker started: see $out/flows.log" >&2; wait "$load"; exit 1; }
perf record -q -F 999 -p "$broker" -o "$out/perf.data" 2>"$out/perf.log" &
perf_pid=$!
wait "$load"
wait "$perf_pid" || true
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
    } else if (line ~ /sm2_field|sm2_point|sm2_verify|bzt_crypto/) g = "SM2 verify (bzt_crypto)"
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
grep -E '^\| (open|closed)' "$out/flows.md" || true
