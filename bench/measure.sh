#!/usr/bin/env bash
# measure.sh: runs the load and idle measurements of docs/performance.md against the floor and
# pitaya-host, each figure measured the same way, and writes one JSON file per run.
#
#   bench/measure.sh [OUT_DIR]        (default target/bench-results)
#
# Needs target/dist/pitaya-host, target/dist/pitaya-bench and
# target/wasm32-wasip2/release/echo.wasm (cargo xtask build, then
# cargo build --profile dist -p pitaya-host -p pitaya-bench).
# The three are copied to OUT_DIR/bin first, so a rebuild during the run cannot change what is
# measured. Each echo load runs as ROUNDS (default 6) alternating rounds of LOAD_SECS (5 s) on
# the floor and on the host, through bench/ab.sh (one directory per shape, with its
# summary.txt of medians). Everything listens on 127.0.0.1 with port 0; every run is bounded
# (5 s loads, 20 s holds, one 120 s hold of 19,000 connections, 10 s broadcasts), and the
# servers it started are stopped by pid when it ends. About 16 minutes in all.
set -euo pipefail
cd "$(dirname "$0")/.."

# PROFILE: the cargo profile whose binaries are measured, `dist` (fat LTO, what the figures
# in docs/performance.md use) unless set; PROFILE=release measures the plain release build.
PROFILE=${PROFILE:-dist}

OUT=${1:-target/bench-results}
LOAD_SECS=${LOAD_SECS:-5}
ROUNDS=${ROUNDS:-6}
HOLD_SECS=${HOLD_SECS:-20}
IDLE_CONNS=${IDLE_CONNS:-5000}
BIG_CONNS=${BIG_CONNS:-19000}
BIG_HOLD_SECS=${BIG_HOLD_SECS:-120}
BROADCAST_SECS=${BROADCAST_SECS:-10}
BENCH=target/$PROFILE/pitaya-bench
HOST=target/$PROFILE/pitaya-host
ECHO=target/wasm32-wasip2/release/echo.wasm
LAB=target/wasm32-wasip2/release/lab.wasm
mkdir -p "$OUT"
for f in "$BENCH" "$HOST" "$ECHO" "$LAB"; do
    [[ -e $f ]] || { echo "missing $f: run cargo xtask build and cargo build --profile $PROFILE -p pitaya-host -p pitaya-bench" >&2; exit 1; }
done
mkdir -p "$OUT/bin"
cp "$BENCH" "$HOST" "$ECHO" "$LAB" "$OUT/bin/"
BENCH=$OUT/bin/pitaya-bench HOST=$OUT/bin/pitaya-host ECHO=$OUT/bin/echo.wasm LAB=$OUT/bin/lab.wasm

# start, cleanup and PIDS.
source bench/servers.sh

stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# run NAME ARGS...: runs pitaya-bench with --json into $OUT/NAME.json, echoing the command.
run() {
    local name=$1; shift
    echo "+ [$(date -u +%T)] $BENCH $* --json" | tee -a "$OUT/commands.txt"
    "$BENCH" "$@" --json >"$OUT/$name.json"
}

{
    date -u; nproc; free -h; uptime
    echo "HEAD $(git rev-parse HEAD)$(git diff --quiet HEAD -- . 2>/dev/null || echo ' (work tree has changes)')"
    ls -l --time-style=+%FT%T target/$PROFILE/pitaya-host target/wasm32-wasip2/release/echo.wasm
    sha256sum "$BENCH" "$HOST" "$ECHO"
} >"$OUT/machine.txt"

ulimit -n "$(ulimit -Hn)"

# Echo loads: alternating rounds with the floor, medians in each shape's summary.txt.
for transport in tcp ws; do
    # 1 x 64: one client that pipelines deeply, where answering its requests in a row
    # and writing their responses at once shows (since t10).
    for shape in "50 1" "500 1" "50 16" "1 64"; do
        read -r c n <<<"$shape"
        dir=$OUT/load-$transport-c$c-n$n
        echo "+ [$(date -u +%T)] ROUNDS=$ROUNDS CONNECTIONS=$c IN_FLIGHT=$n SECS=$LOAD_SECS TRANSPORT=$transport bench/ab.sh $dir" | tee -a "$OUT/commands.txt"
        ROUNDS=$ROUNDS CONNECTIONS=$c IN_FLIGHT=$n SECS=$LOAD_SECS TRANSPORT=$transport \
            BENCH=$BENCH HOST=$HOST ECHO=$ECHO bench/ab.sh "$dir"
    done
done

# Idle: fresh servers, so that the memory before the connections is the server's resting size.
for transport in tcp ws; do
    for side in floor host; do
        if [[ $side == floor ]]; then
            start "idle-floor-$transport" "$BENCH" floor --listen 127.0.0.1:0 $([[ $transport == ws ]] && echo --ws) --lifetime 900
        else
            start "idle-host-$transport" "$HOST" serve "--$transport" 127.0.0.1:0 "$ECHO"
        fi
        sleep 1
        run "idle-$transport-$side" idle --url "$URL" --connections "$IDLE_CONNS" --hold "$HOLD_SECS" \
            --heartbeat --server-pid "$PID"
        stop "$PID"
    done
done

# 19,000 idle connections: the floor held 20 s; the host held BIG_HOLD_SECS with heartbeats every
# 10 s (both ways) while the probe session sends a request every 100 ms.
for transport in tcp ws; do
    start "big-floor-$transport" "$BENCH" floor --listen 127.0.0.1:0 $([[ $transport == ws ]] && echo --ws) --lifetime 900
    sleep 1
    run "idle19k-$transport-floor" idle --url "$URL" --connections "$BIG_CONNS" --hold "$HOLD_SECS" \
        --heartbeat --server-pid "$PID" --batch 500 --connect-timeout 30
    stop "$PID"
    start "big-host-$transport" "$HOST" serve "--$transport" 127.0.0.1:0 --heartbeat 10 "$ECHO"
    sleep 1
    hold=$HOLD_SECS
    [[ $transport == tcp ]] && hold=$BIG_HOLD_SECS
    run "idle19k-$transport-host" idle --url "$URL" --connections "$BIG_CONNS" --hold "$hold" \
        --heartbeat --server-pid "$PID" --batch 500 --connect-timeout 30
    stop "$PID"
done

# Broadcast: 1,000 members of one group, the lab component pushing to all of them.
for transport in tcp ws; do
    start "broadcast-host-$transport" "$HOST" serve "--$transport" 127.0.0.1:0 "$LAB"
    sleep 1
    run "broadcast-$transport" broadcast --url "$URL" --members 1000 --duration "$BROADCAST_SECS" --server-pid "$PID"
    stop "$PID"
done

{ echo; uptime; } >>"$OUT/machine.txt"
echo "results in $OUT"
