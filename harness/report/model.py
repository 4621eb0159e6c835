"""The result model of one run: the canonical content of reports/<run-id>/summary.json.

Producers (the stress runner, the fuzz runner, triage) fill a RunReport; the writers (JSON, JUnit, the
HdrHistogram log, HTML) only read it. Latency is kept as histogram buckets (value in ns, count), so that
any log-linear histogram the C driver produces converts without loss of its resolution.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import platform
import subprocess
import time
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1


@dataclass
class Latency:
    """One operation kind's latency: buckets of (value_ns, count), value_ns the bucket's upper edge."""

    op: str
    buckets: list[tuple[int, int]]

    @property
    def count(self) -> int:
        return sum(c for _, c in self.buckets)

    def percentile(self, q: float) -> int:
        """The smallest bucket value with at least q (0..1) of the samples at or below it."""
        total = self.count
        if total == 0:
            return 0
        need = q * total
        seen = 0
        for value, count in sorted(self.buckets):
            seen += count
            if seen >= need:
                return value
        return max(v for v, _ in self.buckets)


@dataclass
class TimePoint:
    """The pool's state at one moment of a run (seconds since its start)."""

    t: float
    capacity_bytes: int = 0
    in_use_bytes: int = 0
    backup_in_use_bytes: int = 0
    syscalls: int = 0


@dataclass
class Outlier:
    op: str
    latency_ns: int
    index: int
    size: int = 0
    context: dict[str, Any] = field(default_factory=dict)


@dataclass
class Slo:
    name: str
    limit: str
    measured: str
    ok: bool

    @property
    def has_data(self) -> bool:
        """False for a bound on something the run never measured (the stress runner writes value None
        and op "n/a", e.g. a latency bound for an operation kind the workload did not do)."""
        return self.measured not in ("", "None") and not self.limit.startswith("n/a")

    @property
    def verdict(self) -> str:
        """One of ok, FAIL or "no data": a bound nothing was measured against has held nothing."""
        return "no data" if not self.has_data else "ok" if self.ok else "FAIL"


@dataclass
class WorkloadResult:
    name: str
    allocator: str = "kpool"
    seconds: float = 0.0
    ops: int = 0
    latency: list[Latency] = field(default_factory=list)
    slos: list[Slo] = field(default_factory=list)
    timeline: list[TimePoint] = field(default_factory=list)
    outliers: list[Outlier] = field(default_factory=list)
    integrity_errors: int = 0
    crashes: int = 0
    error: str = ""
    # The pool's backup counters over the whole run (all workers): the timeline's samples can miss
    # backup use that starts and ends between two of them, or before the last one (taken after the
    # workers freed their blocks).
    backup_allocs: int = 0
    backup_peak_bytes: int = 0
    # Why it was run a second time (the stress runner's rerun: a verdict broken while the machine kept the
    # grow daemon off every CPU), "" when it ran once; the verdicts are the second run's.
    rerun: str = ""
    # ops over the time of the phase that did them (0: unknown, ops / seconds stands in): seconds is the
    # whole workload's, with a workload's baseline phase (run again without its interference) and start-up
    ops_per_s: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            not self.error and not self.crashes and not self.integrity_errors and all(s.ok for s in self.slos)
        )

    @property
    def broken(self) -> list[str]:
        """What made it fail, one item each: a broken SLO with its value and bound, crashes, integrity
        errors (the error text is said apart, in ``error``)."""
        out = [f"{s.name} {s.measured} (bound {s.limit})" for s in self.slos if not s.ok]
        if self.crashes and not any(s.name == "crashes" for s in self.slos if not s.ok):
            out.append(f"{self.crashes} crash(es)")
        if self.integrity_errors and not any(s.name == "integrity_errors" for s in self.slos if not s.ok):
            out.append(f"{self.integrity_errors} integrity error(s)")
        return out


@dataclass
class ProgramResult:
    """A program workload's figures (harness/stress/program.py): per allocator the medians of its runs
    (runs, wall_s, cpu_s, peak_rss_kib), and the subject's (kpool's) wall time and peak RSS as ratios
    to each other allocator's (time, rss; None where one was not measured). Its verdicts are those of
    the WorkloadResult of the same name."""

    name: str
    allocator: str = "kpool"
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)
    ratios: dict[str, dict[str, Any]] = field(default_factory=dict)
    passed: bool = True


