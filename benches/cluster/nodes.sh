#!/usr/bin/env bash
# Several `hotstock serve` nodes selling one hot SKU from one escrow (#15),
# against one node on the same escrow, over HTTP with wrk, alternated.
#
#   benches/cluster/nodes.sh [runs] [seconds] [connections]
#
# Per run: one node with all `connections` (2 request threads), then two
# nodes with half each (1 request thread each; one wrk per node, at once). Prints each run's purchases per second, the
# ratio two/one, and the escrow statements per unit sold. Then a whole
# sale: two nodes sell out `SALE_UNITS` units (default 200000), and the
# statements per unit over it. Needs wrk, psql, and the PostgreSQL at
# HOTSTOCK_TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test).
set -euo pipefail
cd "$(dirname "$0")/../.."
runs="${1:-3}"
seconds="${2:-5}"
connections="${3:-64}"
sale_units="${SALE_UNITS:-200000}"
sale_seconds="${SALE_SECONDS:-15}"
# Request threads per node of the pair: 1 each, so the pair has the one
# node's 2 on this 2-core machine (TWO_WORKERS=2 to see the difference).
two_workers="${TWO_WORKERS:-1}"
url="${HOTSTOCK_TEST_POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/test}"
command -v wrk >/dev/null || { echo "install wrk (apt-get install wrk)" >&2; exit 1; }
cargo build -q --release --bin hotstock
bin=target/release/hotstock
work=$(mktemp -d)
# Nodes' pids are kept in files: `start_node` runs in a command
# substitution's subshell, whose variables the script never sees.
stop_nodes() {
    for pidfile in "$work"/*/pid; do
        [ -e "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        kill -TERM "$pid" 2>/dev/null || true
        while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
        rm -f "$pidfile"
    done
}
cleanup() {
    stop_nodes
    rm -rf "$work"
}
trap cleanup EXIT

# start_node NAME SCHEMA WORKERS: starts a node, prints its address.
start_node() {
    local dir="$work/$2-$1"
    mkdir -p "$dir"
    "$bin" serve --listen 127.0.0.1:0 --durability async --data-dir "$dir/data" \
        --workers "$3" \
        --max-in-flight 100000 --node-id "$1" --escrow "$url" --escrow-schema "$2" \
        > "$dir/out" 2>"$dir/err" &
    echo $! > "$dir/pid"
    until grep -q "listening on" "$dir/out" 2>/dev/null; do sleep 0.05; done
    sed -n 's/listening on //p' "$dir/out"
}

# wait_leased ADDR: until the node has units of "hot".
wait_leased() {
    until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$1/v1/skus/hot")" = 200 ]; do
        sleep 0.05
    done
}

# load ADDR CONNECTIONS THREADS [SECONDS]: wrk buying at ADDR. Two wrk
# threads in all in both setups (one node: -t2; two nodes: -t1 each), so
# the load generator's share of the two cores is the same. Throughput is
# counted from the nodes' `sold` (sales only, never a "sold out" answer).
load() {
    wrk -t"$3" -c"$2" -d"${4:-$seconds}s" -s benches/http/purchase.lua "http://$1" > /dev/null
}

statements() { curl -s "http://$1/v1/cluster" | sed -n 's/.*"statements":\([0-9]*\).*/\1/p'; }
sold() { curl -s "http://$1/v1/skus/hot" | sed -n 's/.*"sold":\([0-9]*\).*/\1/p'; }

drop_schema() {
    PGOPTIONS='-c client_min_messages=warning' psql -q "$url" \
        -c "DROP SCHEMA IF EXISTS $1 CASCADE" >/dev/null
}

echo "run  one_node/s  two_nodes/s  two/one  statements_per_unit(two)"
for run in $(seq 1 "$runs"); do
    schema="bench_cluster_$$_${run}_one"
    a=$(start_node one "$schema" 2)
    curl -s -X POST "http://$a/v1/skus/hot/adjust" -d '{"delta": 1000000000000}' > /dev/null
    wait_leased "$a"
    load "$a" "$connections" 2
    one=$(echo "$(sold "$a") / $seconds" | bc -l)
    stop_nodes; drop_schema "$schema"

    schema="bench_cluster_$$_${run}_two"
    a=$(start_node a "$schema" "$two_workers"); b=$(start_node b "$schema" "$two_workers")
    curl -s -X POST "http://$a/v1/skus/hot/adjust" -d '{"delta": 1000000000000}' > /dev/null
    wait_leased "$a"; wait_leased "$b"
    load "$a" $((connections / 2)) 1 & wa=$!
    load "$b" $((connections / 2)) 1 & wb=$!
    wait $wa $wb
    units=$(( $(sold "$a") + $(sold "$b") ))
    two=$(echo "$units / $seconds" | bc -l)
    stmts=$(( $(statements "$a") + $(statements "$b") ))
    stop_nodes; drop_schema "$schema"
    printf "%3d  %10.0f  %11.0f  %7.3f  %.5f\n" "$run" "$one" "$two" \
        "$(echo "$two / $one" | bc -l)" "$(echo "$stmts / $units" | bc -l)"
done

# A whole sale: two nodes sell out sale_units, tail included.
schema="bench_cluster_$$_sale"
a=$(start_node a "$schema" "$two_workers"); b=$(start_node b "$schema" "$two_workers")
curl -s -X POST "http://$a/v1/skus/hot/adjust" -d "{\"delta\": $sale_units}" > /dev/null
wait_leased "$a"; wait_leased "$b"
# Long enough to sell out (the rest of the time, buyers hear "sold out").
load "$a" $((connections / 2)) 1 "$sale_seconds" & wa=$!
load "$b" $((connections / 2)) 1 "$sale_seconds" & wb=$!
wait $wa $wb
units=$(( $(sold "$a") + $(sold "$b") ))
stmts=$(( $(statements "$a") + $(statements "$b") ))
stop_nodes; drop_schema "$schema"
printf "whole sale of %d units on two nodes: sold %d, %d escrow statements, %.5f per unit\n" \
    "$sale_units" "$units" "$stmts" "$(echo "$stmts / $units" | bc -l)"
