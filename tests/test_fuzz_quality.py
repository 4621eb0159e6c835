"""Proof that the fuzzers work: each planted bug is found within a minute, and the clean build runs
as long without a crash.

`make PLANT=N` (allocator/src, lines marked "planted N") builds libkpool with one realistic bug;
`kpool fuzz <target> --plant N --no-seeds` fuzzes that build from nothing: no committed seeds (some of
them reach a planted bug by themselves) and no working corpus from an earlier run (a fresh reports
directory). Run these in parallel: `pytest -m quality -n 2`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The budget the issue sets: found within 60 s of fuzzing on this 2-core machine.
FUZZ_SECONDS = 60
# Beyond the fuzzing: building the planted variant, start-up, replaying the crash for its report.
OVERHEAD_S = 240

# plant: (target that finds it, what it is)
PLANTS = {
    1: ("api_sequence", "size-class index rounds down: a block up to 15 bytes short"),
    2: ("faults", "no double-free check: a freed block can be freed again"),
    3: ("api_sequence", "a span's units are given back while it is still on the partial list"),
    4: ("api_sequence", "shrink unmaps a segment that still has one live unit"),
    5: ("api_sequence", "realloc grows a block in place past its capacity"),
    6: ("api_sequence", "a pointer 16 bytes off for alignments of 4096 and up"),
    7: ("api_sequence", "a moving realloc copies 8 bytes too few"),
    8: ("api_sequence", "KP_ZERO leaves the first 8 bytes of a small block as they were"),
    9: ("api_sequence", "a block aligned to 4096 or more reports 16 bytes less than it has"),
    10: ("api_sequence", "a block aligned to 4096 or more handed out again while still live"),
}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.quality,
    pytest.mark.skipif(shutil.which("clang") is None, reason="the fuzz build needs clang"),
]


def _fuzz(target: str, plant: int, reports: Path, *, seeds: bool) -> tuple[int, dict[str, object]]:
    pytest.importorskip("atheris")
    cmd = [sys.executable, "-m", "harness.cli", "-q", "fuzz", target, "--plant", str(plant)]
    cmd += [] if seeds else ["--no-seeds"]
    cmd += ["--time", str(FUZZ_SECONDS), "--reports", str(reports)]
    proc = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=FUZZ_SECONDS + OVERHEAD_S, check=False
    )
    runs = sorted(reports.glob("fuzz-*/fuzz.json"))
    assert runs, f"no fuzz.json written:\n{proc.stdout}\n{proc.stderr}"
    result: dict[str, object] = json.loads(runs[-1].read_text())["results"][0]
    return proc.returncode, result


@pytest.mark.parametrize("plant", sorted(PLANTS), ids=[f"plant{n}" for n in sorted(PLANTS)])
def test_planted_bug_is_found(plant: int, tmp_path: Path) -> None:
    target, what = PLANTS[plant]
    code, result = _fuzz(target, plant, tmp_path, seeds=False)
    crashes = result["crashes"]
    assert code == 1 and isinstance(crashes, list) and crashes, f"planted bug {plant} ({what}) not found"
    seconds = result["seconds"]
    assert isinstance(seconds, float | int) and seconds <= FUZZ_SECONDS + 15


@pytest.mark.parametrize("target", ["api_sequence", "faults"])
def test_clean_build_runs_without_a_crash(target: str, tmp_path: Path) -> None:
    # With the seeds: the clean run should go as deep as it can.
    code, result = _fuzz(target, 0, tmp_path, seeds=True)
    assert code == 0 and not result["crashes"], f"the clean build crashed: {result['crashes']}"
