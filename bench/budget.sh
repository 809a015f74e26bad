#!/usr/bin/env bash
# budget.sh: how much a component call may cost before the host's CPU per request passes the
# floor's by a given multiple. Builds the host with the `stand-in` feature (into target/stand-in,
# apart from the builds that ship) and runs bench/ab.sh once per stand-in, each against the
# floor: the real component call, an answer with no call at all, one that takes the instance's
# lock, and spins of a given length standing for calls of that cost (host/src/runtime/stand_in.rs).
#
#   bench/budget.sh [OUT_DIR]     (default target/budget-results)
#
# STAND_INS (the list below unless set; `call` is the real component call), PROFILE (release
# unless set; dist builds for several minutes), and ab.sh's ROUNDS, CONNECTIONS, SECS and
# TRANSPORT are read from the environment. Needs what ab.sh needs, and builds what it runs.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-target/budget-results}
PROFILE=${PROFILE:-release}
STAND_INS=${STAND_INS:-call free locked spin:300 spin:700 spin:1000 locked-spin:1000}
export ROUNDS=${ROUNDS:-5} SECS=${SECS:-4} CONNECTIONS=${CONNECTIONS:-500}

cargo build --profile "$PROFILE" --target-dir target/stand-in \
    -p pitaya-host --features pitaya-host/stand-in -p pitaya-bench
cargo xtask build >/dev/null
export HOST=target/stand-in/$PROFILE/pitaya-host BENCH=target/stand-in/$PROFILE/pitaya-bench
mkdir -p "$OUT"

for stand_in in $STAND_INS; do
    dir=$OUT/${stand_in//:/-}
    if [[ $stand_in == call ]]; then
        env -u PITAYA_STAND_IN bench/ab.sh "$dir" >/dev/null
    else
        PITAYA_STAND_IN=$stand_in bench/ab.sh "$dir" >/dev/null
    fi
    echo "$stand_in" >"$dir/stand-in"
done

# One line per stand-in, from ab.sh's summaries: the medians of the rounds' own ratios, and the
# CPU per request split into user and system time.
python3 - "$OUT" $STAND_INS <<'PY' | tee "$OUT/summary.txt"
import re, sys
out, stand_ins = sys.argv[1], sys.argv[2:]
print(f"{'stand-in':<18} {'requests x':>10} {'CPU x':>6} {'p99 x':>6}   user + system µs, floor / host")
for stand_in in stand_ins:
    text = open(f"{out}/{stand_in.replace(':', '-')}/summary.txt").read()
    ratios = re.search(r"rounds' ratios: ([\d.]+)x the requests, ([\d.]+)x the CPU per request, ([\d.]+)x the p99", text)
    split = re.search(r"floor ([\d.]+ \+ [\d.]+), host ([\d.]+ \+ [\d.]+)", text)
    print(f"{stand_in:<18} {ratios[1]:>10} {ratios[2]:>6} {ratios[3]:>6}   {split[1]} / {split[2]}")
PY
