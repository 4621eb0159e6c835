"""Every crash input the fuzzers found in libkpool, replayed against the fuzz build.

tests/data/fuzz/<target>-<what> is an input that crashed the fuzz target <target> (allocator/driver) before
the bug it found was fixed; the replay runs it once through the target script, with ASan and UBSan,
and must exit 0. Each file's commit names the bug.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness.fuzz import TARGETS, runner

DATA = Path(__file__).resolve().parent / "data" / "fuzz"
CASES = sorted(p for p in DATA.iterdir() if p.is_file())

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("clang") is None, reason="the fuzz build needs clang"),
]


def _target(path: Path) -> str:
    target = path.name.split("-", 1)[0]
    assert target in TARGETS, f"{path.name}: the name must start with a fuzz target ({', '.join(TARGETS)})"
    return target


@pytest.mark.parametrize("path", CASES, ids=[p.name for p in CASES])
def test_saved_crash_input_no_longer_crashes(path: Path) -> None:
    pytest.importorskip("atheris")
    target = _target(path)
    code, report = runner.replay(target, path, runner.target_env(target))
    assert code == 0, f"{path.name} crashes {target} again:\n{report[-4000:]}"


HISTORIES = sorted((DATA.parent / "fuzz-history").glob("*.history"))


@pytest.mark.parametrize("path", HISTORIES, ids=[p.name for p in HISTORIES])
def test_saved_crash_history_no_longer_crashes(path: Path) -> None:
    """A crash that needed the state earlier inputs left: the inputs since the pools were made
    (tests/data/fuzz-history/<target>-<what>.history), replayed in order by the target script."""
    pytest.importorskip("atheris")
    import subprocess
    import sys

    target = _target(path)
    proc = subprocess.run(
        [sys.executable, str(runner.script(target)), "--kpool-history", str(path)],
        env=runner.target_env(target),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0 and "VIOLATION" not in proc.stderr, proc.stderr[-4000:]
