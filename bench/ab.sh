#!/usr/bin/env bash
# ab.sh: short echo loads against the floor and pitaya-host in alternation, for a steadier ratio
# than one long run each on a shared machine, where the speed of the cores drifts from minute to
# minute (docs/performance.md, run t4). Each round loads both servers, in an order that flips
# from round to round, so that drift falls on both alike; the medians of the rounds and their
# ratios are printed, with each round's own ratios and their median.
#
#   bench/ab.sh [OUT_DIR]     (default target/ab-results)
#
# ROUNDS (default 6), CONNECTIONS (50), IN_FLIGHT (1), SECS per load (5) and TRANSPORT (tcp or
# ws) are read from the environment. Needs python3, target/dist/pitaya-host,
# target/dist/pitaya-bench and target/wasm32-wasip2/release/echo.wasm (cargo xtask build, then
# cargo build --profile dist -p pitaya-host -p pitaya-bench). Both servers listen on 127.0.0.1
# port 0 and are stopped when it ends; one JSON file per load is kept in OUT_DIR, and what is
# printed is also written to OUT_DIR/summary.txt. BENCH, HOST and ECHO name other binaries to
# measure (measure.sh passes its copies).
set -euo pipefail
cd "$(dirname "$0")/.."

# PROFILE: the cargo profile whose binaries are measured, `dist` (fat LTO, what the figures
# in docs/performance.md use) unless set; PROFILE=release measures the plain release build.
PROFILE=${PROFILE:-dist}

OUT=${1:-target/ab-results}
ROUNDS=${ROUNDS:-6}
CONNECTIONS=${CONNECTIONS:-50}
IN_FLIGHT=${IN_FLIGHT:-1}
SECS=${SECS:-5}
TRANSPORT=${TRANSPORT:-tcp}
BENCH=${BENCH:-target/$PROFILE/pitaya-bench}
HOST=${HOST:-target/$PROFILE/pitaya-host}
ECHO=${ECHO:-target/wasm32-wasip2/release/echo.wasm}
for f in "$BENCH" "$HOST" "$ECHO"; do
    [[ -e $f ]] || { echo "missing $f: run cargo xtask build and cargo build --profile $PROFILE -p pitaya-host -p pitaya-bench" >&2; exit 1; }
done
case $TRANSPORT in
    tcp) floor_flag=() host_flag=(--tcp 127.0.0.1:0) ;;
    ws) floor_flag=(--ws) host_flag=(--ws 127.0.0.1:0) ;;
    *) echo "TRANSPORT must be tcp or ws, not $TRANSPORT" >&2; exit 1 ;;
esac
mkdir -p "$OUT"

# start, cleanup and PIDS.
source bench/servers.sh

start floor "$BENCH" floor --listen 127.0.0.1:0 "${floor_flag[@]}" --lifetime 3600
FLOOR_URL=$URL FLOOR_PID=$PID
start host "$HOST" serve "${host_flag[@]}" "$ECHO"
HOST_URL=$URL HOST_PID=$PID
echo "$(date -u +%T) floor $FLOOR_URL (pid $FLOOR_PID), host $HOST_URL (pid $HOST_PID);" \
    "$ROUNDS rounds of $CONNECTIONS x $IN_FLIGHT for $SECS s over $TRANSPORT"

# load SIDE ROUND: one load of the floor or the host, into OUT/SIDE-ROUND.json.
load() {
    local url pid
    if [[ $1 == floor ]]; then url=$FLOOR_URL pid=$FLOOR_PID; else url=$HOST_URL pid=$HOST_PID; fi
    "$BENCH" load --url "$url" --connections "$CONNECTIONS" --in-flight "$IN_FLIGHT" \
        --route echo.echo --body '{"a":1}' --duration "$SECS" --server-pid "$pid" --json \
        >"$OUT/$1-$2.json"
}

for round in $(seq "$ROUNDS"); do
    if (( round % 2 )); then load floor "$round"; load host "$round"
    else load host "$round"; load floor "$round"; fi
done

python3 - "$OUT" "$ROUNDS" <<'EOF' | tee "$OUT/summary.txt"
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
rows = {side: [json.load(open(f"{out}/{side}-{r}.json")) for r in range(1, rounds + 1)]
        for side in ("floor", "host")}
def figures(run):
    return (run["requests_per_sec"], run["server"]["cpu_us_per_request"],
            run["latency"]["p99_us"] / 1000, run["errors"])
print(f"{'round':>5} {'floor req/s':>12} {'host req/s':>11} {'floor µs':>9} {'host µs':>8}"
      f" {'floor p99':>10} {'host p99':>9} {'req x':>6} {'CPU x':>6}")
ratios = []
for r in range(rounds):
    f, h = figures(rows["floor"][r]), figures(rows["host"][r])
    ratios.append((h[0] / f[0], h[1] / f[1], h[2] / f[2]))
    print(f"{r + 1:>5} {f[0]:>12,.0f} {h[0]:>11,.0f} {f[1]:>9.2f} {h[1]:>8.2f}"
          f" {f[2]:>8.2f}ms {h[2]:>7.2f}ms {ratios[-1][0]:>6.2f} {ratios[-1][1]:>6.2f}")
med = {side: [statistics.median(figures(run)[i] for run in rows[side]) for i in range(3)]
       for side in rows}
errors = sum(figures(run)[3] for side in rows for run in rows[side])
print(f"median: floor {med['floor'][0]:,.0f} req/s at {med['floor'][1]:.2f} µs, p99"
      f" {med['floor'][2]:.2f} ms; host {med['host'][0]:,.0f} req/s at {med['host'][1]:.2f} µs,"
      f" p99 {med['host'][2]:.2f} ms")
print(f"host / floor: {med['host'][0] / med['floor'][0]:.2f}x the requests,"
      f" {med['host'][1] / med['floor'][1]:.2f}x the CPU per request; errors {errors}")
# Where the CPU goes: the system part is mostly the sockets' system calls, which both servers
# make alike (one receive and one send per request at one in flight); the user part is each
# server's own work.
split = {side: [statistics.median(run["server"][f"{part}_us_per_request"] for run in rows[side])
                for part in ("user", "system")] for side in rows}
print(f"user + system µs per request (medians): floor {split['floor'][0]:.2f} + {split['floor'][1]:.2f},"
      f" host {split['host'][0]:.2f} + {split['host'][1]:.2f}")
# The two loads of a round ran back to back, so a round's own ratio is the least touched by
# the machine's drift; their median can differ from the ratio of the medians above.
print(f"median of the rounds' ratios: {statistics.median(x[0] for x in ratios):.2f}x the"
      f" requests, {statistics.median(x[1] for x in ratios):.2f}x the CPU per request,"
      f" {statistics.median(x[2] for x in ratios):.2f}x the p99")
EOF
