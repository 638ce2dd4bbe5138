#!/usr/bin/env bash
# What a forwarded order costs (#15, routing): two nodes that know each
# other on one escrow; wrk sends one-unit purchases to the first node,
# alternately for a customer the first node owns (answered there) and for
# one the second node owns (forwarded there and back). Same machine, same
# load generator, runs alternated.
#
#   benches/cluster/forward.sh [runs] [seconds] [connections]
#
# Prints per run the purchases per second and wrk's p50/p99 for both, and
# the ratio forwarded / local. Needs wrk, psql, curl, python3 and the
# PostgreSQL at HOTSTOCK_TEST_POSTGRES_URL (default
# postgresql://postgres@127.0.0.1:5432/test).
set -euo pipefail
cd "$(dirname "$0")/../.."
runs="${1:-3}"
seconds="${2:-5}"
connections="${3:-64}"
url="${HOTSTOCK_TEST_POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/test}"
command -v wrk >/dev/null || { echo "install wrk (apt-get install wrk)" >&2; exit 1; }
cargo build -q --release --bin hotstock
bin=target/release/hotstock
work=$(mktemp -d)
schema="hotstock_forward_$$"
cleanup() {
    for pidfile in "$work"/*/pid; do
        [ -e "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        kill -TERM "$pid" 2>/dev/null || true
        while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    done
    PGOPTIONS='-c client_min_messages=warning' psql -q "$url" \
        -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
a="127.0.0.1:$(free_port)"; b="127.0.0.1:$(free_port)"

# start_node ID LISTEN PEER
start_node() {
    local dir="$work/$1"
    mkdir -p "$dir"
    "$bin" serve --listen "$2" --durability async --data-dir "$dir/data" \
        --max-in-flight 100000 --node-id "$1" --escrow "$url" --escrow-schema "$schema" \
        --peer "$3" > "$dir/out" 2>"$dir/err" &
    echo $! > "$dir/pid"
    until grep -q "listening on" "$dir/out" 2>/dev/null; do sleep 0.05; done
}
start_node a "$a" "b=$b"
start_node b "$b" "a=$a"
curl -s -o /dev/null -X POST "http://$a/v1/skus/hot/adjust" -d '{"delta": 1000000000000}'
for node in "$a" "$b"; do
    until curl -s "http://$node/v1/skus/hot" | grep -q '"available":[1-9]'; do sleep 0.05; done
done

# A customer each node owns, found by the node its first order names.
owned_by() {
    for n in $(seq 0 99); do
        id=$(curl -s -X POST "http://$a/v1/reservations" \
            -d "{\"lines\":[{\"sku\":\"hot\",\"quantity\":1}],\"confirm\":true,\"customer\":\"c$n\"}" \
            | sed -n 's/.*"id":"\([a-z]*\)~.*/\1/p')
        if [ "$id" = "$1" ]; then echo "c$n"; return; fi
    done
    echo "no customer of node $1 among c0..c99" >&2; exit 1
}
local_customer=$(owned_by a)
remote_customer=$(owned_by b)

script() {
    cat > "$work/$1.lua" <<EOF
wrk.method = "POST"
wrk.path = "/v1/reservations"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"lines":[{"sku":"hot","quantity":1}],"confirm":true,"customer":"$2"}'
function done(summary, latency, requests)
  io.write(string.format("p50 %.0f us, p99 %.0f us\n",
    latency:percentile(50), latency:percentile(99)))
end
EOF
}
script local "$local_customer"
script remote "$remote_customer"

measure() {
    wrk -t2 -c"$connections" -d"${seconds}s" -s "$work/$1.lua" "http://$a" \
        | awk '/Requests\/sec/ {rps=$2} /^p50/ {lat=$0} END {printf "%s %s", rps, lat}'
}
echo "run | local /s (latency) | forwarded /s (latency) | forwarded / local"
for run in $(seq 1 "$runs"); do
    here=$(measure local)
    there=$(measure remote)
    ratio=$(python3 -c "print(round(${there%% *} / ${here%% *}, 3))")
    echo "$run | $here | $there | $ratio"
done
