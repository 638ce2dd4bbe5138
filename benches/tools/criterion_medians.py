#!/usr/bin/env python3
"""Print criterion's median throughput per benchmark as a markdown table.

Usage: python3 benches/tools/criterion_medians.py [target/criterion]
Each row: group, function, threads, median ns/op, median M ops/s.
"""
import json
import pathlib
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")
print("| group | function | threads | median ns/op | median M ops/s |")
print("|---|---|---:|---:|---:|")
for est in sorted(root.glob("*/*/*/new/estimates.json")):
    group, function, threads = est.parts[-5], est.parts[-4], est.parts[-3]
    median_ns = json.loads(est.read_text())["median"]["point_estimate"]
    print(f"| {group} | {function} | {threads} | {median_ns:.2f} | {1e3 / median_ns:.1f} |")
