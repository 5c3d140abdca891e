#!/usr/bin/env python3
"""Median time and rate of each criterion benchmark from the last `cargo bench`.

    cargo bench --bench pipeline && python3 scripts/criterion-medians.py

Reads target/criterion/*/new/{estimates,benchmark}.json. The rate is per
element (calls, receipts) where the benchmark declares a throughput.
"""

import glob
import json
import os
import sys


def human(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return "%.3g %s" % (ns / scale, unit)
    return "%.3g ns" % ns


def main(root):
    rows = []
    for est in sorted(glob.glob(os.path.join(root, "**", "new", "estimates.json"), recursive=True)):
        new = os.path.dirname(est)
        bench = json.load(open(os.path.join(new, "benchmark.json")))
        median = json.load(open(est))["median"]["point_estimate"]
        elements = (bench.get("throughput") or {}).get("Elements")
        rate = "%.0f /s" % (elements * 1e9 / median) if elements else ""
        per = human(median / elements) if elements and elements > 1 else ""
        rows.append((bench["full_id"], human(median), per, rate))
    if not rows:
        sys.exit(f"no criterion results under {root}; run `cargo bench --bench pipeline` first")
    w = max(len(r[0]) for r in rows)
    print(f"{'benchmark':<{w}}  {'median':>10}  {'per element':>11}  {'rate':>12}")
    for name, med, per, rate in rows:
        print(f"{name:<{w}}  {med:>10}  {per:>11}  {rate:>12}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")
