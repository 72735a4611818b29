#!/usr/bin/env bash
# Above capacity: is the excess shed fast, and do the answered calls keep their latency?
# 1. unary Check, 4 connections × 8, 64 and 256 calls in flight (up to 1 024);
# 2. CheckBatch of 10 000 recipients, 4 connections × 100 in flight (400 at once).
# Each line reports all calls and the answered ones alone (p50/p99), errors by code
# (RESOURCE_EXHAUSTED = shed), then the server's shed counters by reason: `queue_delay`
# (the call waited past --max-queue-delay before its work began), `capacity`
# (--max-in-flight), `key_capacity`, `connection`.
#
# The generator needs one core to offer ~85 k calls/s, as much as the server answers on its
# core, so a true overload needs a slower server: where the cgroup v1 cpu controller is
# writable (root), the server gets SERVER_CPU_PCT % of its core (default 40, in 5 ms periods).
#
# Run: bash load-tests/overload.sh [duration=10s] [max_in_flight=4096]
#      MAX_QUEUE_DELAY=0ms turns the queue-delay shedder off (the "before" of the comparison).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10s}
LIMIT=${2:-4096}
CPU_PCT=${SERVER_CPU_PCT:-40}
CG=/sys/fs/cgroup/cpu/iysgate-overload
limit_cpu() { # pid
  if mkdir -p "$CG" 2>/dev/null && echo 5000 > "$CG/cpu.cfs_period_us" && echo $((50 * CPU_PCT)) > "$CG/cpu.cfs_quota_us"; then
    echo "$1" > "$CG/cgroup.procs"; echo "(server limited to $CPU_PCT % of a core)"
  else
    echo "(no writable cgroup cpu controller: server on a whole core, the overload is the generator's)"
  fi
}
RECORDS=${RECORDS:-1000000}
SEED=2026
cargo build --release --quiet --features dev-tools
BIN=${CARGO_TARGET_DIR:-target}/release/iysgate
if command -v taskset >/dev/null; then SERVER_PIN="taskset -c 0"; LOAD_PIN="taskset -c 1"; else SERVER_PIN=""; LOAD_PIN=""; fi
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null || true; rmdir "$CG" 2>/dev/null || true' EXIT
$SERVER_PIN $BIN demo --evidence-file "$out/evidence.log" --records "$RECORDS" --seed $SEED --listen 127.0.0.1:50056 \
  --metrics-listen 127.0.0.1:9466 --panel-listen off --log warn --max-in-flight "$LIMIT" \
  --max-queue-delay "${MAX_QUEUE_DELAY:-100ms}" ${SERVER_ARGS:-} > "$out/demo.log" 2>&1 &
pid=$!
for _ in $(seq 600); do grep -q 'IYSGATE_API_KEY=' "$out/demo.log" 2>/dev/null && break; sleep 0.1; done
limit_cpu $pid
key=$(grep -o 'iysk_[0-9a-f]*' "$out/demo.log" | head -1)
shed() { curl -s http://127.0.0.1:9466/metrics | grep -E '^iysgate_shed_total' | tr '\n' ' '; echo; }
for inflight in 8 64 256; do
  IYSGATE_API_KEY=$key $LOAD_PIN $BIN load --addr http://127.0.0.1:50056 --duration "$DURATION" \
    --connections 4 --in-flight $inflight --records "$RECORDS" --seed $SEED --quiet
  echo "  server shed so far: $(shed)"
done
echo "CheckBatch of 10 000, 4 × 100 in flight:"
IYSGATE_API_KEY=$key $LOAD_PIN $BIN load --addr http://127.0.0.1:50056 --duration "$DURATION" \
  --connections 4 --in-flight 100 --batch 10000 --records "$RECORDS" --seed $SEED --quiet
echo "  server shed so far: $(shed)"
