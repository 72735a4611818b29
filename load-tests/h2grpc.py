#!/usr/bin/python3
"""Drives one unary gRPC method with h2load (Debian nghttp2-client, a C HTTP/2 load tool) and
measures what an outside SRE would: requests/s, the server's CPU seconds per call (from
/proc/PID/stat around the run), the generator's own CPU, p50/p99 from h2load's per-request log,
and errors. h2load counts HTTP status only, so one call is first made with Python grpcio and
its grpc-status must be OK.

    h2grpc.py --url http://127.0.0.1:50053/iysgate.v1.ConsentCheck/Check --pid PID \
        --brand 600001 --recipient +905371736356 [--header x-api-key:KEY] \
        [-c 4] [-m 32] [-D 10] [--pin 1]

Prints one JSON object. The request is a CheckRequest (MESAJ, BIREYSEL, commercial) framed as
gRPC frames it: a zero byte, its length in 4 bytes big-endian, the protobuf bytes.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def check_request(brand, recipient, channel=2, recipient_type=1):
    """CheckRequest{brand_code=1, recipient=2, channel=3, recipient_type=4} by hand."""
    text = recipient.encode()
    body = (b"\x08" + varint(brand) + b"\x12" + varint(len(text)) + text
            + b"\x18" + varint(channel) + b"\x20" + varint(recipient_type))
    return body


def filter_request(brand, phones, rejections, channel=2, recipient_type=1):
    """FilterRequest{brand_code=1, channel=2, recipient_type=3, phones=7 (packed), rejections=9}."""
    packed = b"".join(varint(p) for p in phones)
    body = (b"\x08" + varint(brand) + b"\x10" + varint(channel) + b"\x18" + varint(recipient_type)
            + b"\x3a" + varint(len(packed)) + packed)
    if rejections:
        body += b"\x48" + varint(rejections)
    return body


def frame(message):
    return b"\x00" + len(message).to_bytes(4, "big") + message


def cpu_seconds(pid):
    """utime + stime of a process, in seconds (fields 14 and 15 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def grpc_status_ok(url, message, headers):
    """One call through grpcio: raises unless the server answers grpc-status OK."""
    import grpc
    parts = urllib.parse.urlsplit(url)
    with grpc.insecure_channel(parts.netloc) as channel:
        call = channel.unary_unary(parts.path, request_serializer=None, response_deserializer=None)
        reply = call(message, metadata=[(k.lower(), v) for k, v in headers], timeout=5)
        return len(reply)


def grpc_stream_ok(url, message, headers):
    """One Filter call of one chunk through grpcio: the answer's size, or an exception."""
    import grpc
    parts = urllib.parse.urlsplit(url)
    with grpc.insecure_channel(parts.netloc) as channel:
        call = channel.stream_stream(parts.path, request_serializer=None, response_deserializer=None)
        replies = list(call(iter([message]), metadata=[(k.lower(), v) for k, v in headers], timeout=5))
        return sum(len(r) for r in replies)


def percentile(sorted_values, q):
    if not sorted_values:
        return 0
    i = min(len(sorted_values) - 1, max(0, int(round(q * (len(sorted_values) - 1)))))
    return sorted_values[i]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--pid", type=int, required=True, help="the server process (for its CPU)")
    ap.add_argument("--brand", type=int, default=600001)
    ap.add_argument("--recipient", default="+905321234567")
    ap.add_argument("--header", action="append", default=[], help="NAME:VALUE")
    ap.add_argument("-c", "--connections", type=int, default=4)
    ap.add_argument("-m", "--streams", type=int, default=32, help="max concurrent streams per connection")
    ap.add_argument("-D", "--duration", type=int, default=10, help="seconds")
    ap.add_argument("--warm-up", type=int, default=2, help="seconds of load before measuring")
    ap.add_argument("--pin", help="CPU list for h2load (taskset -c)")
    ap.add_argument("--label", default="")
    ap.add_argument("--filter", type=int, default=0, metavar="N",
                    help="call Filter with one chunk of N packed phones instead of Check")
    ap.add_argument("--rejections", choices=("list", "codes", "none"), default="list",
                    help="the Filter answer's form (FilterRequest.rejections)")
    args = ap.parse_args()

    headers = [tuple(h.split(":", 1)) for h in args.header]
    if args.filter:
        # Phones spread over the 905xx range, seeded: mostly unknown (denied), as a list is.
        import random
        rng = random.Random(2026)
        phones = [905_000_000_000 + rng.randrange(1_000_000_000) for _ in range(args.filter)]
        form = {"list": 0, "codes": 1, "none": 2}[args.rejections]
        message = filter_request(args.brand, phones, form)
        reply_bytes = grpc_stream_ok(args.url, message, headers)
    else:
        message = check_request(args.brand, args.recipient)
        reply_bytes = grpc_status_ok(args.url, message, headers)

    work = tempfile.mkdtemp(prefix="h2grpc-")
    body = os.path.join(work, "body")
    with open(body, "wb") as f:
        f.write(frame(message))
    log = os.path.join(work, "requests.log")
    cmd = ["h2load", "-c", str(args.connections), "-m", str(args.streams), "-t", "1",
           "-D", str(args.duration), "--warm-up-time", f"{args.warm_up}s",
           "-d", body, "-H", "content-type: application/grpc", "-H", "te: trailers",
           f"--log-file={log}"]
    for name, value in headers:
        cmd += ["-H", f"{name}: {value}"]
    cmd.append(args.url)
    if args.pin:
        cmd = ["taskset", "-c", args.pin] + cmd

    # The server's CPU over the measured window only: h2load warms up first, so the counter
    # is read when the warm-up ends (the duration is wall time after it).
    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(args.warm_up)
    server_start = cpu_seconds(args.pid)
    wall_start = time.monotonic()
    out, _ = proc.communicate()
    wall = time.monotonic() - wall_start
    server_cpu = cpu_seconds(args.pid) - server_start
    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = ((after_children.ru_utime - before_children.ru_utime)
                  + (after_children.ru_stime - before_children.ru_stime))
    if proc.returncode != 0:
        print(out, file=sys.stderr)
        sys.exit(f"h2load failed ({proc.returncode})")

    latencies, statuses = [], {}
    with open(log) as f:
        for line in f:
            cols = line.split("\t")
            if len(cols) < 3:
                continue
            statuses[cols[1]] = statuses.get(cols[1], 0) + 1
            latencies.append(int(cols[2]))
    latencies.sort()
    rps = None
    for line in out.splitlines():
        if line.startswith("finished in"):
            # "finished in 10.00s, 41234.50 req/s, 3.11MB/s"
            rps = float(line.split(",")[1].split()[0])
    ok = statuses.get("200", 0)
    # h2load's "finished in" excludes the warm-up; the log holds the measured requests only.
    per_call = server_cpu / ok if ok else None
    print(json.dumps({
        "label": args.label,
        "connections": args.connections,
        "streams": args.streams,
        "requests_per_s": rps,
        "answered": ok,
        "errors": sum(n for s, n in statuses.items() if s != "200"),
        "statuses": statuses,
        "p50_us": percentile(latencies, 0.50),
        "p99_us": percentile(latencies, 0.99),
        "mean_us": round(statistics.mean(latencies)) if latencies else 0,
        "server_cpu_s": round(server_cpu, 3),
        "server_us_per_call": round(per_call * 1e6, 2) if per_call else None,
        "server_core_busy": round(server_cpu / wall, 3) if wall else None,
        "client_cpu_s": round(client_cpu, 3),
        # The generator ran the warm-up too: its share over the whole run.
        "client_core_busy": round(client_cpu / (wall + args.warm_up), 3),
        "reply_bytes": reply_bytes,
        "items_per_call": args.filter or 1,
        "items_per_s": round(ok * (args.filter or 1) / wall) if wall else None,
        "items_per_server_cpu_s": round(ok * (args.filter or 1) / server_cpu) if server_cpu else None,
    }))


if __name__ == "__main__":
    main()
