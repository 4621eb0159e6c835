"""`kpool bench` runs kpool's earlier small path (the pool option layout:inline; the default is
layout:outline, allocator/src/outline.c, since session 24) beside kpool in the same rounds of workloads
a-d, as the row "kpool-inline" (on d too; every pool on kpool's defaults but its layout), and its ratio to
the best peer in a column of its own, so that the two layouts are measured side by side with the peers by
one command."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from test_bench_tables import _run
from test_c_suite import release_kpbench

from harness import bench


def test_bench_runs_kpool_inline_beside_kpool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real kpbench, a tiny --ops: kpool-inline's rows on a, c and d with the conf kpbench echoes (its
    layout alone, on d too), and on d its thread's faults per round and its system calls."""
    monkeypatch.setattr(bench, "build_kpbench", release_kpbench)
    out = tmp_path / "bench.json"
    argv = ["--workloads", "a,c,d", "--allocators", "kpool,kpool-inline", "--runs", "1", "--ops", "2000"]
    assert bench.main([*argv, "--json", str(out), "--seed", "3"]) == 0
    text = capsys.readouterr().out
    doc = json.loads(out.read_text())
    for workload in "acd":
        table = text.split(f"({workload}) ")[1].split("\n(")[0]
        assert "| kpool-inline |" in table, table
        assert doc["raw"][workload]["kpool-inline"][0]["conf"] == "layout:inline"
        assert doc["raw"][workload]["kpool"][0]["conf"] == ""  # kpool's own defaults
        assert doc["summary"][workload]["kpool-inline"]["runs"] == 1
    table = text.split("(d) ")[1]
    assert "kpool-inline's thread faulted on " in table, table
    assert "kpool-inline system calls: " in table, table
    assert len(doc["summary"]["d"]["kpool-inline"]["faults"]) == 3  # per round


def test_d_runs_kpool_on_its_defaults() -> None:
    """Issue 14 measures kpool on its own defaults: kpbench's d opens its pool with none of its own (it had
    watermarks of its own, high_wm:128m kept pre-faulted, 1.26x glibc's peak RSS against 1.16x on the
    defaults), and says so in its --help."""
    run = subprocess.run(
        [str(release_kpbench()), "--alloc", "kpool", "--workload", "d", "--grow", "8m", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["conf"] == ""
    usage = subprocess.run([str(release_kpbench()), "--help"], capture_output=True, text=True, timeout=60)
    assert "high_wm" not in usage.stdout + usage.stderr


def test_the_ratio_table_has_inline_over_the_best_peer() -> None:
    """kpool-inline's ops/s and peak RSS over the best of issue 14's peers, beside kpool's."""
    sums = {
        "kpool": bench.summarize([_run(50e6, 50e6, 4000)]),
        "kpool-inline": bench.summarize([_run(80e6, 80e6, 5000)]),
        "mimalloc": bench.summarize([_run(100e6, 100e6, 2000)]),
    }
    text = bench.ratio_table({"a": sums}, ["kpool-inline", "mimalloc"])
    speed, rss = text.split("peak RSS")[:2]
    assert "| inline ÷ best peer |" in speed, speed
    row = next(ln for ln in speed.splitlines() if ln.startswith("| a "))
    assert row.rstrip(" |").endswith("0.80x (mimalloc)"), row
    row = next(ln for ln in rss.splitlines() if ln.startswith("| a "))
    assert "| 2.50x (mimalloc) |" in row, row  # inline 5000 KiB over mimalloc's 2000
