#!/usr/bin/env bash
# Instructions per request in an HTTP server, per thread, counted by
# callgrind (stable on a noisy machine, unlike time). The server runs under
# valgrind, wrk (Debian package `wrk`) drives it with one-unit purchases on
# 64 keep-alive connections: 3 s of warm-up, then counters are dumped,
# then SECONDS of measurement, then dumped again.
#   benches/http/callgrind.sh async|sync|bare [seconds]
# BODY='{"lines":[...]}' overrides the purchase body (hotstock only), e.g.
# to measure a body the one-pass scanner declines. AVAILABLE=0 gives the
# SKU no stock (the bare endpoint one unit): a sold-out crowd's answers.
# FLOW=hold-confirm holds one unit (ttl 600 s) and confirms it by id, as the
# showdown's hold-confirm row does; requests counted are holds + confirms.
# FLOW=uniform buys one unit of a SKU drawn uniformly from 10,000 (s0 …
# s9999, each with ample stock), as the showdown's uniform row does.
# `bare` is the showdown's bare hyper endpoint (hotstock-bench serve-bare).
# GRIND_EXTRA='--cache-sim=yes' passes more options to callgrind (the
# cache simulation counts each function's simulated D1 and LL misses).
# HOTSTOCK_BIN=path measures that hotstock binary (another commit's build,
# for a before/after in one sitting) instead of building this checkout.
# Prints instructions per request for each thread and the top functions;
# benches/tools/callgrind_per_request.py compares two runs function by
# function.
set -euo pipefail
cd "$(dirname "$0")/../.."
kind="${1:?async, sync or bare}"; seconds="${2:-10}"
case "${FLOW:-}" in
    ""|hold-confirm|uniform) ;;
    *) echo "FLOW is hold-confirm, uniform or unset; got ${FLOW}" >&2; exit 1 ;;
esac
[ -z "${FLOW:-}" ] || [ -z "${BODY:-}" ] || { echo "BODY applies only without FLOW" >&2; exit 1; }
command -v wrk >/dev/null || { echo "install wrk (apt-get install wrk)" >&2; exit 1; }
command -v valgrind >/dev/null || { echo "install valgrind" >&2; exit 1; }
[ -n "${HOTSTOCK_BIN:-}" ] || cargo build -q --release --workspace
bin="${HOTSTOCK_BIN:-target/release/hotstock}"
out="target/callgrind/$kind${FLOW:+-$FLOW}"; rm -rf "$out"; mkdir -p "$out"
script="$out/request.lua"
grind=(valgrind --tool=callgrind --compress-strings=no --compress-pos=no --separate-threads=yes
       "--callgrind-out-file=$out/cg.%p" ${GRIND_EXTRA:-})
if [ "$kind" = bare ]; then
    mode=hot; [ "${FLOW:-}" = uniform ] && mode=uniform
    "${grind[@]}" target/release/hotstock-bench serve-bare --listen 127.0.0.1:0 --mode "$mode" \
        --units "${AVAILABLE:-1000000000000}" > "$out/stdout" 2> "$out/stderr" &
    hold_path=/hold; confirm_path='"/confirm/" .. id'
    hold_body='{"sku":"s0","quantity":1}'
    buy_path=/buy; buy_before='{"sku":"'; buy_after='","quantity":1}'
    printf 'wrk.method = "POST"\nwrk.path = "/buy"\nwrk.body = %s\n' "'{\"sku\":\"s0\",\"quantity\":1}'" > "$script"
else
    "${grind[@]}" "$bin" serve --listen 127.0.0.1:0 --durability "$kind" \
        --data-dir "$out/data" --max-in-flight 100000 > "$out/stdout" 2> "$out/stderr" &
    usual='{"lines":[{"sku":"s0","quantity":1}],"confirm":true}'
    body="${BODY:-$usual}"
    hold_path=/v1/reservations; confirm_path='"/v1/reservations/" .. id .. "/confirm"'
    hold_body='{"lines":[{"sku":"s0","quantity":1}],"ttl_ms":600000}'
    buy_path=/v1/reservations; buy_before='{"lines":[{"sku":"'; buy_after='","quantity":1}],"confirm":true}'
    printf 'wrk.method = "POST"\nwrk.path = "/v1/reservations"\nwrk.body = [[%s]]\n' "$body" > "$script"
fi
skus=1
if [ "${FLOW:-}" = uniform ]; then
    skus=10000
    cat > "$script" <<LUA
request = function()
  local sku = "s" .. math.random(0, $skus - 1)
  return wrk.format("POST", "$buy_path", nil, '$buy_before' .. sku .. '$buy_after')
end
LUA
fi
if [ "${FLOW:-}" = hold-confirm ]; then
    # A hold answers 200 (bare) or 201 (hotstock) with its id; the next
    # request of that wrk thread confirms it. A confirm's answer is not
    # queued again (hotstock's also carries the id, so the hold's status
    # and the path tell them apart).
    cat > "$script" <<LUA
local held = {}
request = function()
  local id = table.remove(held)
  if id then return wrk.format("POST", $confirm_path, nil, "") end
  return wrk.format("POST", "$hold_path", nil, [[$hold_body]])
end
response = function(status, headers, body)
  local id = body:match('"id":"([^"]+)"')
  if id and (status == 201 or (status == 200 and body:find('"held"', 1, true))) then
    table.insert(held, id)
  end
end
LUA
fi
server=$!
until grep -q "listening on" "$out/stdout" 2>/dev/null; do sleep 0.2; done
addr=$(sed -n 's/listening on //p' "$out/stdout")
if [ "$kind" != bare ]; then
    for i in $(seq 0 $((skus - 1))); do echo "url = \"http://$addr/v1/skus/s$i\""; done \
        | curl -s -X PUT -d "{\"available\": ${AVAILABLE:-1000000000000}}" --parallel --parallel-max 16 -K - > /dev/null
fi
wrk -t1 -c64 -d3s -s "$script" "http://$addr" > /dev/null
callgrind_control -d "$server" > /dev/null
requests=$(wrk -t1 -c64 -d"${seconds}s" -s "$script" "http://$addr" | awk '/requests in/ {print $1}')
callgrind_control -d "$server" > /dev/null
kill -TERM "$server"; wait "$server" 2>/dev/null || true
echo "$requests" > "$out/requests"
echo "$kind: $requests requests measured"
# Dump 2 (part .2) is the measurement: one file per thread.
benches/tools/callgrind_per_request.py "$requests" "$out"/cg.*.2-*
