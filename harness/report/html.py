"""Self-contained HTML pages (no network, no script): a run's page and the index of runs, with plots
drawn as inline SVG."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from html import escape

from harness.report.model import PERCENTILES, Latency, RunReport

Series = tuple[str, Sequence[tuple[float, float]]]

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
W, H, PAD_L, PAD_B, PAD_T, PAD_R = 640, 300, 70, 40, 20, 150

CSS = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 1100px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .5em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; }
th { background: #f2f2f2; } .bad { color: #b00; font-weight: bold; } .good { color: #070; }
svg { background: #fff; border: 1px solid #ddd; margin: .5em 1em .5em 0; }
.muted { color: #777; font-size: .85em; }
"""


def _fmt_ns(v: float) -> str:
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if v >= scale:
            return f"{v / scale:.3g} {unit}"
    return f"{v:.3g} ns"


def _pct_x(p: float) -> float:
    """Percentile axis: 0, 90, 99, 99.9 ... equally spaced (-log10 of the tail)."""
    return -math.log10(max(1.0 - p, 1e-6))


def line_chart(
    chart_id: str,
    title: str,
    series: Sequence[Series],
    *,
    log_y: bool = False,
    x_ticks: Sequence[tuple[float, str]] = (),
    y_fmt: object = None,
) -> str:
    """An SVG line chart; every series a polyline with its points and a legend entry."""
    pts = [(x, y) for _, s in series for x, y in s if not (log_y and y <= 0)]
    if not pts:
        return f'<p class="muted" id="{chart_id}">{escape(title)}: no data</p>'
    fy = (lambda v: math.log10(v)) if log_y else (lambda v: v)
    xs = [x for x, _ in pts]
    ys = [fy(y) for _, y in pts]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if not log_y:
        y0 = min(y0, 0.0)
    x1 = x1 if x1 > x0 else x0 + 1
    y1 = y1 if y1 > y0 else y0 + 1
    pw, ph = W - PAD_L - PAD_R, H - PAD_T - PAD_B

    def sx(x: float) -> float:
        return PAD_L + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return PAD_T + ph - (fy(y) - y0) / (y1 - y0) * ph

    fmt = y_fmt if callable(y_fmt) else (lambda v: f"{v:.3g}")
    out = [
        f'<svg id="{chart_id}" class="plot" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
        f'xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{escape(title)}">',
        f'<text x="{PAD_L}" y="14" font-size="13" font-weight="bold">{escape(title)}</text>',
        f'<line x1="{PAD_L}" y1="{PAD_T + ph}" x2="{PAD_L + pw}" y2="{PAD_T + ph}" stroke="#444"/>',
        f'<line x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{PAD_T + ph}" stroke="#444"/>',
    ]
    for k in range(5):  # y grid
        yv = y0 + (y1 - y0) * k / 4
        real = 10**yv if log_y else yv
        py = PAD_T + ph - ph * k / 4
        out.append(f'<line x1="{PAD_L}" y1="{py:.1f}" x2="{PAD_L + pw}" y2="{py:.1f}" stroke="#eee"/>')
        out.append(
            f'<text x="{PAD_L - 4}" y="{py + 4:.1f}" font-size="10" text-anchor="end">'
            f"{escape(fmt(real))}</text>"
        )
    ticks = x_ticks or [(x0 + (x1 - x0) * k / 4, f"{x0 + (x1 - x0) * k / 4:.3g}") for k in range(5)]
    for xv, label in ticks:
        if x0 <= xv <= x1:
            out.append(
                f'<text x="{sx(xv):.1f}" y="{PAD_T + ph + 14}" font-size="10" text-anchor="middle">'
                f"{escape(label)}</text>"
            )
    for i, (name, s) in enumerate(series):
        color = COLORS[i % len(COLORS)]
        good = [(x, y) for x, y in s if not (log_y and y <= 0)]
        if not good:
            continue
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in good)
        out.append(
            f'<polyline class="series" fill="none" stroke="{color}" stroke-width="1.8" points="{path}"/>'
        )
        ly = PAD_T + 14 * i + 8
        out.append(
            f'<line x1="{W - PAD_R + 8}" y1="{ly}" x2="{W - PAD_R + 24}" y2="{ly}" stroke="{color}" stroke-width="3"/>'
        )
        out.append(f'<text x="{W - PAD_R + 28}" y="{ly + 4}" font-size="10">{escape(name[:24])}</text>')
    out.append("</svg>")
    return "\n".join(out)


def latency_curve(lat: Latency) -> list[tuple[float, float]]:
    qs = [0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 0.99999]
    return [(_pct_x(q), float(lat.percentile(q))) for q in qs if lat.count]


