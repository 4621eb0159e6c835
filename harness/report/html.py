"""Self-contained HTML pages (no network, no script): a run's page and the index of runs, with plots
drawn as inline SVG."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Collection, Mapping, Sequence
from html import escape
from urllib.parse import quote

from harness.report import trends
from harness.report.model import PERCENTILES, Latency, RunReport, Slo, WorkloadResult

Series = tuple[str, Sequence[tuple[float, float]]]

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
# The plot area (pixels); the legend goes below it, as many rows as its entries need, so that no name
# is clipped or cut short.
W, PLOT_H, PAD_L, PAD_T, PAD_R = 640, 240, 70, 20, 20
LINE = 14  # pixels per line of text under the plot (tick labels, legend rows)
CHAR_W = 6.0  # a generous width of one character at font-size 10 (DejaVu Sans averages ~5.5)
MAX_MARKERS = 30  # a series of more points is drawn as a line alone; markers would hide it
DASH = "6 3"

CSS = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 1100px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .5em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; }
th { background: #f2f2f2; } .bad { color: #b00; font-weight: bold; } .good { color: #070; }
svg { background: #fff; border: 1px solid #ddd; margin: .5em 1em .5em 0; }
.muted { color: #777; font-size: .85em; } .nodata { color: #777; font-style: italic; }
"""


def href(path: str) -> str:
    """A relative link to `path` (a run folder's name, a file): percent-encoded from the name's bytes, so
    that a name that is not UTF-8 still reaches its folder, and a name such as "javascript:..." is a path,
    never a scheme; then escaped for the attribute."""
    try:
        raw = os.fsencode(path)
    except UnicodeEncodeError:  # a lone surrogate from JSON text: no file has that name
        raw = path.encode("utf-8", "backslashreplace")
    if raw.startswith(b"//"):  # "//host/...": a link to another host, not a path
        raw = b"/" + raw.lstrip(b"/")
    return escape(quote(raw, safe="/"))


def _fmt_ns(v: float) -> str:
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if v >= scale:
            return f"{v / scale:.3g} {unit}"
    return f"{v:.3g} ns"


def _pct_x(p: float) -> float:
    """Percentile axis: 0, 90, 99, 99.9 ... equally spaced (-log10 of the tail)."""
    return -math.log10(max(1.0 - p, 1e-6))


def _legend(entries: Sequence[tuple[str, str, bool]], top: float, width: int) -> tuple[list[str], float]:
    """Legend entries (name, colour, dashed) in rows under the plot; returns the SVG and its height."""
    out: list[str] = []
    x, y = float(PAD_L), top
    for name, color, dashed in entries:
        w = 28 + CHAR_W * len(name)
        if x > PAD_L and x + w > width - 4:
            x, y = float(PAD_L), y + LINE
        dash = f' stroke-dasharray="{DASH}"' if dashed else ""
        out.append(
            f'<line x1="{x:.0f}" y1="{y - 4:.0f}" x2="{x + 20:.0f}" y2="{y - 4:.0f}" stroke="{color}" '
            f'stroke-width="3"{dash}/>'
        )
        out.append(f'<text class="legend" x="{x + 24:.0f}" y="{y:.0f}" font-size="10">{escape(name)}</text>')
        x += w + 12
    return out, (y - top + LINE if entries else 0.0)


