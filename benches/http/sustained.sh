#!/usr/bin/env bash
# A sustained sale, checkpoints included: `hotstock serve --durability async`
# under wrk (Debian package `wrk`, 2 threads, 64 connections, one-unit
# purchases of one hot SKU) for 26 s; from the 5th second, 20 s of
# `perf record -p` and `perf stat -e task-clock -p` on the server (four
# checkpoints at the default 5 s interval fall inside).
#   benches/http/sustained.sh [hotstock binary] [label]
# Prints requests/s, the server's CPU seconds in the window and each
# thread's share of its samples (hotstock-ckpt is the checkpointer).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin="${1:-target/release/hotstock}"; label="${2:-run}"
for tool in wrk perf curl; do
    command -v "$tool" >/dev/null || { echo "install $tool" >&2; exit 1; }
done
out=target/sustained; rm -rf "$out/data"; mkdir -p "$out"
printf 'wrk.method = "POST"\nwrk.path = "/v1/reservations"\nwrk.body = %s\n' \
    "'{\"lines\":[{\"sku\":\"s0\",\"quantity\":1}],\"confirm\":true}'" > "$out/request.lua"
"$bin" serve --listen 127.0.0.1:0 --durability async --data-dir "$out/data" \
    --max-in-flight 100000 > "$out/stdout" 2> "$out/stderr" &
server=$!
until grep -q "listening on" "$out/stdout" 2>/dev/null; do sleep 0.2; done
addr=$(sed -n 's/listening on //p' "$out/stdout")
curl -s -X PUT "http://$addr/v1/skus/s0" -d '{"available": 1000000000000}' > /dev/null
wrk -t2 -c64 -d26s -s "$out/request.lua" "http://$addr" > "$out/wrk.txt" &
load=$!
sleep 5
perf stat -e task-clock -p "$server" -o "$out/stat.txt" -- sleep 20 2> /dev/null > /dev/null &
perf record -F 499 -p "$server" -o "$out/$label.data" -- sleep 20 2> /dev/null > /dev/null
wait "$load"
kill -TERM "$server"; wait "$server" 2>/dev/null || true
shares=$(perf report -i "$out/$label.data" --no-children --sort comm -g none --stdio 2> /dev/null \
    | awk '!/^#/ && NF {printf "%s %s; ", $2, $1}')
printf '%s rps=%s server_cpu_s=%s threads: %s\n' "$label" \
    "$(awk '/Requests\/sec/ {print $2}' "$out/wrk.txt")" \
    "$(awk '/task-clock/ {gsub(",", "", $1); printf "%.1f", $1 / 1000}' "$out/stat.txt")" "$shares"
