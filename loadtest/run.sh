#!/usr/bin/env bash
# Load test of the bzt broker:
#   loadtest/run.sh [--pin] <quick|flows|cluster|idle|conversation> [extra bzt-load args]
# Builds the broker and the load generator in release mode (with line tables,
# for perf), raises the open-file limit, runs the scenario and writes
# loadtest/results/<scenario>.{json,md,svg}.
#
# --pin: with at least two cores, the broker (and Redis, for cluster) runs on
# CPU $BZT_BROKER_CPUS (default 0) and the load generator, with its OpenSSL
# and verify references, on CPU $BZT_LOAD_CPUS (default 1), via taskset.
# Every report gives its figures as ratios to `openssl speed` measured in the
# same run (absolute figures move with whatever else runs on the machine),
# and prints OpenSSL's own SM2 and P-256 lines.
set -euo pipefail
cd "$(dirname "$0")/.."
pin=0
args=()
for a in "$@"; do
  if [ "$a" = --pin ]; then pin=1; else args+=("$a"); fi
done
set -- "${args[@]}"
scenario="${1:-quick}"
shift || true
case "$scenario" in
  quick|flows|cluster|idle|conversation) ;;
  *) echo "usage: $0 [--pin] <quick|flows|cluster|idle|conversation> [args]" >&2; exit 2 ;;
esac
# The broker is the root package, the load generator another workspace member:
# name each package with its binary.
CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
  cargo build --release -p bzt --bin bzt -p bzt-loadtest --bin bzt-load
# Idle sockets need two descriptors per socket on one machine (client + broker).
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ "$scenario" = cluster ] && ! command -v redis-server >/dev/null; then
  echo "cluster needs redis-server (apt-get install redis-server)" >&2; exit 1
fi
extra=()
launcher=()
if [ "$scenario" = quick ]; then extra+=(--ref-seconds 1); fi
if [ "$pin" = 1 ]; then
  if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
    broker_cpus="${BZT_BROKER_CPUS:-0}"
    load_cpus="${BZT_LOAD_CPUS:-1}"
    echo "pinned: broker on CPU $broker_cpus, load generator on CPU $load_cpus" >&2
    extra+=(--broker-cpus "$broker_cpus")
    launcher=(taskset -c "$load_cpus")
  else
    echo "--pin needs at least 2 cores and taskset (util-linux): running unpinned" >&2
  fi
fi
scenario_args=("$@")
# 100,000 idle sockets need ~101,000 descriptors in each of the broker and
# the load generator; where the hard limit is lower (a container without
# CAP_SYS_RESOURCE), hold as many as it allows and say so.
if [ "$scenario" = idle ] && [[ " $* " != *" --n "* ]]; then
  limit=$(ulimit -n)
  n=100000
  if [ "$limit" -lt 101000 ]; then
    n=$((limit - 1000))
    echo "open-file limit is $limit: holding $n idle sockets instead of 100,000" >&2
  fi
  scenario_args+=(--n "$n")
fi
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
exec "${launcher[@]}" target/release/bzt-load --out loadtest/results "${extra[@]}" "$scenario" "${scenario_args[@]}"
