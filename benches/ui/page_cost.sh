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
# Modes: without the page; `page`, open in chromium; `requests`, only what
# the page asks of the server (no browser). Needs wrk, curl, python3,
# chromium and chromium-driver.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs="${1:-5}"
seconds="${2:-10}"
command -v wrk >/dev/null || { echo "install wrk (apt-get install wrk)" >&2; exit 1; }
cargo build -q --release --bin hotstock
work=$(mktemp -d)
token="page-cost-operator-token-0123456789abcdef"
server=""; page=""; page_mode=""
cleanup() {
    [ -n "$page" ] && kill -TERM "$page" 2>/dev/null || true
    [ -n "$server" ] && kill -TERM "$server" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
script="$work/purchase.lua"
printf 'wrk.method = "POST"\nwrk.path = "/v1/reservations"\nwrk.body = [[{"lines":[{"sku":"s0","quantity":1}],"confirm":true}]]\n' > "$script"

# start_server: a fresh server each measurement (a sale's history slows the
# next one down: the runs must start equal).
start_server() {
    rm -rf "$work/data"
    target/release/hotstock serve --listen 127.0.0.1:0 --durability async --data-dir "$work/data" \
        --max-in-flight 100000 --admin-token "$token" > "$work/out" 2> "$work/err" &
    server=$!
    until grep -q "listening on" "$work/out" 2>/dev/null; do sleep 0.05; done
    addr=$(sed -n 's/^listening on //p' "$work/out")
    curl -s -o /dev/null -X PUT "http://$addr/v1/skus/s0" -H "Authorization: Bearer $token" \
        -d '{"available": 1000000000000}'
}

# open_page MODE: `page`, the page in headless chromium; `requests`, what
# the page asks of the server (the feed stream, /metrics and a page of SKUs
# every 2 s) without a browser: the server's share of the page's cost.
open_page() {
    page_mode=$1
    case "$1" in
        page)
            python3 benches/ui/page_open.py "$addr" "$token" > "$work/page" &
            page=$!
            until grep -q "page live" "$work/page" 2>/dev/null; do sleep 0.1; done ;;
        requests)
            (
                curl -s -N -H "Authorization: Bearer $token" "http://$addr/v1/events/stream?every_ms=1000&after=0" > /dev/null &
                while true; do
                    curl -s -o /dev/null -H "Authorization: Bearer $token" "http://$addr/metrics"
                    curl -s -o /dev/null -H "Authorization: Bearer $token" "http://$addr/v1/skus?limit=25"
                    sleep 2
                done
            ) &
            page=$! ;;
    esac
}

close_all() {
    # `page`: its own process only, which ends chromedriver and chromium
    # together. Killing chromedriver first (as `pkill -P` did) left
    # chromium running, and every later page measurement paid for the
    # browsers left over (fixed 2026-12-03). `requests`: the curl loop's
    # children first, then the loop.
    if [ -n "$page" ]; then
        [ "$page_mode" = requests ] && { pkill -TERM -P "$page" 2>/dev/null || true; }
        kill -TERM "$page" 2>/dev/null || true; wait "$page" 2>/dev/null || true; page=""
    fi
    for _ in $(seq 50); do pgrep -x chromium > /dev/null || break; sleep 0.1; done
    if pgrep -x chromium > /dev/null; then echo "a chromium outlived its page" >&2; exit 1; fi
    kill -TERM "$server"; wait "$server" 2>/dev/null || true; server=""
}

modes="${MODES:-without page requests}"
for run in $(seq 1 "$runs"); do
    # Alternate the order, so no mode always runs first.
    order=$modes
    [ $((run % 2)) -eq 0 ] && order=$(echo "$modes" | tr ' ' '\n' | tac | tr '\n' ' ')
    for mode in $order; do
        start_server
        [ "$mode" != without ] && open_page "$mode"
        wrk -t1 -c64 -d3s -s "$script" "http://$addr" > /dev/null
        rps=$(wrk -t1 -c64 -d"${seconds}s" -s "$script" "http://$addr" | awk '/Requests\/sec/ {print $2}')
        echo "run $run $mode $rps"
        close_all
    done
done
