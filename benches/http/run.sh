#!/usr/bin/env bash
# Hot-SKU purchases over HTTP against the real `hotstock serve`, in `async`
# and `sync` durability, with wrk (Debian package `wrk`) on the same
# machine. Usage: benches/http/run.sh [connections] [seconds]
set -euo pipefail
cd "$(dirname "$0")/../.."
connections="${1:-64}"
seconds="${2:-10}"
command -v wrk >/dev/null || { echo "install wrk (apt-get install wrk)" >&2; exit 1; }
cargo build -q --release
for durability in async sync; do
    dir=$(mktemp -d)
    target/release/hotstock serve --listen 127.0.0.1:0 --durability "$durability" --data-dir "$dir" \
        --max-in-flight 100000 > "$dir/out" 2>/dev/null &
    server=$!
    until grep -q "listening on" "$dir/out" 2>/dev/null; do sleep 0.1; done
    addr=$(sed -n 's/listening on //p' "$dir/out")
    curl -s -X PUT "http://$addr/v1/skus/hot" -d '{"available": 1000000000000}' > /dev/null
    echo "== $durability, $connections connections, ${seconds}s"
    wrk -t2 -c"$connections" -d"${seconds}s" -s benches/http/purchase.lua "http://$addr" \
        | grep -E "Requests/sec|p50|Non-2xx|Socket errors"
    curl -s "http://$addr/v1/skus/hot" | sed 's/^/   /'; echo
    kill -TERM "$server"; wait "$server" || true
    rm -rf "$dir"
done
