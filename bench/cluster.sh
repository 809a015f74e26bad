#!/usr/bin/env bash
# cluster.sh: the cost of the cluster's forward path, measured in one run: the same frontend
# answers `echo.echo` itself (standalone path) and forwards `room.echo.echo` over NATS to a
# backend (cluster path), each loaded the same way with pitaya-bench.
#
#   bench/cluster.sh [OUT_DIR]        (default target/bench-cluster)
#
# Needs nats-server and etcd (cargo xtask test installs them), python3 (to find free ports),
# target/dist/pitaya-host, target/dist/pitaya-bench and
# target/wasm32-wasip2/release/echo.wasm (cargo xtask build, then
# cargo build --profile dist -p pitaya-host -p pitaya-bench).
# Everything listens on 127.0.0.1; each load runs LOAD_SECS (default 10) seconds; every process
# it started is stopped when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."

# PROFILE: the cargo profile whose binaries are measured, `dist` (fat LTO, what the figures
# in docs/performance.md use) unless set; PROFILE=release measures the plain release build.
PROFILE=${PROFILE:-dist}

OUT=${1:-target/bench-cluster}
LOAD_SECS=${LOAD_SECS:-10}
CONNS=${CONNS:-50}
BENCH=target/$PROFILE/pitaya-bench
HOST=target/$PROFILE/pitaya-host
ECHO=target/wasm32-wasip2/release/echo.wasm
NATS=$(command -v nats-server || echo /usr/sbin/nats-server)
for f in "$BENCH" "$HOST" "$ECHO" "$NATS"; do
    [[ -e $f ]] || { echo "missing $f" >&2; exit 1; }
done
rm -rf "$OUT"
mkdir -p "$OUT"

PIDS=()
# Hosts first (the last started), so they leave the cluster while NATS and etcd still run.
cleanup() { for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill "${PIDS[i]}" 2>/dev/null || true; wait "${PIDS[i]}" 2>/dev/null || true; done; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# wait_for FILE PATTERN: waits (at most 20 s) for a line matching PATTERN in FILE and prints it.
wait_for() {
    for _ in $(seq 200); do
        if grep -m1 -E "$2" "$1" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "no line matching $2 in $1" >&2
    exit 1
}
# cpu_ticks PID: user + system CPU time of a process, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

NATS_PORT=$(free_port)
ETCD_PORT=$(free_port)
PEER_PORT=$(free_port)
"$NATS" -a 127.0.0.1 -p "$NATS_PORT" >"$OUT/nats.log" 2>&1 &
NATS_PID=$!
PIDS+=("$NATS_PID")
etcd --data-dir "$OUT/etcd" --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$PEER_PORT" \
    --initial-cluster "default=http://127.0.0.1:$PEER_PORT" >"$OUT/etcd.log" 2>&1 &
PIDS+=("$!")
wait_for "$OUT/etcd.log" 'ready to serve client requests' >/dev/null

CLUSTER=(--cluster --nats "nats://127.0.0.1:$NATS_PORT" --etcd "http://127.0.0.1:$ETCD_PORT")
"$HOST" serve "${CLUSTER[@]}" --server-type room "$ECHO" >"$OUT/backend.stdout" 2>"$OUT/backend.stderr" &
BACKEND_PID=$!
PIDS+=("$BACKEND_PID")
wait_for "$OUT/backend.stdout" '^cluster://' >/dev/null
"$HOST" serve "${CLUSTER[@]}" --frontend --server-type connector --tcp 127.0.0.1:0 "$ECHO" \
    >"$OUT/frontend.stdout" 2>"$OUT/frontend.stderr" &
FRONTEND_PID=$!
PIDS+=("$FRONTEND_PID")
URL=$(wait_for "$OUT/frontend.stdout" '^tcp://')
wait_for "$OUT/frontend.stdout" '^cluster://' >/dev/null

{
    date -u; nproc; uptime
    echo "HEAD $(git rev-parse HEAD)"
    "$NATS" --version; etcd --version | head -1
} >"$OUT/machine.txt"

TICK=$(getconf CLK_TCK)
printf '%-16s %10s %9s %9s %14s %22s\n' route req/s p50_us p99_us frontend_us/req backend+nats_us/req | tee "$OUT/summary.txt"
for route in echo.echo room.echo.echo; do
    b0=$(cpu_ticks "$BACKEND_PID") n0=$(cpu_ticks "$NATS_PID")
    echo "+ $BENCH load --url $URL --connections $CONNS --route $route --duration $LOAD_SECS --server-pid $FRONTEND_PID --json" >>"$OUT/commands.txt"
    "$BENCH" load --url "$URL" --connections "$CONNS" --route "$route" --body '{"a":1}' \
        --duration "$LOAD_SECS" --server-pid "$FRONTEND_PID" --json >"$OUT/$route.json"
    b1=$(cpu_ticks "$BACKEND_PID") n1=$(cpu_ticks "$NATS_PID")
    python3 - "$OUT/$route.json" "$route" "$(( (b1 - b0) + (n1 - n0) ))" "$TICK" <<'EOF' | tee -a "$OUT/summary.txt"
import json, sys
report = json.load(open(sys.argv[1]))
route, ticks, tick = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ok = max(report["ok"], 1)
others = ticks / tick / ok * 1e6
lat = report["latency"]
print(f'{route:<16} {report["requests_per_sec"]:>10.0f} {lat["p50_us"]:>9.0f} {lat["p99_us"]:>9.0f} '
      f'{report["server"]["cpu_us_per_request"]:>14.1f} {others:>22.1f}')
EOF
done
echo "results in $OUT"
