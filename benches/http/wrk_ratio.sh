#!/usr/bin/env bash
# hotstock `async` against the showdown's bare hyper endpoint, driven by
# wrk instead of the showdown's own load generator: the hot SKU and 10,000
# SKUs bought uniformly (wrk picks the SKU with Lua), ample stock, 64
# connections, the servers alternating within each run. Prints per run and
# server: requests/s and the machine's CPU µs per request (from
# /proc/stat), then hotstock / bare per workload. #18 asked why wrk's ratio
# and the showdown's differ; the CPU per request of each client answers it.
#   benches/http/wrk_ratio.sh [runs] [seconds]
set -euo pipefail
cd "$(dirname "$0")/../.."
runs="${1:-3}"; seconds="${2:-5}"
for tool in wrk curl; do
    command -v "$tool" >/dev/null || { echo "install $tool (apt-get install $tool)" >&2; exit 1; }
done
cargo build --release --workspace -q
out=target/wrk_ratio; rm -rf "$out"; mkdir -p "$out"
skus=10000
# One script for both servers and workloads: path, body shape and SKU
# count come from the environment.
cat > "$out/buy.lua" <<'EOF'
local path, flavor, skus = os.getenv("WRK_PATH"), os.getenv("WRK_FLAVOR"), tonumber(os.getenv("WRK_SKUS"))
local headers = { ["Content-Type"] = "application/json" }
request = function()
  local sku = "s" .. math.random(0, skus - 1)
  local body
  if flavor == "hotstock" then
    body = '{"lines":[{"sku":"' .. sku .. '","quantity":1}],"confirm":true}'
  else
    body = '{"sku":"' .. sku .. '","quantity":1}'
  end
  return wrk.format("POST", path, headers, body)
end
EOF
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
busy_idle() { awk 'NR==1 {print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start_bare() { # workload -> address
    local port; port=$(free_port)
    local mode=hot; [ "$1" = uniform ] && mode=uniform
    target/release/hotstock-bench serve-bare --listen "127.0.0.1:$port" --mode "$mode" \
        --units 1000000000000 > /dev/null 2>&1 &
    pids+=($!)
    until curl -s -o /dev/null "http://127.0.0.1:$port/"; do sleep 0.1; done
    echo "127.0.0.1:$port"
}
start_hotstock() { # workload -> address
    local dir="$out/data-$1-$RANDOM"
    target/release/hotstock serve --listen 127.0.0.1:0 --durability async --data-dir "$dir" \
        --max-in-flight 100000 --max-reservations 33554432 > "$dir.out" 2> /dev/null &
    pids+=($!)
    until grep -q "listening on" "$dir.out" 2>/dev/null; do sleep 0.1; done
    local addr; addr=$(sed -n 's/listening on //p' "$dir.out")
    local count=1; [ "$1" = uniform ] && count=$skus
    for i in $(seq 0 $((count - 1))); do echo "url = \"http://$addr/v1/skus/s$i\""; done \
        | curl -s -X PUT -d '{"available": 100000000}' --parallel --parallel-max 32 -K - > /dev/null 2>&1
    echo "$addr"
}
measure() { # address, flavor, sku count -> "rps us_per_request"
    local path=/buy; [ "$2" = hotstock ] && path=/v1/reservations
    read -r busy0 idle0 < <(busy_idle)
    WRK_PATH=$path WRK_FLAVOR=$2 WRK_SKUS=$3 \
        wrk -t2 -c64 -d"${seconds}s" -s "$out/buy.lua" "http://$1" > "$out/last.wrk"
    read -r busy1 idle1 < <(busy_idle)
    if grep -q "Non-2xx" "$out/last.wrk"; then cat "$out/last.wrk" >&2; exit 1; fi
    local rps; rps=$(awk '/Requests\/sec/ {print $2}' "$out/last.wrk")
    local hz; hz=$(getconf CLK_TCK)
    python3 -c "print($rps, round(($busy1 - $busy0) / $hz * 1e6 / ($rps * $seconds), 2))"
}
for workload in hot uniform; do
    count=1; [ "$workload" = uniform ] && count=$skus
    bare=$(start_bare "$workload"); hot=$(start_hotstock "$workload")
    measure "$bare" simple "$count" > /dev/null; measure "$hot" hotstock "$count" > /dev/null # warm-up
    for run in $(seq "$runs"); do
        read -r b_rps b_us < <(measure "$bare" simple "$count")
        read -r h_rps h_us < <(measure "$hot" hotstock "$count")
        echo "$workload run $run: bare $b_rps req/s ($b_us µs machine CPU each), hotstock async $h_rps req/s ($h_us µs), ratio $(python3 -c "print(round($h_rps / $b_rps, 2))")"
    done
    kill "${pids[@]}" 2>/dev/null || true; pids=()
done
