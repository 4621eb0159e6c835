"""SLO verdicts: a workload's `slo` section checked against its merged result.

Each verdict names the bound, the figure and whether it held. A workload always has the integrity SLO
(zero errors unless max_integrity_errors says otherwise) and the crash rule (no worker crashed).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.spec.validate import size_bytes

# bounds on kpool's own counters (kp_stats), which kpdrive reads only from a kpool pool
KPOOL_ONLY = ("max_backup_allocs", "max_alloc_path_syscalls", "min_backup_allocs", "max_backup_peak_bytes")


def verdicts(slo: Mapping[str, Any], merged: Mapping[str, Any], crashes: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def check(name: str, value: float, bound: float, upper: bool = True) -> None:
        ok = value <= bound if upper else value >= bound
        out.append({"slo": name, "value": value, "bound": bound, "ok": ok, "op": "<=" if upper else ">="})

    check("crashes", crashes, 0)
    check("integrity_errors", merged["integrity_errors"], int(slo.get("max_integrity_errors", 0)))
    for kind, bounds in slo.get("latency_ns", {}).items():
        lat = merged["latency"].get(kind)
        if lat is None:
            out.append({"slo": f"latency_ns.{kind}", "value": None, "bound": None, "ok": True, "op": "n/a"})
            continue
        for pct, bound in bounds.items():
            check(f"latency_ns.{kind}.{pct}", lat[pct], bound)
    if "min_ops_per_s" in slo:
        check("min_ops_per_s", merged["ops_per_s_per_thread"], slo["min_ops_per_s"], upper=False)
    c = merged["counters"]
    for key, value in (
        ("max_alloc_failures", c.get("alloc_failures", 0)),
        ("max_critical_failures", c.get("critical_failures", 0)),
    ):
        if key in slo:
            check(key, value, slo[key])
    if not merged.get("kpool_figures", True):
        # glibc or a peer: kpool's own counters were never read, so a bound on them is no verdict
        for key in KPOOL_ONLY:
            if key in slo:
                out.append({"slo": key, "value": None, "bound": None, "ok": True, "op": "n/a"})
        return out
    for key, value in (
        ("max_backup_allocs", merged["backup"]["allocs"]),
        ("max_alloc_path_syscalls", merged["alloc_path_syscalls"]),
    ):
        if key in slo:
            check(key, value, slo[key])
    if "min_backup_allocs" in slo:
        check("min_backup_allocs", merged["backup"]["allocs"], slo["min_backup_allocs"], upper=False)
    if "max_backup_peak_bytes" in slo:
        check(
            "max_backup_peak_bytes",
            merged["backup"]["peak_in_use_bytes"],
            size_bytes(slo["max_backup_peak_bytes"]),
        )
    return out


def broken(vs: list[dict[str, Any]]) -> list[str]:
    """Readable lines for the verdicts that failed."""
    return [f"{v['slo']}: {v['value']} (bound {v['op']} {v['bound']})" for v in vs if not v["ok"]]
