#!/usr/bin/env bash
# Unary Check measured as an outside SRE would: h2load (a C HTTP/2 client, not ours) on core 1,
# each server on core 0 with one tokio worker thread, and three servers loaded in turn in the
# same run:
#   bare  the bare tonic echo built apart from iysgate (load-tests/echo: its own crate, lock
#         file and release profile, default allocator, no code of ours): the floor;
#   echo  `iysgate echo-server` (the same echo inside our binary: our build, allocator, stack);
#   check `iysgate demo`, Check of an allowed phone.
# For each: requests/s, the server's CPU µs per call (/proc/PID/stat), p50/p99 (h2load's
# per-request log), errors, and how busy each side's core was: a figure whose generator was
# busier than its server is marked, since then the client may be the limit.
#
# Then Filter per server core: one chunk of FILTER_PHONES (default 10 000, 0 = skip) packed
# phones per call (mostly unknown numbers, so mostly denied), 4 connections × 4 streams, with
# each answer form (`rejections`: list, codes, none): phones/s and phones per server CPU second.
#
# Run: bash load-tests/compare-h2load.sh [duration_s=10] [shapes="4x32 8x64 1x1"]
#      ROUNDS=N alternates the servers N times and prints medians (ratios: median per round);
#      IYSGATE_BIN=path measures that binary instead of building this tree.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
SHAPES=${2:-"4x32 8x64 1x1"}
ROUNDS=${ROUNDS:-3}
RECORDS=${RECORDS:-1000000}
SEED=2026
TARGET=${CARGO_TARGET_DIR:-$PWD/target}

if ! command -v h2load >/dev/null; then
  echo "== installing nghttp2-client (h2load)"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get install -y -q nghttp2-client >/dev/null
fi
/usr/bin/python3 -c 'import grpc' 2>/dev/null || { echo "python3-grpcio is needed (apt-get install python3-grpcio)" >&2; exit 1; }

# IYSGATE_BIN=path measures a binary built elsewhere (another profile, an older commit).
if [ -n "${IYSGATE_BIN:-}" ]; then BIN=$IYSGATE_BIN; else
  cargo build --release --quiet --features dev-tools
  BIN=$TARGET/release/iysgate
fi
(cd load-tests/echo && CARGO_TARGET_DIR=$TARGET/echo-baseline cargo build --release --quiet)
BARE=$TARGET/echo-baseline/release/iysgate-echo-baseline
if command -v taskset >/dev/null; then SERVER_PIN="taskset -c 0"; LOAD_CPU=1; else SERVER_PIN=""; LOAD_CPU=""; fi
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null || true' EXIT

TOKIO_WORKER_THREADS=1 $SERVER_PIN "$BARE" 127.0.0.1:50062 > "$out/bare.log" 2>&1 &
bare_pid=$!
IYSGATE_WORKER_THREADS=1 $SERVER_PIN "$BIN" echo-server --listen 127.0.0.1:50064 > "$out/echo.log" 2>&1 &
echo_pid=$!
IYSGATE_WORKER_THREADS=1 $SERVER_PIN "$BIN" demo --evidence-file "$out/evidence.log" --records "$RECORDS" --seed $SEED \
  --listen 127.0.0.1:50063 --metrics-listen off --panel-listen off --log warn > "$out/demo.log" 2>&1 &
check_pid=$!
for _ in $(seq 900); do grep -q 'IYSGATE_API_KEY=' "$out/demo.log" 2>/dev/null && break; sleep 0.1; done
key=$(grep -o 'iysk_[0-9a-f]*' "$out/demo.log" | head -1)
phone=$(grep -oP "Allowed: .*'\K\+90[0-9]+" "$out/demo.log" | head -1)
[ -n "$key" ] && [ -n "$phone" ] || { cat "$out/demo.log"; echo "the demo did not start" >&2; exit 1; }
sleep 1

