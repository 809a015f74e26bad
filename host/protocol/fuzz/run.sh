#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 600), starting from the committed seeds: the
# protocol's (packet, message, handshake, connection; this folder) and the host's (upgrade; in
# host/fuzz, whose first build compiles the whole host and takes several minutes).
# Needs a nightly toolchain and cargo-fuzz:
#   rustup toolchain install nightly --profile minimal && cargo install cargo-fuzz
# Usage: host/protocol/fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-600}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(packet message handshake connection upgrade)
for target in "${targets[@]}"; do
    case $target in
        upgrade) crate=../../fuzz ;;
        *) crate=. ;;
    esac
    echo "== $target: ${seconds}s"
    (
        cd "$crate"
        mkdir -p "corpus/$target"
        cargo +nightly fuzz run "$target" "corpus/$target" "seeds/$target" -- \
            -max_total_time="$seconds" -print_final_stats=1
    )
done
