"""The `kpool` command as a test runs it: this tree's harness (PYTHONPATH), a plain PATH and a UTF-8 locale,
its output as text (bytes that are not UTF-8 as surrogate escapes). Shared by the tests of session 37 on;
older test files keep their own copies."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def kpool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        errors="surrogateescape",
        timeout=300,
        check=False,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "LANG": "C.UTF-8"},
    )


def hup_default() -> None:
    """A Popen preexec_fn: SIGHUP's default in the child. A test that sends kpool a hangup means the
    terminal's, and a suite started under nohup (SIGHUP ignored, which every child inherits) would
    otherwise test nohup's case instead: kpool keeps an inherited ignore (test_attack32_harness)."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
