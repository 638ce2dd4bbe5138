#!/usr/bin/env bash
# What publishing to NATS JetStream costs, per event, on both sides, with
# nothing else running: a sale of EVENTS purchases is made (batch endpoint)
# while the broker is down, then a nats-server with an empty store of its
# own starts and the publisher catches up. Measured from the broker's start
# until the publisher's lag is 0: CPU of nats-server and of hotstock's
# publisher thread (/proc ticks, 1/100 s), and the wall time. Each binary
# given is measured RUNS times, alternated.
#   benches/http/nats_catchup.sh RUNS EVENTS BIN [BIN...]
set -euo pipefail
cd "$(dirname "$0")/../.."
runs="${1:-3}"; events="${2:-200000}"; shift 2
nats_server=$(command -v nats-server || echo /usr/sbin/nats-server)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ticks() { awk '{print $14 + $15}' "$1"; }
metric() { curl -sf "http://$1/metrics" | awk -v m="$2" '$1 == m {print $2}'; }
one() { # binary
    local work; work=$(mktemp -d)
    local port; port=$(free_port)
    "$1" serve --listen 127.0.0.1:0 --durability async --data-dir "$work/data" \
        --nats-url "nats://127.0.0.1:$port" --nats-stream BENCH > "$work/out" 2>/dev/null &
    local pid=$!
    until grep -q "listening on" "$work/out" 2>/dev/null; do sleep 0.1; done
    local addr; addr=$(sed -n 's/listening on //p' "$work/out")
    curl -sf -X PUT "http://$addr/v1/skus/hot" -d '{"available": 1000000000000}' > /dev/null
    python3 -c '
import json; o={"lines":[{"sku":"hot","quantity":1}],"confirm":True}
print(json.dumps({"orders":[o]*1000}))' > "$work/batch.json"
    for _ in $(seq $(( events / 1000 ))); do
        curl -sf -X POST "http://$addr/v1/reservations/batch" --data-binary @"$work/batch.json" > /dev/null
    done
    local last; last=$(metric "$addr" hotstock_feed_last_position)
    local thread; thread=$(grep -l '^hotstock-nats' /proc/"$pid"/task/*/comm | head -1)
    thread=${thread%/comm}/stat
    local p0; p0=$(ticks "$thread")
    local start; start=$(date +%s.%N)
    "$nats_server" -a 127.0.0.1 -p "$port" -js -sd "$work/js" > /dev/null 2>&1 &
    local nats_pid=$!
    until [ "$(metric "$addr" hotstock_nats_acked_position)" = "$last" ]; do sleep 0.02; done
    local end; end=$(date +%s.%N)
    local n; n=$(ticks "/proc/$nats_pid/stat")
    local p1; p1=$(ticks "$thread")
    python3 -c "print('%s: %d events, nats-server %.2f us/event, publisher thread %.2f us/event, catch-up %.2f s (%.0f events/s)' % ('$1', $last, $n * 1e4 / $last, ($p1 - $p0) * 1e4 / $last, $end - $start, $last / ($end - $start)))"
    kill -TERM "$pid" "$nats_pid"; wait "$pid" "$nats_pid" 2>/dev/null || true
    rm -rf "$work"
}
for _ in $(seq "$runs"); do
    for binary in "$@"; do one "$binary"; done
done
