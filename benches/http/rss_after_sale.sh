#!/usr/bin/env bash
# Memory a server keeps after a sale: `hotstock serve --durability async`
# sold to by wrk (Debian package `wrk`, 2 threads, 64 connections, one-unit
# purchases of one hot SKU) for SECONDS, then its VmRSS at the sale's end
# and QUIET seconds later (at the default 5 s interval, two checkpoints
# fall in 12 s).
#   benches/http/rss_after_sale.sh [hotstock binary] [seconds] [quiet]
set -euo pipefail
cd "$(dirname "$0")/../.."
bin="${1:-target/release/hotstock}"; seconds="${2:-20}"; quiet="${3:-12}"
for tool in wrk curl; do
    command -v "$tool" >/dev/null || { echo "install $tool" >&2; exit 1; }
done
out=target/rss_after_sale; rm -rf "$out"; mkdir -p "$out"
"$bin" serve --listen 127.0.0.1:0 --durability async --data-dir "$out/data" \
    --max-in-flight 100000 > "$out/stdout" 2> "$out/stderr" &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
until grep -q "listening on" "$out/stdout" 2>/dev/null; do sleep 0.2; done
addr=$(sed -n 's/listening on //p' "$out/stdout")
curl -s -X PUT "http://$addr/v1/skus/s0" -d '{"available": 1000000000000}' > /dev/null
printf 'wrk.method = "POST"\nwrk.path = "/v1/reservations"\nwrk.body = %s\n' \
    "'{\"lines\":[{\"sku\":\"s0\",\"quantity\":1}],\"confirm\":true}'" > "$out/request.lua"
wrk -t2 -c64 -d"${seconds}s" -s "$out/request.lua" "http://$addr" > "$out/wrk.txt"
at_end=$(awk '/VmRSS/ {print $2}' "/proc/$server/status")
sleep "$quiet"
later=$(awk '/VmRSS/ {print $2}' "/proc/$server/status")
rps=$(awk '/Requests\/sec/ {print $2}' "$out/wrk.txt")
echo "rps=$rps rss_at_end_kB=$at_end rss_${quiet}s_later_kB=$later"
