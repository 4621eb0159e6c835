"""The one place a campaign job's output is read: from what the runners write (fuzz.json of `kpool fuzz`,
stress.json of `kpool stress`, in the job's folder of the run, whether the job ran here or its results
came back from a cluster worker) to the report model, and the hand-over of their crashes to the crash
database, which the coordinator alone writes. A job that wrote nothing still becomes a result (with its
error), so a broken runner shows in the report instead of vanishing.

Jobs are the typed records of harness/jobs/model.py (their target and variant are fields, never taken
apart from a name); the runners' JSON is read with the fields it must have, so a renamed field is an
error here and not a silent zero in the report.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import atomic, output
from harness.errors import KpoolError
from harness.jobs.model import Job
from harness.report.model import (
    CrashEntry,
    FuzzResult,
    JobEntry,
    Latency,
    Outlier,
    ProgramResult,
    Slo,
    TimePoint,
    WorkloadResult,
    type_problem,
)
from harness.stress.hist import Layout
from harness.triage import Crash, CrashDB, Reproducer, record
from harness.triage.db import NEW


@dataclass
class JobResults:
    """What one job contributes to the report."""

    fuzz: list[FuzzResult] = field(default_factory=list)
    workloads: list[WorkloadResult] = field(default_factory=list)
    programs: list[ProgramResult] = field(default_factory=list)


class ResultFormatError(KpoolError):
    """A runner's JSON lacks a field the report needs."""


def _need(doc: dict[str, Any], key: str, where: str) -> Any:
    try:
        return doc[key]
    except (KeyError, TypeError):
        raise ResultFormatError(f"{where}: no field {key!r} (the runner's format changed?)") from None


def read(job: Job, run_dir: Path) -> dict[str, Any] | None:
    """The JSON a job wrote (None when it wrote none)."""
    path = run_dir / job.out
    if not path.exists():
        return None
    try:
        doc = atomic.loads(atomic.read_bytes(path).decode(errors="replace"))  # a FIFO: refused, not waited on
    except (OSError, ValueError) as exc:  # cut short (a kill, a full disk), or not JSON at all
        raise ResultFormatError(f"{job.out} of {job.name}: unreadable: {exc}") from exc
    if not isinstance(doc, dict):
        raise ResultFormatError(f"{job.out} of {job.name}: not a JSON object")
    return doc


def job_results(job: Job, run_dir: Path) -> JobResults:
    """The report's results of one ended job. A result file that is damaged, lacks a field or holds one
    of the wrong type (edited by hand, or damaged: a TypeError traceback stopped the campaign's report),
    fails that job alone (its error says why), not the report of every other job."""
    try:
        results = _job_results(job, run_dir)
        why = _type_problem(results)
    except ResultFormatError as exc:
        why = str(exc)
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        why = f"{job.out} of {job.name}: a field of the wrong type ({str(exc)[:WHY_MAX]})"
    else:
        if not why:
            return results
        why = f"{job.out} of {job.name}: a field of the wrong type: {why}"
    if job.kind == "fuzz":
        return JobResults(fuzz=[FuzzResult(job.target, seconds=job.seconds, error=why)])
    name = job.target + ("" if job.variant == "release" else f" [{job.variant}]")
    return JobResults(workloads=[WorkloadResult(name, seconds=job.seconds, error=why)])


# The tail of a reason quoted from an exception's message.
WHY_MAX = 160


def _type_problem(results: JobResults) -> str:
    """The first value of the wrong type in a job's results ("" when none): a report's pages fail on
    one far from the cause."""
    every = (*results.fuzz, *results.workloads, *results.programs)
    return next((p for r in every if (p := type_problem(r, type(r)))), "")


def _job_results(job: Job, run_dir: Path) -> JobResults:
    doc = read(job, run_dir)
    if job.kind == "fuzz":
        results = fuzz_results(doc, job, run_dir)
        # `kpool fuzz` records a libFuzzer that ended abnormally without a crash input
        errors = [str(r.get("error") or "") for r in (doc or {}).get("results", [])]
        for result, error in zip(results, errors, strict=False):
            result.error = result.error or error
        return JobResults(fuzz=results)
    return JobResults(workloads=workload_results(doc, job, run_dir), programs=_programs(doc))


def job_entry(job: Job) -> JobEntry:
    """The report's record of a job: where it ran, how often it was started, how it ended."""
    return JobEntry(job.name, job.kind, job.state, job.worker, job.attempts, job.seconds, job.error)


def _programs(doc: dict[str, Any] | None) -> list[ProgramResult]:
    """The program workloads' figures of a stress job's stress.json."""
    return [
        ProgramResult(w["name"], w["allocator"], w.get("figures", {}), w.get("ratios", {}), bool(w["passed"]))
        for w in (doc or {}).get("workloads", [])
        if w.get("kind") == "program"
    ]


def _tail(run_dir: Path, job: Job, lines: int = 5) -> str:
    try:
        text = (run_dir / job.log).read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def _no_result(job: Job, run_dir: Path) -> str:
    if job.error:
        return job.error
    return f"no result (exit {job.returncode}): {_tail(run_dir, job)}"


