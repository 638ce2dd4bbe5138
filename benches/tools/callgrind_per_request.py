#!/usr/bin/env python3
"""Self instructions per request from callgrind files (written with
--compress-strings=no).

  callgrind_per_request.py REQUESTS FILE...            per file (thread) totals and top functions
  callgrind_per_request.py --diff REQ_A FILES_A REQ_B FILES_B
                                                        A minus B, function by function
                                                        (FILES_x: comma-separated)

EVENT=D1mr (any name on the files' `events:` line, e.g. the cache
simulation's D1mr, D1mw, DLmr, DLmw) counts that event instead of Ir.
"""
import collections
import os
import sys

EVENT = os.environ.get("EVENT", "Ir")


def self_costs(path):
    costs = collections.Counter()
    function = None
    after_call = False
    column = 1
    with open(path) as f:
        for line in f:
            if line.startswith("events:"):
                names = line.split()[1:]
                if EVENT not in names:
                    sys.exit(f"{path} has no event {EVENT} (it has {' '.join(names)})")
                column = 1 + names.index(EVENT)
            elif line.startswith("fn="):
                function = line[3:].strip()
            elif line.startswith(("cfn=", "cfi=", "cfl=", "cob=")):
                continue
            elif line.startswith("calls="):
                after_call = True  # the next cost line is the call's inclusive cost
            elif line[:1].isdigit() or line[:1] in "+-*":
                if after_call:
                    after_call = False
                    continue
                parts = line.split()
                # Trailing zero counts are left out of a cost line.
                if len(parts) > column and function:
                    costs[function] += int(parts[column])
    return costs


def main(argv):
    if argv[1:2] == ["--diff"]:
        a_req, a_files, b_req, b_files = int(argv[2]), argv[3].split(","), int(argv[4]), argv[5].split(",")
        a = collections.Counter()
        b = collections.Counter()
        for p in a_files:
            a.update(self_costs(p))
        for p in b_files:
            b.update(self_costs(p))
        print(f"A {sum(a.values()) / a_req:.0f} {EVENT}/request, B {sum(b.values()) / b_req:.0f}")
        rows = sorted(set(a) | set(b), key=lambda k: -(a[k] / a_req - b[k] / b_req))
        # The 25 that grew most and the 25 that shrank most.
        shown = rows[:25] + [k for k in rows[-25:] if k not in rows[:25]]
        for k in shown:
            print(f"{a[k] / a_req:7.0f} {b[k] / b_req:7.0f} {a[k] / a_req - b[k] / b_req:+7.0f}  {k[:120]}")
        return
    requests = int(argv[1])
    total = 0
    for path in argv[2:]:
        costs = self_costs(path)
        n = sum(costs.values())
        total += n
        if n / requests < 1:
            continue
        print(f"{path}: {n / requests:.0f} {EVENT}/request")
        for name, c in costs.most_common(8):
            print(f"    {c / requests:7.0f}  {name[:110]}")
    print(f"all threads: {total / requests:.0f} {EVENT}/request")


if __name__ == "__main__":
    main(sys.argv)
