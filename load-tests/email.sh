#!/usr/bin/env bash
# The `email` scenario: lists of RECIPIENTS (default 1 M, then 10 M) through Filter against the
# demo, as packed phones, e-mails as recipient_lines and e-mails as repeated strings; total
# time, recipients/s end to end (generator included) and the server's peak memory. Server on
# core 0, generator on core 1, as in compare.sh.
#
# Run: bash load-tests/email.sh [recipients...]   (default: 1000000 10000000)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=("${@:-1000000 10000000}")
read -r -a SIZES <<< "${SIZES[*]}"
RECORDS=${RECORDS:-1000000}
STREAMS=${STREAMS:-2}
CHUNK=${CHUNK:-10000}
SEED=2026
cargo build --release --quiet --features dev-tools
BIN=${CARGO_TARGET_DIR:-target}/release/iysgate
if command -v taskset >/dev/null; then SERVER_PIN="taskset -c 0"; LOAD_PIN="taskset -c 1"; else SERVER_PIN=""; LOAD_PIN=""; fi
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null || true' EXIT

for kind in phones emails email-strings; do
  for n in "${SIZES[@]}"; do
    # A fresh server per run, so its peak memory is this run's.
    $SERVER_PIN $BIN demo --evidence-file "$out/evidence.log" --records "$RECORDS" --seed $SEED --listen 127.0.0.1:50054 \
      --metrics-listen off --panel-listen off --log warn > "$out/demo.log" 2>&1 &
    pid=$!
    for _ in $(seq 600); do grep -q 'IYSGATE_API_KEY=' "$out/demo.log" 2>/dev/null && break; sleep 0.1; done
    key=$(grep -o 'iysk_[0-9a-f]*' "$out/demo.log" | head -1)
    IYSGATE_API_KEY=$key $LOAD_PIN $BIN load --scenario email --list "$kind" --recipients "$n" \
      --connections "$STREAMS" --chunk "$CHUNK" --addr http://127.0.0.1:50054 \
      --records "$RECORDS" --seed $SEED --server-pid "$pid" --quiet
    kill $pid; wait $pid 2>/dev/null || true
  done
done
