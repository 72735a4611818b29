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
#      H2LOAD=1 overloads with h2load instead (a C client, 4 connections × 256 streams of
#      unary Check, on core 1) while a light probe of ours (`iysgate load --rate`, 1
#      connection) measures what a caller sees: its answered p50/p99 and refusals by code.
#      h2load itself sees only HTTP status (200 for every gRPC answer, refusals included), so
#      the refusal rate over all calls is the server's shed counter over h2load's requests.
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
# IYSGATE_BIN=path runs that binary (a dev-tools release build) instead of building this tree.
if [ -n "${IYSGATE_BIN:-}" ]; then BIN=$IYSGATE_BIN; else
  cargo build --release --quiet --features dev-tools
  BIN=${CARGO_TARGET_DIR:-target}/release/iysgate
fi
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
shed_sum() { curl -s http://127.0.0.1:9466/metrics | awk '/^iysgate_shed_total/ {s += $NF} END {print s + 0}'; }
if [ "${H2LOAD:-0}" = 1 ]; then
  command -v h2load >/dev/null || { sudo apt-get install -y -qq nghttp2-client >/dev/null || apt-get install -y -qq nghttp2-client >/dev/null; }
  # One Check of a demo phone as a gRPC frame (the body h2load sends on every stream).
  python3 - "$out/check.bin" <<'PY'
import sys
sys.path.insert(0, "load-tests")
from h2grpc import check_request, frame
open(sys.argv[1], "wb").write(frame(check_request(600001, "+905321234567")))
PY
  secs=${DURATION%s}
  before=$(shed_sum)
  $LOAD_PIN h2load -c 4 -m 256 -t 1 -D "$secs" -d "$out/check.bin" -H 'content-type: application/grpc' \
    -H 'te: trailers' -H "x-api-key: $key" http://127.0.0.1:50056/iysgate.v1.ConsentCheck/Check > "$out/h2load.txt" 2>&1 &
  h2=$!
  sleep 1
  echo "probe (1 connection, 200 calls/s, alongside h2load 4 × 256):"
  IYSGATE_API_KEY=$key $LOAD_PIN $BIN load --addr http://127.0.0.1:50056 --duration "$((secs - 2))s" \
    --connections 1 --in-flight 16 --rate 200 --records "$RECORDS" --seed $SEED --quiet
  wait $h2
  after=$(shed_sum)
  total=$(awk '/^requests:/ {print $2}' "$out/h2load.txt")
  grep -E '^(finished in|requests:|status codes:)' "$out/h2load.txt" | sed 's/^/  h2load: /'
  awk -v b="$before" -v a="$after" -v t="$total" 'BEGIN {printf "  server shed %d of h2load'"'"'s %d calls = %.1f %%\n", a - b, t, t ? 100 * (a - b) / t : 0}'
  echo "  server shed by reason: $(shed)"
  exit 0
fi
for inflight in 8 64 256; do
  IYSGATE_API_KEY=$key $LOAD_PIN $BIN load --addr http://127.0.0.1:50056 --duration "$DURATION" \
    --connections 4 --in-flight $inflight --records "$RECORDS" --seed $SEED --quiet
  echo "  server shed so far: $(shed)"
done
echo "CheckBatch of 10 000, 4 × 100 in flight:"
IYSGATE_API_KEY=$key $LOAD_PIN $BIN load --addr http://127.0.0.1:50056 --duration "$DURATION" \
  --connections 4 --in-flight 100 --batch 10000 --records "$RECORDS" --seed $SEED --quiet
echo "  server shed so far: $(shed)"
