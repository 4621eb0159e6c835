"""The nightly campaign end to end: on a planted-bug build it finds a new signature whose reproducer
replays and minimises, and the report shows it; the same campaign on the clean build is green; an
interrupted campaign keeps what finished and --resume completes it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.triage import CrashDB

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _kpool(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _campaign(reports: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    # Planted bug 1 (a size class rounded down) is found by api_sequence in about a second.
    return _kpool(
        "campaign",
        "--budget",
        "20s",
        "--targets",
        "api_sequence",
        "--workloads",
        "workloads/steady-small.yaml",
        "--reports",
        str(reports),
        *extra,
    )


def test_planted_bug_then_clean_build(tmp_path: Path) -> None:
    bad = _campaign(tmp_path, "--plant", "1")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "[new]" in bad.stdout
    db = CrashDB(tmp_path / "crashes.sqlite")
    [sig] = db.signatures()
    assert sig.status == "new" and sig.count >= 1
    # Signed by the fuzz oracle's verdict on the bug (a block smaller than asked), not the driver's path.
    assert sig.title == "oracle-usable-short in kp_alloc", sig.title

    replay = _kpool("triage", "--db", str(db.path), "replay", str(sig.id), "-n", "2")
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert "reproduced 2 of 2" in replay.stdout
    minimized = _kpool("triage", "--db", str(db.path), "minimize", str(sig.id))
    assert minimized.returncode == 0, minimized.stdout + minimized.stderr
    assert db.get(sig.id).min_reproducer is not None, minimized.stdout + minimized.stderr

    [run_dir] = [p.parent for p in tmp_path.glob("*/summary.json")]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["ok"] is False and summary["crashes"][0]["status"] == "new"
    page = (run_dir / "index.html").read_text()
    assert sig.title.split(" < ")[0] in page and 'id="crashes"' in page
    assert run_dir.name in (tmp_path / "index.html").read_text()

    clean = _campaign(tmp_path)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "clean" in clean.stdout
    # after the fuzz jobs, the libkpool edges their corpora reach, in the summary, JSON and page
    assert "coverage libkpool edges, 1 target(s) together" in clean.stdout, clean.stdout
    [clean_dir] = [p.parent for p in tmp_path.glob("*/summary.json") if p.parent != run_dir]
    cov = json.loads((clean_dir / "summary.json").read_text())["fuzz_coverage"]
    [row] = cov["targets"]
    assert row["target"] == "api_sequence" and row["inputs"] > 0
    assert 0 < row["covered"] == cov["union"] < cov["edges"]
    assert 0 < len(cov["missed"]) < cov["functions"]
    assert json.loads((clean_dir / "coverage.json").read_text()) == cov
    page = (clean_dir / "index.html").read_text()
    assert "libkpool coverage" in page and cov["missed"][0].split(" (")[0] in page
    assert 'id="trend-coverage"' in (tmp_path / "index.html").read_text()


def test_interrupt_keeps_what_finished_and_resume_completes(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "campaign",
            "--budget",
            "30s",
            "--jobs",
            "1",
            "--targets",
            "conf",
            "--workloads",
            "workloads/steady-small.yaml",
            "--reports",
            str(tmp_path),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    state = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # interrupt once the first job (the fuzz target) is running
        states = list(tmp_path.glob("*/campaign.json"))
        if states and '"running"' in states[0].read_text():
            state = states[0]
            break
        time.sleep(0.2)
    assert state is not None, "the campaign never started a job"
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    jobs = json.loads(state.read_text())["jobs"]
    assert [j["state"] for j in jobs] == ["pending", "pending"], jobs
    assert (state.parent / "summary.json").exists()  # what there was, reported

    resumed = _kpool("campaign", "--resume", "--reports", str(tmp_path))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    jobs = json.loads(state.read_text())["jobs"]
    assert [j["state"] for j in jobs] == ["done", "done"], jobs
