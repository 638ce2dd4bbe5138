#!/usr/bin/env bash
# Instructions per operation on the hot path, by callgrind (stable on a noisy
# machine): (Ir at 2N - Ir at N) / N for each kind. Usage:
#   benches/tools/instructions_per_op.sh [N]
# KINDS="kit2" adds kinds to the usual five (hot_path's usage lists them).
set -euo pipefail
cd "$(dirname "$0")/../.."
n="${1:-50000}"
cargo build -q --release --example hot_path
ir() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/hot_path "$1" "$2" 2>&1 \
        | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
echo "| operation | instructions/op |"
echo "|---|---:|"
for kind in atomic sell purchase hold_confirm cart3 ${KINDS:-}; do
    one=$(ir "$kind" "$n")
    two=$(ir "$kind" $((2 * n)))
    echo "| $kind | $(( (two - one) / n )) |"
done
