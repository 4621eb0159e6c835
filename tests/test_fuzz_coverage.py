"""`kpool fuzz --coverage`: the share of libkpool's edges a target's corpus reaches, counted in the
coverage build (the fuzz build with the entry points not instrumented, so every counter is libkpool's)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("clang") is None, reason="the coverage build needs clang"),
]

ROW = re.compile(r"^\| (\w+) \| (\d+) \| (\d+) \| (\d+) \| (\d+)% \|$", re.M)


def test_coverage_counts_libkpool_edges_of_the_seeds(tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    cmd = [sys.executable, "-m", "harness.cli", "fuzz", "all", "--coverage", "--reports", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {m[1]: tuple(int(x) for x in m.groups()[1:]) for m in ROW.finditer(proc.stdout)}
    # workload_yaml is pure Python: no libkpool edges to count
    assert set(rows) == {"api_sequence", "conf", "faults", "concurrent"}, proc.stdout
    edges = {r[2] for r in rows.values()}
    assert len(edges) == 1, f"one library, one edge count: {rows}"
    for target, (inputs, covered, total, share) in rows.items():
        assert inputs > 0, f"{target}: no seeds replayed"
        assert 0 < covered < total, f"{target}: {covered} of {total}"
        assert share == round(100 * covered / total), rows
    # the operation sequences reach more of the allocator than the option parser does
    assert rows["api_sequence"][1] > rows["conf"][1], rows
