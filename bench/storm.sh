#!/usr/bin/env bash
# storm.sh: what a storm of timers costs the host, and what it leaves an echo load beside it
# (docs/performance.md, "A budget of timer fires").
#
#   bench/storm.sh [HOST_BINARY]     (default target/dist/pitaya-host)
#
# Serves echo and lab on 127.0.0.1 port 0, runs an echo load (TCP 50 x 1, 4 s), sets TIMERS
# (default 300) lab.every timers of 1 ms from a client that then leaves, measures the host's
# CPU for 5 s with nothing but the timers, and runs the echo load again. Needs
# target/dist/pitaya-bench, target/release/pitaya-cli and the echo and lab components
# (cargo xtask build; cargo build --profile dist -p pitaya-host -p pitaya-bench). The host is
# stopped when it ends. About 20 seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

HOST=${1:-target/dist/pitaya-host}
BENCH=target/dist/pitaya-bench
CLI=target/release/pitaya-cli
ECHO=target/wasm32-wasip2/release/echo.wasm
LAB=target/wasm32-wasip2/release/lab.wasm
TIMERS=${TIMERS:-300}
for f in "$HOST" "$BENCH" "$CLI" "$ECHO" "$LAB"; do
    [[ -e $f ]] || { echo "missing $f: run cargo xtask build and cargo build --profile dist -p pitaya-host -p pitaya-bench" >&2; exit 1; }
done
WORK=$(mktemp -d)
PID=
cleanup() { [[ -n $PID ]] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

"$HOST" serve --tcp 127.0.0.1:0 "$ECHO" "$LAB" >"$WORK/host.out" 2>"$WORK/host.err" &
PID=$!
url=
for _ in $(seq 100); do
    url=$(grep -m1 '^tcp://' "$WORK/host.out" || true)
    [[ -n $url ]] && break
    sleep 0.1
done
[[ -n $url ]] || { echo "the host did not print its address: $(cat "$WORK/host.err")" >&2; exit 1; }

load() {
    "$BENCH" load --url "$url" --connections 50 --route echo.echo --body '{"a":1}' --duration 4 \
        --server-pid "$PID" | grep -E "throughput|latency|cpu " | tr -s ' ' | tr '\n' ' '
    echo
}
ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }

echo "echo before the timers: $(load)"
for _ in $(seq "$TIMERS"); do echo 'request lab.every {"ms":1,"count":1000000000}'; done >"$WORK/timers.txt"
echo 'wait 0.2' >>"$WORK/timers.txt"
timeout 60 "$CLI" --connect "$url" <"$WORK/timers.txt" >"$WORK/cli.out" 2>&1 || true
echo "timers set: $(grep -c '"timer"' "$WORK/cli.out" || true) of $TIMERS"
sleep 1
before=$(ticks)
sleep 5
after=$(ticks)
echo "the timers alone: $((after - before)) clock ticks of CPU in 5 s, $(((after - before) * 100 / 500)) % of a core"
echo "echo beside the timers: $(load)"
