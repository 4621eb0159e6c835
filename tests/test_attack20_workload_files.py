"""Session 20's outside review: workload files that are no regular file, given to the commands that
load them without `kpool stress`'s own check. On main (e193d3a) `kpool bench --workload FIFO` hung in
open() (waiting for a writer) and so did a campaign whose --workloads glob matched a FIFO; now the
loader (spec.load) refuses anything but a regular file, naming it, before it reads a byte."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import spec

ROOT = Path(__file__).resolve().parents[1]
LIMIT_S = 60  # the hang this guards against never ends


def test_the_loader_refuses_a_fifo_without_waiting(tmp_path: Path) -> None:
    fifo = tmp_path / "w.yaml"
    os.mkfifo(fifo)
    code = (
        "import sys\nfrom harness import spec\n"
        f"try:\n    spec.load({str(fifo)!r})\nexcept spec.SpecError as e:\n    print(e.issues[0])\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=LIMIT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"spec.load of a FIFO hung for {LIMIT_S} s")
    assert done.returncode == 0, done.stderr
    assert str(fifo) in done.stdout and "not a regular file" in done.stdout, done.stdout


@pytest.mark.parametrize("path", ["/dev/zero", "/dev/null"])
def test_the_loader_refuses_a_device(path: str) -> None:
    with pytest.raises(spec.SpecError) as info:
        spec.load(path)
    assert f"{path}:1:1" in str(info.value.issues[0]) and "not a regular file" in str(info.value.issues[0])


def test_bench_workload_fifo_is_a_usage_error(tmp_path: Path) -> None:
    fifo = tmp_path / "w.yaml"
    os.mkfifo(fifo)
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "harness.cli",
                "bench",
                "--workload",
                str(fifo),
                "--reports",
                str(tmp_path),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=LIMIT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"kpool bench --workload FIFO hung for {LIMIT_S} s")
    assert done.returncode == 2, done.stderr
    assert "not a regular file" in done.stderr and "Traceback" not in done.stderr, done.stderr
