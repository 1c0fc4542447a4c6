#!/usr/bin/env python3
"""SVG plots of benches/scaling.sh results, medians over rounds; standard library only.

    python3 benches/plot.py SCALING.csv [OUTDIR]      (OUTDIR defaults to the CSV's directory)

Writes conns-req_core.svg (req/core vs connections), size-req_core.svg and size-mb_s.svg
(req/core and MB/s vs response size): one line per proxy, log-scale x. A log axis has no
zero, so the 0 B point is drawn at 1 B (labelled "0 B").
"""
import csv
import math
import os
import statistics
import sys
from collections import defaultdict
from xml.sax.saxutils import escape

COLORS = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd"]
W, H = 640, 380
LEFT, RIGHT, TOP, BOTTOM = 80, 120, 40, 55  # plot margins


def size_label(b):
    for unit, n in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if b >= n:
            return f"{b / n:g} {unit}"
    return f"{b:g} B"


def y_ticks(top):
    """Round tick values from 0 to at least `top`, 4-6 of them."""
    step = 10 ** math.floor(math.log10(top / 5)) if top > 0 else 1
    for m in (1, 2, 5, 10):
        if top / (step * m) <= 6:
            step *= m
            break
    return [i * step for i in range(int(math.ceil(top / step)) + 1)]


def chart(path, title, xlabel, ylabel, series, xlabel_of):
    """series: {name: [(x, y), ...]}; x on a log10 scale (x = 0 drawn at 1)."""
    xs = sorted({x for pts in series.values() for x, _ in pts})
    lx = {x: math.log10(max(x, 1)) for x in xs}
    x0, x1 = min(lx.values()), max(lx.values())
    pad = (x1 - x0) * 0.05 or 0.5
    x0, x1 = x0 - pad, x1 + pad
    ticks = y_ticks(max((y for pts in series.values() for _, y in pts), default=1) * 1.05)
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM
    px = lambda x: LEFT + pw * (lx[x] - x0) / (x1 - x0)
    py = lambda y: TOP + ph * (1 - y / ticks[-1])
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="15">{escape(title)}</text>']
    for t in ticks:  # horizontal grid + y labels
        out.append(f'<line x1="{LEFT}" x2="{LEFT + pw}" y1="{py(t):.1f}" y2="{py(t):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{LEFT - 6}" y="{py(t) + 4:.1f}" text-anchor="end">{t:,.0f}</text>')
    for x in xs:  # vertical grid + x labels at the measured points
        out.append(f'<line x1="{px(x):.1f}" x2="{px(x):.1f}" y1="{TOP}" y2="{TOP + ph}" stroke="#eee"/>')
        out.append(f'<text x="{px(x):.1f}" y="{TOP + ph + 18}" text-anchor="middle">{escape(xlabel_of(x))}</text>')
    out.append(f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>')
    out.append(f'<text x="{LEFT + pw / 2}" y="{H - 12}" text-anchor="middle">{escape(xlabel)} (log scale)</text>')
    out.append(f'<text transform="translate(16,{TOP + ph / 2}) rotate(-90)" text-anchor="middle">{escape(ylabel)}</text>')
    for i, (name, pts) in enumerate(sorted(series.items())):
        color = COLORS[i % len(COLORS)]
        pts = sorted(pts)
        line = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        out.append(f'<polyline points="{line}" fill="none" stroke="{color}" stroke-width="2"/>')
        out += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" fill="{color}"><title>{escape(name)}: {y:,.0f}</title></circle>'
                for x, y in pts]
        ly = TOP + 10 + 20 * i  # legend
        out.append(f'<line x1="{LEFT + pw + 12}" x2="{LEFT + pw + 32}" y1="{ly}" y2="{ly}" stroke="{color}" stroke-width="2"/>')
        out.append(f'<text x="{LEFT + pw + 38}" y="{ly + 4}">{escape(name)}</text>')
    out.append("</svg>\n")
    with open(path, "w") as f:
        f.write("\n".join(out))
    print("wrote", path)


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    src = sys.argv[1]
    outdir = sys.argv[2] if len(sys.argv) == 3 else os.path.dirname(os.path.abspath(src))
    os.makedirs(outdir, exist_ok=True)
    runs = defaultdict(list)  # (sweep, proxy, x) -> rows of all rounds
    with open(src, newline="") as f:
        for row in csv.DictReader(f):
            runs[row["sweep"], row["proxy"], int(row["x"])].append(row)

    def medians(sweep, col):
        series = defaultdict(list)
        for (s, proxy, x), rows in runs.items():
            if s == sweep:
                series[proxy].append((x, statistics.median(float(r[col]) for r in rows)))
        return series

    chart(os.path.join(outdir, "conns-req_core.svg"), "Requests per proxy core vs connections",
          "client connections (wrk -t1)", "req/s per core", medians("conns", "req_core"), lambda x: f"{x:,}")
    chart(os.path.join(outdir, "size-req_core.svg"), "Requests per proxy core vs response size",
          "response body size (64 connections)", "req/s per core", medians("size", "req_core"), size_label)
    chart(os.path.join(outdir, "size-mb_s.svg"), "Throughput vs response size",
          "response body size (64 connections)", "MB/s read by wrk", medians("size", "mb_s"), size_label)


if __name__ == "__main__":
    main()
