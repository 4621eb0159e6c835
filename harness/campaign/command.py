"""`kpool campaign`: parse, check everything before anything runs (workloads load, targets exist, the
cluster's workers run this kpool), build, plan, run, report, and say in the exit code whether anything new
broke.

The budget is the jobs' time: it starts once the builds are done (a fresh clone's first builds take
minutes on a small machine, and would leave a short budget nothing). Jobs start while there is time for
them; at the end of the budget, jobs still running are stopped, and the campaign ends within MARGIN_S more.

Exit codes: 0 clean; 1 a new crash signature, a broken SLO, a failed job, or no job run at all; 2 bad
arguments, a workload that does not load, a cluster that does not answer or runs another kpool, or a
failed build; 130 interrupted (what finished is reported).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Sequence
from pathlib import Path

from harness import build, output, paths, runlock
from harness.campaign.budget import (
    FUZZ_TARGETS,
    Campaign,
    checks,
    new_run_dir,
    parse_budget,
    plan,
)
from harness.campaign.run import collect, resume_command, run_jobs, summary
from harness.errors import ConfigError, UsageError
from harness.jobs.executor import Executor
from harness.jobs.model import ENDED_STATES, RERUN_STATES, JobSpec
from harness.report.writers import UnreadableSummary, read_summary, write_run
from harness.spec import poolcheck
from harness.stress.runner import RUN_ID_RE

# The default budget gives a newcomer a full report within minutes on a fresh machine.
DEFAULT_BUDGET = "2m"
DEFAULT_WORKLOADS = "workloads/*.yaml"
# The real programs (program workloads) run, side by side with glibc and the peers, in a campaign of at
# least this budget unless --programs says otherwise: CPython's tests alone take about three minutes on
# five allocators, more than the short default budget has.
DEFAULT_PROGRAMS = "workloads/programs/*.yaml"
PROGRAMS_MIN_BUDGET_S = 15 * 60.0
# After the budget: stopping the jobs still running (task.STOP_WAIT_S, all at once), triage, counting
# the fuzz corpora's coverage (given what is left of this, skipped with a warning past it) and writing
# the report. A campaign ends within its budget plus this.
MARGIN_S = 15.0
# Of MARGIN_S, kept for triage and writing the report after the coverage count.
REPORT_S = 4.0


def cpus() -> int:
    """The CPUs this process may use (its affinity: a CI runner's cgroup or taskset, not the host's)."""
    return max(1, len(os.sched_getaffinity(0)))


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="kpool campaign",
        description="The nightly job: build the variants, split a time budget across fuzz targets and "
        "workloads, run them in parallel (here, or on a Dask cluster with --cluster), triage the crashes, "
        "write the report.",
        epilog=(
            f"The budget is the jobs' time: it starts once the builds are done (said, with how long "
            f"they took). Jobs start while there is time for them; at the end of the budget the jobs "
            f"still running are stopped, and the campaign ends within a margin of {MARGIN_S:g} s more "
            f"(stopping them, triage, the coverage of the fuzz corpora, the report). Exit 0 clean, "
            f"1 a new crash, a broken SLO, a failed job or no job run, 2 a usage or configuration "
            f"error, 130 interrupted."
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
        default=None,
        metavar="N",
        help="jobs at a time, at most the CPUs kpool may use (more run as that many, with a warning; "
        "default: the CPUs; with --cluster, the workers' threads)",
    )
    p.add_argument(
        "--cluster",
        default=None,
        metavar="ADDRESS",
        help="run the jobs on a Dask cluster: a scheduler's address (tcp://host:8786, tls://...) or "
        "local:N (N worker processes here, started and stopped by kpool); default: none, child processes "
        "of this machine. Every worker must run this same kpool (checked before any job)",
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
        type=paths.given,
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
    if args.resume is not None:  # a resumed campaign runs what it planned: these were ignored in silence
        given = [o for o in ("--targets", "--workloads", "--programs", "--plant") if _given(argv, o)]
        if given:
            raise UsageError(
                f"--resume continues a campaign as it was planned: {', '.join(given)} belong(s) to a new"
                " campaign (--budget and --jobs apply to a resume)"
            )
    if args.jobs is not None and args.jobs < 1:
        p.error(f"--jobs {args.jobs}: must be at least 1")
    if args.jobs is not None and args.cluster is None and args.jobs > cpus():
        output.warn(
            f"--jobs {args.jobs}: more than the {cpus()} CPUs kpool may use here; running {cpus()} job(s) "
            "at a time (a job is a busy process: more only take turns on the same CPUs, and the "
            "workloads' latencies would measure that)"
        )
        args.jobs = cpus()
    build.check_plant(args.plant)  # before any job: a bad one failed every fuzz job of the budget
    if args.cluster is not None:
        from harness.jobs.dask import parse_address

        args.cluster = parse_address(args.cluster)
    return args


def _given(argv: Sequence[str], option: str) -> bool:
    return any(a == option or a.startswith(option + "=") for a in argv)


def _latest(reports: Path) -> str:
    runs = sorted((p.parent for p in reports.glob("*/campaign.json")), key=lambda d: d.stat().st_mtime)
    if not runs:
        raise UsageError(f"--resume: no campaign under {reports} (no */campaign.json)")
    return runs[-1].name


def _targets(text: str) -> list[str]:
    # a target named twice is one job: two would share its folder, the second refused as still held
    targets = list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
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
    # one file the glob matches twice (a symlink to it beside it) is one job, under the file's own name
    same: dict[Path, list[Path]] = {}
    for p in found:
        if p.is_file():
            same.setdefault(p.resolve(), []).append(p.absolute())
    files = [next((p for p in group if not p.is_symlink()), group[0]) for group in same.values()]
    if not files:
        where = "" if Path(pattern).is_absolute() else f" (looked in {Path.cwd()} and {shipped})"
        raise UsageError(f"{option} {pattern!r} matches no file{where}")
    stems: dict[str, Path] = {}
    for f in files:
        # the job's run folder, stress-<stem> (jobs/task.py): a stem kpool stress --run-id refuses made
        # the job fail "no result (exit 2)" after the builds, its slot of the budget spent on nothing
        if not RUN_ID_RE.match(f"stress-{f.stem}"):
            raise UsageError(
                f"{option} {pattern!r}: {f}: a campaign names the workload's job and folder after its file,"
                " which takes letters, digits, '-', '_' and '.' only: rename it"
            )
        if f.stem in stems:
            raise UsageError(f"{option} {pattern!r}: two workloads named {f.stem!r}: {stems[f.stem]} and {f}")
        stems[f.stem] = f
    return files


def load_workloads(files: Sequence[Path]) -> None:
    """Load every workload before any job starts: one that does not load is a configuration error
    (ConfigError, every problem on one line), never a job failure."""
    from harness import spec

    if files:  # the workloads' pools open it: a bad one failed every stress job
        poolcheck.check_log()
    loaded = []
    for f in files:
        try:
            loaded.append(spec.load(f))
        except spec.SpecError as exc:
            raise ConfigError(
                f"workload {f} does not load: " + "; ".join(str(i) for i in exc.issues)
            ) from None
    # as `kpool stress` (its report and the index's trends know a workload by its name): two files of one
    # name were two rows alike in the summary, and one p99 of the two in the trends
    from harness.stress.runner import check_distinct_names

    check_distinct_names(loaded)


def build_variants(targets: Sequence[str], plant: int, variants: Sequence[str] = ()) -> None:
    """Build every variant once, up front: jobs running side by side must not run make on the same
    build directory at once. (A cluster's workers build what their jobs need themselves, one job at a
    time per machine; this machine still needs the fuzz build for triage and merging corpora.)"""
    output.progress(
        "building the release library, the op driver" + (" and the fuzz variant" if targets else "")
    )
    build.build("release")
    from harness.stress.binary import ensure_kpdrive

    ensure_kpdrive("release")
    for v in variants:
        build.build(v)
        ensure_kpdrive(v)
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
    _relocate(c, run_dir)
    return c, run_dir


def _finished(c: Campaign, run_dir: Path) -> int | None:
    """A campaign with no job left to run and its report written: said, its report left as it is (a new
    one would count the coverage of the corpora as they are today, not as the campaign left them), and
    the exit code it ended with. None when there is something to resume, or its report is to be made."""
    if not c.reported or any(j.state in RERUN_STATES for j in c.jobs):
        return None
    try:
        report = read_summary(run_dir / "summary.json")
    except (OSError, UnreadableSummary) as exc:
        why = "missing" if isinstance(exc, FileNotFoundError) else f"unreadable: {exc}"
        output.warn(f"campaign {c.run_id} is finished, but its report is {why}: writing it again")
        return None
    ended = sum(j.state in ENDED_STATES for j in c.jobs)
    output.progress(
        f"campaign {c.run_id} is finished ({ended} of {len(c.jobs)} jobs ended, none left to run):"
        " nothing to resume; its report is left as it was"
    )
    output.result(summary(report, run_dir, c))
    return 0 if report.ok and ended else 1


def _no_clang(targets: Sequence[str], resume: str = "", reports: Path | None = None) -> str:
    again = resume_command(resume, reports) if resume and reports else "a campaign"
    return (
        f"clang not found (PATH): the fuzz jobs ({', '.join(targets)}) are skipped, the rest runs; the fuzz"
        f" targets are built with clang (libFuzzer); {build.CLANG_HINT}, then {again} fuzzes them"
    )


def _check_rerun(c: Campaign, reports: Path, skipped: set[str]) -> None:
    """What a new campaign checks before its jobs, for the jobs --resume runs again (not those skipped):
    the fuzz jobs' working corpora writable, KPOOL_LOG one the stress jobs' pools can open (usage errors,
    exit 2)."""
    rerun = [j for j in c.jobs if j.state in RERUN_STATES and j.name not in skipped]
    if any(j.kind != "fuzz" for j in rerun):
        poolcheck.check_log()
    targets = sorted({j.target for j in rerun if j.kind == "fuzz"})
    if targets:
        from harness.fuzz.runner import check_corpora_writable, check_utf8_path

        check_utf8_path(reports, "--reports")
        check_corpora_writable(targets, reports)


def _planned_run_dir(c: Campaign) -> Path | None:
    """The run folder the campaign's job commands name (task.command): a stress job's --reports, a fuzz
    job's --run-dir's parent."""
    for j in c.jobs:
        if j.kind == "fuzz" and "--run-dir" in j.argv[:-1]:
            return Path(j.argv[j.argv.index("--run-dir") + 1]).parent
        if j.kind == "stress" and "--reports" in j.argv[:-1]:
            return Path(j.argv[j.argv.index("--reports") + 1])
    return None


def _relocate(c: Campaign, run_dir: Path) -> None:
    """The jobs' commands name the campaign's folders by absolute path: a reports folder moved since it was
    planned (renamed, restored from a CI cache into another workspace) is where they run now. Else they
    ran in the old place, making it again, and the campaign found no result in its own folder."""
    planned = _planned_run_dir(c)
    if planned is None or planned == run_dir:
        return
    moves = ((str(planned), str(run_dir)), (str(planned.parent), str(run_dir.parent)))

    def moved(arg: str) -> str:
        for old, new in moves:
            if arg == old or arg.startswith(old + "/"):
                return new + arg[len(old) :]
        return arg

    for j in c.jobs:
        j.argv = [moved(a) for a in j.argv]
    output.progress(f"campaign {c.run_id} was planned in {planned}: its jobs run in {run_dir}")


def build_needs(c: Campaign) -> list[JobSpec]:
    """One spec per distinct build the jobs need (task.prepare builds from a spec): a cluster's workers
    build them before the budget starts."""
    needs: dict[tuple[str, str, str], JobSpec] = {}
    for j in c.jobs:
        if j.state in RERUN_STATES:
            key = (j.kind, j.target if j.kind == "fuzz" else "", j.variant)
            needs.setdefault(key, JobSpec(name=j.name, kind=j.kind, target=j.target, run_id=c.run_id,
                                          slot_s=0.0, plant=c.plant, variant=j.variant))  # fmt: skip
    return list(needs.values())


def _executor(args: argparse.Namespace, run_id: str) -> Executor | None:
    """The cluster's executor, its workers checked (None without --cluster)."""
    if args.cluster is None:
        return None
    from harness.jobs.dask import DaskExecutor

    output.progress(f"connecting to the cluster {args.cluster}")
    ex = DaskExecutor(args.cluster, run_id)
    try:
        ex.check()
    except BaseException:
        ex.close()
        raise
    output.progress(
        f"cluster {args.cluster}: {len(ex.workers)} worker(s), {ex.slots} slot(s), all run this kpool"
    )
    return ex