def fuzz_results(doc: dict[str, Any] | None, job: Job, run_dir: Path) -> list[FuzzResult]:
    if doc is None:
        return [FuzzResult(job.target, seconds=job.seconds, error=_no_result(job, run_dir))]
    out = []
    where = f"{job.out} of {job.name}"
    for r in _need(doc, "results", where):
        out.append(
            FuzzResult(
                target=_need(r, "target", where),
                seconds=float(_need(r, "seconds", where)),
                executions=int(_need(r, "execs", where)),
                exec_per_s=float(_need(r, "exec_per_s", where)),
                coverage=int(_need(r, "cov", where)),
                corpus=int(_need(r, "corpus", where)),
                crashes=len(_need(r, "crashes", where)),
                error=job.error,
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
    # kpdrive's buckets are [index, count] of a log-linear layout (harness.stress.hist): the model's are
    # (the bucket's highest value in ns, count), so an index past 127 is not its value
    layout = Layout.of(w.get("hist_layout") or {})

    def ns(i: Any, top: int) -> int:
        """Bucket i's highest value, or the largest sample where that is lower (as Hist.percentile)."""
        return min(layout.high(int(i)), top) if top else layout.high(int(i))

    latency = [
        Latency(op, [(ns(i, int(h.get("max", 0))), int(c)) for i, c in h.get("buckets", [])])
        for op, h in hist.items()
    ]
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
    main_s = float(w.get("main_wall_s", 0.0))  # the phase whose ops these are (no baseline)
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
        rerun=str(w.get("rerun", "")),
        ops_per_s=round(int(w.get("ops", 0)) / main_s, 1) if main_s > 0 else 0.0,
    )


def workload_results(doc: dict[str, Any] | None, job: Job, run_dir: Path) -> list[WorkloadResult]:
    """A stress job's workloads. Under a sanitizer build (a correctness check) a workload is named with
    its variant (`steady-small [asan]`) and judged without its latency bounds: a sanitizer's slowness is
    not the allocator's."""
    name = job.target + ("" if job.variant == "release" else f" [{job.variant}]")
    if doc is None:
        return [WorkloadResult(name, seconds=job.seconds, error=_no_result(job, run_dir))]
    out = [_workload(w) for w in _need(doc, "workloads", f"{job.out} of {job.name}")]
    if job.correctness_only:
        for w in out:
            w.name = f"{w.name} [{job.variant}]"
            w.slos = [s for s in w.slos if not s.name.startswith("latency_ns.")]
    if job.error:
        for w in out:
            w.error = w.error or job.error
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


def _job_crashes(
    j: Job,
    doc: dict[str, Any],
    run_id: str,
    plant: int,
    path: Path,
    found: list[tuple[Crash, tuple[int, int] | None, str | None]],
) -> None:
    """Append the crashes of a job's result file to `found`, each as it is read (a field of the wrong type
    past some of them raises, and those before it are kept)."""
    done = record.recorded_in(doc, path) and doc.get("crash_run") == run_id
    if j.kind == "fuzz":
        for r in doc.get("results", []):
            sigs = r.get("signatures", {}) if done else {}
            crashes = record.fuzz_crashes([r], run_id, plant)
            for crash, rate in zip(crashes, record.fuzz_replays([r]), strict=False):
                found.append((crash, rate, sigs.get(crash.reproducer.input_path if crash.reproducer else "")))
    else:
        for w in doc.get("workloads", []):
            for cr in w.get("crashes", []):
                found.append(
                    (record.stress_crash(w, cr, run_id), None, cr.get("signature") if done else None)
                )


def triage(
    jobs: Sequence[Job],
    run_id: str,
    plant: int,
    run_dir: Path,
    recovered: Sequence[tuple[Crash, tuple[int, int] | None]] = (),
) -> list[CrashEntry]:
    """Every crash the jobs kept, and the recovered ones (crash inputs killed runs left unrecorded, with
    their replays' rates), recorded here (the coordinator alone writes the crash database,
    reports/crashes.sqlite: a campaign's jobs record into scratch) and deduplicated by signature: one
    entry per signature, 'new' when this run saw it first. A fuzz crash's reproduction rate (the
    runner's replays) is stored with it."""
    path = run_dir.parent / record.DB_NAME
    # a crash; how often its replays crashed; its signature's hash when its runner recorded it in this
    # database under this run already (a runner told so by the environment: the campaign's jobs never are)
    found: list[tuple[Crash, tuple[int, int] | None, str | None]] = [(c, r, None) for c, r in recovered]
    for j in jobs:
        try:
            doc = read(j, run_dir)
        except ResultFormatError as exc:  # the job's failure says so in the report; its crashes are
            output.warn(f"{exc}: its crashes, if any, are not triaged (they are in {j.folder}/)")
            continue
        if doc is None:
            continue
        try:
            _job_crashes(j, doc, run_id, plant, path, found)
        except (TypeError, ValueError, AttributeError, KeyError) as exc:  # a field of the wrong type
            output.warn(
                f"{j.out} of {j.name}: a field of the wrong type ({str(exc)[:WHY_MAX]}): not every crash of"
                f" it is triaged (they are in {j.folder}/)"
            )
    if not found:
        return []
    db = CrashDB(path)
    # a fuzz input recorded already (by a run that recovered it after this campaign was killed, or by
    # this campaign before it was interrupted and resumed) is not recorded twice
    inputs = db.inputs()
    knowns = [
        known
        or (
            inputs.get(crash.reproducer.input_path)
            if crash.reproducer and crash.reproducer.input_path
            else None
        )
        for crash, _, known in found
    ]
    todo = [(crash, rate) for (crash, rate, _), known in zip(found, knowns, strict=True) if not known]
    # in one transaction: two per crash took 26.6 s for 700 (a sweep of what killed runs left), one 1.3 s
    recorded = iter(db.record_all([c for c, _ in todo], [r for _, r in todo]))
    entries: dict[str, CrashEntry] = {}
    for (crash, _, _), known in zip(found, knowns, strict=True):
        if known:
            row = db.get(known)
            new = row.status == NEW and row.new_run == run_id
        else:
            rec = next(recorded)
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
