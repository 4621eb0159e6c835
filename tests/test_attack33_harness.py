"""Session 33's attack on the harness (s33-harn): each test failed on s33-harn's base b54c534."""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path

from harness.report.model import CrashEntry, Latency, RunReport, WorkloadResult
from harness.report.writers import write_run


def _table(page: str, table_id: str) -> dict[str, dict[str, str]]:
    m = re.search(rf'<table id="{table_id}">(.*?)</table>', page, re.S)
    assert m, table_id
    rows = [
        [unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"<t[hd]>(.*?)</t[hd]>", r)]
        for r in re.findall(r"<tr>(.*?)</tr>", m.group(1), re.S)
    ]
    return {r[0]: dict(zip(rows[0], r, strict=True)) for r in rows[1:]}


def _svg(page: str, ident: str) -> str:
    part = page[page.index(f'id="{ident}"') :]
    return part[: part.index("</svg>")]


# ---- an interrupted night in the trends ------------------------------------------------------------------


def test_an_interrupted_night_is_no_point_of_the_crash_and_coverage_trends(tmp_path: Path) -> None:
    """Night 2 was stopped by Ctrl-C before its fuzz jobs ran (interrupted: no crash found, a few edges
    measured). On b54c534 the crash plot drew it as a night of 0 crashes between nights of 1, the coverage
    plot as a drop, and the nights table said 0 new, 0 known as for a whole night. Now neither plot draws it
    and its row says it was interrupted."""
    reports = tmp_path / "reports"
    crash = CrashEntry("a1", "heap-use-after-free", "heap-use-after-free", "known")
    for night, interrupted in ((1, False), (2, True), (3, False)):
        t0 = 1_760_000_000.0 + night * 86400.0
        w = WorkloadResult("steady", latency=[Latency("alloc", [(50, 900), (100, 100)])])
        write_run(
            RunReport(
                run_id=f"night{night}",
                started=t0,
                finished=t0 + 60,
                workloads=[w],
                crashes=[] if interrupted else [crash],
                fuzz_coverage={
                    "union": 10 if interrupted else 900,
                    "edges": 1600,
                    "targets": [],
                    "functions": 9,
                    "missed": [],
                },
                interrupted=interrupted,
            ),
            reports,
        )
    page = (reports / "index.html").read_text()
    for plot in ("trend-crashes", "trend-coverage"):
        svg = _svg(page, plot)
        assert "(night1," in svg and "(night3," in svg, plot
        assert "(night2," not in svg, f"the interrupted night drawn in {plot}"
    nights = _table(page, "nights")
    assert nights["night2"]["started"].endswith(" interrupted"), nights["night2"]
    assert nights["night2"]["new"] == "-" and nights["night2"]["known"] == "-", nights["night2"]
    assert nights["night2"]["coverage"] == "-", nights["night2"]
    assert nights["night1"]["known"] == "1" and nights["night1"]["coverage"] == "56.2%", nights["night1"]
