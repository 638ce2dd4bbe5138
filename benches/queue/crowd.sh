#!/usr/bin/env bash
# A crowd in front of a waiting room (#16): `hotstock-crowd` against a
# fresh `hotstock serve` (async durability): 50,000 buyers join before the
# sale's start, poll when the server's `poll_after_ms` says, and buy when
# admitted; then as many buyers as there are units buy a SKU without a
# room over the same connections (the purchase path without a queue, same
# run, same client).
#
#   benches/queue/crowd.sh [runs] [buyers] [units] [connections]
#
# Prints one JSON line per run: poll latency percentiles (ms), polls per
# second, purchase latency through the room and without it, units bought
# (exactly the stock) and buyers told sold_out.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs="${1:-3}"
buyers="${2:-50000}"
units="${3:-1000}"
connections="${4:-64}"
cargo build -q --release --bin hotstock
cargo build -q --release -p hotstock-bench --bin hotstock-crowd
work=$(mktemp -d)
pid=""
stop() {
    if [ -n "$pid" ]; then
        kill -TERM "$pid" 2>/dev/null || true
        while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
        pid=""
    fi
}
trap 'stop; rm -rf "$work"' EXIT
for run in $(seq 1 "$runs"); do
    rm -rf "$work/data"
    target/release/hotstock serve --listen 127.0.0.1:0 --durability async \
        --data-dir "$work/data" --max-in-flight 100000 > "$work/out" 2> "$work/err" &
    pid=$!
    until grep -q "listening on" "$work/out" 2>/dev/null; do sleep 0.05; done
    addr=$(sed -n 's/^listening on //p' "$work/out")
    target/release/hotstock-crowd --addr "$addr" --buyers "$buyers" --units "$units" \
        --connections "$connections"
    stop
done
