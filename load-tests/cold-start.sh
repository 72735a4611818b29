#!/usr/bin/env bash
# The `cold-start` scenario: a replica (`serve --redis-url`) started against Redis holding N
# records (default 1 000 000; the target is 10 M in ≤ 10 s): seconds from the process start to
# SERVING on grpc.health.v1, and records loaded per second; then, for a replica that served
# from the index checkpoint, how long its full records took to load behind it, and its RSS at
# SERVING and after. The records and their checkpoint
# are written first by `examples/cold_start.rs` (as the sync leader would), then a leader
# heartbeat, so the loaded data counts as fresh. Uses the Redis at REDIS_URL (default local);
# its keys (prefix iysgate-coldstart) are deleted at the end. 10 M records need ~3 GB of Redis.
#
# Run: bash load-tests/cold-start.sh [records=1000000]. KEEP=1 leaves the records in Redis
# afterwards; REUSE=1 starts the replica against records a KEEP=1 run left (no writing), so
# the start can be measured several times. BIN=path starts that binary as the replica instead
# of this tree's release build (to compare two builds on the same records).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
PREFIX=iysgate-coldstart
cargo build --release --quiet --features dev-tools --example cold_start
cargo build --release --quiet --features dev-tools
target=${CARGO_TARGET_DIR:-target}
BIN=${BIN:-$target/release/iysgate}
out=$(mktemp -d)
cleanup() {
  # The replica drains before it exits: waited for, so the next run's port is free.
  kill $(jobs -p) 2>/dev/null; wait 2>/dev/null || true
  while ss -ltn | grep -q ':50059 '; do sleep 0.2; done
  if [ "${KEEP:-0}" != 1 ]; then
    redis-cli -u "$REDIS_URL" --scan --pattern "$PREFIX*" | xargs -r -n 1000 redis-cli -u "$REDIS_URL" del > /dev/null
  fi
}
trap cleanup EXIT
if [ "${REUSE:-0}" != 1 ]; then
  echo "writing $N records and a checkpoint (examples/cold_start.rs)..."
  IYSGATE_COLDSTART_KEEP=1 IYSGATE_COLDSTART_WRITE_ONLY=1 "$target/release/examples/cold_start" "$N"
fi
# A live leader's heartbeats (one a second), so the data counts as fresh however long the
# load takes.
(while true; do redis-cli -u "$REDIS_URL" XADD "$PREFIX:changes" '*' hb "$(date +%s%6N)" > /dev/null; sleep 1; done) &
read -r _ flag <<< "$($BIN keygen --name cold --brands 600001 | awk '/^secret/ {s=$NF} /^flag/ {sub(/^flag: *--client /, ""); gsub(/\x27/, ""); f=$0} END {print s, f}')"
# A replica of an earlier run still draining would answer this run's health checks.
while ss -ltn | grep -q ':50059 '; do sleep 0.2; done
started=$(date +%s%3N)
$BIN serve --evidence-file "$out/evidence.log" --redis-url "$REDIS_URL" --redis-prefix "$PREFIX" --client "$flag" \
  --listen 127.0.0.1:50059 --metrics-listen off --panel-listen off --log info > "$out/serve.log" 2>&1 &
pid=$!
$BIN load --scenario cold-start --addr http://127.0.0.1:50059 --started-unix-ms "$started" \
  --records "$N" --duration 300s --quiet
grep -q 'serving' "$out/serve.log" || { cat "$out/serve.log"; echo "the replica measured is not this run's"; exit 1; }
rss() { awk '/VmRSS/ {printf "%.0f MiB", $2/1024}' /proc/$pid/status; }
echo "replica RSS at SERVING: $(rss)"
# A replica that started from the index checkpoint loads the full records after SERVING
# (for GetConsent and the latest-event rule); one that loaded them first has no such line.
if grep -q "loaded the index checkpoint" "$out/serve.log"; then
  for _ in $(seq 600); do
    grep -q "full records loaded" "$out/serve.log" && break
    sleep 0.5
  done
  took=$(sed 's/\x1b\[[0-9;]*m//g' "$out/serve.log" | grep -o 'full records loaded.*' | grep -o 'took_ms=[0-9]*' | cut -d= -f2)
  echo "full records loaded ${took:-?} ms after the index (SERVING meanwhile); replica RSS then: $(rss)"
else
  echo "started from the full records (no index checkpoint in Redis, or an older binary)"
fi
