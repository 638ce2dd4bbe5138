#!/usr/bin/env bash
# The batch endpoint (#18): units per second over HTTP with batches of N
# one-unit purchases of one hot SKU (`POST /v1/reservations/batch`), in
# `sync` and `async`, against single-order purchases in the same run. wrk,
# 1 thread; the batches on 4 connections (a gateway's few), the single
# orders on 64.
#
#   benches/http/batch.sh [runs] [seconds] [orders per batch]
#
# Prints per run and mode: batches/s, units/s, wrk's p50/p99 per batch;
# single orders/s.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs="${1:-3}"; seconds="${2:-5}"; per="${3:-1000}"
command -v wrk >/dev/null || { echo "install wrk (apt-get install wrk)" >&2; exit 1; }
cargo build -q --release --bin hotstock
work=$(mktemp -d)
server=""
trap '[ -n "$server" ] && kill -TERM "$server" 2>/dev/null; rm -rf "$work"' EXIT
python3 - "$per" > "$work/batch.lua" <<'PY'
import json, sys
n = int(sys.argv[1])
order = {"lines": [{"sku": "s0", "quantity": 1}], "confirm": True}
body = json.dumps({"orders": [order] * n}, separators=(",", ":"))
print('wrk.method = "POST"\nwrk.path = "/v1/reservations/batch"\nwrk.body = [[' + body + ']]')
PY
printf 'wrk.method = "POST"\nwrk.path = "/v1/reservations"\nwrk.body = [[{"lines":[{"sku":"s0","quantity":1}],"confirm":true}]]\n' > "$work/one.lua"
for run in $(seq 1 "$runs"); do
    for durability in sync async; do
        rm -rf "$work/data"
        target/release/hotstock serve --listen 127.0.0.1:0 --durability "$durability" \
            --data-dir "$work/data" --max-in-flight 100000 > "$work/out" 2> "$work/err" &
        server=$!
        until grep -q "listening on" "$work/out" 2>/dev/null; do sleep 0.05; done
        addr=$(sed -n 's/^listening on //p' "$work/out")
        curl -s -o /dev/null -X PUT "http://$addr/v1/skus/s0" -d '{"available": 1000000000000}'
        wrk -t1 -c4 -d2s -s "$work/batch.lua" "http://$addr" > /dev/null
        wrk -t1 -c4 -d"${seconds}s" --latency -s "$work/batch.lua" "http://$addr" > "$work/wrk"
        rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk")
        p50=$(awk '$1 == "50%" {print $2}' "$work/wrk"); p99=$(awk '$1 == "99%" {print $2}' "$work/wrk")
        one=$(wrk -t1 -c64 -d"${seconds}s" -s "$work/one.lua" "http://$addr" | awk '/Requests\/sec/ {print $2}')
        units=$(python3 -c "print(round($rps * $per))")
        echo "run $run $durability: batches/s $rps units/s $units p50 $p50 p99 $p99 | single orders/s $one"
        kill -TERM "$server"; wait "$server" 2>/dev/null || true; server=""
    done
done
