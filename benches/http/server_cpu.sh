#!/usr/bin/env bash
# Server CPU per purchase, with the journal's batch size: the real
# `hotstock serve` driven by wrk (Debian package `wrk`) with one-unit
# purchases of one hot SKU, the server's CPU time read by `perf stat -e
# task-clock -p` (a software counter, so it works on VMs without hardware
# counters), the machine's busy and idle time from /proc/stat.
#   benches/http/server_cpu.sh async|sync [connections] [seconds] [runs]
# Extra environment is passed to the server (for A/B experiments).
# DATA_DIR=dir puts the server's data in dir/hotstock-server-cpu instead
# of target/server_cpu (on a tmpfs such as /dev/shm every fdatasync is
# free: `sync` without the disk's wait). HOTSTOCK_BIN=path measures that build (no cargo build).
# One line per run:
#   rps, server us/request, machine us/request, idle %, frames per batch
set -euo pipefail
cd "$(dirname "$0")/../.."
mode="${1:?async or sync}"; connections="${2:-64}"; seconds="${3:-5}"; runs="${4:-1}"
for tool in wrk perf curl bc; do
    command -v "$tool" >/dev/null || { echo "install $tool" >&2; exit 1; }
done
[ -n "${HOTSTOCK_BIN:-}" ] || cargo build -q --release
bin="${HOTSTOCK_BIN:-target/release/hotstock}"
out=target/server_cpu; mkdir -p "$out"
data="$out/data"; [ -z "${DATA_DIR:-}" ] || data="$DATA_DIR/hotstock-server-cpu"
printf 'wrk.method = "POST"\nwrk.path = "/v1/reservations"\nwrk.body = %s\n' \
    "'{\"lines\":[{\"sku\":\"s0\",\"quantity\":1}],\"confirm\":true}'" > "$out/request.lua"
busy_idle() { awk 'NR==1 {print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat; }
for run in $(seq 1 "$runs"); do
    rm -rf "$data"
    "$bin" serve --listen 127.0.0.1:0 --durability "$mode" \
        --data-dir "$data" --max-in-flight 100000 > "$out/stdout" 2> "$out/stderr" &
    server=$!
    until grep -q "listening on" "$out/stdout" 2>/dev/null; do sleep 0.2; done
    addr=$(sed -n 's/listening on //p' "$out/stdout")
    curl -s -X PUT "http://$addr/v1/skus/s0" -d '{"available": 1000000000000}' > /dev/null
    read -r busy0 idle0 < <(busy_idle)
    perf stat -e task-clock -p "$server" -o "$out/perf.txt" -- sleep "$seconds" 2> /dev/null &
    perf=$!
    report=$(wrk -t2 -c"$connections" -d"${seconds}s" -s "$out/request.lua" "http://$addr")
    wait "$perf"
    read -r busy1 idle1 < <(busy_idle)
    requests=$(awk '/requests in/ {print $1}' <<< "$report")
    rps=$(awk '/Requests\/sec/ {print $2}' <<< "$report")
    task_ms=$(awk '/task-clock/ {gsub(",", "", $1); print $1}' "$out/perf.txt")
    batch=$(curl -s "http://$addr/metrics" | awk '/journal_batch_events_sum/ {s=$2} /journal_batch_events_count/ {c=$2} END {if (c) printf "%.1f", s/c}')
    ticks=$(getconf CLK_TCK)
    busy=$((busy1 - busy0)); idle=$((idle1 - idle0))
    printf '%s c=%s rps=%s server_us/req=%.1f machine_us/req=%.1f idle=%d%% frames/batch=%s\n' \
        "$mode" "$connections" "$rps" "$(bc -l <<< "$task_ms * 1000 / $requests")" \
        "$(bc -l <<< "$busy * 1000000 / $ticks / $requests")" \
        $((100 * idle / (busy + idle))) "$batch"
    kill -TERM "$server"; wait "$server" 2>/dev/null || true
done
[ -z "${DATA_DIR:-}" ] || rm -rf "$data"