def line_chart(
    chart_id: str,
    title: str,
    series: Sequence[Series],
    *,
    log_y: bool = False,
    x_ticks: Sequence[tuple[float, str]] = (),
    y_fmt: object = None,
    dashed: Collection[str] = (),
    width: int = W,
    x_titles: Mapping[float, str] | None = None,
    x_pad: float = 0.0,
) -> str:
    """An SVG line chart; every series a polyline (in the order given: the last is drawn on top), with
    markers when it has few points (so that a single point shows), and a legend entry under the plot.
    Series named in `dashed` are drawn dashed with square markers. A tick label may have several
    lines; `x_titles` gives the markers at an x a tooltip; `x_pad` widens the x range on both sides (in
    x units), so that the labels of the first and last ticks fit."""
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
    if x1 <= x0:  # one x: put it in the middle
        x0, x1 = x0 - 0.5, x0 + 0.5
    x0, x1 = x0 - x_pad, x1 + x_pad
    y1 = y1 if y1 > y0 else y0 + 1
    pw, ph = width - PAD_L - PAD_R, PLOT_H
    tick_lines = max([label.count("\n") + 1 for _, label in x_ticks] or [1])
    legend_top = PAD_T + ph + 6 + LINE * tick_lines + LINE

    def sx(x: float) -> float:
        return PAD_L + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return PAD_T + ph - (fy(y) - y0) / (y1 - y0) * ph

    fmt = y_fmt if callable(y_fmt) else (lambda v: f"{v:.3g}")
    names = [name for name, s in series if any(not (log_y and y <= 0) for _, y in s)]
    legend, legend_h = _legend(
        [(n, COLORS[i % len(COLORS)], n in dashed) for i, (n, _) in enumerate(series) if n in names],
        legend_top,
        width,
    )
    height = int(legend_top + legend_h)
    out = [
        f'<svg id="{chart_id}" class="plot" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'data-baseline="{PAD_T + ph}" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{escape(title)}">',
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
            lines = label.split("\n")
            spans = "".join(
                f'<tspan x="{sx(xv):.1f}" dy="{0 if j == 0 else LINE}">{escape(line)}</tspan>'
                for j, line in enumerate(lines)
            )
            out.append(
                f'<text class="x-tick" x="{sx(xv):.1f}" y="{PAD_T + ph + 14}" font-size="10" '
                f'text-anchor="middle">{spans}</text>'
            )
    for i, (name, s) in enumerate(series):
        color = COLORS[i % len(COLORS)]
        good = [(x, y) for x, y in s if not (log_y and y <= 0)]
        if not good:
            continue
        dash = f' stroke-dasharray="{DASH}"' if name in dashed else ""
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in good)
        out.append(
            f'<polyline class="series" data-series="{escape(name)}" fill="none" stroke="{color}" '
            f'stroke-width="1.8"{dash} points="{path}"/>'
        )
        if len(good) <= MAX_MARKERS:
            for x, y in good:
                tip = f"<title>{escape(name)}: {escape(fmt(y))}"
                tip += f" ({escape(x_titles[x])})" if x_titles and x in x_titles else ""
                tip += "</title>"
                px, py = sx(x), sy(y)
                if name in dashed:
                    out.append(
                        f'<rect x="{px - 3.5:.1f}" y="{py - 3.5:.1f}" width="7" height="7" fill="{color}">'
                        f"{tip}</rect>"
                    )
                else:
                    out.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{color}">{tip}</circle>')
    out.extend(legend)
    out.append("</svg>")
    return "\n".join(out)


def _backup_peak_name(w: WorkloadResult) -> str:
    return (
        f"backup peak, whole run: {w.backup_peak_bytes / (1 << 20):.3g} MiB "
        f"({w.backup_allocs:,} backup allocations in all workers)"
    )


def _capacity_series(w: WorkloadResult) -> tuple[str, list[Series]]:
    """The timeline's MiB curves, and the backup's peak over the whole run as a level line when the
    pool used its backup at all (its samples may all fall before or after that use)."""
    mib = 1 << 20
    tl = w.timeline
    series: list[Series] = [
        ("capacity", [(p.t, p.capacity_bytes / mib) for p in tl]),
        ("in use", [(p.t, p.in_use_bytes / mib) for p in tl]),
        ("backup in use", [(p.t, p.backup_in_use_bytes / mib) for p in tl]),
    ]
    if w.backup_peak_bytes or w.backup_allocs:
        level = w.backup_peak_bytes / mib
        series.append((_backup_peak_name(w), [(tl[0].t, level), (tl[-1].t, level)]))
    return f"{w.name} ({w.allocator}): MiB over seconds", series


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


def _run_verdict(r: RunReport) -> str:
    """A run's: ok or FAIL, or 'interrupted' when it was stopped before it ended (no verdict of the
    whole; FAIL too when what finished failed)."""
    if not r.interrupted:
        return _verdict(r.ok)
    return '<span class="bad">interrupted</span>' + ("" if r.ok_so_far else " " + _verdict(False))


