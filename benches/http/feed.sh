#!/usr/bin/env bash
# What the change feed's consumers cost the flash sale, and how fast they
# hear of it: hot-SKU purchases over HTTP in `async` durability against a
# server with nobody reading the feed ("plain") and against one with the
# NATS JetStream publisher on (a nats-server of this script's own) and one
# SSE consumer attached ("feed"), alternating, RUNS times each, in one
# script so the machine's mood is shared. Prints each run's requests/s, the
# ratio of medians (feed / plain), the SSE consumer's delivery lag
# (examples/feed_lag.rs) and the publisher's lag at the end.
# MODE `sse` or `nats` attaches only that one.
# HOTSTOCK_BIN=path measures another build (the consumer is always this tree's).
#   benches/http/feed.sh [runs] [seconds] [connections] [both|sse|nats]
set -euo pipefail
cd "$(dirname "$0")/../.."
runs="${1:-3}"; seconds="${2:-5}"; connections="${3:-64}"; mode="${4:-both}"
command -v wrk >/dev/null || { echo "install wrk (apt-get install wrk)" >&2; exit 1; }
command -v perf >/dev/null || { echo "install perf (apt-get install linux-perf)" >&2; exit 1; }
nats_server=$(command -v nats-server || echo /usr/sbin/nats-server)
[ -x "$nats_server" ] || { echo "install nats-server (apt-get install nats-server)" >&2; exit 1; }
cargo build -q --release --example feed_lag
[ -n "${HOTSTOCK_BIN:-}" ] || cargo build -q --release
bin="${HOTSTOCK_BIN:-target/release/hotstock}"
work=$(mktemp -d)
nats_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$nats_server" -a 127.0.0.1 -p "$nats_port" -js -sd "$work/js" > /dev/null 2>&1 &
nats_pid=$!
body='{"lines":[{"sku":"hot","quantity":1}],"confirm":true}'
printf 'wrk.method = "POST"\nwrk.path = "/v1/reservations"\nwrk.body = [[%s]]\n' "$body" > "$work/buy.lua"
start() { # name, extra flags...
    local name=$1; shift
    mkdir -p "$work/$name"
    "$bin" serve --listen 127.0.0.1:0 --durability async --data-dir "$work/$name" \
        --max-in-flight 100000 "$@" > "$work/$name/out" 2>/dev/null &
    echo $! > "$work/$name/pid"
    until grep -q "listening on" "$work/$name/out" 2>/dev/null; do sleep 0.1; done
    local addr; addr=$(sed -n 's/listening on //p' "$work/$name/out")
    curl -sf -X PUT "http://$addr/v1/skus/hot" -d '{"available": 1000000000000}' > /dev/null
    echo "$addr" > "$work/$name/addr"
}
start plain
if [ "$mode" = sse ]; then
    start feed
else
    start feed --nats-url "nats://127.0.0.1:$nats_port" --nats-stream BENCH
fi
# The consumer listens for the whole measurement (warm-up included).
total=$(( 2 * (runs + 1) * (seconds + 2) + 5 ))
lag_pid=
if [ "$mode" != nats ]; then
    target/release/examples/feed_lag "$(cat "$work/feed/addr")" "$total" > "$work/lag" &
    lag_pid=$!
