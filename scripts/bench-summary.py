#!/usr/bin/env python3
"""Medians and governed/bare ratios from scripts/bench-http.sh's results.csv.

    python3 scripts/bench-summary.py RESULTS.csv [--markdown]

Every figure is the median over the runs of one (transport, target,
concurrency); ratios compare medians measured in the same script run.
"added p99" is median p99 of the target minus median p99 of bare.
"""

import csv
import statistics
import sys
from collections import defaultdict

COLUMNS = ["calls_per_s", "p50_ms", "p99_ms", "p999_ms",
           "server_cpu_us_per_call", "client_cpu_us_per_call"]


def load(path):
    groups = defaultdict(lambda: defaultdict(list))
    errors = defaultdict(int)
    for row in csv.DictReader(open(path)):
        key = (row["transport"], row["target"], int(row["concurrency"]))
        for col in COLUMNS:
            if row[col] != "":
                groups[key][col].append(float(row[col]))
        errors[key] += int(row["transport_errors"]) + int(row["tool_errors"])
    return groups, errors


def medians(groups):
    return {k: {c: statistics.median(v) for c, v in cols.items()}
            for k, cols in groups.items()}


def table(path, markdown):
    groups, errors = load(path)
    med = medians(groups)
    runs = {k: len(v["calls_per_s"]) for k, v in groups.items()}
    head = ["transport", "target", "conc", "runs", "calls/s", "×bare", "p50 ms",
            "p99 ms", "+p99 ms", "p99.9 ms", "server µs CPU/call", "loadgen µs CPU/call",
            "errors"]
    rows = []
    for key in sorted(med, key=lambda k: (k[0], k[2], ["bare", "governed", "noauth"].index(k[1])
                                          if k[1] in ("bare", "governed", "noauth") else 9)):
        transport, target, conc = key
        m = med[key]
        bare = med.get((transport, "bare", conc))
        ratio = added = ""
        if bare and target != "bare":
            ratio = "%.2f" % (m["calls_per_s"] / bare["calls_per_s"])
            added = "%+.2f" % (m["p99_ms"] - bare["p99_ms"])
        fmt = lambda col, f: (f % m[col]) if col in m else "-"
        rows.append([transport, target, str(conc), str(runs[key]),
                     "%.0f" % m["calls_per_s"], ratio, fmt("p50_ms", "%.3f"),
                     fmt("p99_ms", "%.3f"), added, fmt("p999_ms", "%.3f"),
                     fmt("server_cpu_us_per_call", "%.0f"),
                     fmt("client_cpu_us_per_call", "%.0f"), str(errors[key])])
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for r in rows:
            print("| " + " | ".join(r) + " |")
    else:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
        print("  ".join(h.rjust(w) for h, w in zip(head, widths)))
        for r in rows:
            print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
    bad = [k for k, n in errors.items() if n]
    if bad:
        print("\nWARNING: runs with errors are not valid measurements:", bad)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    table(sys.argv[1], "--markdown" in sys.argv[2:])
