"""Session 36's attacks from outside on where kpool writes: standard output on a full disk."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize("args", [["options"], ["triage", "sarif"]])
def test_a_full_standard_output_is_named(args: list[str], tmp_path: Path) -> None:
    """`kpool options > /dev/full` (a redirection onto a full disk) said "kpool: error: No space left on
    device": not which file, so the user looked at the reports folder's disk; `kpool triage sarif` added
    Python's "Exception ignored ... OSError" when it flushed stdout at exit, and exit status 120. Now the
    error names standard output, once, exit 1."""
    with Path("/dev/full").open("w") as full:
        proc = subprocess.run(
            [sys.executable, "-m", "harness.cli", *args],
            cwd=tmp_path,
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            check=False,
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).parents[1]), "LANG": "C"},
        )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.endswith("\nkpool: error: standard output: No space left on device\n") or (
        proc.stderr == "kpool: error: standard output: No space left on device\n"
    ), proc.stderr
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr
