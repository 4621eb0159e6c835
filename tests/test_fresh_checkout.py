"""A source checkout with nothing built yet: every command builds the release library it needs.

Found by running `kpool campaign` in a fresh clone (session 5): the workloads are loaded before
anything is built, and loading one validates its pool settings through libkpool, so the campaign
stopped at once with "libkpool.so not found"; `kpool stress` and `kpool options` did the same.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _fresh_checkout(tmp: Path) -> Path:
    """The tracked files of this checkout (what a clone holds), nothing built."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(
        b"\0"
    )
    dest = tmp / "checkout"
    for name in filter(None, files):
        src = ROOT / os.fsdecode(name)
        if src.is_file():
            (dest / os.fsdecode(name)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / os.fsdecode(name))
    assert not list(dest.rglob("libkpool.so")), "the copy holds a built library"
    return dest


def _kpool(checkout: Path, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(checkout), "KPOOL_CACHE": str(home / "cache")}
    env.pop("KPOOL_LIB", None)
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_commands_in_a_fresh_checkout_build_what_they_need(tmp_path: Path) -> None:
    checkout = _fresh_checkout(tmp_path)
    proc = _kpool(checkout, "options", home=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "primary_max" in proc.stdout
    proc = _kpool(
        checkout, "stress", "workloads/steady-small.yaml", "--reports", str(tmp_path / "r"), home=tmp_path
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "libkpool.so not found" not in proc.stderr