def _slo(s: Slo) -> str:
    if not s.has_data:
        return f"{escape(s.name)}: <span class='nodata'>no data</span>"
    return f"{escape(s.name)} {escape(s.measured)} / {escape(s.limit)} {_verdict(s.ok)}"


def _env_value(v: object) -> str:
    """A figure of the environment as a person writes it: a list (the load) as "1.2 0.8 0.5"."""
    if isinstance(v, float):
        return f"{round(v, 2):g}"
    if isinstance(v, list | tuple):
        return " ".join(_env_value(x) for x in v)
    return str(v)


def _what_ran(r: RunReport) -> str:
    """The builds the run used, from what it holds: the workloads ran on the variant(s) named in
    r.variant other than fuzz, the fuzz targets on the fuzz build; a build nothing ran on is not named."""
    builds = [v for v in r.variant.split("+") if v and v != "fuzz"] or ["release"]
    parts = []
    if r.workloads:
        parts.append(f"{'+'.join(builds)} build ({len(r.workloads)} workload runs)")
    if r.fuzz:
        parts.append(f"fuzz build ({len(r.fuzz)} fuzz targets)")
    return ", ".join(parts) or "nothing ran"


# Fewer samples than this and the timeline is a sketch at best: the page says so.
FEW_SAMPLES = 5


def _programs_section(r: RunReport) -> str:
    """Real programs: kpool's time and peak RSS as ratios to glibc and each peer that ran beside it
    (the table of kpool bench --programs, from the same launcher's figures)."""
    from dataclasses import asdict

    from harness.stress.program import table

    head, rows = table([asdict(p) for p in r.programs])
    cells = [[escape(c) if c not in ("ok", "FAIL") else _verdict(c == "ok") for c in row] for row in rows]
    runs = sorted({str(f.get("runs", 0)) for p in r.programs for f in p.figures.values()})
    return (
        "<h2>Real programs</h2><p>kpool's wall time and peak RSS over each allocator's, side by side in one "
        f"run (medians of {'/'.join(runs) or '0'} run(s); below 1: kpool faster or smaller; '-': not run). "
        "The programs' SLOs are in the workload table above.</p>" + _table(head, cells, "programs")
    )


