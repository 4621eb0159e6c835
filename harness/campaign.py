"""The nightly job: build the variants, split a time budget across fuzz targets and workloads, run them
in parallel up to the core count, triage the crashes, write the report, and say in the exit code
whether anything new broke.

Each piece of work is a job: one `kpool fuzz TARGET` or one `kpool stress WORKLOAD` child process
writing JSON into the run's directory, with the run directory as its working directory and absolute
paths in its arguments. Every output (the runs, the fuzz corpora, logs, the crash database, coverage,
the index) goes under --reports. The plan and every job's state live in <reports>/<run-id>/campaign.json,
rewritten after each change, so an interrupted campaign (Ctrl-C, kill) keeps what finished and
`--resume` runs only what did not.

The budget counts from the start (builds included). Jobs start while there is time for them; at the
end of the budget, jobs still running are stopped, and the campaign ends within MARGIN_S more.

Exit codes: 0 clean; 1 a new crash signature, a broken SLO or a failed job; 2 bad arguments, a workload
that does not load, or a failed build; 130 interrupted (what finished is reported).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness import build, output, paths
from harness.errors import ConfigError, UsageError
from harness.report import ingest
from harness.report.model import ProgramResult, RunReport, environment, git_revision
from harness.report.writers import write_run
from harness.triage import record

# Where `harness` is imported from: the jobs (run elsewhere) import the same package.
_IMPORT_ROOT = Path(__file__).resolve().parents[1]
FUZZ_TARGETS = ("api_sequence", "conf", "faults", "workload_yaml", "concurrent")
# The default budget gives a newcomer a full report within minutes on a fresh machine.
DEFAULT_BUDGET = "2m"
DEFAULT_WORKLOADS = "workloads/*.yaml"
# The real programs (program workloads) run, side by side with glibc and the peers, in a campaign of at
# least this budget unless --programs says otherwise: CPython's tests alone take about three minutes on
# five allocators, more than the short default budget has.
DEFAULT_PROGRAMS = "workloads/programs/*.yaml"
PROGRAMS_MIN_BUDGET_S = 15 * 60.0
# Progress: a line whenever a job starts or ends, else one this often (a night is 8 hours).
PROGRESS_EVERY_S = 30.0
# Share of the budget for fuzzing; the workloads take the rest (they are bounded by their own size).
FUZZ_SHARE = 0.6
# A job may overrun its slot by this much (start-up, a last report) before it is killed.
GRACE_S = 60
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
# A job still running at the deadline gets SIGINT (a stress job writes what finished) and this long
# to end before SIGKILL.
STOP_WAIT_S = 5.0
# After the budget: stopping the jobs still running (STOP_WAIT_S, all at once), triage, counting the
# fuzz corpora's coverage (given what is left of this, skipped with a warning past it) and writing
# the report. A campaign ends within its budget plus this.
MARGIN_S = 15.0
# Of MARGIN_S, kept for triage and writing the report after the coverage count.
REPORT_S = 4.0
# Polling the running jobs: twice a second costs nothing and stops a job within half a second.
POLL_S = 0.5
# Job states. Not finished and run again by --resume: pending (never started, or stopped by an
# interrupt), running (the campaign died), stopped (still running at the deadline), not-run (no time
# left in the budget to start it).
RERUN_STATES = ("pending", "running", "stopped", "not-run")


def parse_budget(text: str) -> float:
    """'90s', '2m', '1h30m', '8h' -> seconds."""
    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?", text.strip())
    if not text.strip() or not m or not any(m.groups()):
        raise UsageError(f"--budget {text!r}: expected e.g. 90s, 2m, 1h30m or 8h")
    h, mi, s = (int(g or 0) for g in m.groups())
    seconds = h * 3600 + mi * 60 + s
    if seconds < 20:
        raise UsageError(f"--budget {text!r}: at least 20s (builds and start-up need some)")
    return float(seconds)


@dataclass
class Job:
    name: str
    kind: str  # "fuzz" or "stress"
    argv: list[str]
    slot_s: float
    out: str  # the JSON the job writes, relative to the run directory
    state: str = "pending"  # pending, running, done, failed, stopped, not-run (see RERUN_STATES)
    returncode: int | None = None
    seconds: float = 0.0
    log: str = ""


@dataclass
class Campaign:
    run_id: str
    budget_s: float
    jobs_n: int
    plant: int = 0
    started: float = field(default_factory=time.time)
    jobs: list[Job] = field(default_factory=list)

    def save(self, run_dir: Path) -> None:
        tmp = run_dir / ".campaign.json.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=1) + "\n")
        tmp.replace(run_dir / "campaign.json")

    @classmethod
    def load(cls, run_dir: Path) -> Campaign:
        """The campaign recorded in run_dir; UsageError when there is none or it is not a record."""
        path = run_dir / "campaign.json"
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise UsageError(
                f"--resume {run_dir.name}: no campaign {run_dir.name} in {run_dir.parent} (no {path})"
            ) from None
        except OSError as exc:
            raise UsageError(f"--resume {run_dir.name}: cannot read {path}: {exc.strerror}") from None
        try:
            d = json.loads(text)
            jobs = [Job(**j) for j in d.pop("jobs")]
            c = cls(**d)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--resume {run_dir.name}: {path} is not a campaign record ({exc})") from None
        except (AttributeError, KeyError, TypeError) as exc:
            raise UsageError(
                f"--resume {run_dir.name}: {path} is not a campaign record "
                f"(missing or unexpected fields: {exc})"
            ) from None
        c.jobs = jobs
        return c


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


def _revision() -> str:
    """The checkout's git revision, or the installed version (a wheel has no history; a venv inside some
    other repository must not borrow its revision)."""
    tree = paths.checkout()
    return (git_revision(tree) if tree else "") or f"kpool {paths.version()}"


def _kpool(*args: str) -> list[str]:
    return [sys.executable, "-m", "harness.cli", "-q", *args]


def _child_env(run_id: str = "", run_dir: Path | None = None) -> dict[str, str]:
    """The jobs' environment: they import this same package, whatever their working directory, and
    record their crashes in the campaign's database (the reports folder's), under the campaign's run."""
    env = dict(os.environ)
    if run_dir is not None:
        env[record.DB_ENV] = str((run_dir.parent / record.DB_NAME).absolute())
        env[record.RUN_ENV] = run_id
    path = env.get("PYTHONPATH", "")
    if str(_IMPORT_ROOT) not in path.split(os.pathsep):
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(_IMPORT_ROOT), path)))
    return env


