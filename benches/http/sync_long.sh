#!/usr/bin/env bash
# A long `sync` sale against each binary given, alternated RUNS times:
# wrk (2 threads, 64 connections, one-unit purchases of one hot SKU) for
# SECONDS against `hotstock serve --durability sync`, each run on a fresh
# data directory. Prints requests/s, wrk's latency p50/p99, and the
# journal's fdatasync latency buckets from /metrics at the end of the run
# (cumulative counts of batches at or under each bound).
#   benches/http/sync_long.sh RUNS SECONDS BIN [BIN...]
set -euo pipefail
cd "$(dirname "$0")/../.."
runs="${1:-2}"; seconds="${2:-20}"; shift 2
command -v wrk >/dev/null || { echo "install wrk (apt-get install wrk)" >&2; exit 1; }
one() { # binary
    local work; work=$(mktemp -d)
    printf 'wrk.method = "POST"\nwrk.path = "/v1/reservations"\nwrk.body = %s\n' \
        "'{\"lines\":[{\"sku\":\"hot\",\"quantity\":1}],\"confirm\":true}'" > "$work/buy.lua"
    "$1" serve --listen 127.0.0.1:0 --durability sync --data-dir "$work/data" \
        --max-in-flight 100000 > "$work/out" 2>/dev/null &
    local pid=$!
    until grep -q "listening on" "$work/out" 2>/dev/null; do sleep 0.1; done
    local addr; addr=$(sed -n 's/listening on //p' "$work/out")
    curl -sf -X PUT "http://$addr/v1/skus/hot" -d '{"available": 1000000000000}' > /dev/null
    wrk -t2 -c64 -d"${seconds}s" --latency -s "$work/buy.lua" "http://$addr" > "$work/wrk"
    local rps p50 p99
    rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk")
    p50=$(awk '$1 == "50%" {print $2}' "$work/wrk"); p99=$(awk '$1 == "99%" {print $2}' "$work/wrk")
    local fsync; fsync=$(curl -sf "http://$addr/metrics" | awk -F'[{}" ]' '/^hotstock_journal_fsync_seconds_bucket/ {printf "%s:%s ", $3, $NF}')
    echo "$1: $rps req/s, p50 $p50, p99 $p99; fdatasync le-seconds:batches $fsync"
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    rm -rf "$work"
}
for _ in $(seq "$runs"); do
    for binary in "$@"; do one "$binary"; done
done
