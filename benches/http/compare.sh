#!/usr/bin/env bash
# Before/after for the purchase path: hot-SKU purchases over HTTP against
# another build of hotstock (OLD, e.g. a worktree of an earlier commit
# built with `cargo build --release`) and against this tree's release
# build, alternating, RUNS times each, in one script so the machine's mood
# is shared. Prints each run's requests/s and the ratio of medians (new / old).
#   benches/http/compare.sh OLD_BINARY [runs] [seconds] [connections] [async|sync]
set -euo pipefail
cd "$(dirname "$0")/../.."
old_binary="$1"; runs="${2:-3}"; seconds="${3:-5}"; connections="${4:-64}"; durability="${5:-async}"
command -v wrk >/dev/null || { echo "install wrk (apt-get install wrk)" >&2; exit 1; }
[ -x "$old_binary" ] || { echo "$old_binary is not an executable" >&2; exit 1; }
cargo build -q --release
work=$(mktemp -d)
body='{"lines":[{"sku":"hot","quantity":1}],"confirm":true}'
printf 'wrk.method = "POST"\nwrk.path = "/v1/reservations"\nwrk.body = [[%s]]\n' "$body" > "$work/buy.lua"
start() { # name, binary
    mkdir -p "$work/$1"
    "$2" serve --listen 127.0.0.1:0 --durability "$durability" --data-dir "$work/$1" \
        --max-in-flight 100000 > "$work/$1/out" 2>/dev/null &
    echo $! > "$work/$1/pid"
    until grep -q "listening on" "$work/$1/out" 2>/dev/null; do sleep 0.1; done
    local addr; addr=$(sed -n 's/listening on //p' "$work/$1/out")
    curl -sf -X PUT "http://$addr/v1/skus/hot" -d '{"available": 1000000000000}' > /dev/null
    echo "$addr" > "$work/$1/addr"
}
start old "$old_binary"
start new target/release/hotstock
measure() { # name
    local addr; addr=$(cat "$work/$1/addr")
    wrk -t2 -c"$connections" -d"${seconds}s" -s "$work/buy.lua" "http://$addr" > "$work/$1.wrk"
    if grep -q "Non-2xx" "$work/$1.wrk"; then echo "$1: non-2xx answers" >&2; cat "$work/$1.wrk" >&2; exit 1; fi
    awk '/Requests\/sec/ {print $2}' "$work/$1.wrk"
}
for name in old new; do measure "$name" > /dev/null; done # warm-up
old=(); new=()
for run in $(seq "$runs"); do
    old+=("$(measure old)"); new+=("$(measure new)")
    echo "run $run: old ${old[-1]} req/s, new ${new[-1]} req/s ($durability)"
done
for name in old new; do kill -TERM "$(cat "$work/$name/pid")"; done
wait || true
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mo=$(median "${old[@]}"); mn=$(median "${new[@]}")
echo "median: old $mo req/s, new $mn req/s, ratio $(python3 -c "print(round($mn/$mo, 3))")"
rm -rf "$work"
