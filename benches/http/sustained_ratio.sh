#!/usr/bin/env bash
# #18's sustained-sale target: a 30 s sale, checkpoints included, against
# the showdown's 3 s sale, in the same run. Each run sells the hot SKU over
# HTTP twice per durability mode (`hotstock-bench --mode hot --only
# http-async,http-sync`, stock sized by the showdown's probe for 3 s, then
# for 30 s); a fresh server per sale, so the 3 s sale sees no checkpoint
# (the first comes after 5 s) and the 30 s one about six. Prints each
# run's units/s and ratio, then the medians.
#   benches/http/sustained_ratio.sh [runs] [long seconds]
set -euo pipefail
cd "$(dirname "$0")/../.."
runs="${1:-3}"; long="${2:-30}"
cargo build --release --workspace -q
out=target/sustained_ratio; rm -rf "$out"; mkdir -p "$out"
for run in $(seq 1 "$runs"); do
    for seconds in 3 "$long"; do
        target/release/hotstock-bench --mode hot --only http-async,http-sync \
            --seconds "$seconds" --max-seconds $((4 * long)) \
            --out "$out/run-$run-${seconds}s" > "$out/run-$run-${seconds}s.txt" 2>&1 \
            || { echo "run $run (${seconds} s) failed: see $out/run-$run-${seconds}s.txt" >&2; exit 1; }
    done
done
python3 - "$out" "$runs" "$long" <<'EOF'
import json, statistics, sys
out, runs, long = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def rate(run, seconds, key):
    report = json.load(open(f"{out}/run-{run}-{seconds}s/showdown.json"))
    row = next(r for r in report["rows"] if r["key"] == key)
    if "not_measured" in row:
        sys.exit(f"run {run} {key} ({seconds} s) not measured: {row['not_measured']}")
    return row["units_per_second"], row["seconds"]
for key in ["http-async", "http-sync"]:
    ratios = []
    for run in range(1, runs + 1):
        (short, _), (sustained, took) = rate(run, 3, key), rate(run, long, key)
        ratios.append(sustained / short)
        print(f"{key} run {run}: 3 s sale {short:,.0f} units/s, {long} s sale "
              f"{sustained:,.0f} units/s over {took:.1f} s, ratio {ratios[-1]:.2f}")
    print(f"{key}: median ratio {statistics.median(ratios):.2f} "
          f"(range {min(ratios):.2f}-{max(ratios):.2f}, {runs} runs; target >= 0.9)")
EOF
