#!/usr/bin/env bash
# Redis round trips per login flow, by command and key shape:
#   loadtest/redis-round-trips.sh [BZT_BIN] [OUT_DIR]
# Runs a small `bzt-load cluster` (3 nodes, one Redis; open loop 20/s,
# closed loop 2, half max; 3 s each, no warm-up) with the broker binary
# BZT_BIN (default target/debug/bzt: counts do not depend on the build
# profile), records every command its Redis receives (`redis-cli monitor`),
# and counts the top-level ones (not those a Lua script runs). Background
# polls (the due-time queues, the webhook queue, the revocations version)
# run by time, not by flow: compare them as totals, and the rest per created
# session (`<prefix>:{s:<id>}` inserts). Needs target/debug/bzt-load
# (cargo build -p bzt-loadtest --bin bzt-load), redis-server and redis-cli.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bin=${1:-$root/target/debug/bzt}
out=${2:-$(mktemp -d /tmp/bzt-round-trips.XXXXXX)}
mkdir -p "$out"
unset BZT_BIN
./target/debug/bzt-load --out "$out" --ref-seconds 1 --bzt-bin "$bin" cluster \
  --rates 20 --warm-s 0 --measure-s 3 --concurrency 2 >"$out/stdout" 2>"$out/stderr" &
load=$!
mon=""
while kill -0 "$load" 2>/dev/null; do
  if [ -z "$mon" ]; then
    rpid=$(pgrep -P "$load" -x redis-server | head -1 || true)
    if [ -n "$rpid" ]; then
      port=$(ss -ltnpH 2>/dev/null | grep "pid=$rpid," | awk '{print $4}' | sed 's/.*://' | head -1)
      if [ -n "$port" ]; then
        redis-cli -p "$port" monitor >"$out/monitor.txt" 2>/dev/null &
        mon=$!
      fi
    fi
  fi
  sleep 0.05
done
wait "$load"
[ -n "$mon" ] && kill "$mon" 2>/dev/null || true
python3 - "$out" <<'PY'
import collections, re, sys
out = sys.argv[1]
counts = collections.Counter()
for line in open(out + "/monitor.txt", errors="replace"):
    if "[0 lua]" in line:
        continue
    parts = re.findall(r'"((?:[^"\\]|\\.)*)"', line)
    if not parts:
        continue
    cmd = parts[0].lower()
    key = parts[3] if cmd == "evalsha" and len(parts) > 3 else (parts[1] if len(parts) > 1 else "")
    key = re.sub(r'\{(s|c):[A-Za-z0-9_-]+\}', r'{\1:<id>}', key)
    key = re.sub(r'^[^{]*:', '<prefix>:', key)
    counts[(cmd, key)] += 1
sessions = counts[("ssubscribe", "<prefix>:{s:<id>}:ch")] or 1
print(f"sessions (browser subscriptions): {sessions}; top-level commands: {sum(counts.values())}")
for (cmd, key), n in sorted(counts.items(), key=lambda x: -x[1]):
    print(f"{n:7d} {n / sessions:6.2f}/session  {cmd} {key}")
PY
echo "raw: $out/monitor.txt"
