"""Planning a campaign's budget, apart from running it: the jobs (a fuzz job per target, a stress job per
workload in the release build for latency, and as many sanitizer checks (a workload under the asan or tsan
build, for correctness) as their share of the budget holds), each job's slot, and the record of the plan
and every job's state in <reports>/<run-id>/campaign.json.

The budget is split by slots (jobs at a time: the cores here, or a cluster's worker threads): the fuzz
share across the targets in waves of `slots`, each fuzzing for its slot less its start-up; the rest
across the workloads.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness import atomic
from harness.errors import UsageError
from harness.fuzz import MAX_SECONDS
from harness.jobs import task
from harness.jobs.model import Job
from harness.report.model import type_problem

FUZZ_TARGETS = ("api_sequence", "conf", "faults", "workload_yaml", "concurrent")
# Share of the budget for fuzzing; the workloads take the rest (they are bounded by their own size).
FUZZ_SHARE = 0.6
# Of the whole budget, at most this much for the sanitizer checks (a workload under asan or tsan, for
# correctness: races and canary damage a release build does not see); taken before the shares above.
CHECK_SHARE = 0.2
# What a sanitizer check takes (measured: steady-small under asan 16 s on 2 busy cores, tsan slower):
# the number of checks planned is the share's slot-seconds over this.
CHECK_S = 30.0
CHECK_VARIANTS = ("asan", "tsan")
# What a `kpool fuzz` job takes beyond its fuzzing time: Python, atheris and the fuzz build start,
# libFuzzer reads the corpus and prints its final statistics, crash inputs are replayed (measured:
# about 2 s on 2 busy cores).
FUZZ_START_S = 3
# The same for a pure-Python target (workload_yaml): atheris instruments every module it imports
# first (measured: 6 to 8 s on 2 busy cores).
PY_FUZZ_START_S = 8
# Fuzzing for less than this is not worth starting a job for.
MIN_FUZZ_S = 1
# A job is not started with less than this left of the budget: its start-up alone takes about a
# second, and it would only be stopped at the deadline.
MIN_JOB_S = 2.0


def parse_budget(text: str) -> float:
    """'90s', '2m', '1h30m', '8h' -> seconds."""
    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?", text.strip())
    if not text.strip() or not m or not any(m.groups()):
        raise UsageError(f"--budget {text!r}: expected e.g. 90s, 2m, 1h30m or 8h")
    h, mi, s = (int(g or 0) for g in m.groups())
    seconds = h * 3600 + mi * 60 + s
    if seconds < 20:
        raise UsageError(f"--budget {text!r}: at least 20s (builds and start-up need some)")
    if seconds > MAX_SECONDS:  # a fuzz job may get the whole budget, as `kpool fuzz --time`
        raise UsageError(f"--budget {text!r}: at most {MAX_SECONDS}s (libFuzzer's longest run)")
    return float(seconds)


@dataclass
class Campaign:
    run_id: str
    budget_s: float
    jobs_n: int
    plant: int = 0
    started: float = field(default_factory=time.time)
    jobs: list[Job] = field(default_factory=list)
    cluster: str = ""  # --cluster of its last run ("": here); jobs_n is then the cluster's slots
    # its report (summary.json, the pages, coverage.json) was written when its run ended, not cut short:
    # with no job left to run it is finished, and --resume leaves the report as it is
    reported: bool = False

    def save(self, run_dir: Path) -> None:
        atomic.write_text(run_dir / "campaign.json", json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, run_dir: Path) -> Campaign:
        """The campaign recorded in run_dir; UsageError when there is none or it is not a record."""
        path = run_dir / "campaign.json"
        try:
            text = atomic.read_bytes(path).decode("utf-8", errors="replace")
        except FileNotFoundError:
            raise UsageError(
                f"--resume {run_dir.name}: no campaign {run_dir.name} in {run_dir.parent} (no {path})"
            ) from None
        except OSError as exc:
            raise UsageError(f"--resume {run_dir.name}: cannot read {path}: {exc.strerror}") from None
        bad = f"--resume {run_dir.name}: {path} is not a campaign record"
        try:
            d = atomic.loads(text)
        except ValueError as exc:  # not JSON, or nested too deep
            raise UsageError(f"{bad} ({str(exc)[:WHY_MAX]})") from None
        problem = _shape_problem(d)
        if problem:
            raise UsageError(f"{bad}: {problem}")
        # a record of a kpool before the field (session 22): its report was written when its run ended,
        # so one that is there belongs to a run that ended (_finished still requires every job ended)
        older = "reported" not in d
        try:
            jobs = [Job(**j) for j in d.pop("jobs")]
            c = cls(**d)
        except (AttributeError, KeyError, TypeError) as exc:
            raise UsageError(f"{bad} (missing or unexpected fields: {exc})") from None
        c.jobs = jobs
        if older:
            c.reported = (run_dir / "summary.json").is_file()
        # a field of the wrong type (a record edited by hand, or damaged) would fail far from here, in
        # the resumed campaign (`"jobs_n": "two"` was a TypeError traceback in the executor)
        problem = type_problem(c, Campaign)
        if problem:
            raise UsageError(f"{bad}: {problem}")
        return c


# The tail of a reason quoted from the JSON parser's message.
WHY_MAX = 160


def _shape_problem(d: object) -> str:
    """What keeps a campaign.json's JSON from being a record's fields: not an object, jobs not a list
    of objects; "" when it has the shape."""
    if not isinstance(d, dict):
        return f"a JSON {type(d).__name__}, not an object"
    jobs = d.get("jobs")
    if not isinstance(jobs, list):
        return f"jobs: {jobs!r:.40} (expected a list)"
    return next(
        (f"jobs[{i}]: {j!r:.40} (expected an object)" for i, j in enumerate(jobs) if not isinstance(j, dict)),
        "",
    )


def new_run_dir(reports: Path) -> tuple[str, Path]:
    """A new run: (run id, its folder), the folder made here. mkdir fails when another campaign (of
    this second, in another process) made it first, and the next suffix is tried."""
    stamp = "campaign-" + time.strftime("%Y%m%d-%H%M%S")
    reports.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        run_id = stamp if n == 1 else f"{stamp}-{n}"
        try:
            (reports / run_id).mkdir()
        except FileExistsError:
            n += 1
            continue
        return run_id, reports / run_id


def fuzz_start_s(target: str) -> int:
    """What a `kpool fuzz` job of target takes beyond its fuzzing time."""
    from harness.fuzz import NATIVE

    return FUZZ_START_S if target in NATIVE else PY_FUZZ_START_S


def checks(budget_s: float, slots: int, workloads: Sequence[Path]) -> list[tuple[Path, str]]:
    """The sanitizer checks the budget has room for: (workload, variant), each workload under asan then
    tsan, in the workloads' order, as many as CHECK_SHARE of the budget's slot-seconds holds."""
    room = int(budget_s * CHECK_SHARE * max(slots, 1) // CHECK_S)
    return [(w, v) for w in workloads for v in CHECK_VARIANTS][:room]


def plan(
    run_id: str,
    run_dir: Path,
    budget_s: float,
    jobs_n: int,
    plant: int,
    targets: Sequence[str],
    workloads: Sequence[Path],
    programs: Sequence[Path] = (),
    sanitizer: Sequence[tuple[Path, str]] = (),
) -> Campaign:
    """Split `budget_s` (the time there is for jobs): the sanitizer checks' slots first, then the fuzz
    share across the targets, run `jobs_n` at a time in waves, each fuzzing for its slot less its
    start-up; the rest across the workloads.

    A workload keeps its own time_limit_s (a worker past it is a hang, a crash): the budget bounds a
    stress job through the deadline, which stops it without calling it a crash. The fuzz jobs keep
    their working corpora under run_dir's parent (the reports folder)."""
    run_dir = run_dir.absolute()
    c = Campaign(run_id=run_id, budget_s=budget_s, jobs_n=jobs_n, plant=plant)
    lanes = max(jobs_n, 1)
    budget_s -= CHECK_S * -(-len(sanitizer) // lanes)
    fuzz_waves = max(1, -(-len(targets) // lanes))
    slot_s = budget_s * FUZZ_SHARE / fuzz_waves
    for t in targets:
        fuzz_s = max(MIN_FUZZ_S, int(slot_s - fuzz_start_s(t)))
        argv = task.command("fuzz", t, run_dir, run_dir.parent, seconds=fuzz_s, plant=plant)
        c.jobs.append(
            Job(f"fuzz:{t}", "fuzz", argv, fuzz_s + fuzz_start_s(t), f"fuzz-{t}/fuzz.json", target=t)
        )
    stress_waves = max(1, -(-(len(workloads) + len(programs)) // lanes))
    stress_s = round(budget_s * (1 - FUZZ_SHARE) / stress_waves, 1)
    runs = [(w, "release", stress_s) for w in [*workloads, *programs]]
    runs += [(w, v, CHECK_S) for w, v in sanitizer]
    for file, variant, slot in runs:
        # a real program: on kpool, glibc and every peer, side by side
        peers, w = file in programs, file.absolute()
        argv = task.command("stress", w.stem, run_dir, run_dir, variant=variant, workload=w, peers=peers)
        run = argv[argv.index("--run-id") + 1]
        name = f"stress:{w.stem}" + ("" if variant == "release" else f"@{variant}")
        c.jobs.append(
            Job(
                name,
                "stress",
                argv,
                slot,
                f"{run}/stress.json",
                target=w.stem,
                variant=variant,
                workload=str(w),
            )
        )
    return c


def fit(j: Job, left_s: float) -> bool:
    """Whether job j can start with left_s seconds of the budget left; a fuzz job's fuzzing time is
    cut to what is left less its start-up."""
    if left_s < MIN_JOB_S:
        return False
    if j.kind != "fuzz" or "--time" not in j.argv:
        return True
    at = j.argv.index("--time") + 1
    seconds = min(int(j.argv[at]), int(left_s - fuzz_start_s(j.target)))
    if seconds < MIN_FUZZ_S:
        return False
    j.argv[at] = str(seconds)
    return True
