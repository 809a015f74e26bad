#!/usr/bin/env bash
# instructions.sh: user-space instructions per echo request, counted by valgrind's callgrind,
# for the floor and for pitaya-host. Unlike CPU time on a shared 2-core machine, the count
# is the same from run to run (within about 0.5 % for the host), so it shows what a change
# to the request path saves even when that is too small for the timed loads to see. It
# counts instructions, not time: cache misses and the kernel's part (most of a request's
# cost) are not in it.
#
#   bench/instructions.sh [HOST_BINARY]     (default target/dist/pitaya-host)
#   TRANSPORT=ws bench/instructions.sh     (over WebSocket; default tcp)
#   CACHE=1 CONNECTIONS=500 REQUESTS=40000 bench/instructions.sh
#                                          (also last-level cache misses per request, from
#                                          callgrind's simulation of a 32 KiB L1 and 1 MiB
#                                          last level; no hardware counters are needed)
#
# Needs valgrind, target/dist/pitaya-bench, and target/wasm32-wasip2/release/echo.wasm
# (cargo xtask build; cargo build --profile dist -p pitaya-host -p pitaya-bench). Each server
# runs under callgrind on 127.0.0.1 port 0; warm-up requests (1,000, or 4 per connection if
# more) are not counted, then REQUESTS (default 3,000) requests over CONNECTIONS (default 10)
# connections are; the servers are stopped when it ends. About a minute.
set -euo pipefail
cd "$(dirname "$0")/.."

# PROFILE: the cargo profile whose binaries are measured, `dist` (fat LTO, what the figures
# in docs/performance.md use) unless set; PROFILE=release measures the plain release build.
PROFILE=${PROFILE:-dist}

HOST=${1:-target/$PROFILE/pitaya-host}
BENCH=target/$PROFILE/pitaya-bench
ECHO=${ECHO:-target/wasm32-wasip2/release/echo.wasm}
REQUESTS=${REQUESTS:-3000}
CONNECTIONS=${CONNECTIONS:-10}
CACHE=${CACHE:-0}
WARM_UP=$(( CONNECTIONS * 4 > 1000 ? CONNECTIONS * 4 : 1000 ))
cache_flags=()
[[ $CACHE == 1 ]] && cache_flags=(--cache-sim=yes --D1=32768,8,64 --LL=1048576,16,64)
TRANSPORT=${TRANSPORT:-tcp}
case $TRANSPORT in
    tcp) floor_flag=() ;;
    ws) floor_flag=(--ws) ;;
    *) echo "TRANSPORT must be tcp or ws, not $TRANSPORT" >&2; exit 1 ;;
esac
for f in "$HOST" "$BENCH" "$ECHO"; do
    [[ -e $f ]] || { echo "missing $f: run cargo xtask build and cargo build --profile $PROFILE -p pitaya-host -p pitaya-bench" >&2; exit 1; }
done
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
WORK=$(mktemp -d)
PID=
cleanup() { [[ -n $PID ]] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

# count NAME CMD...: runs CMD under callgrind and prints NAME's instructions per request.
count() {
    local name=$1; shift
    # JIT-compiled wasm rewrites code pages: all-non-file makes valgrind notice.
    valgrind --tool=callgrind --smc-check=all-non-file "${cache_flags[@]}" \
        --callgrind-out-file="$WORK/$name.%p" "$@" >"$WORK/$name.stdout" 2>"$WORK/$name.stderr" &
    PID=$!
    local url=
    for _ in $(seq 600); do
        url=$(grep -m1 -E "^$TRANSPORT://" "$WORK/$name.stdout" || true)
        [[ -n $url ]] && break
        sleep 0.2
    done
    [[ -n $url ]] || { echo "$name did not print its address; see $WORK/$name.stderr" >&2; exit 1; }
    # Connections opened in small batches: under valgrind the server takes them slowly.
    "$BENCH" load --url "$url" --connections "$CONNECTIONS" --requests "$WARM_UP" \
        --duration 300 --batch 50 --connect-timeout 60 >/dev/null
    callgrind_control --zero "$PID" >/dev/null 2>&1
    "$BENCH" load --url "$url" --connections "$CONNECTIONS" --requests "$REQUESTS" \
        --duration 600 --batch 50 --connect-timeout 60 --json >"$WORK/$name.json"
    callgrind_control --dump "$PID" >/dev/null 2>&1
    kill "$PID"
    wait "$PID" 2>/dev/null || true
    PID=
    python3 - "$name" "$WORK/$name.json" "$WORK"/"$name".*.1 <<'EOF'
import json, sys
name, load, dump = sys.argv[1:4]
ok = json.load(open(load))["ok"]
events = next(line.split()[1:] for line in open(dump) if line.startswith("events:"))
summary = next(line.split()[1:] for line in open(dump) if line.startswith("summary:"))
counts = dict(zip(events, map(int, summary)))
line = f"{name:6} {ok} requests  {counts['Ir']:,} instructions  {counts['Ir'] / ok:,.0f} per request"
if "DLmr" in counts:
    line += (f"  last-level misses per request: {counts['DLmr'] / ok:.2f} read,"
             f" {counts['DLmw'] / ok:.2f} write")
print(line)
EOF
}

count floor "$BENCH" floor "${floor_flag[@]}" --listen 127.0.0.1:0
count host "$HOST" serve "--$TRANSPORT" 127.0.0.1:0 "$ECHO"
