"""A real campaign, run from a folder of its own with --reports elsewhere: every output (corpora, logs,
crash database, coverage.json, the index) goes under --reports, nothing into the checkout or the current
folder, and it ends within its budget plus the stated margin."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import campaign

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("clang") is None, reason="the fuzz variant needs clang"),
]


def _snapshot(folder: Path) -> dict[str, float]:
    if not folder.exists():
        return {}
    return {str(p): p.stat().st_mtime for p in folder.rglob("*")}


def test_every_output_goes_under_reports_and_the_budget_holds(tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    here, reports = tmp_path / "cwd", tmp_path / "reports"
    here.mkdir()
    # (the checkout's own corpus of the target fuzzed here: other runs may write elsewhere in reports/)
    checkout = ROOT / "reports" / "corpus" / "api_sequence"
    before = {"checkout": _snapshot(checkout), "cwd": _snapshot(here)}
    env = {k: v for k, v in os.environ.items() if k != "KPOOL_REPORTS"}
    cmd = [sys.executable, "-m", "harness.cli", "campaign", "--budget", "20s", "--jobs", "2"]
    cmd += ["--targets", "api_sequence", "--workloads", str(ROOT / "workloads" / "steady-small.yaml")]
    t0 = time.monotonic()
    proc = subprocess.run(
        [*cmd, "--reports", str(reports)], cwd=here, env=env, capture_output=True, text=True, timeout=300
    )
    took = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert took <= 20 + campaign.MARGIN_S, f"{took:.1f} s for --budget 20s"
    assert _snapshot(checkout) == before["checkout"], "the campaign wrote into the checkout"
    assert _snapshot(here) == before["cwd"], "the campaign wrote into the current folder"
    corpus = reports / "corpus" / "api_sequence"
    assert corpus.is_dir() and any(corpus.iterdir()), "the working corpus is under --reports"
    [run] = [p.parent for p in reports.glob("*/campaign.json")]
    assert (run / "coverage.json").is_file() and (run / "summary.json").is_file()
    assert (reports / "index.html").is_file()
