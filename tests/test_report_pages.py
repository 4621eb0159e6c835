"""What the HTML pages say (issue 11, points 14, 15 and 19): labelled coverage figures, SLOs without
data, the capacity plot of a run shorter than the sampling interval, the header, the trends of the
runs index, and report files that respect the umask. Assertions are on the HTML/SVG text."""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.report import ingest
from harness.report.html import index_page, run_page
from harness.report.model import (
    CrashEntry,
    FuzzResult,
    Latency,
    RunReport,
    Slo,
    TimePoint,
    WorkloadResult,
)
from harness.report.writers import write_index, write_run

DATA = Path(__file__).parent / "data"


def _workload(name: str = "steady-small", p99: int = 40, ops: tuple[str, ...] = ("alloc",)) -> WorkloadResult:
    return WorkloadResult(
        name=name,
        seconds=1.0,
        ops=1000,
        latency=[Latency(op, [(p99 // 2, 900), (p99, 100)]) for op in ops],
        slos=[Slo("crashes", "<= 0", "0", True)],
    )


def _run(run_id: str, started: float, **kw: object) -> RunReport:
    r = RunReport(run_id=run_id, started=started, revision="abc123", workloads=[_workload()])
    for k, v in kw.items():
        setattr(r, k, v)
    return r


def _svg(page: str, ident: str) -> str:
    m = re.search(rf'<svg id="{re.escape(ident)}".*?</svg>', page, re.S)
    assert m, f"no svg {ident}"
    return m.group(0)


def _polyline(svg: str, series: str) -> list[tuple[float, float]]:
    """The points of the series whose name starts with `series`."""
    m = re.search(rf'<polyline[^>]*data-series="{re.escape(series)}[^"]*"[^>]*points="([^"]*)"', svg)
    assert m, f"no series {series!r} in {svg[:300]}"
    return [(float(x), float(y)) for x, y in (p.split(",") for p in m.group(1).split())]


def _baseline(svg: str) -> float:
    m = re.search(r'data-baseline="([\d.]+)"', svg)
    assert m
    return float(m.group(1))


# ---- point 14: the run page -------------------------------------------------------------------------


def test_the_two_coverage_figures_are_labelled() -> None:
    r = _run(
        "run-1",
        1_700_000_000.0,
        fuzz=[FuzzResult("api_sequence", 60, 6_000_000, 100_000.0, 988, 143, 0)],
        fuzz_coverage={
            "edges": 1612,
            "union": 1092,
            "functions": 115,
            "missed": [],
            "targets": [{"target": "api_sequence", "inputs": 143, "covered": 1000}],
            "files": [],
        },
    )
    page = run_page(r)
    fuzz = re.search(r'<table id="fuzz">.*?</table>', page, re.S)
    assert fuzz
    heads = re.findall(r"<th>(.*?)</th>", fuzz.group(0))
    assert "coverage" not in heads  # the bare, ambiguous word
    assert any("libFuzzer" in h for h in heads), heads
    assert "libkpool" in page.split('<table id="coverage">')[0].rsplit("<h2>", 1)[1]


def test_an_slo_without_data_says_no_data_and_not_ok() -> None:
    doc = json.loads((DATA / "stress-sample.json").read_text())["workloads"][0]
    doc["slo"] = [{"slo": "latency_ns.alloc", "value": None, "bound": None, "ok": True, "op": "n/a"}]
    r = _run("run-1", 1_700_000_000.0, workloads=[ingest._workload(doc)])
    page = run_page(r)
    cell = re.search(r"<td>[^<]*latency_ns\.alloc.*?</td>", page, re.S)
    assert cell, page
    text = cell.group(0)
    assert "no data" in text
    assert "None" not in text
    assert not re.search(r">ok<", text)


def _critical_exhaustion_doc() -> dict[str, object]:
    """What `kpool stress workloads/critical-exhaustion.yaml` wrote: 50,000 ops in 20 ms, sampled every
    50 ms, the last sample after the threads freed their blocks; 8,192 backup allocations."""
    doc = copy.deepcopy(json.loads((DATA / "stress-sample.json").read_text())["workloads"][0])
    doc["name"] = "critical-exhaustion"
    doc["backup"] = {"allocs": 8192, "peak_in_use_bytes": 4 << 20, "refusals": 0}
    doc["slo"] = [{"slo": "min_backup_allocs", "value": 8192, "bound": 1, "ok": True, "op": ">="}]
    cols = ["t_ms", "ops", "primary_capacity", "primary_in_use", "backup_in_use", "backup_active", "syscalls"]
    doc["workers"] = [
        {
            "timeline": {
                "columns": cols,
                "rows": [[26, 0, 4 << 20, 0, 0, 0, 10], [47, 50000, 8 << 20, 0, 0, 0, 11]],
            }
        },
        {
            "timeline": {
                "columns": cols,
                "rows": [[34, 0, 4 << 20, 0, 0, 0, 10], [89, 50000, 8 << 20, 0, 0, 0, 11]],
            }
        },
    ]
    return doc


def test_the_capacity_plot_shows_the_backup_use_that_happened() -> None:
    w = ingest._workload(_critical_exhaustion_doc())
    page = run_page(_run("run-1", 1_700_000_000.0, workloads=[w]))
    svg = _svg(page, "capacity-0")
    base = _baseline(svg)
    peak = _polyline(svg, "backup peak")
    assert peak and all(y < base - 1 for _, y in peak), (peak, base)  # above the zero line
    assert "4 MiB" in svg and "8,192" in svg
    # and the page says why the sampled curve alone cannot show it
    assert "2 samples" in page


def test_the_header_formats_the_load_and_says_what_ran() -> None:
    r = _run("run-1", 1_700_000_000.0, variant="release+fuzz")
    r.environment = {"kernel": "6.x", "load": [1.234, 0.8, 0.5]}
    page = run_page(r)
    assert "load 1.23 0.8 0.5" in page
    assert "[1.234" not in page
    assert "release+fuzz" not in page  # no fuzz target ran
    assert "release build" in page
    r.fuzz = [FuzzResult("conf", 10, 100, 10.0, 5, 1, 0)]
    assert "fuzz build" in run_page(r)


# ---- point 15: the runs index -----------------------------------------------------------------------


def test_one_run_shows_its_point_and_says_trends_need_two() -> None:
    page = index_page([_run("run-1", 1_700_000_000.0)])
    svg = _svg(page, "trend-p99")
    assert "<circle" in svg
    assert "one run: trends need two" in page


def test_the_trend_axis_names_the_runs() -> None:
    runs = [_run(f"run-{i}", 1_700_000_000.0 + 86_400 * i) for i in range(3)]
    page = index_page(runs)
    for ident in ("trend-p99", "trend-crashes"):
        labels = re.findall(r'<text class="x-tick"[^>]*>(.*?)</text>', _svg(page, ident), re.S)
        for r in runs:
            assert any(r.run_id in label for label in labels), (ident, labels)
        assert any("2023-11-1" in label for label in labels), labels  # the dates too


def test_the_p99_legend_names_every_series_in_full() -> None:
    names = [f"workload-with-a-long-name-{i}" for i in range(4)]  # 8 series, as a campaign has
    runs = [
        _run(f"run-{k}", 1_700_000_000.0 + k, workloads=[_workload(n, ops=("alloc", "free")) for n in names])
        for k in range(2)
    ]
    svg = _svg(index_page(runs), "trend-p99")
    height = float(re.search(r'height="(\d+)"', svg).group(1))  # type: ignore[union-attr]
    legend = re.findall(r'<text class="legend" x="([\d.]+)" y="([\d.]+)"[^>]*>(.*?)</text>', svg)
    shown = {t for _, _, t in legend}
    for n in names:
        for op in ("alloc", "free"):
            assert f"{n} kpool {op}" in shown, shown
    width = float(re.search(r'width="(\d+)"', svg).group(1))  # type: ignore[union-attr]
    for x, y, text in legend:
        assert float(y) <= height - 2, (text, y, height)  # inside the picture
        assert float(x) + 6 * len(text) <= width, (text, x, width)


def test_the_p99_legend_says_when_it_shows_only_some_series() -> None:
    names = [f"w{i}" for i in range(20)]
    runs = [_run(f"run-{k}", 1_700_000_000.0 + k, workloads=[_workload(n) for n in names]) for k in range(2)]
    page = index_page(runs)
    m = re.search(r"(\d+) of 20 series", page)
    assert m, "the page must say that some series are left out"
    shown = len(re.findall(r'<text class="legend"', _svg(page, "trend-p99")))
    assert shown == int(m.group(1)) < 20


def test_new_crashes_are_drawn_on_top_and_distinguishable() -> None:
    crash = CrashEntry("a1", "heap-use-after-free", "heap-use-after-free", "new")
    runs = [_run(f"run-{k}", 1_700_000_000.0 + k, crashes=[crash]) for k in range(3)]
    svg = _svg(index_page(runs), "trend-crashes")
    new = re.search(r'<polyline[^>]*data-series="new[^"]*"[^>]*>', svg)
    every = re.search(r'<polyline[^>]*data-series="all[^"]*"[^>]*>', svg)
    assert new and every
    assert new.start() > every.start()  # drawn after, so on top
    assert "stroke-dasharray" in new.group(0) and "stroke-dasharray" not in every.group(0)


def test_a_run_folder_without_a_record_is_listed(tmp_path: Path) -> None:
    write_run(_run("run-1", 1_700_000_000.0), tmp_path)
    (tmp_path / "campaign-20261201-000000").mkdir()
    (tmp_path / "campaign-20261201-000000" / "campaign.json").write_text("{}")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "summary.json").write_text("{not json")
    (tmp_path / "corpus").mkdir()  # the fuzz corpora: not a run
    index = write_index(tmp_path).read_text()
    runs = re.search(r'<table id="runs">.*?</table>', index, re.S)
    assert runs
    table = runs.group(0)
    assert "run-1/index.html" in table
    row = re.search(r"<tr><td>campaign-20261201-000000</td>.*?</tr>", table)
    assert row and "no record (interrupted or failed run)" in row.group(0)
    junk = re.search(r"<tr><td>junk</td>.*?</tr>", table)
    assert junk and "unreadable" in junk.group(0)
    assert "<td>corpus</td>" not in table


# ---- point 19 (part): file modes --------------------------------------------------------------------


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("umask_022")
def test_report_files_respect_the_umask(tmp_path: Path) -> None:
    run_dir = write_run(_run("run-1", 1_700_000_000.0), tmp_path)
    for path in [*run_dir.iterdir(), tmp_path / "index.html"]:
        mode = path.stat().st_mode & 0o777  # os.stat, through pathlib
        assert mode == 0o644, (path, oct(mode))
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_the_backup_counters_survive_a_round_trip() -> None:
    w = ingest._workload(_critical_exhaustion_doc())
    r = _run("run-1", 1_700_000_000.0, workloads=[w])
    again = RunReport.from_dict(json.loads(json.dumps(r.to_dict())))
    assert (again.workloads[0].backup_allocs, again.workloads[0].backup_peak_bytes) == (8192, 4 << 20)
    assert again.workloads[0].timeline == [
        TimePoint(0.026, 4 << 20, 0, 0, 10),
        TimePoint(0.047, 8 << 20, 0, 0, 11),
    ]
    assert run_page(again) == run_page(r)
