#!/usr/bin/env python3
"""Plot median Streamable HTTP throughput vs concurrency, per target, as SVG.

    python3 scripts/bench-plot.py RESULTS.csv OUT.svg

Hand-written SVG (no matplotlib), so it runs on a bare python3. One line per
target (bare, governed, noauth), one point per concurrency, with the runs'
min-max as a whisker.
"""

import csv
import statistics
import sys
from collections import defaultdict

COLOURS = {"bare": "#555555", "governed": "#d62728", "noauth": "#1f77b4"}
LABELS = {"bare": "bare rmcp echo (ceiling)", "governed": "tollgate, API key",
          "noauth": "tollgate, no auth"}
W, H = 680, 400
L, R, T, B = 70, 190, 40, 50  # margins


def main(src, dst):
    runs = defaultdict(list)
    for row in csv.DictReader(open(src)):
        if row["transport"] == "http":
            runs[(row["target"], int(row["concurrency"]))].append(float(row["calls_per_s"]))
    targets = [t for t in ("bare", "governed", "noauth") if any(k[0] == t for k in runs)]
    concs = sorted({c for _, c in runs})
    ymax = max(max(v) for v in runs.values()) * 1.1
    step = nice_step(ymax / 5)
    ymax = step * (int(ymax / step) + 1)

    def x(i):
        return L + (W - L - R) * (i + 0.5) / len(concs)

    def y(v):
        return T + (H - T - B) * (1 - v / ymax)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{L}" y="22" font-size="14">tools/call throughput over Streamable HTTP '
           f'(median of {max(len(v) for v in runs.values())} runs)</text>']
    v = 0.0
    while v <= ymax + 1e-9:
        out.append(f'<line x1="{L}" x2="{W - R}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{L - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:,.0f}</text>')
        v += step
    out.append(f'<line x1="{L}" x2="{L}" y1="{T}" y2="{H - B}" stroke="black"/>')
    out.append(f'<line x1="{L}" x2="{W - R}" y1="{H - B}" y2="{H - B}" stroke="black"/>')
    for i, c in enumerate(concs):
        out.append(f'<text x="{x(i):.1f}" y="{H - B + 18}" text-anchor="middle">{c}</text>')
    out.append(f'<text x="{(L + W - R) / 2}" y="{H - 12}" text-anchor="middle">'
               'concurrent calls (loadgen, rmcp client, up to 4 sessions)</text>')
    out.append(f'<text transform="translate(16,{(T + H - B) / 2}) rotate(-90)" '
               'text-anchor="middle">calls per second</text>')
    for n, t in enumerate(targets):
        colour = COLOURS.get(t, "black")
        pts = []
        for i, c in enumerate(concs):
            vals = runs.get((t, c))
            if not vals:
                continue
            med = statistics.median(vals)
            pts.append((x(i), y(med)))
            wx = x(i) + 4 * (n - 1)  # whiskers side by side
            out.append(f'<line x1="{wx:.1f}" x2="{wx:.1f}" y1="{y(min(vals)):.1f}" '
                       f'y2="{y(max(vals)):.1f}" stroke="{colour}" stroke-width="1"/>')
            out.append(f'<circle cx="{x(i):.1f}" cy="{y(med):.1f}" r="4" fill="{colour}"/>')
            # Labels of the targets stacked, so close points stay readable.
            out.append(f'<text x="{x(i) + 8:.1f}" y="{y(med) + 4 + 12 * (n - 1):.1f}" '
                       f'fill="{colour}" font-size="10">{med:,.0f}</text>')
        path = " ".join(f"{px:.1f},{py:.1f}" for px, py in pts)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        ly = T + 10 + 20 * n
        out.append(f'<line x1="{W - R + 15}" x2="{W - R + 35}" y1="{ly}" y2="{ly}" '
                   f'stroke="{colour}" stroke-width="2"/>')
        out.append(f'<text x="{W - R + 40}" y="{ly + 4}">{LABELS.get(t, t)}</text>')
    out.append("</svg>")
    open(dst, "w").write("\n".join(out) + "\n")


def nice_step(raw):
    mag = 10 ** len(str(int(raw))) / 10 if raw >= 1 else 1
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
