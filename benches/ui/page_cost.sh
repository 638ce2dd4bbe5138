#!/usr/bin/env bash
# What the operator page costs the purchase path (#17): hot-SKU purchases
# (wrk, 64 connections, as the showdown's HTTP rows) against a fresh
# `hotstock serve --durability async --admin-token`, with the page open in
# a headless chromium and without it, alternated.
#
#   benches/ui/page_cost.sh [runs] [seconds]
#
# The browser runs on the same two cores as the server and wrk here (on
# the operator's laptop in a real sale), so this is the page's worst case.
# Needs wrk, curl, python3, chromium and chromium-driver.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs="${1:-5}"
seconds="${2:-10}"
command -v wrk >/dev/null || { echo "install wrk (apt-get install wrk)" >&2; exit 1; }
cargo build -q --release --bin hotstock
work=$(mktemp -d)
token="page-cost-operator-token-0123456789abcdef"
server=""; page=""
cleanup() {
    [ -n "$page" ] && kill -TERM "$page" 2>/dev/null || true
    [ -n "$server" ] && kill -TERM "$server" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
target/release/hotstock serve --listen 127.0.0.1:0 --durability async --data-dir "$work/data" \
    --max-in-flight 100000 --admin-token "$token" > "$work/out" 2> "$work/err" &
server=$!
until grep -q "listening on" "$work/out" 2>/dev/null; do sleep 0.05; done
addr=$(sed -n 's/^listening on //p' "$work/out")
curl -s -o /dev/null -X PUT "http://$addr/v1/skus/s0" -H "Authorization: Bearer $token" \
    -d '{"available": 1000000000000}'
script="$work/purchase.lua"
printf 'wrk.method = "POST"\nwrk.path = "/v1/reservations"\nwrk.body = [[{"lines":[{"sku":"s0","quantity":1}],"confirm":true}]]\n' > "$script"
wrk -t1 -c64 -d3s -s "$script" "http://$addr" > /dev/null
for run in $(seq 1 "$runs"); do
    for mode in without with; do
        if [ "$mode" = with ]; then
            python3 benches/ui/page_open.py "$addr" "$token" > "$work/page" &
            page=$!
            until grep -q "page live" "$work/page" 2>/dev/null; do sleep 0.1; done
        fi
        rps=$(wrk -t1 -c64 -d"${seconds}s" -s "$script" "http://$addr" | awk '/Requests\/sec/ {print $2}')
        echo "run $run $mode $rps"
        if [ "$mode" = with ]; then
            kill -TERM "$page"; wait "$page" 2>/dev/null || true; page=""
        fi
    done
done
