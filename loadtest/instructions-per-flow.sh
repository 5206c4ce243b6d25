#!/usr/bin/env bash
# Instructions per login flow of the broker, counted by callgrind:
#   loadtest/instructions-per-flow.sh [BZT_BIN] [OUT_DIR]
# CPU time per flow (bzt-load) is the figure that counts, but on a busy
# host two runs of one binary can differ by 10%. Instruction counts do not
# depend on what else the machine does, so they can tell a change of 1-2%
# apart where time cannot. They count the broker's own code and libraries
# only, not the kernel's work on its behalf (system calls, TCP): a change
# that saves system calls shows in time, not here.
#
# Runs `bzt-load flows` (one embedded node; BZT_SCENARIO=cluster: 3 nodes +
# Redis, all counted, or BZT_NODES of them) with each node under `valgrind --tool=callgrind`, at
# an open-loop rate low enough for it (BZT_RATE, default 40/s). After a
# warm-up it dumps (zeroing the counters), counts for BZT_COUNT_S seconds
# (default 20), dumps again and divides by the sessions the nodes created meanwhile
# (their `bzt_sessions_created_total`). The nodes are pinned to CPU
# BZT_BROKER_CPUS (default 0), so they run the runtime the timed runs do.
# Prints the total only: in these runs callgrind put nearly all of a
# serving node's instructions under the thread's entry function
# (`__rust_begin_short_backtrace`; why was not found), so
# `callgrind_annotate` cannot say where they went; loadtest/profile-flows.sh
# can. Needs valgrind.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
command -v valgrind >/dev/null || { echo "valgrind is required" >&2; exit 1; }
bin=${1:-$root/target/release/bzt}
out=${2:-$(mktemp -d /tmp/bzt-instructions.XXXXXX)}
mkdir -p "$out"
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
rate=${BZT_RATE:-40}
count_s=${BZT_COUNT_S:-20}
scenario=${BZT_SCENARIO:-flows}
case "$scenario" in
  flows) nodes=1; args=(flows) ;;
  cluster) nodes=${BZT_NODES:-3}; args=(cluster --nodes "$nodes") ;;
  *) echo "BZT_SCENARIO is flows or cluster" >&2; exit 2 ;;
esac
# One CPU, as in the timed runs: the node runs its one-thread runtime.
broker_cpus=${BZT_BROKER_CPUS:-0}
unset BZT_RATE BZT_COUNT_S BZT_SCENARIO BZT_NODES BZT_BROKER_CPUS
# Built every time (quick when fresh), so neither is older than the source.
cargo build --release --quiet -p bzt-loadtest --bin bzt-load
[ -n "${1:-}" ] || cargo build --release --quiet -p bzt --bin bzt
# bzt-load starts "the broker binary" with its arguments: this wrapper
# starts it under callgrind instead.
wrapper=$out/bzt-under-callgrind
cat >"$wrapper" <<EOF
#!/bin/sh
exec valgrind --tool=callgrind --callgrind-out-file=$out/callgrind.%p $bin "\$@"
EOF
chmod +x "$wrapper"
# The warm-up covers valgrind's slow start; the open-loop phase outlasts
# the count. The closed loop that follows is cut short by the exit below.
warm=$((count_s / 2 + 20))
target/release/bzt-load --out "$out" --ref-seconds 1 --bzt-bin "$wrapper" \
  --broker-cpus "$broker_cpus" "${args[@]}" \
  --rates "$rate" --warm-s "$warm" --measure-s "$((count_s + 20))" >"$out/load.stdout" 2>"$out/load.log" &
load=$!
trap 'kill $load 2>/dev/null || true' EXIT

# The nodes: valgrind processes running the broker, and their ports.
pids=()
for _ in $(seq 600); do
  mapfile -t pids < <(pgrep -f "valgrind.*$out/callgrind" || true)
  [ "${#pids[@]}" -ge "$nodes" ] && break
  sleep 0.2
done
[ "${#pids[@]}" -ge "$nodes" ] || { echo "the nodes did not start: $out/load.log" >&2; exit 1; }
ports() {
  for p in "${pids[@]}"; do
    ss -ltnpH 2>/dev/null | grep "pid=$p," | awk '{print $4}' | sed 's/.*://' | head -1
  done
}
# Sessions created on every node so far; fails rather than count a node
# whose metrics did not answer as zero.
created() {
  local total=0 page
  for port in $(ports); do
    page=$(curl -fsS --retry 5 --retry-all-errors --max-time 20 "http://127.0.0.1:$port/metrics") ||
      { echo "no metrics from the node on port $port" >&2; return 1; }
    n=$(awk '/^bzt_sessions_created_total/ {s += $NF} END {print s + 0}' <<<"$page")
    total=$((total + ${n%.*}))
  done
  echo "$total"
}
# Wait until every node is serving, then past the warm-up.
for _ in $(seq 600); do
  [ "$(ports | wc -l)" -ge "$nodes" ] && [ "$(created 2>/dev/null || echo 0)" -gt 0 ] && break
  sleep 0.5
done
sleep $((warm / 2))
before=$(created)
# A dump zeroes the counters: the first one closes the warm-up (part 1),
# the second holds the counted window (part 2).
for p in "${pids[@]}"; do callgrind_control -d "$p" >/dev/null 2>&1; done
sleep "$count_s"
for p in "${pids[@]}"; do callgrind_control -d "$p" >/dev/null 2>&1; done
after=$(created)
sleep 2
flows=$((after - before))
instructions=$(for f in "$out"/callgrind.*.2; do
  callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}'
done | awk '{s += $1} END {print s}')
{
  echo "broker: $bin"
  echo "scenario: $scenario ($nodes node(s)), open loop $rate/s, counted ${count_s} s"
  echo "sessions created while counting: $flows"
  echo "instructions (all nodes): $instructions"
  awk -v i="$instructions" -v f="$flows" 'BEGIN {printf "instructions per flow: %.0f\n", i / f}'
} | tee "$out/instructions.txt"
