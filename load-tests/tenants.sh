#!/usr/bin/env bash
# The `mixed-tenants` scenario: a steady tenant at RATE calls/s, alone and then beside a tenant
# flooding with 2 × 64 calls in flight: under a quota (QUOTA decisions/s) and backing off as
# told, under the quota and ignoring it, and without a quota, to show what the quota buys.
# Server on core 0, generator on core 1.
#
# Run: bash load-tests/tenants.sh [duration=10s] [rate=5000] [quota=5000]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10s}
RATE=${2:-5000}
QUOTA=${3:-5000}
RECORDS=${RECORDS:-1000000}
SEED=2026
cargo build --release --quiet --features dev-tools
BIN=${CARGO_TARGET_DIR:-target}/release/iysgate
if command -v taskset >/dev/null; then SERVER_PIN="taskset -c 0"; LOAD_PIN="taskset -c 1"; else SERVER_PIN=""; LOAD_PIN=""; fi
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null || true' EXIT

key_and_flag() { # name [quota] -> "secret flag"
  local args=(keygen --name "$1" --brands 600001)
  [ -n "${2:-}" ] && args+=(--quota "$2")
  $BIN "${args[@]}" | awk '/^secret/ {s=$NF} /^flag/ {sub(/^flag: *--client /, ""); gsub(/\x27/, ""); f=$0} END {print s, f}'
}
read -r steady_key steady_flag <<< "$(key_and_flag steady)"
read -r limited_key limited_flag <<< "$(key_and_flag flood-limited "$QUOTA")"
read -r free_key free_flag <<< "$(key_and_flag flood-unlimited)"

$SERVER_PIN $BIN demo --evidence-file "$out/evidence.log" --records "$RECORDS" --seed $SEED --listen 127.0.0.1:50055 \
  --metrics-listen off --panel-listen off --log warn --client "$steady_flag" --client "$limited_flag" \
  --client "$free_flag" > "$out/demo.log" 2>&1 &
pid=$!
for _ in $(seq 600); do grep -q 'IYSGATE_API_KEY=' "$out/demo.log" 2>/dev/null && break; sleep 0.1; done
flood() { # title key [extra flags]
  echo "== $1"
  IYSGATE_API_KEY=$steady_key IYSGATE_FLOOD_API_KEY=$2 $LOAD_PIN $BIN load \
    --scenario mixed-tenants --addr http://127.0.0.1:50055 --rate "$RATE" --connections 2 \
    --duration "$DURATION" --flood-connections 2 --flood-in-flight 64 \
    --records "$RECORDS" --seed $SEED --quiet "${@:3}"
}
flood "flooding tenant under a quota of $QUOTA/s, backing off as its RetryInfo says" "$limited_key" --flood-honours-retry
flood "flooding tenant under a quota of $QUOTA/s, ignoring RetryInfo (abusive)" "$limited_key"
flood "flooding tenant without a quota" "$free_key"
