#!/usr/bin/env bash
# What checking a buyer token costs the flash sale: hot-SKU purchases over
# HTTP in `async` durability, against an open server (no roles, body names
# the customer) and against a server with a buyer key (every request
# carries an HS256 buyer token for the same customer), alternating, RUNS
# times each, in one script so the machine's mood is shared. Prints each
# run's requests/s and the ratio of medians (tokens / no tokens).
#   benches/http/buyer_tokens.sh [runs] [seconds] [connections]
set -euo pipefail
cd "$(dirname "$0")/../.."
runs="${1:-3}"; seconds="${2:-5}"; connections="${3:-64}"
command -v wrk >/dev/null || { echo "install wrk (apt-get install wrk)" >&2; exit 1; }
cargo build -q --release
key="bench-buyer-key-0123456789abcdef-0123"
admin="bench-admin-token-0123456789abcdef-01"
# An HS256 JWT from the standard library: header.claims.signature.
token=$(python3 - "$key" <<'PY'
import base64, hashlib, hmac, json, sys, time
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")
header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
claims = b64(json.dumps({"sub": "ann", "exp": int(time.time()) + 86400}).encode())
signed = header + b"." + claims
sig = b64(hmac.new(sys.argv[1].encode(), signed, hashlib.sha256).digest())
print((signed + b"." + sig).decode())
PY
)
work=$(mktemp -d)
body='{"lines":[{"sku":"hot","quantity":1}],"customer":"ann","confirm":true}'
printf 'wrk.method = "POST"\nwrk.path = "/v1/reservations"\nwrk.body = [[%s]]\n' "$body" > "$work/open.lua"
printf 'wrk.method = "POST"\nwrk.path = "/v1/reservations"\nwrk.body = [[%s]]\nwrk.headers["Authorization"] = "Bearer %s"\n' \
    "$body" "$token" > "$work/token.lua"

start() { # name, extra flags...
    local name=$1; shift
    mkdir -p "$work/$name"
    target/release/hotstock serve --listen 127.0.0.1:0 --durability async --data-dir "$work/$name" \
        --max-in-flight 100000 --admin-token "$admin" "$@" > "$work/$name/out" 2>/dev/null &
    echo $! > "$work/$name/pid"
    until grep -q "listening on" "$work/$name/out" 2>/dev/null; do sleep 0.1; done
    local addr; addr=$(sed -n 's/listening on //p' "$work/$name/out")
    curl -sf -X PUT "http://$addr/v1/skus/hot" -H "Authorization: Bearer $admin" \
        -d '{"available": 1000000000000}' > /dev/null
    echo "$addr" > "$work/$name/addr"
}
start open
start token --buyer-key "k1=$key"
measure() { # name
    local addr; addr=$(cat "$work/$1/addr")
    wrk -t2 -c"$connections" -d"${seconds}s" -s "$work/$1.lua" "http://$addr" > "$work/$1.wrk"
    if grep -q "Non-2xx" "$work/$1.wrk"; then echo "$1: non-2xx answers" >&2; cat "$work/$1.wrk" >&2; exit 1; fi
    awk '/Requests\/sec/ {print $2}' "$work/$1.wrk"
}
for name in open token; do measure "$name" > /dev/null; done # warm-up
open=(); tokens=()
for run in $(seq "$runs"); do
    open+=("$(measure open)"); tokens+=("$(measure token)")
    echo "run $run: no tokens ${open[-1]} req/s, buyer tokens ${tokens[-1]} req/s"
done
for name in open token; do kill -TERM "$(cat "$work/$name/pid")"; done
wait || true
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mo=$(median "${open[@]}"); mt=$(median "${tokens[@]}")
echo "median: no tokens $mo req/s, buyer tokens $mt req/s, ratio $(python3 -c "print(round($mt/$mo, 3))")"
rm -rf "$work"