def main(argv: Sequence[str]) -> int:
    # the run's folder is held to the end (harness/runlock.py), by kill -9 too: the crash inputs its jobs
    # leave are its own to record until then, and a second --resume of it while it runs is refused
    with contextlib.ExitStack() as held:
        return _main(argv, held)


def _main(argv: Sequence[str], held: contextlib.ExitStack) -> int:
    t0 = time.monotonic()
    args = parse_args(argv)
    reports = (args.reports or paths.reports()).absolute()
    no_clang = ""  # the warning when the fuzz jobs are left out for want of clang
    skipped: set[str] = set()  # the names of those jobs (--resume)
    if args.resume:
        c, run_dir = _resume(args, reports)
        held.enter_context(runlock.hold(run_dir, kind="campaign"))
        done = _finished(c, run_dir)
        if done is not None:
            return done
        fuzz = [j for j in c.jobs if j.kind == "fuzz" and j.state in RERUN_STATES]
        if fuzz and build.clang_missing():
            no_clang = _no_clang([j.target for j in fuzz], resume=c.run_id, reports=reports)
            output.warn(no_clang)
            skipped = {j.name for j in fuzz}
        _check_rerun(c, reports, skipped)
        output.progress(
            f"resuming campaign {c.run_id}: {sum(j.state in RERUN_STATES for j in c.jobs)} job(s) to run"
        )
        budget = parse_budget(args.budget) if args.budget is not None else c.budget_s
        c.budget_s = (
            budget  # the budget this resume runs with: its summary names it, the next resume's default
        )
        executor = _executor(args, c.run_id)
        if executor is None and c.cluster:  # its jobs_n is the cluster's slots, not this machine's
            c.jobs_n = args.jobs or cpus()
            output.progress(
                f"campaign {c.run_id} ran on the cluster {c.cluster}: resuming here, {c.jobs_n} job(s) "
                f"at a time (--cluster {c.cluster} resumes it there)"
            )
        elif executor is not None:
            c.jobs_n = executor.slots
        c.cluster = args.cluster or ""
    else:
        budget = parse_budget(DEFAULT_BUDGET if args.budget is None else args.budget)
        targets = _targets(args.targets)
        if targets and build.clang_missing():
            no_clang = _no_clang(targets)
            output.warn(no_clang)
            targets = []
        workloads = find_workloads(args.workloads)
        programs_glob = args.programs
        if programs_glob is None:
            programs_glob = DEFAULT_PROGRAMS if budget >= PROGRAMS_MIN_BUDGET_S else ""
        programs = [p for p in find_workloads(programs_glob, "--programs") if p not in workloads]
        load_workloads([*workloads, *programs])
        if not targets and not workloads and not programs:
            if no_clang:
                raise UsageError(f"nothing to run: {no_clang}, and --workloads {args.workloads!r} gives none")
            raise UsageError("--targets '' and --workloads '': nothing to run")
        paths.check_reports(reports, args.reports is not None)
        if targets:  # the fuzz corpora and crash inputs live under it
            from harness.fuzz.runner import check_corpora_writable, check_utf8_path

            check_utf8_path(reports, "--reports")
            check_corpora_writable(targets, reports)
        run_id, run_dir = new_run_dir(reports)
        try:
            executor = _executor(args, run_id)
        except BaseException:
            run_dir.rmdir()
            raise
        try:  # a failed or interrupted build stops a LocalCluster kpool started
            held.enter_context(runlock.hold(run_dir, kind="campaign", plant=args.plant))
            slots = args.jobs or (executor.slots if executor else cpus())
            sanitizer = checks(budget, slots, workloads)
            build_variants(targets, args.plant, sorted({v for _, v in sanitizer}) if executor is None else ())
            c = plan(run_id, run_dir, budget, slots, args.plant, targets, workloads, programs, sanitizer)
            c.budget_s, c.cluster = budget, args.cluster or ""
            c.save(run_dir)
            where = f"on {args.cluster}" if executor else "here"
            output.progress(
                f"campaign {run_id}: {len(c.jobs)} jobs in the {budget:.0f}s budget (the builds took "
                f"{time.monotonic() - t0:.0f}s, before it), {slots} at a time {where}; reports in {run_dir}"
            )
        except BaseException:
            if executor is not None:
                executor.close()
            raise
    if args.jobs and executor is None:
        c.jobs_n = args.jobs
    prepare = getattr(executor, "prepare", None)  # a cluster's: its workers build before the budget too
    if executor is not None and callable(prepare):
        output.progress("building what the jobs need on the cluster's workers")
        try:
            prepare(build_needs(c))
        except BaseException:
            executor.close()
            raise
    deadline = time.monotonic() + budget  # the budget is the jobs' time: it starts now
    try:
        # skip only when there is any: the tests' stand-ins for run_jobs take the four arguments
        finished = run_jobs(c, run_dir, deadline, executor, **({"skip": skipped} if skipped else {}))
    finally:
        if executor is not None:
            executor.close()
    coverage_s = deadline + MARGIN_S - REPORT_S - time.monotonic()
    cut: list[str] = []  # what Ctrl-C cut short after the jobs: the report is written all the same
    report = collect(c, run_dir, coverage=finished, coverage_s=coverage_s, recover=finished, interrupted=cut)
    report.interrupted = not finished or bool(cut)
    write_run(report, reports)
    if finished and not cut:
        c.reported = True
        c.save(run_dir)
    output.result(summary(report, run_dir, c, finished and not cut, skipped))
    if no_clang:  # said again after the summary, where a CI log is read
        output.warn(no_clang)
    if not finished or cut:
        return 130
    return 0 if report.ok and any(j.state in ENDED_STATES for j in c.jobs) else 1