run() { # label url pid shape [header]
  local c=${4%x*} m=${4#*x}
  /usr/bin/python3 load-tests/h2grpc.py --label "$1" --url "$2" --pid "$3" -c "$c" -m "$m" -D "$DURATION" \
    --recipient "$phone" ${LOAD_CPU:+--pin $LOAD_CPU} ${5:+--header "$5"}
}
for shape in $SHAPES; do
  for round in $(seq "$ROUNDS"); do
    run bare "http://127.0.0.1:50062/iysgate.loadtest.v1.Echo/Check" $bare_pid "$shape" > "$out/bare.$shape.$round.json"
    run echo "http://127.0.0.1:50064/iysgate.loadtest.v1.Echo/Check" $echo_pid "$shape" > "$out/echo.$shape.$round.json"
    run check "http://127.0.0.1:50063/iysgate.v1.ConsentCheck/Check" $check_pid "$shape" "x-api-key:$key" > "$out/check.$shape.$round.json"
  done
done

FILTER_PHONES=${FILTER_PHONES:-10000}
if [ "$FILTER_PHONES" -gt 0 ]; then
  for form in list codes none; do
    for round in $(seq "$ROUNDS"); do
      /usr/bin/python3 load-tests/h2grpc.py --label "filter-$form" --url "http://127.0.0.1:50063/iysgate.v1.ConsentCheck/Filter" \
        --pid $check_pid -c 4 -m 4 -D "$DURATION" --filter "$FILTER_PHONES" --rejections $form \
        ${LOAD_CPU:+--pin $LOAD_CPU} --header "x-api-key:$key" > "$out/filter-$form.$round.json"
    done
  done
fi

/usr/bin/python3 - "$out" "$ROUNDS" "$SHAPES" "$FILTER_PHONES" <<'PY'
import json, statistics, sys
out, rounds, shapes = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()
servers = ("bare", "echo", "check")
print(f"h2load, servers on core 0 with one worker thread, h2load on core 1; median of {rounds} rounds")
print(f"{'shape':7}{'server':7}{'req/s':>10}{'µs CPU/call':>13}{'p50 µs':>9}{'p99 µs':>9}{'errors':>8}{'srv busy':>9}{'gen busy':>9}")
for shape in shapes:
    runs = {s: [json.load(open(f"{out}/{s}.{shape}.{r}.json")) for r in range(1, rounds + 1)] for s in servers}
    med = lambda s, k: statistics.median(x[k] for x in runs[s])
    for s in servers:
        flag = " (generator busier)" if med(s, "client_core_busy") > med(s, "server_core_busy") else ""
        print(f"{shape:7}{s:7}{med(s, 'requests_per_s'):>10.0f}{med(s, 'server_us_per_call'):>13.1f}"
              f"{med(s, 'p50_us'):>9.0f}{med(s, 'p99_us'):>9.0f}{sum(x['errors'] for x in runs[s]):>8}"
              f"{med(s, 'server_core_busy'):>9.2f}{med(s, 'client_core_busy'):>9.2f}{flag}")
    ratio = lambda a, b, k: statistics.median(x[k] / y[k] for x, y in zip(runs[a], runs[b]))
    print(f"{shape:7}check ÷ bare: throughput {ratio('check', 'bare', 'requests_per_s'):.2f}, "
          f"CPU per call {ratio('check', 'bare', 'server_us_per_call'):.2f}, "
          f"p50 +{med('check', 'p50_us') - med('bare', 'p50_us'):.0f} µs; "
          f"echo-server ÷ bare: throughput {ratio('echo', 'bare', 'requests_per_s'):.2f}")
phones = int(sys.argv[4])
if phones:
    print(f"Filter, one chunk of {phones} packed phones per call, 4 × 4 streams; median of {rounds} rounds")
    print(f"{'answer':8}{'calls/s':>9}{'phones/s':>12}{'phones/CPU s':>14}{'answer B':>10}{'srv busy':>9}{'gen busy':>9}{'errors':>8}")
    for form in ("list", "codes", "none"):
        runs = [json.load(open(f"{out}/filter-{form}.{r}.json")) for r in range(1, rounds + 1)]
        med = lambda k: statistics.median(x[k] for x in runs)
        flag = " (generator busier)" if med("client_core_busy") > med("server_core_busy") else ""
        print(f"{form:8}{med('requests_per_s'):>9.0f}{med('items_per_s'):>12.0f}{med('items_per_server_cpu_s'):>14.0f}"
              f"{med('reply_bytes'):>10.0f}{med('server_core_busy'):>9.2f}{med('client_core_busy'):>9.2f}"
              f"{sum(x['errors'] for x in runs):>8}{flag}")
PY
