"""kpool bench's tables: kpool's ratios to each peer, from kpbench's JSON lines (harness/bench.py)."""

from __future__ import annotations

from typing import Any

from harness import bench


def _run(ops_s: float, cpu_s: float | None, hwm: int) -> dict[str, Any]:
    run: dict[str, Any] = {
        "ops_per_s": ops_s,
        "clock_ns": 20,
        "lat_ns": {"alloc": {"p50": 20, "p99": 30, "p999": 40}},
        "verify_errors": 0,
        "alloc_failures": 0,
        "free_errors": 0,
        "rss": {"hwm_kib": hwm, "peak_kib": hwm, "interval_ms": 5, "kib": [hwm]},
    }
    if cpu_s is not None:
        run["ops_per_cpu_s"] = cpu_s
    return run


def test_cpu_time_ratios_for_one_thread_workloads() -> None:
    # Wall time says kpool is at half the peer's speed (another process took the CPU from kpool's
    # runs); the timed thread's CPU time says 0.80x. Both tables are printed, each with its own ratio.
    summary = {
        "a": {
            "kpool": bench.summarize(
                [_run(40e6, 80e6, 4000), _run(42e6, 82e6, 4100), _run(38e6, 78e6, 4000)]
            ),
            "mimalloc": bench.summarize([_run(80e6, 100e6, 4400)] * 3),
        },
        "c": {  # two threads: kpbench gives no CPU figure, so no CPU row
            "kpool": bench.summarize([_run(20e6, None, 5000)] * 3),
            "mimalloc": bench.summarize([_run(18e6, None, 5200)] * 3),
        },
    }
    text = bench.ratio_table(summary, ["mimalloc"])
    assert "| a | 0.50x |" in text
    cpu = text.split("kpool ops per CPU second")[1]
    assert "| a | 0.80x |" in cpu
    assert "| c |" not in cpu


def test_no_cpu_table_without_cpu_figures() -> None:
    # An older kpbench (no ops_per_cpu_s): the ops/s and RSS tables alone, no empty CPU table.
    summary = {
        "b": {
            "kpool": bench.summarize([_run(1e6, None, 9000)]),
            "glibc": bench.summarize([_run(2e6, None, 8000)]),
        }
    }
    text = bench.ratio_table(summary, ["glibc"])
    assert "| b | 0.50x |" in text
    assert "CPU second" not in text
