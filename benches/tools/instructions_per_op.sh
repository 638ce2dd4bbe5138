#!/usr/bin/env bash
# Instructions per operation on the hot path, by callgrind (stable on a noisy
# machine): (Ir at 2N - Ir at N) / N for each kind. Usage:
#   benches/tools/instructions_per_op.sh [N]
# KINDS="kit2" adds kinds to the usual five (hot_path's usage lists them).
# HOT_PATH_BINS="path1 path2 ..." measures those hot_path binaries (other
# commits' builds, for a before/after in one sitting) side by side, one
# column each, instead of building this checkout's.
set -euo pipefail
cd "$(dirname "$0")/../.."
n="${1:-50000}"
if [ -z "${HOT_PATH_BINS:-}" ]; then
    cargo build -q --release --example hot_path
    bins=(target/release/examples/hot_path)
else
    read -r -a bins <<< "$HOT_PATH_BINS"
fi
ir() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$1" "$2" "$3" 2>&1 \
        | sed -n 's/.*Collected : \([0-9]*\).*/\1/p' || true
}
header="| operation |"; rule="|---|"
if [ -z "${HOT_PATH_BINS:-}" ]; then
    header+=" instructions/op |"; rule+="---:|"
else
    for bin in "${bins[@]}"; do header+=" $bin |"; rule+="---:|"; done
fi
echo "$header"; echo "$rule"
for kind in atomic sell purchase hold_confirm cart3 ${KINDS:-}; do
    row="| $kind |"
    for bin in "${bins[@]}"; do
        one=$(ir "$bin" "$kind" "$n")
        two=$(ir "$bin" "$kind" $((2 * n)))
        if [ -z "$one" ] || [ -z "$two" ] || [ "$two" -le "$one" ]; then
            row+=" (failed) |" # e.g. a kind that build does not know
        else
            row+=" $(( (two - one) / n )) |"
        fi
    done
    echo "$row"
done
