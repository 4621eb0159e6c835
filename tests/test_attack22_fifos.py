"""Session 22's outside review: a FIFO where kpool reads one of its own records (a reports folder full of
junk: a FIFO named summary.json, campaign.json or a corpus's .lock). On main (21fec7b) each hung for ever
in open(), waiting for a writer that never comes: `kpool report` (summary.json in any run folder),
`kpool campaign --resume` (campaign.json) and `kpool fuzz --merge` (corpus/<target>.lock). Session 20 made
workload files and crash texts refuse a FIFO; these records now do too: the run's row says so in the
index, --resume and --merge are errors naming the file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


# A hang is for ever; a kpool fuzz that builds its target first (a fresh checkout, clang on a loaded
# 2-core machine) took over 30 s once in a fast-tier run: the bound is the hang's, not the build's.
HANG_S = 180


def _kpool(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "harness.cli", *argv]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=HANG_S, env=env, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"kpool {' '.join(argv)} hung")


def test_report_does_not_wait_on_a_fifo_named_summary_json(tmp_path: Path) -> None:
    (tmp_path / "run1").mkdir()
    os.mkfifo(tmp_path / "run1" / "summary.json")
    proc = _kpool("report", "--reports", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "run1" in (tmp_path / "index.html").read_text()


def test_resume_does_not_wait_on_a_fifo_named_campaign_json(tmp_path: Path) -> None:
    (tmp_path / "campaign-1").mkdir()
    os.mkfifo(tmp_path / "campaign-1" / "campaign.json")
    proc = _kpool("campaign", "--resume", "campaign-1", "--reports", str(tmp_path))
    assert proc.returncode == 2, proc.stderr
    assert "campaign.json" in proc.stderr and "not a regular file" in proc.stderr, proc.stderr


@pytest.mark.skipif(shutil.which("clang") is None, reason="the fuzz build needs clang")
def test_merge_does_not_wait_on_a_fifo_named_as_its_lock(tmp_path: Path) -> None:
    (tmp_path / "corpus" / "conf").mkdir(parents=True)
    (tmp_path / "corpus" / "conf" / "an-input").write_bytes(b"seed:1")
    os.mkfifo(tmp_path / "corpus" / "conf.lock")
    proc = _kpool("fuzz", "conf", "--merge", "--reports", str(tmp_path))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "conf.lock" in proc.stderr and "not a regular file" in proc.stderr, proc.stderr


@pytest.mark.skipif(shutil.which("clang") is None, reason="the fuzz build needs clang")
def test_the_sweep_for_lost_crash_inputs_does_not_wait_on_a_fifo_named_fuzz_json(tmp_path: Path) -> None:
    """A run folder holding a crash input and a FIFO named fuzz.json (read for the run's planted bug):
    `kpool fuzz` (and a campaign) hung in the sweep for crash inputs killed runs left, before fuzzing."""
    from harness import runlock

    old = tmp_path / "fuzz-old"
    # a run folder as a killed run leaves it (swept), its lock naming no plant: fuzz.json is read for it
    runlock.hold(old, kind="fuzz").release()
    (old / "crashes").mkdir(parents=True)
    (old / "crashes" / "conf-crash-1").write_bytes(b"seed:1")
    os.mkfifo(old / "fuzz.json")
    proc = _kpool("fuzz", "conf", "--time", "1", "--reports", str(tmp_path))
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "fuzzing conf" in proc.stderr, proc.stderr
