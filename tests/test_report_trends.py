"""Trends the morning after (issue 15, point 10): reports/index.html shows per night the new, known, fixed
and flaky signatures, the coverage and the p99 per workload, read from what runs leave (summary.json, the
crash database); each signature has a page with its history across the runs."""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path

from harness import cli
from harness.report.model import CrashEntry, Latency, RunReport, WorkloadResult
from harness.report.writers import write_index, write_run
from harness.triage.crash import Crash
from harness.triage.db import CrashDB

DAY = 86400.0
T0 = 1_760_000_000.0


def _asan(frame: str) -> str:
    return (
        "==1==ERROR: AddressSanitizer: heap-use-after-free on address 0x1 at pc 0x2 bp 0x3 sp 0x4\n"
        f"    #0 0x5000 in {frame} /k/allocator/src/alloc.c:3:1\n"
    )


def _night(reports: Path, db: CrashDB, night: int, frames: list[str], p99: int, covered: int) -> None:
    run_id = f"night{night}"
    entries = []
    for frame in frames:
        rec = db.record(Crash(text=_asan(frame), run_id=run_id, source="fuzz:api_sequence"))
        entries.append(CrashEntry(rec.hash, frame, "heap-use-after-free", rec.status))
    report = RunReport(
        run_id=run_id,
        started=T0 + night * DAY,
        finished=T0 + night * DAY + 3600,
        workloads=[
            WorkloadResult("steady-small", latency=[Latency("alloc", [(p99 // 2, 900), (p99, 100)])]),
            WorkloadResult("cross-thread", latency=[Latency("alloc", [(3 * p99, 1000)])]),
        ],
        crashes=entries,
        fuzz_coverage={
            "union": covered,
            "edges": 1000,
            "targets": [],
            "functions": 9,
            "missed": [],
            "files": [],
        },
    )
    write_run(report, reports)


def _rows(page: str, table_id: str) -> list[list[str]]:
    m = re.search(rf'<table id="{table_id}">(.*?)</table>', page, re.S)
    assert m, f"no table {table_id}"
    rows = re.findall(r"<tr>(.*?)</tr>", m.group(1), re.S)
    return [
        [unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"<t[hd]>(.*?)</t[hd]>", r)]
        for r in rows
    ]


def _three_nights(tmp_path: Path) -> tuple[Path, CrashDB]:
    """A seen every night; B nights 1 and 3 (it came back: flaky); C night 2 only, rechecked fixed after."""
    reports = tmp_path / "reports"
    reports.mkdir()
    db = CrashDB(reports / "crashes.sqlite")
    _night(reports, db, 1, ["bug_a", "bug_b"], 100, 400)
    _night(reports, db, 2, ["bug_a", "bug_c"], 120, 450)
    c = next(s for s in db.signatures() if "bug_c" in s.title)
    db.set_replay(c.id, 0.0, 3, update_status=True)  # kpool triage recheck: no longer reproduces
    _night(reports, db, 3, ["bug_a", "bug_b"], 90, 500)
    return reports, db


def test_the_index_shows_per_night_new_known_fixed_flaky_coverage_and_p99(tmp_path: Path) -> None:
    reports, _ = _three_nights(tmp_path)
    rows = _rows((reports / "index.html").read_text(), "nights")
    head, body = rows[0], rows[1:]
    assert head[:7] == ["night", "started", "new", "known", "fixed", "flaky", "coverage"], head
    assert "p99 steady-small" in head and "p99 cross-thread" in head, head
    by_run = {r[0]: dict(zip(head, r, strict=True)) for r in body}
    counts = {run: tuple(by_run[run][k] for k in ("new", "known", "fixed", "flaky")) for run in by_run}
    assert counts == {
        "night1": ("2", "0", "0", "0"),
        "night2": ("1", "1", "0", "0"),  # C new, A known; B absent but seen again later: not fixed
        "night3": ("0", "1", "1", "1"),  # A known, C fixed, B back after a night away: flaky
    }, counts
    assert [r[0] for r in body] == ["night3", "night2", "night1"]  # newest first
    assert by_run["night3"]["coverage"] == "50.0%"
    assert by_run["night2"]["p99 steady-small"] == "120 ns"
    assert by_run["night1"]["p99 cross-thread"] == "300 ns"


def test_a_signature_page_lists_its_history_across_runs(tmp_path: Path) -> None:
    reports, db = _three_nights(tmp_path)
    index = (reports / "index.html").read_text()
    b = next(s for s in db.signatures() if "bug_b" in s.title)
    link = f"signatures/{b.hash}.html"
    assert f"href='{link}'" in index
    page = (reports / link).read_text()
    assert b.title in unescape(page)
    history = _rows(page, "history")
    head = history[0]
    assert head[:3] == ["run", "started", "this signature"], head
    seen = {r[0]: r[2] for r in history[1:]}
    assert seen["night1"].startswith("new"), seen
    assert seen["night2"] == "not seen", seen
    assert seen["night3"].startswith("flaky"), seen
    assert "href='../night1/index.html'" in page  # each run links to its own page


def test_kpool_report_writes_the_trends_and_no_signature_folder_is_taken_for_a_run(tmp_path: Path) -> None:
    reports, _ = _three_nights(tmp_path)
    (reports / "index.html").unlink()
    assert cli.main(["report", "--reports", str(reports)]) == 0
    page = (reports / "index.html").read_text()
    assert '<table id="nights">' in page
    assert "without a record" not in page  # reports/signatures/ is not a run
    assert len(list((reports / "signatures").glob("*.html"))) == 3


def test_without_a_crash_database_the_nights_use_the_runs_own_records(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    for night, status in ((1, "new"), (2, "known")):
        report = RunReport(
            run_id=f"n{night}", started=T0 + night * DAY, crashes=[CrashEntry("abcd", "t", "k", status)]
        )
        write_run(report, reports)
    write_index(reports)
    rows = _rows((reports / "index.html").read_text(), "nights")
    by_run = {r[0]: r for r in rows[1:]}
    assert by_run["n1"][2:6] == ["1", "0", "-", "-"], by_run
    assert by_run["n2"][2:6] == ["0", "1", "-", "-"], by_run
