"""Session 34's attack on the harness (s34-att): each test failed on s34-att's base b7ad467."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.jobs.model import Job
from harness.report.ingest import workload_results
from harness.report.model import RunReport
from harness.report.writers import write_run
from harness.stress.hist import Hist, Layout
from harness.stress.merge import merge

# ---- a campaign's latency: the driver's bucket indices are not nanoseconds --------------------------------


def _kpdrive_doc(buckets: list[list[int]]) -> dict[str, Any]:
    """One worker's kpdrive result with an alloc histogram of these [index, count] buckets."""
    lay = Layout()
    count = sum(c for _, c in buckets)
    top = lay.high(max(i for i, _ in buckets))
    alloc = {"count": count, "min": 10, "max": top, "mean": 100.0, "buckets": buckets}
    return {
        "ok": True,
        "hist": {"layout": {"sub_bits": lay.sub_bits, "max_exp": lay.max_exp}, "alloc": alloc},
        "counters": {"ops": count, "verify_errors": 0, "zero_errors": 0, "free_errors_total": 0},
        "loop_start_mono_ns": 1,
    }


def test_a_campaign_reports_latency_in_nanoseconds_not_bucket_indices(tmp_path: Path) -> None:
    """kpdrive's histogram buckets are [index, count] in a log-linear layout (128 sub-buckets a power of
    two): index 726 holds 3,424-3,439 ns. `kpool stress` printed p99 3,439 ns, and the campaign's report of
    the same stress.json (summary.json, index.html, the campaign's summary line, the per-night p99 trend,
    latency.hlog) said 726 ns: ingest took the index for the value. Found on the first `kpool campaign`: the
    paced-growth row said alloc p99 726 ns beside its own SLO verdict `latency_ns.alloc.p99 3439`."""
    doc = _kpdrive_doc([[20, 9800], [300, 99], [726, 100], [1990, 1]])
    merged = merge([{"worker": 0, "spawned_mono_ns": 0, "result": doc}])
    expected = Hist.from_json(merged["hist"]["alloc"], Layout()).percentile(0.99)
    assert expected == merged["latency"]["alloc"]["p99"] == 3439
    stress = {"workloads": [{"name": "paced", "allocator": "kpool", **merged}]}
    job = Job("stress:paced", "stress", [], 10.0, "stress-paced/stress.json", state="done")
    (w,) = workload_results(stress, job, tmp_path)
    (lat,) = w.latency
    assert lat.percentile(0.99) == expected
    assert lat.percentile(0.5) == 20  # an index under 128 is its own value
    assert max(v for v, _ in lat.buckets) == Layout().high(1990)  # about 3.2 ms, not 1,990 ns
    run_dir = write_run(RunReport("r", started=1.0, workloads=[w]), tmp_path / "reports")
    page = (run_dir / "index.html").read_text()
    assert "alloc 3.44 us" in page, "the p99 column of the workloads table"
    assert "alloc 726 ns" not in page
    index = (tmp_path / "reports" / "index.html").read_text()
    assert "3.44 us" in index and "726 ns" not in index, "the per-night p99"