PCT_TICKS = [
    (_pct_x(q), label)
    for q, label in (
        (0.0, "0%"),
        (0.9, "90%"),
        (0.99, "99%"),
        (0.999, "99.9%"),
        (0.9999, "99.99%"),
        (0.99999, "99.999%"),
    )
]


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], table_id: str = "") -> str:
    ident = f' id="{table_id}"' if table_id else ""
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table{ident}><tr>{th}</tr>{body}</table>"


def _verdict(ok: bool) -> str:
    return '<span class="good">ok</span>' if ok else '<span class="bad">FAIL</span>'


def run_page(r: RunReport) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.started))
    env = ", ".join(f"{k} {escape(str(v))}" for k, v in r.environment.items())
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>kpool run {escape(r.run_id)}</title><style>{CSS}</style></head><body>",
        f"<h1>kpool run {escape(r.run_id)} {_verdict(r.ok)}</h1>",
        f"<p>{when}; build {escape(r.variant)} at {escape(r.revision or '?')}<br><span class='muted'>{env}</span></p>",
        f"<p>{len(r.workloads)} workload runs, {len(r.fuzz)} fuzz targets, {len(r.crashes)} crash signatures "
        f"({len(r.new_crashes)} new), {len(r.broken_slos)} broken SLOs. Raw data: "
        "<a href='summary.json'>summary.json</a>, <a href='junit.xml'>junit.xml</a>, "
        "<a href='latency.hlog'>latency.hlog</a> (HdrHistogram log).</p>",
    ]
    parts.append("<h2>Crashes</h2>")
    parts.append(
        _table(
            ("signature", "status", "kind", "title", "count", "source", "reproducer"),
            [
                (
                    escape(c.signature),
                    ("<span class='bad'>new</span>" if c.status == "new" else escape(c.status)),
                    escape(c.kind),
                    escape(c.title),
                    str(c.count),
                    escape(c.source),
                    f"<code>{escape(c.reproducer)}</code>"  # a workload crash's replay command
                    if " " in c.reproducer
                    else f"<a href='{escape(c.reproducer)}'>{escape(c.reproducer.rsplit('/', 1)[-1])}</a>"
                    if c.reproducer
                    else "",
                )
                for c in r.crashes
            ],
            "crashes",
        )
        if r.crashes
        else "<p id='crashes'>No crash.</p>"
    )
    if r.workloads:
        parts.append("<h2>Workloads</h2>")
        rows = []
        for w in r.workloads:
            p99 = {lat.op: lat.percentile(0.99) for lat in w.latency}
            slos = "; ".join(
                f"{escape(s.name)} {escape(s.measured)} / {escape(s.limit)} {_verdict(s.ok)}" for s in w.slos
            )
            rows.append(
                (
                    escape(w.name),
                    escape(w.allocator),
                    f"{w.ops:,}",
                    f"{w.ops / w.seconds:,.0f}" if w.seconds else "",
                    ", ".join(f"{escape(k)} {_fmt_ns(v)}" for k, v in p99.items()),
                    slos,
                    _verdict(w.ok) + (f" {escape(w.error)}" if w.error else ""),
                )
            )
        parts.append(
            _table(("workload", "allocator", "ops", "ops/s", "p99", "SLOs", "verdict"), rows, "workloads")
        )
        parts.append("<h2>Latency percentiles</h2>")
        by_name: dict[str, list[Series]] = {}
        for w in r.workloads:
            for lat in w.latency:
                by_name.setdefault(w.name, []).append((f"{w.allocator} {lat.op}", latency_curve(lat)))
        for i, (name, series) in enumerate(by_name.items()):
            parts.append(
                line_chart(
                    f"latency-{i}",
                    f"{name}: latency by percentile",
                    series,
                    log_y=True,
                    x_ticks=PCT_TICKS,
                    y_fmt=_fmt_ns,
                )
            )
        parts.append("<h2>Pool capacity, backup use and system calls over time</h2>")
        for i, w in enumerate(x for x in r.workloads if x.timeline):
            mib = 1 << 20
            parts.append(
                line_chart(
                    f"capacity-{i}",
                    f"{w.name} ({w.allocator}): MiB over seconds",
                    [
                        ("capacity", [(p.t, p.capacity_bytes / mib) for p in w.timeline]),
                        ("in use", [(p.t, p.in_use_bytes / mib) for p in w.timeline]),
                        ("backup in use", [(p.t, p.backup_in_use_bytes / mib) for p in w.timeline]),
                    ],
                )
            )
            parts.append(
                line_chart(
                    f"syscalls-{i}",
                    f"{w.name}: system calls (cumulative)",
                    [("syscalls", [(p.t, float(p.syscalls)) for p in w.timeline])],
                )
            )
        outliers = sorted(
            ((w, o) for w in r.workloads for o in w.outliers), key=lambda wo: -wo[1].latency_ns
        )[:25]
        parts.append("<h2>Slowest operations</h2>")
        parts.append(
            _table(
                ("workload", "op", "latency", "index", "size", "context"),
                [
                    (
                        escape(w.name),
                        escape(o.op),
                        _fmt_ns(o.latency_ns),
                        str(o.index),
                        str(o.size),
                        escape(", ".join(f"{k}={v}" for k, v in o.context.items())),
                    )
                    for w, o in outliers
                ],
                "outliers",
            )
            if outliers
            else "<p id='outliers'>No outliers recorded.</p>"
        )
    if r.fuzz:
        parts.append("<h2>Fuzz targets</h2>")
        parts.append(
            _table(
                ("target", "seconds", "executions", "exec/s", "coverage", "corpus", "crashes", "verdict"),
                [
                    (
                        escape(f.target),
                        f"{f.seconds:.0f}",
                        f"{f.executions:,}",
                        f"{f.exec_per_s:,.0f}",
                        str(f.coverage),
                        str(f.corpus),
                        str(f.crashes),
                        _verdict(f.ok),
                    )
                    for f in r.fuzz
                ],
                "fuzz",
            )
        )
    cov = r.fuzz_coverage
    if cov:
        edges = cov["edges"]

        def share(n: int) -> str:
            return f"{100 * n / edges:.0f}%"

        cov_rows = [
            (escape(t["target"]), str(t["inputs"]), f"{t['covered']:,}", share(t["covered"]))
            for t in cov["targets"]
        ]
        cov_rows.append(
            (
                "<b>together</b>",
                str(sum(t["inputs"] for t in cov["targets"])),
                f"{cov['union']:,}",
                share(cov["union"]),
            )
        )
        parts.append(f"<h2>libkpool coverage of the fuzz corpora ({edges:,} edges)</h2>")
        parts.append(_table(("target", "inputs", "edges reached", "share"), cov_rows, "coverage"))
        parts.append(
            _table(
                ("source", "edges", "reached", "share"),
                [
                    (
                        escape(f["file"]),
                        str(f["edges"]),
                        str(f["covered"]),
                        f"{100 * f['covered'] / f['edges']:.0f}%",
                    )
                    for f in cov.get("files", [])
                ],
                "coverage-files",
            )
        )
        missed = cov["missed"]
        parts.append(
            f"<p id='missed'>{len(missed)} of {cov['functions']} libkpool functions no corpus enters"
            + (": " + ", ".join(f"<code>{escape(m)}</code>" for m in missed) if missed else "")
            + ".</p>"
        )
    parts.append(
        "<p class='muted'>Percentiles as in summary.json: "
        + ", ".join(f"p{k}" for k, _ in PERCENTILES)
        + ".</p></body></html>"
    )
    return "\n".join(parts) + "\n"


