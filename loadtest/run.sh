#!/usr/bin/env bash
# Load test of the bzt broker: loadtest/run.sh <quick|flows|cluster|idle|conversation|cosign> [extra bzt-load args]
# Builds the broker and the load generator in release mode, raises the open-file
# limit, runs the scenario and writes loadtest/results/<scenario>.{json,md,svg}.
set -euo pipefail
cd "$(dirname "$0")/.."
scenario="${1:-quick}"
shift || true
case "$scenario" in
  quick|flows|cluster|idle|conversation|cosign) ;;
  *) echo "usage: $0 <quick|flows|cluster|idle|conversation|cosign> [args]" >&2; exit 2 ;;
esac
cargo build --release --bin bzt --bin bzt-load
# Idle sockets need two descriptors per socket on one machine (client + broker).
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ "$scenario" = cluster ] && ! command -v redis-server >/dev/null; then
  echo "cluster needs redis-server (apt-get install redis-server)" >&2; exit 1
fi
extra=()
if [ "$scenario" = quick ]; then extra=(--ref-seconds 1); fi
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
exec target/release/bzt-load --out loadtest/results "${extra[@]}" "$scenario" "${scenario_args[@]}"
