#!/usr/bin/env bash
# restart.sh: how long pitaya-host takes from exec to printing its listener address with 10
# components, first with an empty compiled-component cache ("cold"), then with that cache
# filled by the cold start ("warm"), and with --no-cache ("nocache", as before the cache existed),
# as docs/performance.md reports.
#
#   bench/restart.sh [OUT_DIR]        (default target/restart-bench)
#
# The 10 components: the five of components/ (echo, chat, tadpole, lab, hostile; build them with
# `cargo xtask build`) and five made by `pitaya-host new restart0` .. `restart4`, built once for
# wasm32-wasip2 into OUT_DIR/gen (offline, sharing one target dir) and reused by later runs. Every
# component has its own name, as the router requires. RUNS (default 5) rounds of a cold, a warm and a nocache start;
# each start is timed with bash's $EPOCHREALTIME from just before the exec to the moment the
# `tcp://` line is read, then the host is stopped by pid. Writes OUT_DIR/restart.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

# PROFILE: the cargo profile whose binaries are measured, `dist` (fat LTO, what the figures
# in docs/performance.md use) unless set; PROFILE=release measures the plain release build.
PROFILE=${PROFILE:-dist}

OUT=${1:-target/restart-bench}
RUNS=${RUNS:-5}
HOST=target/$PROFILE/pitaya-host
WASM=target/wasm32-wasip2/release
for f in "$HOST" "$WASM"/{echo,chat,tadpole,lab,hostile}.wasm; do
    [[ -e $f ]] || { echo "missing $f: run cargo xtask build and cargo build --profile $PROFILE -p pitaya-host" >&2; exit 1; }
done
mkdir -p "$OUT/gen" "$OUT/bin"
OUT=$(cd "$OUT" && pwd)
# A copy, so that a rebuild during the run cannot change what is measured.
cp "$HOST" "$OUT/bin/pitaya-host"
HOST=$OUT/bin/pitaya-host

COMPONENTS=()
for name in echo chat tadpole lab hostile; do
    COMPONENTS+=("$PWD/$WASM/$name.wasm")
done
for i in 0 1 2 3 4; do
    name=restart$i
    wasm=$OUT/gen/target/wasm32-wasip2/release/$name.wasm
    if [[ ! -e $wasm ]]; then
        (cd "$OUT/gen" && rm -rf "$name" && "$HOST" new "$name" >/dev/null &&
            cd "$name" && CARGO_TARGET_DIR=$OUT/gen/target cargo build --release --offline \
                --target wasm32-wasip2 --quiet)
    fi
    COMPONENTS+=("$wasm")
done

CACHE=$OUT/cache
PID=
cleanup() { [[ -n $PID ]] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT

# start LABEL [ARGS...]: one timed start with the cache in $CACHE and ARGS; prints the seconds
# and the log's cache lines.
start() {
    local label=$1 line t0 t1
    shift
    coproc HOSTPROC { exec "$HOST" serve --tcp 127.0.0.1:0 --cache-dir "$CACHE" "$@" "${COMPONENTS[@]}" 2>"$OUT/$label.stderr"; }
    PID=$HOSTPROC_PID
    t0=$EPOCHREALTIME
    if ! read -r -t 300 line <&"${HOSTPROC[0]}"; then
        echo "$label: no listener line; see $OUT/$label.stderr" >&2
        exit 1
    fi
    t1=$EPOCHREALTIME
    kill "$PID"
    wait "$PID" 2>/dev/null || true
    PID=
    local hits misses
    hits=$(grep -c 'component loaded from cache' "$OUT/$label.stderr" || true)
    misses=$(grep -c 'component compiled and cached' "$OUT/$label.stderr" || true)
    printf '%s %.3f s (%s loaded from cache, %s compiled; load %s)\n' "$label" \
        "$(echo "$t1 - $t0" | bc)" "$hits" "$misses" "$(cut -d' ' -f1 /proc/loadavg)"
}

{
    date -u
    echo "nproc $(nproc); $(uptime)"
    echo "HEAD $(git rev-parse HEAD)$(git diff --quiet HEAD -- . 2>/dev/null || echo ' (work tree has changes)')"
    sha256sum "$HOST" "${COMPONENTS[@]}" | sed "s|$PWD/||"
    for run in $(seq "$RUNS"); do
        rm -rf "$CACHE"
        start "cold-$run"
        start "warm-$run"
        start "nocache-$run" --no-cache
    done
} | tee "$OUT/restart.txt"