def index_page(runs: Sequence[RunReport]) -> str:
    """All runs, newest first, with trends: p99 per workload and crashes per run."""
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>kpool runs</title><style>{CSS}</style></head><body>",
        f"<h1>kpool runs ({len(runs)})</h1>",
    ]
    trend: dict[str, list[tuple[float, float]]] = {}
    for i, r in enumerate(runs):
        for w in r.workloads:
            for lat in w.latency:
                trend.setdefault(f"{w.name} {w.allocator} {lat.op}", []).append(
                    (float(i), float(lat.percentile(0.99)))
                )
    parts.append(
        line_chart(
            "trend-p99",
            "p99 latency per workload, by run",
            list(trend.items())[:8],
            log_y=True,
            y_fmt=_fmt_ns,
        )
    )
    parts.append(
        line_chart(
            "trend-crashes",
            "crash signatures per run (new and known)",
            [
                ("new", [(float(i), float(len(r.new_crashes))) for i, r in enumerate(runs)]),
                ("all", [(float(i), float(len(r.crashes))) for i, r in enumerate(runs)]),
            ],
        )
    )
    covered = [
        (float(i), 100 * r.fuzz_coverage["union"] / r.fuzz_coverage["edges"])
        for i, r in enumerate(runs)
        if r.fuzz_coverage
    ]
    if covered:
        parts.append(
            line_chart(
                "trend-coverage",
                "libkpool edges the fuzz corpora reach, % by run",
                [("all targets", covered)],
            )
        )
    rows = [
        (
            f"<a href='{escape(r.run_id)}/index.html'>{escape(r.run_id)}</a>",
            time.strftime("%Y-%m-%d %H:%M", time.localtime(r.started)),
            escape(r.revision),
            str(len(r.workloads)),
            str(len(r.fuzz)),
            str(len(r.new_crashes)),
            str(len(r.broken_slos)),
            _verdict(r.ok),
        )
        for r in reversed(runs)
    ]
    parts.append(
        _table(
            ("run", "started", "revision", "workloads", "fuzz", "new crashes", "broken SLOs", "verdict"),
            rows,
            "runs",
        )
    )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
