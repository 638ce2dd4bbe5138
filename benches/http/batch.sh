#!/usr/bin/env bash
# The batch endpoint (#18): units per second over HTTP with batches of N
# one-unit purchases of one hot SKU (`POST /v1/reservations/batch`), in
# `sync` and `async`, against single-order purchases in the same run. wrk,
# 1 thread; the batches on 4 connections (a gateway's few), the single
# orders on 64.
#
#   benches/http/batch.sh [runs] [seconds] [orders per batch]
#
# HOTSTOCK_BINS="label=path ..." measures each given build in turn within
# every run (before/after comparisons in one script) instead of this tree's.
#
# Prints per run and mode: batches/s, units/s (units sold, from the SKU,
# over wrk's time), sold/asked (1.000 when no order was refused), wrk's
# p50/p99/max per batch (a checkpoint falls in the 5 s; a stall of a few
# batches shows in the max, not the p99); single orders/s and their
# non-2xx answers.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs="${1:-3}"; seconds="${2:-5}"; per="${3:-1000}"
command -v wrk >/dev/null || { echo "install wrk (apt-get install wrk)" >&2; exit 1; }
if [ -z "${HOTSTOCK_BINS:-}" ]; then
    cargo build -q --release --bin hotstock
    HOTSTOCK_BINS="this=target/release/hotstock"
fi
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
  for build in $HOTSTOCK_BINS; do
    label="${build%%=*}"; binary="${build#*=}"
    for durability in sync async; do
        rm -rf "$work/data"
        "$binary" serve --listen 127.0.0.1:0 --durability "$durability" \
            --data-dir "$work/data" --max-in-flight 100000 --max-reservations 33554432 \
            > "$work/out" 2> "$work/err" &
        server=$!
        until grep -q "listening on" "$work/out" 2>/dev/null; do sleep 0.05; done
        addr=$(sed -n 's/^listening on //p' "$work/out")
        curl -s -o /dev/null -X PUT "http://$addr/v1/skus/s0" -d '{"available": 1000000000000}'
        sold() { curl -s "http://$addr/v1/skus/s0" | python3 -c 'import json,sys; print(json.load(sys.stdin)["sold"])'; }
        wrk -t1 -c4 -d1s -s "$work/batch.lua" "http://$addr" > /dev/null
        before=$(sold)
        wrk -t1 -c4 -d"${seconds}s" --latency -s "$work/batch.lua" "http://$addr" > "$work/wrk"
        after=$(sold)
        rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk")
        p50=$(awk '$1 == "50%" {print $2}' "$work/wrk"); p99=$(awk '$1 == "99%" {print $2}' "$work/wrk")
        max=$(awk '$1 == "Latency" && NF == 5 {print $4}' "$work/wrk")
        # Units counted from the SKU, not from batches answered: an order
        # a batch refuses (the reservation table full, say) is answered in
        # a 200 batch but sells nothing. `sold/asked` below 1 says so.
        read -r units asked <<< "$(awk -v sold=$((after - before)) -v per="$per" \
            '/requests in/ {d = $4; sub(/s,?$/, "", d); printf "%d %.3f", sold / d, sold / ($1 * per)}' "$work/wrk")"
        wrk -t1 -c64 -d"${seconds}s" -s "$work/one.lua" "http://$addr" > "$work/one"
        one=$(awk '/Requests\/sec/ {print $2}' "$work/one")
        refused=$(awk '/Non-2xx/ {print $5}' "$work/one")
        echo "run $run $label $durability: batches/s $rps units/s $units sold/asked $asked p50 $p50 p99 $p99 max $max | single orders/s $one non-2xx ${refused:-0}"
        kill -TERM "$server"; wait "$server" 2>/dev/null || true; server=""
    done
  done
done
