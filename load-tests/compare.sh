#!/usr/bin/env bash
# Side by side: unary Check against the bare gRPC echo baseline and against iysgate (demo
# data), in one run, with the same pinning (server on core 0, generator on core 1), and the
# ratio table. Speed lives here, never in a test.
#
# Run: bash load-tests/compare.sh [duration=10s] [connections=2] [in_flight=32]
# RATE=N runs both in open loop at N calls/s instead (latency from the intended send time).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10s}
CONNS=${2:-2}
INFLIGHT=${3:-32}
RECORDS=${RECORDS:-1000000}
SEED=2026
RATE=${RATE:-0}
cargo build --release --quiet
BIN=target/release/iysgate
SERVER_CPU=0
LOAD_CPU=1
# taskset execs the command, so $! below is the server itself and `kill` reaches it.
if command -v taskset >/dev/null; then SERVER_PIN="taskset -c $SERVER_CPU"; LOAD_PIN="taskset -c $LOAD_CPU"; else SERVER_PIN=""; LOAD_PIN=""; fi
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT

$SERVER_PIN $BIN echo-server --listen 127.0.0.1:50052 > "$out/echo.log" 2>&1 &
echo_pid=$!
sleep 1
$LOAD_PIN $BIN load --target echo --addr http://127.0.0.1:50052 --duration "$DURATION" \
  --connections "$CONNS" --in-flight "$INFLIGHT" --records "$RECORDS" --seed $SEED --rate "$RATE" --quiet --json > "$out/echo.json"
kill $echo_pid; wait $echo_pid 2>/dev/null || true

$SERVER_PIN $BIN demo --records "$RECORDS" --seed $SEED --listen 127.0.0.1:50053 \
  --metrics-listen off --log warn > "$out/demo.log" 2>&1 &
demo_pid=$!
for _ in $(seq 600); do grep -q 'IYSGATE_API_KEY=' "$out/demo.log" 2>/dev/null && break; sleep 0.1; done
key=$(grep -o 'iysk_[0-9a-f]*' "$out/demo.log" | head -1)
sleep 1
IYSGATE_API_KEY=$key $LOAD_PIN $BIN load --target iysgate --addr http://127.0.0.1:50053 \
  --duration "$DURATION" --connections "$CONNS" --in-flight "$INFLIGHT" --records "$RECORDS" \
  --seed $SEED --rate "$RATE" --quiet --json > "$out/iysgate.json"
kill $demo_pid; wait $demo_pid 2>/dev/null || true

python3 - "$out/echo.json" "$out/iysgate.json" <<'PY'
import json, sys
e, i = (json.load(open(p)) for p in sys.argv[1:3])
print(f"{'':14}{'echo':>12}{'iysgate':>12}{'ratio':>8}")
print(f"{'requests/s':14}{e['per_second']:>12.0f}{i['per_second']:>12.0f}{i['per_second']/e['per_second']:>8.2f}")
for q in ['p50_us', 'p90_us', 'p99_us', 'p999_us']:
    print(f"{q:14}{e[q]:>12}{i[q]:>12}{i[q]/max(e[q],1):>8.2f}")
print(f"{'errors':14}{sum(e['errors'].values()):>12}{sum(i['errors'].values()):>12}")
PY
