# servers.sh: starting and stopping the servers a bench script measures. Sourced by measure.sh
# and ab.sh, after they set OUT (where each server's stdout and stderr go).

PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# start NAME CMD...: starts a server, waits (at most 20 s) for its first URL line, sets URL and PID.
start() {
    local name=$1; shift
    "$@" >"$OUT/$name.stdout" 2>"$OUT/$name.stderr" &
    PID=$!
    PIDS+=("$PID")
    for _ in $(seq 200); do
        URL=$(grep -m1 -E '^(tcp|ws)://' "$OUT/$name.stdout" || true)
        [[ -n $URL ]] && return 0
        sleep 0.1
    done
    echo "$name did not print its address; see $OUT/$name.stderr" >&2
    exit 1
}
