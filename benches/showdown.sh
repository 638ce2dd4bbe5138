#!/usr/bin/env bash
# The flash-sale showdown, reproduced: builds in release, runs
# hotstock-bench RUNS times (default 3) with PostgreSQL and Redis on this
# machine, and prints the medians as Markdown. Each run writes
# target/showdown/run-N/showdown.{json,png}.
#   benches/showdown.sh [runs] [extra hotstock-bench flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"; shift || true
export HOTSTOCK_TEST_POSTGRES_URL="${HOTSTOCK_TEST_POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/test}"
export HOTSTOCK_TEST_REDIS_URL="${HOTSTOCK_TEST_REDIS_URL:-redis://127.0.0.1:6379}"
cargo build --release --workspace -q
mkdir -p target/showdown
for i in $(seq 1 "$runs"); do
    target/release/hotstock-bench --out "target/showdown/run-$i" "$@" > "target/showdown/run-$i.txt" 2> "target/showdown/run-$i.log" \
        || { echo "run $i failed; see target/showdown/run-$i.log" >&2; exit 1; }
    echo "run $i done" >&2
done
benches/tools/showdown_medians.py $(for i in $(seq 1 "$runs"); do echo "target/showdown/run-$i/showdown.json"; done)