@dataclass
class FuzzResult:
    target: str
    seconds: float = 0.0
    executions: int = 0
    exec_per_s: float = 0.0
    coverage: int = 0
    corpus: int = 0
    crashes: int = 0
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and not self.crashes


@dataclass
class CrashEntry:
    signature: str
    title: str
    kind: str
    status: str = "new"
    count: int = 1
    source: str = ""
    reproducer: str = ""
    report_path: str = ""


@dataclass
class JobEntry:
    """One campaign job: where it ran (a cluster worker's address, or "local"), how often it was
    started (a cluster job runs again when its worker dies), how it ended and why without results."""

    name: str
    kind: str = ""
    state: str = ""
    worker: str = ""
    attempts: int = 0
    seconds: float = 0.0
    error: str = ""


@dataclass
class RunReport:
    run_id: str
    started: float = field(default_factory=time.time)
    finished: float = 0.0
    variant: str = "release"
    revision: str = ""
    environment: dict[str, Any] = field(default_factory=dict)
    workloads: list[WorkloadResult] = field(default_factory=list)
    fuzz: list[FuzzResult] = field(default_factory=list)
    crashes: list[CrashEntry] = field(default_factory=list)
    # kpool fuzz --coverage after the fuzz jobs (runner.CoverageReport as JSON): libkpool's edges per
    # target and together, the functions no corpus enters; empty when no native target ran.
    fuzz_coverage: dict[str, Any] = field(default_factory=dict)
    # The program workloads' figures and ratios (their verdicts are in `workloads`).
    programs: list[ProgramResult] = field(default_factory=list)
    # A campaign's jobs (harness/campaign/), in its order; empty for a lone kpool stress or fuzz run.
    jobs: list[JobEntry] = field(default_factory=list)
    # Ctrl-C or SIGTERM stopped the run before it ended (jobs left for --resume, or a part of the report
    # cut short): what it holds is what finished, and it is no verdict of the whole (ok is False).
    interrupted: bool = False

    @property
    def new_crashes(self) -> list[CrashEntry]:
        return [c for c in self.crashes if c.status == "new"]

    @property
    def broken_slos(self) -> list[tuple[str, Slo]]:
        return [(w.name, s) for w in self.workloads for s in w.slos if not s.ok]

    @property
    def ok(self) -> bool:
        return not self.interrupted and self.ok_so_far

    @property
    def ok_so_far(self) -> bool:
        """What finished passed (no new crash, no broken SLO, no failed job), interrupted or not."""
        return (
            not self.new_crashes
            and all(w.ok for w in self.workloads)
            and all(f.error == "" for f in self.fuzz)
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["schema"] = SCHEMA_VERSION
        d["ok"] = self.ok
        for w, wd in zip(self.workloads, d["workloads"], strict=True):
            wd["ok"] = w.ok
            for lat, ld in zip(w.latency, wd["latency"], strict=True):
                ld["percentiles"] = {f"p{k}": lat.percentile(q) for k, q in PERCENTILES}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunReport:
        def workload(w: dict[str, Any]) -> WorkloadResult:
            return WorkloadResult(
                name=w["name"],
                allocator=w.get("allocator", "kpool"),
                seconds=w.get("seconds", 0.0),
                ops=w.get("ops", 0),
                latency=[Latency(x["op"], [(int(v), int(c)) for v, c in x["buckets"]]) for x in w["latency"]],
                slos=[Slo(**s) for s in w.get("slos", [])],
                timeline=[TimePoint(**t) for t in w.get("timeline", [])],
                outliers=[Outlier(**o) for o in w.get("outliers", [])],
                integrity_errors=w.get("integrity_errors", 0),
                crashes=w.get("crashes", 0),
                error=w.get("error", ""),
                backup_allocs=w.get("backup_allocs", 0),
                backup_peak_bytes=w.get("backup_peak_bytes", 0),
                rerun=w.get("rerun", ""),
                ops_per_s=w.get("ops_per_s", 0.0),
            )

        return cls(
            run_id=d["run_id"],
            started=d.get("started", 0.0),
            finished=d.get("finished", 0.0),
            variant=d.get("variant", "release"),
            revision=d.get("revision", ""),
            environment=d.get("environment", {}),
            workloads=[workload(w) for w in d.get("workloads", [])],
            fuzz=[FuzzResult(**{k: v for k, v in f.items() if k != "ok"}) for f in d.get("fuzz", [])],
            crashes=[CrashEntry(**c) for c in d.get("crashes", [])],
            fuzz_coverage=d.get("fuzz_coverage", {}),
            programs=[ProgramResult(**p) for p in d.get("programs", [])],
            jobs=[JobEntry(**j) for j in d.get("jobs", [])],
            interrupted=d.get("interrupted", False) is True,
        )


# The percentiles every summary states (label, quantile).
PERCENTILES = (("50", 0.5), ("90", 0.9), ("99", 0.99), ("99.9", 0.999), ("100", 1.0))


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def git_revision(root: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=10,
            check=False,
        )
    except OSError:
        return ""
    return out.stdout.strip()


def environment() -> dict[str, Any]:
    """What the run ran on: machine, kernel, CPU, transparent huge pages, load."""
    thp = _read("/sys/kernel/mm/transparent_hugepage/enabled")
    return {
        "machine": platform.machine(),
        "node": platform.node(),
        "kernel": platform.release(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count() or 0,
        "thp": thp[thp.find("[") + 1 : thp.find("]")] if "[" in thp else thp,
        "load": list(os.getloadavg()),
        "python": platform.python_version(),
    }


@functools.cache
def _shape(expected: Any) -> tuple[Any, tuple[Any, ...], tuple[tuple[str, Any], ...] | None]:
    """A type's origin, its arguments and, for a dataclass, its fields with their types (worked out once
    per type: a record has thousands of values of a handful of types)."""
    if dataclasses.is_dataclass(expected) and isinstance(expected, type):
        hints = typing.get_type_hints(expected)
        return None, (), tuple((f.name, hints[f.name]) for f in dataclasses.fields(expected))
    return typing.get_origin(expected), typing.get_args(expected), None


def type_problem(value: object, expected: Any = RunReport, where: str = "") -> str:
    """What in a record read back (RunReport.from_dict of a summary.json) has the wrong type, as
    "workloads[0].latency: 'x' (expected a list)"; "" when every field has its declared type. from_dict
    takes what the file holds; a file edited by hand, or damaged, can hold a string where a number goes,
    and the pages would fail on it far from the cause."""
    if expected is Any:
        return ""
    if expected is str:  # the common cases first
        ok = isinstance(value, str)
    elif expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif expected is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif expected is bool:
        ok = isinstance(value, bool)
    else:
        return _composite_problem(value, expected, where)
    name = getattr(expected, "__name__", str(expected))
    return "" if ok else f"{where or 'the record'}: {value!r:.40} (expected {name})"


def _composite_problem(value: object, expected: Any, where: str) -> str:
    origin, args, fields = _shape(expected)
    label = where or "the record"
    if fields is not None:
        if not isinstance(value, expected):
            return f"{label}: {value!r:.40} (expected {expected.__name__})"
        for name, tp in fields:
            found = type_problem(getattr(value, name), tp, f"{where}.{name}" if where else name)
            if found:
                return found
        return ""
    if origin is list:
        if not isinstance(value, list):
            return f"{label}: {value!r:.40} (expected a list)"
        return next((p for i, v in enumerate(value) if (p := type_problem(v, args[0], f"{where}[{i}]"))), "")
    if origin is tuple:
        if not isinstance(value, tuple | list) or len(value) != len(args):
            return f"{label}: {value!r:.40} (expected {len(args)} values)"
        pairs = enumerate(zip(value, args, strict=True))
        return next((p for i, (v, t) in pairs if (p := type_problem(v, t, f"{where}[{i}]"))), "")
    if origin is dict:
        return "" if isinstance(value, dict) else f"{label}: {value!r:.40} (expected an object)"
    if origin in (typing.Union, types.UnionType):
        if any(not type_problem(value, t, where) for t in args):
            return ""
        return f"{label}: {value!r:.40} (expected {expected})"
    if expected is type(None):
        return "" if value is None else f"{label}: {value!r:.40} (expected null)"
    return "" if isinstance(value, expected) else f"{label}: {value!r:.40} (expected {expected})"
