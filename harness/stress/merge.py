"""Merge the workers of one workload: histograms (bucket sums), outliers (the K slowest overall, each
with its worker), counters and event counts (sums), and the figures the report leads with.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

from harness.stress.hist import Layout, merge_docs

# kpool's own integrity counters (kp_stats_json "integrity"); "quarantined" is a consequence, not an error.
KPOOL_INTEGRITY = (
    "double_frees",
    "invalid_frees",
    "corruptions",
    "overflows",
    "use_after_frees",
    "freelist_errors",
)
SUMMED = (
    "ops",
    "steps",
    "alloc_failures",
    "critical_allocs",
    "critical_failures",
    "critical_denied",
    "realloc_failures",
    "verify_errors",
    "zero_errors",
    "free_errors_total",
    "remote_sent",
    "remote_local",
    "bytes_allocated",
)


def _add(into: dict[str, int], items: Mapping[str, Any]) -> None:
    for k, v in items.items():
        if isinstance(v, int | float) and not isinstance(v, bool):
            into[k] = into.get(k, 0) + int(v)


def integrity_errors(doc: Mapping[str, Any]) -> int:
    """Damage one worker saw: pattern mismatches, non-zero calloc, kp_free errors, kpool's detections."""
    c = doc["counters"]
    n = int(c["verify_errors"]) + int(c["zero_errors"]) + int(c["free_errors_total"])
    stats = doc.get("kpool_stats") or {}
    integ = stats.get("integrity", {})
    return n + sum(int(integ.get(k, 0)) for k in KPOOL_INTEGRITY)


def merge(workers: Sequence[Mapping[str, Any]], outliers_k: int = 32) -> dict[str, Any]:
    """One workload's merged result from its workers' results (finished ones; crashed ones count too)."""
    docs = [w["result"] for w in workers if w.get("result") and w["result"].get("ok")]
    hists = merge_docs(d["hist"] for d in docs)
    counters: dict[str, int] = {}
    free_errors: dict[str, int] = {}
    interference: dict[str, int] = {}
    events: dict[str, int] = {}
    for d in docs:
        c = d["counters"]
        _add(counters, {k: c[k] for k in SUMMED if k in c})
        _add(free_errors, c.get("free_errors", {}))
        _add(interference, c.get("interference", {}))
        _add(events, (d.get("events") or {}).get("counts", {}))
    outliers = sorted(
        (
            {**o, "worker": w["worker"]}
            for w in workers
            if w.get("result")
            for o in w["result"].get("outliers", [])
        ),
        key=lambda o: -int(o["lat_ns"]),
    )[:outliers_k]
    damage = [
        {**x, "worker": w["worker"]}
        for w in workers
        if w.get("result")
        for x in w["result"].get("damage", [])
    ]
    return {
        "workers_ok": len(docs),
        "ops": counters.get("ops", 0),
        "ops_per_s_per_thread": _per_thread_rate(docs),
        "clock_ns": max((int(d.get("clock_ns", 0)) for d in docs), default=0),
        "latency": {kind: h.summary() for kind, h in sorted(hists.items())},
        "hist": {kind: h.to_json() for kind, h in sorted(hists.items())},
        # the buckets above are [index, count]: their layout turns an index into nanoseconds
        "hist_layout": asdict(next(iter(hists.values())).layout if hists else Layout()),
        "counters": counters,
        "free_errors": free_errors,
        "integrity_errors": sum(integrity_errors(d) for d in docs),
        "interference_calls": interference,
        "events": events,
        "backup": _backup(docs),
        "alloc_path_syscalls": _alloc_path_syscalls(docs),
        # kpdrive reports kpool's counters only for a kpool pool (null through malloc: glibc and the peers)
        "kpool_figures": any(d.get("kpool_stats") for d in docs),
        "outliers": outliers,
        "damage": damage[:16],
        "start_s": _start_s(workers),
        "daemon_sched": _daemon_sched(docs),
    }


def _daemon_sched(docs: Iterable[Mapping[str, Any]]) -> dict[str, float] | None:
    """How long the grow daemon was runnable but off every CPU (kpdrive's daemon_sched, the kernel's
    run_delay): the longest of the workers' totals and of their longest stretches; None without a daemon."""
    found = [d["daemon_sched"] for d in docs if (d.get("daemon_sched") or {}).get("found")]
    if not found:
        return None
    return {
        "run_delay_ms": max(float(x["run_delay_ms"]) for x in found),
        "longest_wait_ms": max(float(x["longest_wait_ms"]) for x in found),
    }


def _per_thread_rate(docs: Iterable[Mapping[str, Any]]) -> float:
    """Operations per second per thread, averaged over workers."""
    rates = [d["ops_per_s"] / max(1, int(d["threads"])) for d in docs if d.get("ops_per_s")]
    return round(sum(rates) / len(rates)) if rates else 0.0


def _backup(docs: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    out = {"allocs": 0, "peak_in_use_bytes": 0, "refusals": 0}
    for d in docs:
        b = (d.get("kpool_stats") or {}).get("backup")
        if b:
            out["allocs"] += int(b.get("allocs", 0))
            out["refusals"] += int(b.get("refusals", 0))
            out["peak_in_use_bytes"] = max(out["peak_in_use_bytes"], int(b.get("peak_in_use_bytes", 0)))
    return out


def _alloc_path_syscalls(docs: Iterable[Mapping[str, Any]]) -> int:
    total = 0
    for d in docs:
        calls = ((d.get("kpool_stats") or {}).get("syscalls") or {}).get("alloc", {})
        total += sum(int(v) for v in calls.values())
    return total


def _start_s(workers: Sequence[Mapping[str, Any]]) -> float | None:
    """From the first spawn to the moment the last worker's op loop began: how long the workload takes to
    get going (both clocks are CLOCK_MONOTONIC)."""
    starts = [
        int(w["result"]["loop_start_mono_ns"]) for w in workers if w.get("result") and w["result"].get("ok")
    ]
    spawns = [int(w["spawned_mono_ns"]) for w in workers]
    if not starts or not spawns or len(starts) != len(workers):
        return None
    return round((max(starts) - min(spawns)) / 1e9, 4)
