#!/usr/bin/env bash
# Side by side: unary Check against the bare gRPC echo baseline and against iysgate (demo
# data), in one run, with the same pinning (server on core 0, generator on core 1), and the
# ratio table. Speed lives here, never in a test.
#
# Run: bash load-tests/compare.sh [duration=10s] [connections=2] [in_flight=32]
# RATE=N runs both in open loop at N calls/s instead (latency from the intended send time);
# ROUNDS=N alternates them N times and prints the medians (ratio: median of per-round ratios);
# SERVER_RUNTIME / LOAD_RUNTIME=current-thread choose the tokio scheduler of each side.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10s}
CONNS=${2:-2}
INFLIGHT=${3:-32}
RECORDS=${RECORDS:-1000000}
SEED=2026
RATE=${RATE:-0}
ROUNDS=${ROUNDS:-1}
# The tokio scheduler of both servers and of the generator (multi-thread or current-thread).
SERVER_RUNTIME=${SERVER_RUNTIME:-multi-thread}
LOAD_RUNTIME=${LOAD_RUNTIME:-multi-thread}
cargo build --release --quiet --features dev-tools
BIN=${CARGO_TARGET_DIR:-target}/release/iysgate
SERVER_CPU=0
LOAD_CPU=1
# taskset execs the command, so $! below is the server itself and `kill` reaches it.
if command -v taskset >/dev/null; then SERVER_PIN="taskset -c $SERVER_CPU"; LOAD_PIN="taskset -c $LOAD_CPU"; else SERVER_PIN=""; LOAD_PIN=""; fi
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null || true' EXIT

# Both servers stay up (an idle one costs nothing) and are loaded in turn, ROUNDS times, so
# drift in the machine shows up in both columns alike.
IYSGATE_RUNTIME=$SERVER_RUNTIME $SERVER_PIN $BIN echo-server --listen 127.0.0.1:50052 > "$out/echo.log" 2>&1 &
IYSGATE_RUNTIME=$SERVER_RUNTIME $SERVER_PIN $BIN demo --evidence-file "$out/evidence.log" --records "$RECORDS" --seed $SEED --listen 127.0.0.1:50053 \
  --metrics-listen off --panel-listen off --log warn > "$out/demo.log" 2>&1 &
for _ in $(seq 600); do grep -q 'IYSGATE_API_KEY=' "$out/demo.log" 2>/dev/null && break; sleep 0.1; done
key=$(grep -o 'iysk_[0-9a-f]*' "$out/demo.log" | head -1)
sleep 1
load() { # target port out
  IYSGATE_RUNTIME=$LOAD_RUNTIME IYSGATE_API_KEY=$key $LOAD_PIN $BIN load --target "$1" --addr "http://127.0.0.1:$2" \
    --duration "$DURATION" --connections "$CONNS" --in-flight "$INFLIGHT" --records "$RECORDS" \
    --seed $SEED --rate "$RATE" --quiet --json > "$3"
}
for round in $(seq "$ROUNDS"); do
  load echo 50052 "$out/echo.$round.json"
  load iysgate 50053 "$out/iysgate.$round.json"
done

python3 - "$out" "$ROUNDS" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
runs = [tuple(json.load(open(f"{out}/{t}.{r}.json")) for t in ("echo", "iysgate")) for r in range(1, rounds + 1)]
rows = [("requests/s", "per_second")] + [(q, q) for q in ("p50_us", "p90_us", "p99_us", "p999_us")]
if rounds > 1:
    for r, (e, i) in enumerate(runs, 1):
        print(f"round {r}: echo {e['per_second']:.0f}/s p99 {e['p99_us']} µs; iysgate {i['per_second']:.0f}/s p99 {i['p99_us']} µs; ratio {i['per_second']/e['per_second']:.2f}")
    print(f"median of {rounds} rounds:")
print(f"{'':14}{'echo':>12}{'iysgate':>12}{'ratio':>8}")
for label, field in rows:
    e = statistics.median(run[0][field] for run in runs)
    i = statistics.median(run[1][field] for run in runs)
    ratio = statistics.median(run[1][field] / max(run[0][field], 1) for run in runs)
    print(f"{label:14}{e:>12.0f}{i:>12.0f}{ratio:>8.2f}")
errors = [sum(sum(x["errors"].values()) for x in run) for run in runs]
print(f"{'errors':14}{sum(errors):>12}")
PY