def plan(
    run_id: str,
    run_dir: Path,
    budget_s: float,
    jobs_n: int,
    plant: int,
    targets: Sequence[str],
    workloads: Sequence[Path],
    programs: Sequence[Path] = (),
) -> Campaign:
    """Split `budget_s` (the time there is for jobs): the fuzz share across the targets, run `jobs_n`
    at a time in waves, each fuzzing for its slot less its start-up; the rest across the workloads.

    A workload keeps its own time_limit_s (a worker past it is a hang, a crash): the budget bounds a
    stress job through the deadline (run_jobs), which stops it without calling it a crash. The fuzz
    jobs keep their working corpora under run_dir's parent (the reports folder)."""
    run_dir = run_dir.absolute()
    c = Campaign(run_id=run_id, budget_s=budget_s, jobs_n=jobs_n, plant=plant)
    lanes = max(jobs_n, 1)
    fuzz_waves = max(1, -(-len(targets) // lanes))
    slot_s = budget_s * FUZZ_SHARE / fuzz_waves
    for t in targets:
        fuzz_s = max(MIN_FUZZ_S, int(slot_s - fuzz_start_s(t)))
        argv = _kpool("fuzz", t, "--time", str(fuzz_s), "--run-dir", str(run_dir / f"fuzz-{t}"))
        argv += ["--reports", str(run_dir.parent)]
        if plant:
            argv += ["--plant", str(plant)]
        c.jobs.append(Job(f"fuzz:{t}", "fuzz", argv, fuzz_s + fuzz_start_s(t), f"fuzz-{t}/fuzz.json"))
    stress_waves = max(1, -(-(len(workloads) + len(programs)) // lanes))
    stress_s = budget_s * (1 - FUZZ_SHARE) / stress_waves
    for w in [*workloads, *programs]:
        name = w.stem
        argv = _kpool(
            "stress",
            str(w.absolute()),
            "--reports",
            str(run_dir),
            "--run-id",
            f"stress-{name}",
            "--jobs",
            "1",
        )
        if w in programs:  # a real program: on kpool, glibc and every peer, side by side
            argv += ["--peers", "all"]
        c.jobs.append(Job(f"stress:{name}", "stress", argv, round(stress_s, 1), f"stress-{name}/stress.json"))
    return c


class Interrupted(Exception):
    pass


def _on_signal(signum: int, frame: object) -> None:
    raise Interrupted(signal.Signals(signum).name)


def _fit(j: Job, left_s: float) -> bool:
    """Whether job j can start with left_s seconds of the budget left; a fuzz job's fuzzing time is
    cut to what is left less its start-up."""
    if left_s < MIN_JOB_S:
        return False
    if j.kind != "fuzz" or "--time" not in j.argv:
        return True
    at = j.argv.index("--time") + 1
    seconds = min(int(j.argv[at]), int(left_s - fuzz_start_s(j.name.split(":", 1)[1])))
    if seconds < MIN_FUZZ_S:
        return False
    j.argv[at] = str(seconds)
    return True


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
        os.killpg(proc.pid, sig)


@dataclass
class _Running:
    job: Job
    proc: subprocess.Popen[bytes]
    started: float
    stopping: float | None = None  # when SIGINT was sent at the deadline


def _start(j: Job, run_dir: Path, run_id: str) -> subprocess.Popen[bytes]:
    log = run_dir / "logs" / (j.name.replace(":", "-") + ".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    j.log = str(log.relative_to(run_dir))
    with log.open("wb") as f:
        return subprocess.Popen(
            j.argv,
            cwd=run_dir,
            env=_child_env(run_id, run_dir),
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _poll(r: _Running, now: float, deadline: float | None) -> int | None:
    """The job's exit status once it has ended; stops it past its slot (SIGKILL) or at the deadline
    (SIGINT, then SIGKILL after STOP_WAIT_S)."""
    rc = r.proc.poll()
    if rc is not None:
        return rc
    if r.stopping is None and now - r.started > r.job.slot_s + GRACE_S:
        _signal_group(r.proc, signal.SIGKILL)
        return r.proc.wait()
    if r.stopping is None and deadline is not None and now >= deadline:
        _signal_group(r.proc, signal.SIGINT)
        r.stopping = now
    elif r.stopping is not None and now - r.stopping > STOP_WAIT_S:
        _signal_group(r.proc, signal.SIGKILL)
        return r.proc.wait()
    return None


def run_jobs(c: Campaign, run_dir: Path, deadline: float | None = None) -> bool:
    """Run the jobs not finished yet, jobs_n at a time, until `deadline` (time.monotonic()): a job is
    started only while there is time for it (else 'not-run'), and one still running at the deadline
    is stopped ('stopped'). False if interrupted (running jobs are stopped and left pending, so
    --resume runs them again)."""
    pending = [j for j in c.jobs if j.state in RERUN_STATES]
    for j in pending:
        j.state = "pending"
    running: dict[str, _Running] = {}
    t0 = time.monotonic()
    last_state, last_shown = (-1, -1), t0
    old = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while pending or running:
            while pending and len(running) < c.jobs_n:
                j = pending.pop(0)
                if deadline is not None and not _fit(j, deadline - time.monotonic()):
                    j.state = "not-run"
                    c.save(run_dir)
                    continue
                proc = _start(j, run_dir, c.run_id)
                j.state = "running"
                running[j.name] = _Running(j, proc, time.monotonic())
                c.save(run_dir)
            if not running:
                break
            time.sleep(POLL_S)
            now = time.monotonic()
            for name, r in list(running.items()):
                rc = _poll(r, now, deadline)
                if rc is None:
                    continue
                j = r.job
                j.returncode, j.seconds = rc, round(now - r.started, 1)
                if r.stopping is not None:
                    j.state = "stopped"
                else:
                    j.state = "done" if (run_dir / j.out).exists() else "failed"
                del running[name]
                c.save(run_dir)
            done = sum(1 for j in c.jobs if j.state in ("done", "failed"))
            if (done, len(running)) != last_state or now - last_shown >= PROGRESS_EVERY_S:
                last_state, last_shown = (done, len(running)), now
                output.progress(
                    f"campaign {c.run_id}: {done}/{len(c.jobs)} jobs done, running "
                    f"{', '.join(running) or 'none'}, {now - t0:.0f}s elapsed"
                )
    except Interrupted as why:
        output.progress(
            f"campaign interrupted ({why}): stopping {len(running)} job(s); --resume runs them again"
        )
        for r in running.values():
            _signal_group(r.proc, signal.SIGTERM)
            try:
                r.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _signal_group(r.proc, signal.SIGKILL)
                r.proc.wait()
            r.job.state = "pending"
        c.save(run_dir)
        return False
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return True


def collect(c: Campaign, run_dir: Path, coverage: bool = True, coverage_s: float | None = None) -> RunReport:
    """The report of the jobs that finished (done or failed). A job that did not run, or was stopped
    at the deadline, is no result: summary() names it. Its crashes are still triaged."""
    report = RunReport(
        run_id=c.run_id,
        started=c.started,
        variant="release+fuzz",
        revision=_revision(),
        environment=environment(),
    )
    for j in c.jobs:
        if j.state not in ("done", "failed"):
            continue
        path = run_dir / j.out
        doc = json.loads(path.read_text()) if path.exists() else None
        if j.kind == "fuzz":
            results = ingest.fuzz_results(doc, j, run_dir)
            # `kpool fuzz` records a libFuzzer that ended abnormally without a crash input
            errors = [str(r.get("error") or "") for r in (doc or {}).get("results", [])]
            for result, error in zip(results, errors, strict=False):
                result.error = result.error or error
            report.fuzz.extend(results)
        else:
            report.workloads.extend(ingest.workload_results(doc, j, run_dir))
            report.programs.extend(_programs(doc))
    report.crashes = ingest.triage(c, run_dir)
    # Not after an interrupt: Ctrl-C keeps what finished at once, without a build and a replay.
    report.fuzz_coverage = fuzz_coverage(c, run_dir, coverage_s) if coverage else {}
    report.finished = time.time()
    return report


def _programs(doc: dict[str, Any] | None) -> list[ProgramResult]:
    """The program workloads' figures of a stress job's stress.json."""
    return [
        ProgramResult(w["name"], w["allocator"], w.get("figures", {}), w.get("ratios", {}), bool(w["passed"]))
        for w in (doc or {}).get("workloads", [])
        if w.get("kind") == "program"
    ]


def fuzz_coverage(c: Campaign, run_dir: Path, timeout_s: float | None = None) -> dict[str, Any]:
    """libkpool's edges the fuzz targets' corpora (under the reports folder, run_dir's parent) reach
    (kpool fuzz --coverage), {} when none ran. At most timeout_s.

    A failure is a warning: it must not cost the report of everything else.
    """
    from harness.fuzz import NATIVE

    targets = [j.name.split(":", 1)[1] for j in c.jobs if j.kind == "fuzz" and j.state == "done"]
    native = [t for t in targets if t in NATIVE]
    if not native:
        return {}
    if timeout_s is not None and timeout_s <= 0:
        output.warn("libkpool coverage of the fuzz corpora: no time left in the budget's margin")
        return {}
    from harness.fuzz import runner

    try:
        report = runner.coverage(native, run_dir.parent, write=False, timeout_s=timeout_s)
        (run_dir / "coverage.json").write_text(json.dumps(report.to_json(), indent=2) + "\n")
    except Exception as exc:  # whatever went wrong, the rest of the report is written
        output.warn(f"libkpool coverage of the fuzz corpora: {exc}")
        return {}
    return report.to_json()


def _headline(report: RunReport, c: Campaign, finished: bool) -> str:
    verdict = "clean" if report.ok else "PROBLEMS"
    not_run = [j.name for j in c.jobs if j.state in ("pending", "running", "not-run")]
    stopped = [j.name for j in c.jobs if j.state == "stopped"]
    ended = sum(1 for j in c.jobs if j.state in ("done", "failed"))
    if not finished:
        line = (
            f"kpool campaign {c.run_id}: interrupted after {ended} of {len(c.jobs)} jobs ({verdict} so far)"
        )
        if not_run or stopped:
            line += (
                f"; not run: {', '.join(stopped + not_run)} (kpool campaign --resume {c.run_id} runs them)"
            )
        return line
    line = f"kpool campaign {c.run_id}: {verdict}"
    if stopped or not_run:
        line += f"; the budget ({c.budget_s:.0f}s) ran out"
        if stopped:
            line += f": stopped at the deadline: {', '.join(stopped)}"
        if not_run:
            line += f"{';' if stopped else ':'} not run: {', '.join(not_run)}"
        line += " (a longer --budget, or --resume, runs them)"
    return line


def summary(report: RunReport, run_dir: Path, c: Campaign, finished: bool = True) -> str:
    lines = [_headline(report, c, finished)]
    for w in report.workloads:
        p99 = ", ".join(f"{lat.op} p99 {lat.percentile(0.99)} ns" for lat in w.latency)
        lines.append(f"  workload {w.name:<24} {'ok  ' if w.ok else 'FAIL'} {p99} {w.error}")
    for f in report.fuzz:
        lines.append(
            f"  fuzz     {f.target:<24} {'ok  ' if f.ok else 'FAIL'} {f.exec_per_s:,.0f} exec/s, "
            f"cov {f.coverage}, {f.crashes} crash(es) {f.error}"
        )
    cov = report.fuzz_coverage
    if cov:
        lines.append(
            f"  coverage libkpool edges, {len(cov['targets'])} target(s) together: {cov['union']:,} of "
            f"{cov['edges']:,} ({100 * cov['union'] / cov['edges']:.0f}%); "
            f"{len(cov['missed'])} of {cov['functions']} functions never entered"
        )
    for cr in report.crashes:
        lines.append(f"  crash    {cr.signature} [{cr.status}] {cr.title} ({cr.source})")
    lines.append(f"report: {run_dir / 'index.html'}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="kpool campaign",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog=(
            f"The budget counts from the start, builds included. Jobs start while there is time for "
            f"them; at the end of the budget the jobs still running are stopped, and the campaign ends "
            f"within a margin of {MARGIN_S:g} s more (stopping them, triage, the coverage of the fuzz "
            f"corpora, the report); builds that outlast the budget are waited for. Exit 0 clean, "
            f"1 a new crash, a broken SLO or a failed job, 2 a usage or configuration error, "
            f"130 interrupted."
        ),
    )
    p.add_argument(
        "--budget",
        default=None,
        help=f"total time, e.g. 90s, 30m, 8h (default {DEFAULT_BUDGET}; with --resume, the campaign's own)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        metavar="N",
        help="jobs at a time (default: the core count)",
    )
    p.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        default=None,
        metavar="RUN_ID",
        help="continue an interrupted campaign (default: the latest)",
    )
    p.add_argument(
        "--reports",
        type=Path,
        default=None,
        metavar="DIR",
        help="where every output goes: runs, fuzz corpora, crash database, index "
        "(default $KPOOL_REPORTS, else ./reports)",
    )
    p.add_argument(
        "--targets",
        default=",".join(FUZZ_TARGETS),
        help="fuzz targets, comma-separated ('' for none; default all)",
    )
    p.add_argument(
        "--workloads",
        default=DEFAULT_WORKLOADS,
        help=f"workload files, a glob ('' for none; default {DEFAULT_WORKLOADS}); a relative glob is "
        "looked up in the current directory, else beside the shipped workloads/",
    )
    p.add_argument(
        "--programs",
        default=None,
        metavar="GLOB",
        help=f"program workloads (real programs on kpool, glibc and the peers), a glob ('' for none; default "
        f"{DEFAULT_PROGRAMS} when the budget is at least {PROGRAMS_MIN_BUDGET_S / 60:.0f}m, else none)",
    )
    p.add_argument(
        "--plant",
        type=int,
        default=0,
        metavar="N",
        help="fuzz a build with planted bug N (tests of the campaign; default 0, none)",
    )
    args = p.parse_args(list(argv))
    if args.jobs < 1:
        p.error(f"--jobs {args.jobs}: must be at least 1")
    return args


def _latest(reports: Path) -> str:
    runs = sorted((p.parent for p in reports.glob("*/campaign.json")), key=lambda d: d.stat().st_mtime)
    if not runs:
        raise UsageError(f"--resume: no campaign under {reports} (no */campaign.json)")
    return runs[-1].name


def _targets(text: str) -> list[str]:
    targets = [t.strip() for t in text.split(",") if t.strip()]
    for t in targets:
        if t not in FUZZ_TARGETS:
            raise UsageError(f"--targets: unknown target {t!r} (known: {', '.join(FUZZ_TARGETS)})")
    return targets


def _glob(pattern: str, base: Path) -> list[Path]:
    if Path(pattern).is_absolute():
        return sorted(Path("/").glob(pattern.lstrip("/")))
    return sorted(base.glob(pattern))


def find_workloads(pattern: str, option: str = "--workloads") -> list[Path]:
    """The workload files a --workloads glob names, as absolute paths: a relative glob in the current
    directory, else beside the shipped workloads/. UsageError when it names none."""
    if not pattern.strip():
        return []
    shipped = paths.workloads().parent
    found = _glob(pattern, Path.cwd())
    if not found and not Path(pattern).is_absolute():
        found = _glob(pattern, shipped)
    files = [p.absolute() for p in found if p.is_file()]
    if not files:
        where = "" if Path(pattern).is_absolute() else f" (looked in {Path.cwd()} and {shipped})"
        raise UsageError(f"{option} {pattern!r} matches no file{where}")
    stems: dict[str, Path] = {}
    for f in files:
        if f.stem in stems:
            raise UsageError(f"{option} {pattern!r}: two workloads named {f.stem!r}: {stems[f.stem]} and {f}")
        stems[f.stem] = f
    return files


def load_workloads(files: Sequence[Path]) -> None:
    """Load every workload before any job starts: one that does not load is a configuration error
    (ConfigError, every problem on one line), never a job failure."""
    from harness import spec

    for f in files:
        try:
            spec.load(f)
        except spec.SpecError as exc:
            raise ConfigError(
                f"workload {f} does not load: " + "; ".join(str(i) for i in exc.issues)
            ) from None


def build_variants(targets: Sequence[str], plant: int) -> None:
    """Build every variant once, up front: jobs running side by side must not run make on the same
    build directory at once."""
    output.progress("building the release library, the op driver and the fuzz variant")
    build.build("release")
    from harness.stress.binary import ensure_kpdrive

    ensure_kpdrive("release")
    if targets:
        build.build("fuzz", plant)
        from harness.fuzz import NATIVE

        if any(t in NATIVE for t in targets):
            build.build("coverage")  # for the coverage of the corpora, after the jobs


def _resume(args: argparse.Namespace, reports: Path) -> tuple[Campaign, Path]:
    name = args.resume
    if name != "latest" and (not name or "/" in name or name in (".", "..")):
        raise UsageError(f"--resume {name!r}: a run id is a folder name under {reports}, not a path")
    run_id = _latest(reports) if name == "latest" else name
    run_dir = reports / run_id
    c = Campaign.load(run_dir)
    output.progress(
        f"resuming campaign {run_id}: {sum(j.state in RERUN_STATES for j in c.jobs)} job(s) to run"
    )
    return c, run_dir


def main(argv: Sequence[str]) -> int:
    t0 = time.monotonic()
    args = parse_args(argv)
    reports = (args.reports or paths.reports()).absolute()
    if args.resume:
        c, run_dir = _resume(args, reports)
        budget = parse_budget(args.budget) if args.budget else c.budget_s
    else:
        budget = parse_budget(args.budget or DEFAULT_BUDGET)
        targets = _targets(args.targets)
        workloads = find_workloads(args.workloads)
        programs_glob = args.programs
        if programs_glob is None:
            programs_glob = DEFAULT_PROGRAMS if budget >= PROGRAMS_MIN_BUDGET_S else ""
        programs = [p for p in find_workloads(programs_glob, "--programs") if p not in workloads]
        load_workloads([*workloads, *programs])
        if not targets and not workloads and not programs:
            raise UsageError("--targets '' and --workloads '': nothing to run")
        run_id, run_dir = new_run_dir(reports)
        build_variants(targets, args.plant)
        left = budget - (time.monotonic() - t0)
        c = plan(run_id, run_dir, left, args.jobs, args.plant, targets, workloads, programs)
        c.budget_s = budget
        c.save(run_dir)
        output.progress(
            f"campaign {run_id}: {len(c.jobs)} jobs in {left:.0f}s of the {budget:.0f}s budget, "
            f"{args.jobs} at a time; reports in {run_dir}"
        )
    deadline = t0 + budget
    finished = run_jobs(c, run_dir, deadline)
    coverage_s = deadline + MARGIN_S - REPORT_S - time.monotonic()
    report = collect(c, run_dir, coverage=finished, coverage_s=coverage_s)
    write_run(report, reports)
    output.result(summary(report, run_dir, c, finished))
    if not finished:
        return 130
    return 0 if report.ok else 1
