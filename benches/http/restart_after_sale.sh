#!/usr/bin/env bash
# How long a server takes to start again after a sale: `hotstock serve
# --durability async` sold to by wrk (Debian package `wrk`, 2 threads, 64
# connections, one-unit purchases of one SKU) for SECONDS, stopped cleanly
# (SIGTERM: a last checkpoint), then started on the same data directory and
# timed until it listens (the store's load; no journal left to replay).
#   benches/http/restart_after_sale.sh [hotstock binary] [label] [seconds]
# Prints purchases sold, the data directory's size and the restart time.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin="${1:-target/release/hotstock}"; label="${2:-run}"; seconds="${3:-10}"
for tool in wrk curl; do
    command -v "$tool" >/dev/null || { echo "install $tool" >&2; exit 1; }
done
out="target/restart_after_sale/$label"; rm -rf "$out"; mkdir -p "$out"
printf 'wrk.method = "POST"\nwrk.path = "/v1/reservations"\nwrk.body = %s\n' \
    "'{\"lines\":[{\"sku\":\"s0\",\"quantity\":1}],\"confirm\":true}'" > "$out/request.lua"
start_server() { # $1: stdout file
    "$bin" serve --listen 127.0.0.1:0 --durability async --data-dir "$out/data" \
        --max-in-flight 100000 > "$1" 2> "$1.err" &
    server=$!
    until grep -q "listening on" "$1" 2>/dev/null; do
        kill -0 "$server" 2>/dev/null || { echo "the server exited: see $1.err" >&2; exit 1; }
        sleep 0.01
    done
}
start_server "$out/sale.out"
addr=$(sed -n 's/listening on //p' "$out/sale.out")
curl -s -X PUT "http://$addr/v1/skus/s0" -d '{"available": 1000000000000}' > /dev/null
wrk -t2 -c64 -d"${seconds}s" -s "$out/request.lua" "http://$addr" > "$out/wrk.txt"
kill -TERM "$server"; wait "$server" || true
sold=$(awk '/requests in/ {print $1}' "$out/wrk.txt")
size=$(du -sm "$out/data" | cut -f1)
began=$(date +%s.%N)
start_server "$out/restart.out"
ended=$(date +%s.%N)
kill -TERM "$server"; wait "$server" || true
python3 -c "print(f'$label: {int(\"$sold\"):,} purchases, data dir $size MB, restart {$ended - $began:.2f} s')"
rm -rf "$out/data"
