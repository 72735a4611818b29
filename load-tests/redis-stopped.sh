#!/usr/bin/env bash
# Does the check path depend on Redis? A replica (`serve --redis-url`) fed by the sync worker
# from the mock İYS is loaded with unary Checks while Redis runs, then again after Redis and
# the worker are stopped. The replica answers from its in-memory index either way; it only
# stops confirming freshness, so this run sets --max-staleness 10m (past it, ALLOWs become
# UNAVAILABLE by design, rule 7). Its own Redis on port 6391; server on core 0, generator on 1.
#
# Run: bash load-tests/redis-stopped.sh [duration=10s] [rounds=2]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10s}
ROUNDS=${2:-2}
SEEDED=200000
cargo build --release --quiet --features dev-tools
BIN=${CARGO_TARGET_DIR:-target}/release/iysgate
if command -v taskset >/dev/null; then SERVER_PIN="taskset -c 0"; LOAD_PIN="taskset -c 1"; else SERVER_PIN=""; LOAD_PIN=""; fi
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null || true' EXIT
REDIS=redis://127.0.0.1:6391

redis-server --port 6391 --save '' --appendonly no > "$out/redis.log" 2>&1 &
redis_pid=$!
$BIN mock-iys --listen 127.0.0.1:8091 --seed $SEEDED --hold-back 0s --no-rate-limits --log warn > "$out/mock.log" 2>&1 &
sleep 1
IYSGATE_IYS_PASSWORD=mock $BIN sync --iys-url http://127.0.0.1:8091 --iys-username mock \
  --brand 700000:700001 --redis-url $REDIS --redis-prefix lt --interval 1s \
  --metrics-listen off --panel-listen off --log warn > "$out/sync.log" 2>&1 &
sync_pid=$!
read -r key flag <<< "$($BIN keygen --name lt --brands 700001 | awk '/^secret/ {s=$NF} /^flag/ {sub(/^flag: *--client /, ""); gsub(/\x27/, ""); f=$0} END {print s, f}')"
$SERVER_PIN $BIN serve --evidence-file "$out/evidence.log" --redis-url $REDIS --redis-prefix lt --client "$flag" \
  --listen 127.0.0.1:50057 --metrics-listen off --panel-listen off --max-staleness 10m --log warn > "$out/serve.log" 2>&1 &
# Half the calls ask about seeded numbers (ALLOW), half about numbers İYS does not hold.
{ seq -f '+90532%07g' 0 $((SEEDED / 4 - 1)); seq -f '+90555%07g' 0 $((SEEDED / 4 - 1)); } > "$out/recipients.txt"
last=$(printf '+90532%07d' $((SEEDED - 1)))
for _ in $(seq 300); do
  IYSGATE_API_KEY=$key $BIN check --addr http://127.0.0.1:50057 --brand 700001 --channel mesaj "$last" 2>/dev/null | grep -q ALLOW && break
  sleep 0.5
done
load() {
  IYSGATE_API_KEY=$key $LOAD_PIN $BIN load --addr http://127.0.0.1:50057 --brand 700001 \
    --recipients-file "$out/recipients.txt" --duration "$DURATION" --connections 2 \
    --in-flight 32 --quiet --json > "$1"
}
for r in $(seq "$ROUNDS"); do load "$out/up.$r.json"; done
kill $sync_pid; wait $sync_pid 2>/dev/null || true
kill $redis_pid; wait $redis_pid 2>/dev/null || true
redis-cli -p 6391 ping >/dev/null 2>&1 && { echo "Redis still answering" >&2; exit 1; }
for r in $(seq "$ROUNDS"); do load "$out/down.$r.json"; done

python3 - "$out" "$ROUNDS" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
up = [json.load(open(f"{out}/up.{r}.json")) for r in range(1, rounds + 1)]
down = [json.load(open(f"{out}/down.{r}.json")) for r in range(1, rounds + 1)]
print(f"median of {rounds} runs each{'':4}{'Redis up':>12}{'Redis down':>12}{'ratio':>8}")
for label, field in [("requests/s", "per_second"), ("p50_us", "p50_us"), ("p99_us", "p99_us"), ("p999_us", "p999_us")]:
    u = statistics.median(x[field] for x in up)
    d = statistics.median(x[field] for x in down)
    print(f"{label:30}{u:>12.0f}{d:>12.0f}{d / max(u, 1):>8.2f}")
print(f"{'errors':30}{sum(sum(x['errors'].values()) for x in up):>12}{sum(sum(x['errors'].values()) for x in down):>12}")
PY
