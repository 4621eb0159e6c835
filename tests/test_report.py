"""The report writers: summary.json round-trips, junit.xml counts failures, the HdrHistogram log reads
back with the same percentiles, and the HTML page renders in headless Chromium with its plots."""

from __future__ import annotations

import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hdrh.log import HistogramLogReader

from harness.report.model import (
    CrashEntry,
    FuzzResult,
    Latency,
    Outlier,
    RunReport,
    Slo,
    TimePoint,
    WorkloadResult,
)
from harness.report.writers import hdr_histogram, write_run


def _latency(op: str, base: int) -> Latency:
    # 1000 samples: 900 at base, 90 at 4x, 9 at 40x, 1 at 1000x
    return Latency(op, [(base, 900), (4 * base, 90), (40 * base, 9), (1000 * base, 1)])


def _report(run_id: str, started: float, new_crash: bool = True) -> RunReport:
    timeline = [
        TimePoint(
            t=i * 0.1,
            capacity_bytes=(8 + i) << 20,
            in_use_bytes=(4 + i) << 20,
            backup_in_use_bytes=(i % 3) << 16,
            syscalls=3 * i,
        )
        for i in range(20)
    ]
    return RunReport(
        run_id=run_id,
        started=started,
        revision="abc123",
        environment={"kernel": "6.x", "cpus": 2},
        workloads=[
            WorkloadResult(
                name="steady-small",
                allocator="kpool",
                seconds=2.0,
                ops=1000,
                latency=[_latency("alloc", 20), _latency("free", 15)],
                slos=[Slo("alloc p99", "<= 1 us", "80 ns", True)],
                timeline=timeline,
                outliers=[Outlier("alloc", 20000, 417, 64, {"daemon_growing": True})],
            ),
            WorkloadResult(
                name="steady-small",
                allocator="glibc",
                seconds=2.0,
                ops=1000,
                latency=[_latency("alloc", 30)],
                slos=[Slo("alloc p99", "<= 100 ns", "120 ns", False)],
            ),
        ],
        fuzz=[FuzzResult("api_sequence", 60, 6_000_000, 100_000.0, 812, 143, 1 if new_crash else 0)],
        crashes=[
            CrashEntry(
                "a1b2c3",
                "heap-use-after-free in kp_free",
                "heap-use-after-free",
                "new" if new_crash else "known",
                2,
                "fuzz:api_sequence",
                "crashes/crash-1",
            )
        ],
    )


def test_latency_percentiles() -> None:
    lat = _latency("alloc", 20)
    assert lat.count == 1000
    assert lat.percentile(0.5) == 20
    assert lat.percentile(0.95) == 80
    assert lat.percentile(0.995) == 800
    assert lat.percentile(1.0) == 20000


def test_run_files_and_round_trip(tmp_path: Path) -> None:
    report = _report("run-1", 1_700_000_000.0)
    run_dir = write_run(report, tmp_path)
    for name in ("summary.json", "junit.xml", "latency.hlog", "index.html"):
        assert (run_dir / name).stat().st_size > 0, name
    data = json.loads((run_dir / "summary.json").read_text())
    assert data["ok"] is False  # a new crash and a broken SLO
    assert data["workloads"][0]["latency"][0]["percentiles"]["p99"] == 80
    again = RunReport.from_dict(data)
    assert json.loads(json.dumps(again.to_dict())) == data
    assert [c.title for c in again.new_crashes] == ["heap-use-after-free in kp_free"]
    assert again.broken_slos[0][1].name == "alloc p99"


def test_junit_has_one_case_per_workload_target_and_crash(tmp_path: Path) -> None:
    run_dir = write_run(_report("run-1", 1_700_000_000.0), tmp_path)
    suite = ET.parse(run_dir / "junit.xml").getroot()
    cases = suite.findall("testcase")
    assert [c.get("classname") for c in cases] == ["workload", "workload", "fuzz", "crash"]
    failed = [c.get("name") for c in cases if c.find("failure") is not None]
    assert failed == ["steady-small[glibc]", "api_sequence", "a1b2c3 heap-use-after-free in kp_free"]
    assert suite.get("failures") == "3"
    assert "SLO alloc p99: 120 ns" in (cases[1].find("failure").text or "")  # type: ignore[union-attr]


def test_hdr_log_reads_back(tmp_path: Path) -> None:
    report = _report("run-1", 1_700_000_000.0)
    run_dir = write_run(report, tmp_path)
    reader = HistogramLogReader(str(run_dir / "latency.hlog"), hdr_histogram(report.workloads[0].latency[0]))
    tags = []
    while (h := reader.get_next_interval_histogram()) is not None:
        tags.append(h.get_tag())
        if h.get_tag() == "steady-small/kpool/alloc":
            assert h.get_total_count() == 1000
            assert 79 <= h.get_value_at_percentile(99) <= 81
    assert tags == ["steady-small/kpool/alloc", "steady-small/kpool/free", "steady-small/glibc/alloc"]


def test_index_of_runs(tmp_path: Path) -> None:
    write_run(_report("run-1", 1_700_000_000.0), tmp_path)
    write_run(_report("run-2", 1_700_086_400.0, new_crash=False), tmp_path)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "summary.json").write_text("{not json")  # does not hide the others
    index = (tmp_path / "index.html").read_text()
    assert index.index("run-2/index.html") < index.index("run-1/index.html")  # newest first
    assert 'id="trend-p99"' in index and 'id="trend-crashes"' in index


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
def test_page_renders_in_headless_chromium(tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        pytest.fail("chromium is missing: scripts/setup.sh installs Debian's chromium")
    run_dir = write_run(_report("run-1", 1_700_000_000.0), tmp_path)
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    page = (run_dir / "index.html").as_uri()
    dom = subprocess.run(
        [browser, *flags, "--dump-dom", page], capture_output=True, text=True, timeout=120, check=False
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    for plot in ("latency-0", "capacity-0", "syscalls-0"):
        assert f'id="{plot}"' in html, plot
    assert (
        html.count('class="series"') >= 6
    )  # kpool alloc/free + glibc alloc curves, 3 timeline lines, syscalls
    assert 'id="crashes"' in html and "heap-use-after-free in kp_free" in html
    assert 'id="outliers"' in html and "daemon_growing=True" in html
    shot = tmp_path / "page.png"
    subprocess.run(
        [browser, *flags, f"--screenshot={shot}", "--window-size=1200,1800", page],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert shot.stat().st_size > 10_000  # a real picture, not an empty page
