"""Session 22's second review: `kpool run` recorded a program killed by SIGKILL from outside (the OOM
killer, a kill -9) as a new crash signature. SIGKILL cannot be caught or raised by the allocator's checks
(they abort, SIGABRT): such a kill is not an allocator crash. It is now said as what it is (killed by
signal 9 from outside kpool, perhaps the OOM killer), exit 137 as a shell gives, and no crash is recorded.
A SIGSEGV is still a crash, and kpool's own time limit (which kills with SIGKILL) still records one."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from harness import run

ROOT = Path(__file__).resolve().parents[1]


def kpool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "LANG": "C"},
    )


def test_a_kill_from_outside_is_no_crash(tmp_path: Path) -> None:
    proc = kpool("run", "--reports", str(tmp_path), "--", "sh", "-c", "kill -9 $$", cwd=tmp_path)
    assert proc.returncode == 128 + signal.SIGKILL, proc.stderr
    assert "crash recorded:" not in proc.stderr, proc.stderr
    assert not (tmp_path / "crashes.sqlite").exists(), "a crash database was made for a kill from outside"
    said = [ln for ln in proc.stderr.splitlines() if "SIGKILL" in ln]
    assert said and "from outside" in said[0] and "OOM" in proc.stderr, proc.stderr
    assert "not an allocator crash" in proc.stderr, proc.stderr


def test_a_segfault_is_still_a_crash(tmp_path: Path) -> None:
    proc = kpool("run", "--reports", str(tmp_path), "--", "sh", "-c", "kill -11 $$", cwd=tmp_path)
    assert proc.returncode == 128 + signal.SIGSEGV, proc.stderr
    assert "crash recorded: signature" in proc.stderr, proc.stderr


def test_kpools_own_time_limit_is_still_recorded() -> None:
    result = run.run_program(["sleep", "30"], "glibc", timeout_s=0.5, echo_stderr=False)
    assert result.timed_out and result.returncode == -signal.SIGKILL
    assert result.recordable and not result.killed_from_outside
