"""Adapters from what the runners write (fuzz.json of `kpool fuzz`, stress.json of `kpool stress`) to
the report model, and the hand-over of their crashes to triage. A job that wrote nothing still
becomes a result (with its error), so a broken runner shows in the report instead of vanishing."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.report.model import CrashEntry, FuzzResult, Latency, Outlier, Slo, TimePoint, WorkloadResult
from harness.triage import Crash, CrashDB, Reproducer, record
from harness.triage.db import NEW

if TYPE_CHECKING:
    from harness.campaign import Campaign, Job


def _tail(run_dir: Path, job: Job, lines: int = 5) -> str:
    try:
        text = (run_dir / job.log).read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def fuzz_results(doc: dict[str, Any] | None, job: Job, run_dir: Path) -> list[FuzzResult]:
    target = job.name.split(":", 1)[1]
    if doc is None:
        return [
            FuzzResult(
                target, seconds=job.seconds, error=f"no result (exit {job.returncode}): {_tail(run_dir, job)}"
            )
        ]
    out = []
    for r in doc.get("results", []):
        out.append(
            FuzzResult(
                target=r.get("target", target),
                seconds=float(r.get("seconds", 0.0)),
                executions=int(r.get("execs", 0)),
                exec_per_s=float(r.get("exec_per_s", 0)),
                coverage=int(r.get("cov", 0)),
                corpus=int(r.get("corpus", 0)),
                crashes=len(r.get("crashes", [])),
            )
        )
    return out


def _timeline(workers: list[dict[str, Any]]) -> list[TimePoint]:
    """Worker 0's samples (each worker samples its own pool)."""
    for w in workers:
        tl = w.get("timeline") or {}
        cols = tl.get("columns", [])
        if not cols:
            continue
        ix = {c: i for i, c in enumerate(cols)}

        def col(row: list[Any], name: str, ix: dict[str, int] = ix) -> int:
            return int(row[ix[name]]) if name in ix else 0

        return [
            TimePoint(
                t=col(row, "t_ms") / 1000.0,
                capacity_bytes=col(row, "primary_capacity"),
                in_use_bytes=col(row, "primary_in_use"),
                backup_in_use_bytes=col(row, "backup_in_use"),
                syscalls=col(row, "syscalls"),
            )
            for row in tl.get("rows", [])
        ]
    return []


def _workload(w: dict[str, Any]) -> WorkloadResult:
    hist = w.get("hist", {})
    latency = [Latency(op, [(int(v), int(c)) for v, c in h.get("buckets", [])]) for op, h in hist.items()]
    slos = [
        Slo(
            s.get("slo", "?"), f"{s.get('op', '<=')} {s.get('bound')}", str(s.get("value")), bool(s.get("ok"))
        )
        for s in w.get("slo", [])
    ]
    outliers = [
        Outlier(
            op=o.get("kind", "?"),
            latency_ns=int(o.get("lat_ns", 0)),
            index=int(o.get("index", 0)),
            size=int(o.get("size", 0)),
            context={k: o[k] for k in ("worker", "thread", "grow", "backup", "interference") if k in o},
        )
        for o in w.get("outliers", [])
    ]
    crashes = w.get("crashes", [])
    wall = float(w.get("wall_s", 0.0))
    return WorkloadResult(
        name=w.get("name", "?"),
        allocator=w.get("allocator", "kpool"),
        seconds=wall,
        ops=int(w.get("ops", 0)),
        latency=latency,
        slos=slos,
        timeline=_timeline(w.get("workers", [])),
        outliers=outliers,
        integrity_errors=int(w.get("integrity_errors", 0)),
        crashes=len(crashes),
        error="interrupted" if w.get("interrupted") else "",
        backup_allocs=int((w.get("backup") or {}).get("allocs", 0)),
        backup_peak_bytes=int((w.get("backup") or {}).get("peak_in_use_bytes", 0)),
    )


def workload_results(doc: dict[str, Any] | None, job: Job, run_dir: Path) -> list[WorkloadResult]:
    name = job.name.split(":", 1)[1]
    if doc is None:
        return [
            WorkloadResult(
                name, seconds=job.seconds, error=f"no result (exit {job.returncode}): {_tail(run_dir, job)}"
            )
        ]
    return [_workload(w) for w in doc.get("workloads", [])]


def _shown(repro: Reproducer | None, run_dir: Path) -> str:
    """A crash's reproducer in the report: a fuzz input (relative to the run when inside it), or the
    command that replays it."""
    if repro is None:
        return ""
    if repro.input_path:
        path = repro.input_path
        return str(Path(path).relative_to(run_dir)) if path.startswith(str(run_dir)) else path
    argv, env = repro.command()
    return " ".join([*(f"{k}={shlex.quote(v)}" for k, v in env.items()), shlex.join(argv)])


def triage(c: Campaign, run_dir: Path) -> list[CrashEntry]:
    """Every crash the jobs kept, in the crash database (reports/crashes.sqlite) and deduplicated by
    signature: one entry per signature, 'new' when this run saw it first. A job told the campaign's
    database and run (harness/triage/record.py) recorded its crashes itself; the others are recorded here."""
    path = run_dir.parent / record.DB_NAME
    found: list[tuple[Crash, str | None]] = []  # a crash, and its signature's hash when a job recorded it
    for j in c.jobs:
        out = run_dir / j.out
        if not out.exists():
            continue
        doc = json.loads(out.read_text())
        done = record.recorded_in(doc, path) and doc.get("crash_run") == c.run_id
        if j.kind == "fuzz":
            for r in doc.get("results", []):
                sigs = r.get("signatures", {}) if done else {}
                for crash in record.fuzz_crashes([r], c.run_id, c.plant):
                    found.append((crash, sigs.get(crash.reproducer.input_path if crash.reproducer else "")))
        else:
            for w in doc.get("workloads", []):
                for cr in w.get("crashes", []):
                    known = cr.get("signature") if done else None
                    found.append((record.stress_crash(w, cr, c.run_id), known))
    if not found:
        return []
    db = CrashDB(path)
    entries: dict[str, CrashEntry] = {}
    for crash, known in found:
        if known:
            row = db.get(known)
            new = row.status == NEW and row.new_run == c.run_id
        else:
            rec = db.record(crash)
            row, new = db.get(rec.signature_id), rec.new
        entry = entries.get(row.hash)
        if entry is not None:
            entry.count += 1
            continue
        entries[row.hash] = CrashEntry(
            signature=row.hash,
            title=row.title,
            kind=row.kind,
            status="new" if new else row.status,
            count=1,
            source=crash.source,
            reproducer=_shown(crash.reproducer, run_dir),
            report_path=crash.text_path or "",
        )
    return list(entries.values())
