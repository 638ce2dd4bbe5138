#!/usr/bin/env python3
"""Medians over several showdown runs (showdown.json files), as Markdown.

Ratios are taken within each run (both sides measured minutes apart on the
same machine) and the median of those ratios is reported, never a ratio of
medians from different runs.

    benches/tools/showdown_medians.py target/showdown/run-*/showdown.json
"""
import json
import statistics
import sys


def fmt_rate(v):
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e3:
        return f"{v / 1e3:.1f}k"
    return f"{v:.0f}"


def fmt_us(v):
    if v >= 1000:
        return f"{v / 1000:.1f} ms"
    if v >= 10:
        return f"{v:.0f} µs"
    return f"{v:.2f} µs"


def main(paths):
    runs = [json.load(open(p)) for p in paths]
    order, rows = [], {}
    for run in runs:
        for row in run["rows"]:
            key = (row["workload"], row["key"])
            if key not in rows:
                order.append(key)
                rows[key] = []
            rows[key].append(row)
    print(f"Medians of {len(runs)} runs.\n")
    print("| workload | contender | units/s | oversold | p50 | p99 | p99.9 | machine CPU per unit | server CPU per unit |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for key in order:
        measured = [r for r in rows[key] if "not_measured" not in r]
        label = rows[key][0]["contender"]
        if not measured:
            print(f"| {key[0]} | {label} | not measured: {rows[key][0]['not_measured']} | | | | | | |")
            continue
        med = lambda f: statistics.median(f(r) for r in measured)
        # A sold-out crowd is measured in answers (one unit, then "sold
        # out"): its rate and CPU are per answer, marked with "answers".
        crowd = key[0] == "sold-out"
        count = (lambda r: max(r["attempts"], 1)) if crowd else (lambda r: max(r["sold"], 1))
        rate = med(lambda r: r["answers_per_second"] if crowd else r["units_per_second"])
        over = max(r["oversold"] for r in measured)
        cpu = med(lambda r: r["machine_cpu_seconds"] * 1e6 / count(r))
        with_srv = [r for r in measured if r.get("server_cpu_seconds") is not None]
        srv_txt = fmt_us(statistics.median(r["server_cpu_seconds"] * 1e6 / count(r) for r in with_srv)) if with_srv else "-"
        note = " (stopped at 2x stock)" if any(r.get("stopped_oversold") for r in measured) else ""
        if crowd:
            note += " (rate and CPU per answer)"
        print(f"| {key[0]} | {label} | {fmt_rate(rate)} | {over}{note} | {fmt_us(med(lambda r: r['latency_us']['p50']))} "
              f"| {fmt_us(med(lambda r: r['latency_us']['p99']))} | {fmt_us(med(lambda r: r['latency_us']['p999']))} "
              f"| {fmt_us(cpu)} | {srv_txt} |")
    print("\n| target | wanted | median | range | each run | runs met |")
    print("|---|---:|---:|---:|---|---:|")
    targets = {}
    for run in runs:
        for t in run["targets"]:
            targets.setdefault(t["target"], []).append(t)
    for name, ts in targets.items():
        values = [t["measured"] for t in ts if t["measured"] is not None]
        sign = "<" if ts[0]["at_most"] else "≥"
        median = f"{statistics.median(values):.2f}" if values else "-"
        spread = f"{min(values):.2f}–{max(values):.2f}" if values else "-"
        each = ", ".join("-" if t["measured"] is None else f"{t['measured']:.2f}" for t in ts)
        met = sum(1 for t in ts if t["met"])
        print(f"| {name} | {sign} {ts[0]['wanted']:g} | {median} | {spread} | {each} | {met}/{len(ts)} |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
