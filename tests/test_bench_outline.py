"""`kpool bench` runs kpool's out-of-line small path (the pool option layout:outline, allocator/src/outline.c)
beside kpool in the same rounds of workloads a-d, as the row "kpool-outline" (on d with d's grow conf and the
layout: the grow daemon's work for outline pools is measured there), and its ratio to the best peer in a
column of its own, so that the layout issue 14's speed rests on is measured side by side with the peers by
the same command as the default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_bench_tables import _run
from test_c_suite import release_kpbench

from harness import bench


def test_bench_runs_kpool_outline_beside_kpool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real kpbench, a tiny --ops: kpool-outline's rows on a, c and d with the conf kpbench echoes (on d
    d's grow conf, then the layout), and on d its thread's faults per round and its system calls."""
    monkeypatch.setattr(bench, "build_kpbench", release_kpbench)
    out = tmp_path / "bench.json"
    argv = ["--workloads", "a,c,d", "--allocators", "kpool,kpool-outline", "--runs", "1", "--ops", "2000"]
    assert bench.main([*argv, "--json", str(out), "--seed", "3"]) == 0
    text = capsys.readouterr().out
    doc = json.loads(out.read_text())
    for workload in "acd":
        table = text.split(f"({workload}) ")[1].split("\n(")[0]
        assert "| kpool-outline |" in table, table
        conf = "layout:outline" if workload != "d" else f"{bench.GROW_CONF},layout:outline"
        assert doc["raw"][workload]["kpool-outline"][0]["conf"] == conf
        assert doc["summary"][workload]["kpool-outline"]["runs"] == 1
    table = text.split("(d) ")[1]
    assert "kpool-outline's thread faulted on " in table, table
    assert "kpool-outline system calls: " in table, table
    assert len(doc["summary"]["d"]["kpool-outline"]["faults"]) == 3  # per round


def test_d_grow_conf_is_kpbench_s() -> None:
    """bench.GROW_CONF is kpbench's default conf for d (--conf replaces it, so the outline row passes it)."""
    header = (Path(__file__).resolve().parents[1] / "allocator" / "bench" / "kpbench.h").read_text()
    assert f'#define GROW_CONF "{bench.GROW_CONF}"' in header


def test_the_ratio_table_has_outline_over_the_best_peer() -> None:
    """kpool-outline's ops/s and peak RSS over the best of issue 14's peers, beside kpool's."""
    sums = {
        "kpool": bench.summarize([_run(50e6, 50e6, 4000)]),
        "kpool-outline": bench.summarize([_run(80e6, 80e6, 5000)]),
        "mimalloc": bench.summarize([_run(100e6, 100e6, 2000)]),
    }
    text = bench.ratio_table({"a": sums}, ["kpool-outline", "mimalloc"])
    speed, rss = text.split("peak RSS")[:2]
    assert "| outline ÷ best peer |" in speed, speed
    row = next(ln for ln in speed.splitlines() if ln.startswith("| a "))
    assert row.rstrip(" |").endswith("0.80x (mimalloc)"), row
    row = next(ln for ln in rss.splitlines() if ln.startswith("| a "))
    assert "| 2.50x (mimalloc) |" in row, row  # outline 5000 KiB over mimalloc's 2000
