"""Adapters from what the runners write (fuzz.json of `kpool fuzz`, stress.json of `kpool stress`) to
the report model, and the hand-over of their crashes to triage. A job that wrote nothing still
becomes a result (with its error), so a broken runner shows in the report instead of vanishing."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.report.model import CrashEntry, FuzzResult, Latency, Outlier, Slo, TimePoint, WorkloadResult
from harness.triage import Crash, CrashDB, Reproducer

ROOT = Path(__file__).resolve().parents[2]

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


# What a fuzz reproducer needs from the runner's environment to rerun the input the same way.
_FUZZ_ENV = ("KPOOL_LIB", "LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS", "PYTHONPATH")


def _fuzz_crashes(doc: dict[str, Any], run_id: str, plant: int) -> list[Crash]:
    from harness.fuzz import runner

    out = []
    for r in doc.get("results", []):
        target = r.get("target", "?")
        if not r.get("crashes"):
            continue
        env = runner.target_env(target, plant)
        for path in r["crashes"]:
            report = Path(path + ".txt")
            text = report.read_text(errors="replace") if report.exists() else ""
            if not text or (
                text.startswith("# kpool fuzz replay") and ": exit 0\n" in text.split("\n", 1)[0] + "\n"
            ):
                # The input alone did not crash again (the crash needed the state earlier inputs
                # left): the report is the one in the fuzzing log.
                log = Path(r.get("log", ""))
                text = log.read_text(errors="replace") if log.is_file() else text
                report = log
            repro = Reproducer(
                argv=(sys.executable, str(runner.script(target)), "-timeout=10", "${input_path}"),
                kind="fuzz",
                env={k: env[k] for k in _FUZZ_ENV if k in env},
                cwd=str(ROOT),
                input_path=path,
                target=target,
            )
            out.append(
                Crash(
                    text=text, run_id=run_id, source=f"fuzz:{target}", reproducer=repro, text_path=str(report)
                )
            )
    return out


def _program_keys(argv: list[str], cwd: Path) -> dict[str, str]:
    """The driver keys a kpdrive command runs with: its program file's lines, then its key=value
    arguments (kpdrive reads them in that order, a later key winning). {} when the program is gone."""
    if len(argv) < 2 or "=" in argv[1]:
        return {}
    try:
        lines = (cwd / argv[1]).read_text().splitlines()
    except OSError:
        return {}
    keys: dict[str, str] = {}
    for line in [*lines, *argv[2:]]:
        key, eq, value = line.partition("=")
        if not eq:
            continue
        keys[key.strip()] = value.strip()
        if key.strip() == "duration_ms":  # the driver: a duration clears the op count
            keys.pop("count", None)
    return keys


def _workload_reproducer(rep: dict[str, Any]) -> Reproducer:
    """A worker's replay command, with its size as fields the command takes through placeholders
    (count=${ops} threads=${threads}), so that minimisation can cut them. The command replays one worker:
    one process (the workload's own count of processes is kept in meta as workload_processes)."""
    argv = shlex.split(rep.get("command", "true"))
    keys = _program_keys(argv, ROOT)
    count = keys.get("count", "")
    ops = int(count) if count.isdigit() and int(count) > 0 else None
    threads = int(keys["threads"]) if keys.get("threads", "").isdigit() else None
    if ops is not None:
        argv.append("count=${ops}")
    if threads is not None:
        argv.append("threads=${threads}")
    meta = {k: rep[k] for k in ("op_index", "phase", "allocator") if rep.get(k) is not None}
    if rep.get("processes") is not None:
        meta["workload_processes"] = rep["processes"]
    return Reproducer(
        argv=tuple(argv),
        kind="workload",
        cwd=str(ROOT),
        workload=rep.get("workload"),
        sha256=rep.get("sha256"),
        seed=rep.get("seed"),
        worker=rep.get("worker"),
        ops=ops,
        processes=1 if keys else None,
        threads=threads,
        meta=meta,
    )


def _stress_crashes(doc: dict[str, Any], run_id: str) -> list[Crash]:
    out = []
    for w in doc.get("workloads", []):
        for cr in w.get("crashes", []):
            rep = {"processes": w.get("processes"), **cr.get("reproducer", {})}
            text = cr.get("sanitizer_report") or cr.get("stderr_tail") or ""
            if cr.get("signal_name"):
                text += f"\nkpool: worker killed by {cr['signal_name']}\n"
            out.append(
                Crash(
                    text=text,
                    run_id=run_id,
                    source=f"workload:{w.get('name', '?')}",
                    reproducer=_workload_reproducer(rep),
                    returncode=cr.get("returncode"),
                    kind="timeout" if cr.get("kind") == "timeout" else None,
                )
            )
    return out


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
    """Every crash the jobs kept, recorded in the crash database (reports/crashes.sqlite) and
    deduplicated by signature: one entry per signature, 'new' when this run saw it first."""
    crashes: list[Crash] = []
    for j in c.jobs:
        path = run_dir / j.out
        if not path.exists():
            continue
        doc = json.loads(path.read_text())
        crashes += (
            _fuzz_crashes(doc, c.run_id, c.plant) if j.kind == "fuzz" else _stress_crashes(doc, c.run_id)
        )
    if not crashes:
        return []
    db = CrashDB(run_dir.parent / "crashes.sqlite")
    entries: dict[str, CrashEntry] = {}
    for crash in crashes:
        rec = db.record(crash)
        row = db.get(rec.signature_id)
        entry = entries.get(rec.hash)
        if entry is not None:
            entry.count += 1
            continue
        entries[rec.hash] = CrashEntry(
            signature=rec.hash,
            title=row.title,
            kind=row.kind,
            status="new" if rec.new else row.status,
            count=1,
            source=crash.source,
            reproducer=_shown(crash.reproducer, run_dir),
            report_path=crash.text_path or "",
        )
    return list(entries.values())