def run_page(r: RunReport) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.started))
    env = ", ".join(f"{escape(str(k))} {escape(_env_value(v))}" for k, v in r.environment.items())
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>kpool run {escape(r.run_id)}</title><style>{CSS}</style></head><body>",
        f"<h1>kpool run {escape(r.run_id)} {_run_verdict(r)}</h1>",
        f"<p>{when}; {escape(_what_ran(r))} at {escape(r.revision or '?')}<br><span class='muted'>{env}</span></p>",
        f"<p>{len(r.workloads)} workload runs, {len(r.fuzz)} fuzz targets, {len(r.crashes)} crash signatures "
        f"({len(r.new_crashes)} new), {len(r.broken_slos)} broken SLOs. Raw data: "
        "<a href='summary.json'>summary.json</a>, <a href='junit.xml'>junit.xml</a>, "
        "<a href='latency.hlog'>latency.hlog</a> (HdrHistogram log), "
        "<a href='results.sarif'>results.sarif</a> (the crash signatures, SARIF 2.1.0).</p>",
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
                    else f"<a href='{href(c.reproducer)}'>{escape(c.reproducer.rsplit('/', 1)[-1])}</a>"
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
            slos = "; ".join(_slo(s) for s in w.slos)
            rows.append(
                (
                    escape(w.name),
                    escape(w.allocator),
                    f"{w.ops:,}",
                    f"{w.ops_per_s or w.ops / w.seconds:,.0f}" if w.ops_per_s or w.seconds else "",
                    ", ".join(f"{escape(k)} {_fmt_ns(v)}" for k, v in p99.items()),
                    slos,
                    _verdict(w.ok)
                    + (f" {escape(w.error)}" if w.error else "")
                    + (f' <span class="muted">({escape(w.rerun)})</span>' if w.rerun else ""),
                )
            )
        parts.append(
            _table(("workload", "allocator", "ops", "ops/s", "p99", "SLOs", "verdict"), rows, "workloads")
        )
        if r.programs:
            parts.append(_programs_section(r))
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
        parts.append(
            "<p class='muted'>The first worker's pool, sampled every timeline_ms (50 ms unless the "
            "workload sets it) and once more after its threads freed their blocks. Backup use between two "
            "samples does not show "
            "in the sampled curve: the dashed line is the backup's peak over the whole run, from the "
            "pool's own counters.</p>"
        )
        for i, w in enumerate(x for x in r.workloads if x.timeline):
            parts.append(line_chart(f"capacity-{i}", *_capacity_series(w), dashed=(_backup_peak_name(w),)))
            if len(w.timeline) < FEW_SAMPLES:
                span = w.timeline[-1].t - w.timeline[0].t
                parts.append(
                    f"<p class='muted'>{escape(w.name)}: only {len(w.timeline)} samples, "
                    f"{span * 1000:.0f} ms apart at most: the run was shorter than a few sampling "
                    "intervals.</p>"
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
                (
                    "target",
                    "seconds",
                    "executions",
                    "exec/s",
                    "libFuzzer cov",
                    "corpus",
                    "crashes",
                    "verdict",
                ),
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
        parts.append(
            "<p class='muted'>libFuzzer cov: the coverage points libFuzzer counts in everything the "
            "target's process has instrumented (its driver, and for a Python target the atheris-instrumented "
            "Python too); not comparable between targets. libkpool's own edges are counted below.</p>"
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
        parts.append(
            f"<h2>libkpool coverage: its edges the fuzz corpora reach (of {edges:,} libkpool edges)</h2>"
        )
        parts.append(_table(("target", "inputs", "libkpool edges reached", "share"), cov_rows, "coverage"))
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


# The p99 trend draws at most this many series, one per colour (more would repeat colours, and a legend
# of more is a wall of text): those with the highest p99 in their latest run; the page says how many
# it left out.
TREND_SERIES = len(COLORS)
# Run names under the trend axis need about this many pixels side by side.
RUN_TICK_W = 150
TREND_W = 900


def _run_ticks(runs: Sequence[RunReport], width: int) -> list[tuple[float, str]]:
    """Tick labels "run id / date" under the runs axis, thinned out evenly so that they never overlap."""
    most = max(1, (width - PAD_L - PAD_R) // RUN_TICK_W)
    step = max(1, math.ceil(len(runs) / most))
    keep = list(range(0, len(runs), step))
    if keep and keep[-1] != len(runs) - 1 and len(runs) - 1 - keep[-1] >= step / 2:
        keep.append(len(runs) - 1)
    return [
        (float(i), f"{runs[i].run_id}\n{time.strftime('%Y-%m-%d %H:%M', time.localtime(runs[i].started))}")
        for i in keep
    ]


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def _count(n: int | None, bad: bool = False) -> str:
    if n is None:
        return "-"
    return f"<span class='bad'>{n}</span>" if bad and n else str(n)


def _seen(n: int | None, night: trends.Night, bad: bool = False) -> str:
    """A night's count; an interrupted night's 0 is unknown ('-'): it may not have run what finds one."""
    return _count(None if night.interrupted and not n else n, bad)


def nights_section(nights: Sequence[trends.Night], with_db: bool, db_problem: str = "") -> str:
    """Per night (run), newest first: new, known, fixed and flaky signatures, coverage, p99 per workload.
    An interrupted night is marked so, its zero counts and its coverage '-' (trends.Night.interrupted)."""
    keys = sorted({k for n in nights for k in n.p99_ns})
    head = ["night", "started", "new", "known", "fixed", "flaky", "coverage", *(f"p99 {k}" for k in keys)]
    rows = [
        [
            f"<a href='{href(n.run_id)}/index.html'>{escape(n.run_id)}</a>",
            _when(n.started) + (" <span class='bad'>interrupted</span>" if n.interrupted else ""),
            _seen(n.new, n, bad=True),
            _seen(n.known, n),
            _seen(n.fixed, n),
            _seen(n.flaky, n),
            f"{n.coverage:.1f}%" if n.coverage is not None else "-",
            *(_fmt_ns(n.p99_ns[k]) if k in n.p99_ns else "-" for k in keys),
        ]
        for n in sorted(nights, key=lambda n: -n.started)
    ]
    how = (
        "new: seen for the first time (or again after a fix); known: seen the night before too; flaky: back "
        "after a night away, or replays only sometimes; fixed: seen the night before, not since. "
        f"p99 of {trends.P99_OP} per workload. An interrupted night counts only what its finished jobs "
        "found ('-': none, which says nothing) and is no point of the plots."
        if with_db
        else f"crash database unreadable ({db_problem}): each night's own record of its crashes (fixed and "
        "flaky unknown)."
        if db_problem
        else "no crash database in this reports folder: each night's own record of its crashes (fixed and "
        "flaky unknown)."
    )
    return f"<h2>Nights</h2><p class='muted'>{escape(how)}</p>" + _table(head, rows, "nights")


def signatures_section(found: Sequence[trends.SignatureHistory]) -> str:
    rows = [
        [
            f"<a href='signatures/{escape(h.row.hash)}.html'>{escape(h.row.hash)}</a>",
            escape(h.row.title),
            escape(h.row.status),
            escape(h.row.first_seen[:16].replace("T", " ")),
            escape(h.row.last_seen[:16].replace("T", " ")),
            str(h.row.runs),
            str(h.row.count),
        ]
        for h in found
    ]
    head = ("signature", "title", "status", "first seen", "last seen", "runs", "crashes")
    return f"<h2>Crash signatures ({len(found)})</h2>" + _table(head, rows, "signatures")


def signature_page(h: trends.SignatureHistory) -> str:
    """One signature: what it is, and its history across the runs (reports/signatures/<hash>.html)."""
    r = h.row
    rate = f"{r.repro_rate:.0%} of {r.repro_runs}" if r.repro_rate is not None else "not replayed"
    facts = [
        ("kind", r.kind),
        ("status", r.status),
        ("first seen", r.first_seen),
        ("last seen", r.last_seen),
        ("crashes", str(r.count)),
        ("runs", str(r.runs)),
        ("replays", rate),
    ]
    rows = []
    for s in h.sightings:
        run = escape(s.run_id)
        link = f"<a href='../{href(s.run_id)}/index.html'>{run}</a>" if s.in_index else run
        if s.through:  # several runs in a row
            link += f" … {escape(s.through)} ({s.runs} runs)"
        state = s.state or "-"
        if s.occurrences:
            state += f" ({s.occurrences} crash{'es' if s.occurrences > 1 else ''})"
        elif s.state == trends.FIXED_STATE and r.status != "fixed":
            state += " (not seen since; not rechecked)"
        rows.append([link, _when(s.started), escape(state), escape(", ".join(s.sources))])
    return (
        "\n".join(
            [
                f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(r.hash)}</title>"
                f"<style>{CSS}</style></head><body>",
                f"<p><a href='../index.html'>all runs</a></p><h1>{escape(r.title)}</h1>",
                _table(("", ""), [(escape(k), escape(v)) for k, v in facts], "facts"),
                "<h2>History across runs</h2>",
                _table(("run", "started", "this signature", "sources"), rows, "history"),
                "</body></html>",
            ]
        )
        + "\n"
    )


def index_page(
    runs: Sequence[RunReport],
    unrecorded: Sequence[tuple[str, float, str]] = (),
    found: Sequence[trends.SignatureHistory] | None = None,
    db_problem: str = "",
) -> str:
    """All runs, newest first, with trends: per night the signatures new, known, fixed and flaky, the
    coverage and the p99 per workload (trends.py; `found` the signatures' histories, None without a crash
    database), p99 and crashes per run plotted, and the signatures with links to their pages.
    `unrecorded` are the run folders without a readable record (name, time, why), listed among the runs;
    `db_problem` why the crash database could not be read, if it could not."""
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>kpool runs</title><style>{CSS}</style></head><body>",
        f"<h1>kpool runs ({len(runs)})</h1>",
        nights_section(trends.nights(runs, found), found is not None, db_problem),
    ]
    if unrecorded:
        parts.append(f"<p>{len(unrecorded)} run folder(s) without a record: see the table below.</p>")
    if len(runs) == 1:
        parts.append(
            "<p class='muted' id='trend-note'>one run: trends need two; the plots show its one point.</p>"
        )
    ticks = _run_ticks(runs, TREND_W)
    names = {
        float(i): f"{r.run_id}, {time.strftime('%Y-%m-%d %H:%M', time.localtime(r.started))}"
        for i, r in enumerate(runs)
    }
    trend: dict[str, list[tuple[float, float]]] = {}
    for i, r in enumerate(runs):
        for w in r.workloads:
            for lat in w.latency:
                if lat.count and not trends.cut_short(w):
                    trend.setdefault(f"{w.name} {w.allocator} {lat.op}", []).append(
                        (float(i), float(lat.percentile(0.99)))
                    )
    chosen = sorted(trend.items(), key=lambda kv: -kv[1][-1][1])[:TREND_SERIES]
    chosen.sort(key=lambda kv: kv[0])
    if len(trend) > TREND_SERIES:
        parts.append(
            f"<p class='muted' id='trend-p99-note'>{len(chosen)} of {len(trend)} series shown: those with "
            "the highest p99 in their latest run. Every run's figures are in its own page and summary.json.</p>"
        )
    parts.append(
        line_chart(
            "trend-p99",
            "p99 latency per workload, by run",
            chosen,
            log_y=True,
            y_fmt=_fmt_ns,
            x_ticks=ticks,
            width=TREND_W,
            x_titles=names,
            x_pad=0.5,
        )
    )
    parts.append(
        line_chart(
            "trend-crashes",
            "crash signatures per run (new and known)",
            [  # "new" after "all": drawn on top, dashed, so that it shows where the two are equal;
                # a run interrupted before its jobs ended is no point: its 0 is of the jobs it ran
                (
                    "all",
                    [(float(i), float(len(r.crashes))) for i, r in enumerate(runs) if not trends.jobs_cut(r)],
                ),
                (
                    "new",
                    [
                        (float(i), float(len(r.new_crashes)))
                        for i, r in enumerate(runs)
                        if not trends.jobs_cut(r)
                    ],
                ),
            ],
            dashed=("new",),
            x_ticks=ticks,
            width=TREND_W,
            x_titles=names,
            x_pad=0.5,
        )
    )
    covered = [
        (float(i), 100 * r.fuzz_coverage["union"] / r.fuzz_coverage["edges"])
        for i, r in enumerate(runs)
        if r.fuzz_coverage and not r.interrupted  # of however long an interrupted run's fuzzers ran
    ]
    if covered:
        parts.append(
            line_chart(
                "trend-coverage",
                "libkpool edges the fuzz corpora reach, % by run",
                [("all targets", covered)],
                x_ticks=ticks,
                width=TREND_W,
                x_titles=names,
                x_pad=0.5,
            )
        )
    rows: list[tuple[float, tuple[str, ...]]] = [
        (
            r.started,
            (
                f"<a href='{href(r.run_id)}/index.html'>{escape(r.run_id)}</a>",
                time.strftime("%Y-%m-%d %H:%M", time.localtime(r.started)),
                escape(r.revision),
                str(len(r.workloads)),
                str(len(r.fuzz)),
                str(len(r.new_crashes)),
                str(len(r.broken_slos)),
                _run_verdict(r),
            ),
        )
        for r in runs
    ]
    rows += [
        (
            when,
            (
                escape(name),
                time.strftime("%Y-%m-%d %H:%M", time.localtime(when)),
                "",
                "",
                "",
                "",
                "",
                f"<span class='nodata'>{escape(why)}</span>",
            ),
        )
        for name, when, why in unrecorded
    ]
    rows.sort(key=lambda row: -row[0])  # newest first
    parts.append(
        _table(
            ("run", "started", "revision", "workloads", "fuzz", "new crashes", "broken SLOs", "verdict"),
            [cells for _, cells in rows],
            "runs",
        )
    )
    if found:
        parts.append(signatures_section(found))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
