#!/usr/bin/env bash
# Across SIGTERM: does every call the server accepted get its answer? The demo serves a closed
# loop of 4 connections × 16 Checks in flight (`iysgate load`); 2 s in, the server gets SIGTERM
# (health NOT_SERVING, --shutdown-delay 500ms, GOAWAY, drain, lingering close). The load's
# errors by code say how calls ended: INTERNAL or UNKNOWN would be accepted calls cut off (the
# loss this guards against); UNAVAILABLE is a call sent after the server stopped accepting,
# which a client retries elsewhere. Three rounds, one server each.
#
# Run: bash load-tests/shutdown.sh [rounds=3]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
RECORDS=100000
SEED=2026
cargo build --release --quiet --features dev-tools
BIN=${CARGO_TARGET_DIR:-target}/release/iysgate
if command -v taskset >/dev/null; then SERVER_PIN="taskset -c 0"; LOAD_PIN="taskset -c 1"; else SERVER_PIN=""; LOAD_PIN=""; fi
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null || true' EXIT
for round in $(seq "$ROUNDS"); do
  rm -f "$out/evidence.log"
  $SERVER_PIN $BIN demo --evidence-file "$out/evidence.log" --records $RECORDS --seed $SEED \
    --listen 127.0.0.1:50057 --metrics-listen off --panel-listen off --log warn --shutdown-delay 500ms --grace 5s \
    > "$out/demo.log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do grep -q 'IYSGATE_API_KEY=' "$out/demo.log" 2>/dev/null && break; sleep 0.1; done
  key=$(grep -o 'iysk_[0-9a-f]*' "$out/demo.log" | head -1)
  IYSGATE_API_KEY=$key $LOAD_PIN $BIN load --addr http://127.0.0.1:50057 --duration 4s \
    --connections 4 --in-flight 16 --records $RECORDS --seed $SEED --quiet > "$out/load.txt" 2>&1 &
  load=$!
  sleep 2
  kill -TERM $pid
  wait $pid; status=$?
  wait $load || true
  echo "round $round: server exit $status; $(cat "$out/load.txt")"
done
