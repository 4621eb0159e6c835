"""`kpool fuzz --layout` and $KPOOL_FUZZ_LAYOUT: a value that is no layout is a usage error (exit 2) naming
it, before anything is built or fuzzed. Before (session 23) there was no --layout, and a bad
$KPOOL_FUZZ_LAYOUT was found only inside the fuzz target, after the clang build, as a harness failure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _kpool(args: list[str], tmp_path: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KPOOL_FUZZ_LAYOUT"}
    env.update(extra)
    cmd = [sys.executable, "-m", "harness.cli", "fuzz", "api_sequence", "--time", "1", *args]
    cmd += ["--reports", str(tmp_path)]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_bad_layout_argument_is_a_usage_error(tmp_path: Path) -> None:
    proc = _kpool(["--layout", "sideways"], tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "sideways" in proc.stderr and "outline" in proc.stderr, proc.stderr
    assert not list(tmp_path.glob("fuzz-*")), "a run folder was made for a usage error"


def test_bad_layout_environment_is_a_usage_error(tmp_path: Path) -> None:
    proc = _kpool([], tmp_path, KPOOL_FUZZ_LAYOUT="outlined")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "KPOOL_FUZZ_LAYOUT" in proc.stderr and "outlined" in proc.stderr, proc.stderr
    assert not list(tmp_path.glob("fuzz-*")), "a run folder was made for a usage error"