fi
# Requests/s, and the server's own CPU per request (perf's software
# task-clock of the server process: what hotstock spends, whatever the
# consumer, the broker and wrk take of the same two cores).
# Where the two cores go: CPU ticks (1/100 s) of a process, from /proc, and
# of the whole machine (busy, not idle or iowait), read before and after
# each run; what is left of the machine's is wrk's and the kernel's.
ticks() { # pid
    if [ -r "/proc/$1/stat" ]; then awk '{print $14 + $15}' "/proc/$1/stat"; else echo 0; fi
}
busy() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
measure() { # name
    local addr; addr=$(cat "$work/$1/addr")
    local pid; pid=$(cat "$work/$1/pid")
    local t0=( "$(busy)" "$(ticks "$pid")" "$(ticks "$nats_pid")" "$(ticks "${lag_pid:-0}")" )
    perf stat -e task-clock -x, -o "$work/$1.cpu" -p "$pid" -- sleep "$seconds" 2>/dev/null &
    local perf_pid=$!
    wrk -t2 -c"$connections" -d"${seconds}s" -s "$work/buy.lua" "http://$addr" > "$work/$1.wrk"
    wait "$perf_pid" || true
    local t1=( "$(busy)" "$(ticks "$pid")" "$(ticks "$nats_pid")" "$(ticks "${lag_pid:-0}")" )
    local requests; requests=$(awk '/requests in/ {print $1}' "$work/$1.wrk")
    # Microseconds of CPU per purchase: machine, server, nats-server, SSE consumer.
    python3 -c "
b=[$(IFS=,; echo "${t1[*]}")]; a=[$(IFS=,; echo "${t0[*]}")]; n=$requests
d=[(y - x) * 1e4 / n for x, y in zip(a, b)]
print('$1 cpu us/purchase: machine %.1f, server %.1f, nats-server %.1f, consumer %.1f, rest (wrk, kernel) %.1f' % (d[0], d[1], d[2], d[3], d[0] - d[1] - d[2] - d[3]))
" >> "$work/cpu"
    if grep -q "Non-2xx" "$work/$1.wrk"; then echo "$1: non-2xx answers" >&2; cat "$work/$1.wrk" >&2; exit 1; fi
    local rps; rps=$(awk '/Requests\/sec/ {print $2}' "$work/$1.wrk")
    local cpu_ms; cpu_ms=$(awk -F, '/task-clock/ {print $1}' "$work/$1.cpu")
    echo "$rps $(python3 -c "print(round(${cpu_ms:-0} * 1000 / ($rps * $seconds), 2))")"
}
for name in plain feed; do measure "$name" > /dev/null; done # warm-up
plain=(); feed=(); plain_us=(); feed_us=()
for run in $(seq "$runs"); do
    read -r rps us <<< "$(measure plain)"; plain+=("$rps"); plain_us+=("$us")
    read -r rps us <<< "$(measure feed)"; feed+=("$rps"); feed_us+=("$us")
    echo "run $run: plain ${plain[-1]} req/s (${plain_us[-1]} server us/req), with the feed read ($mode) ${feed[-1]} req/s (${feed_us[-1]} server us/req)"
done
feed_addr=$(cat "$work/feed/addr")
metric() { curl -sf "http://$feed_addr/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
if [ "$mode" != sse ]; then
    # The publisher's backlog right after the load, then once it drains.
    echo "publisher right after the last run: lag $(metric hotstock_nats_lag_events) events, $(metric hotstock_nats_lag_seconds) s"
    for _ in $(seq 1 300); do [ "$(metric hotstock_nats_lag_events)" = "0" ] && break; sleep 0.1; done
    echo "publisher drained: lag $(metric hotstock_nats_lag_events) events (feed at $(metric hotstock_feed_last_position))"
fi
# The disk's share of the lag: an event reaches a reader only once its
# journal batch is durable, so the fdatasync latencies of the same run
# (the feed server's, cumulative buckets, whole run) bound the lag below.
echo "fdatasync per journal batch (feed server, le seconds: batches):"
curl -sf "http://$feed_addr/metrics" | awk '/^hotstock_journal_fsync_seconds_bucket/ {printf "  %s %s\n", $1, $2}' | sed 's/hotstock_journal_fsync_seconds_bucket//'
if [ -n "$lag_pid" ]; then
    wait "$lag_pid" || true
    echo "SSE consumer: $(cat "$work/lag") (feed at $(metric hotstock_feed_last_position))"
fi
echo "CPU per purchase, every run (warm-up first):"
cat "$work/cpu"
for name in plain feed; do kill -TERM "$(cat "$work/$name/pid")"; done
kill "$nats_pid"
wait || true
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mp=$(median "${plain[@]}"); mf=$(median "${feed[@]}")
echo "median: plain $mp req/s, feed $mf req/s, ratio $(python3 -c "print(round($mf/$mp, 3))")"
mpu=$(median "${plain_us[@]}"); mfu=$(median "${feed_us[@]}")
echo "median server CPU: plain $mpu us/request, feed $mfu us/request, ratio $(python3 -c "print(round($mfu/$mpu, 3))")"
rm -rf "$work"
