#!/usr/bin/env bash
# The `sync-burst` scenario: BURST (default 100 000) RETs arrive in the mock İYS at one instant;
# the sync worker pulls them (every INTERVAL), publishes them through Redis, and the replica
# under test applies them. Reported: the time until the first, half, 99 % and all of them
# answer DENY, and the p99 of a steady Check load (RATE/s) running throughout. Its own Redis on
# port 6392; replica on core 0; generator, worker, mock and Redis share core 1.
#
# The steady load runs DURATION (default 15s, also the time allowed for the burst), starting
# a second before the burst.
#
# Run: bash load-tests/sync-burst.sh [burst=100000] [rate=20000] [interval=1s]
set -euo pipefail
cd "$(dirname "$0")/.."
BURST=${1:-100000}
RATE=${2:-20000}
INTERVAL=${3:-1s}
SEEDED=$((BURST * 2))
cargo build --release --quiet --features dev-tools
BIN=${CARGO_TARGET_DIR:-target}/release/iysgate
if command -v taskset >/dev/null; then SERVER_PIN="taskset -c 0"; OTHER_PIN="taskset -c 1"; else SERVER_PIN=""; OTHER_PIN=""; fi
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null || true' EXIT
REDIS=redis://127.0.0.1:6392

$OTHER_PIN redis-server --port 6392 --save '' --appendonly no > "$out/redis.log" 2>&1 &
$OTHER_PIN $BIN mock-iys --listen 127.0.0.1:8092 --seed $SEEDED --hold-back 0s --no-rate-limits --log warn > "$out/mock.log" 2>&1 &
sleep 1
IYSGATE_IYS_PASSWORD=mock $OTHER_PIN $BIN sync --iys-url http://127.0.0.1:8092 --iys-username mock \
  --brand 700000:700001 --redis-url $REDIS --redis-prefix burst --interval "$INTERVAL" \
  --metrics-listen off --panel-listen off --log warn > "$out/sync.log" 2>&1 &
read -r key flag <<< "$($BIN keygen --name burst --brands 700001 | awk '/^secret/ {s=$NF} /^flag/ {sub(/^flag: *--client /, ""); gsub(/\x27/, ""); f=$0} END {print s, f}')"
$SERVER_PIN $BIN serve --evidence-file "$out/evidence.log" --redis-url $REDIS --redis-prefix burst --client "$flag" \
  --listen 127.0.0.1:50058 --metrics-listen off --panel-listen off --log warn > "$out/serve.log" 2>&1 &
# The burst turns seeded numbers 0 .. BURST-1 to RET; the steady load asks about the others
# (ALLOW) and numbers İYS does not hold.
seq -f '+90532%07g' 0 $((BURST - 1)) > "$out/targets.txt"
{ seq -f '+90532%07g' "$BURST" $((SEEDED - 1)); seq -f '+90555%07g' 0 $((BURST - 1)); } > "$out/steady.txt"
last=$(printf '+90532%07d' $((SEEDED - 1)))
for _ in $(seq 300); do
  IYSGATE_API_KEY=$key $BIN check --addr http://127.0.0.1:50058 --brand 700001 --channel mesaj "$last" 2>/dev/null | grep -q ALLOW && break
  sleep 0.5
done
IYSGATE_API_KEY=$key $OTHER_PIN $BIN load --scenario sync-burst --addr http://127.0.0.1:50058 \
  --brand 700001 --recipients-file "$out/steady.txt" --targets-file "$out/targets.txt" \
  --rate "$RATE" --connections 2 --duration "${DURATION:-15s}" --quiet \
  --trigger-url http://127.0.0.1:8092/_mock/burst \
  --trigger-body "{\"brandCode\":700001,\"count\":$BURST,\"status\":\"RET\",\"source\":\"IYS_MOBIL\"}"
