"""Running a planned campaign through an executor (harness/jobs/), landing what cluster jobs send back in
the run's folder, and turning the run into the report: the jobs' results, the crashes (recorded here, in
the one crash database, by the coordinator alone), the coverage of the corpora, the summary lines."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

from harness import atomic, output, paths
from harness.campaign import corpus
from harness.campaign.budget import Campaign, fit
from harness.errors import KpoolError
from harness.jobs import identity
from harness.jobs.executor import Executor, Hooks
from harness.jobs.local import LocalExecutor
from harness.jobs.model import ENDED_STATES, Job, JobResult, JobSpec
from harness.report import ingest
from harness.report.model import CrashEntry, RunReport, environment, git_revision
from harness.triage import record


def _revision() -> str:
    """The checkout's git revision, or the installed version (a wheel has no history; a venv inside some
    other repository must not borrow its revision)."""
    tree = paths.checkout()
    return (git_revision(tree) if tree else "") or f"kpool {paths.version()}"


def spec_of(c: Campaign, j: Job, left_s: float | None, reports: Path) -> JobSpec:
    """What a cluster worker is sent for job j: no path of this machine's, the corpus as bytes."""
    spec = JobSpec(
        name=j.name,
        kind=j.kind,
        target=j.target,
        run_id=c.run_id,
        slot_s=j.slot_s,
        plant=c.plant,
        variant=j.variant,
        deadline=None if left_s is None else time.time() + left_s,
        identity=identity.identity(),
    )
    if j.kind == "fuzz":
        spec.seconds = int(j.argv[j.argv.index("--time") + 1])
        spec.corpus = corpus.entries(reports, j.target)
    else:
        w, shipped = Path(j.workload), paths.workloads().resolve()
        if w.resolve().is_relative_to(shipped):
            spec.workload_rel = str(w.resolve().relative_to(shipped))
        else:
            spec.workload_text = w.read_text()
        spec.peers = "--peers" in j.argv
    return spec


def land(c: Campaign, j: Job, result: JobResult, run_dir: Path) -> None:
    """Write what a cluster job sent back into the run's folder, as a local job would have left it: its
    files under the job's folder (paths in its JSON made this machine's), its log under logs/, and its new
    corpus entries merged into the working corpus."""
    folder = run_dir / j.folder
    build_root = str(paths.build_root())
    for rel, key in result.files.items():
        dest = folder / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        data = result.blobs[key]
        if dest.suffix in (".json", ".txt", ".prog", ".log") and result.root:
            text = data.decode(errors="surrogateescape").replace(result.root, str(folder))
            if result.build_root:
                text = text.replace(result.build_root, build_root)
            data = text.encode(errors="surrogateescape")
        atomic.write_bytes(dest, data)  # a crash input or a job's report: whole or not there
    log = run_dir / "logs" / (j.name.replace(":", "-") + ".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(log, result.log)
    j.log = str(log.relative_to(run_dir))
    j.state, j.returncode, j.seconds = result.state, result.returncode, result.seconds
    j.worker, j.error = result.worker, result.error
    if result.corpus:
        found = {name: result.blobs[key] for name, key in result.corpus.items()}
        try:
            corpus.merge(run_dir.parent, j.target, found, c.plant)
        except KpoolError as exc:
            output.warn(f"{j.name}: {exc} (the entries wait in the .incoming folder for the next merge)")


def run_jobs(
    c: Campaign,
    run_dir: Path,
    deadline: float | None = None,
    executor: Executor | None = None,
    skip: Collection[str] = (),
) -> bool:
    """Run the jobs not finished yet (local processes unless an executor is given) until `deadline`
    (time.monotonic()): a job is started only while there is time for it (else 'not-run'), and one
    still running at the deadline is stopped ('stopped'). False if interrupted (running jobs are stopped
    and left pending, so --resume runs them again). The jobs named in skip are left as they are (a
    resume's fuzz jobs on a machine without clang)."""
    own = executor is None
    ex: Executor = executor or LocalExecutor(run_dir, c.run_id, c.jobs_n)
    hooks = Hooks(
        fit=fit,
        changed=lambda: c.save(run_dir),
        landed=lambda j, result: land(c, j, result, run_dir),
        spec=lambda j, left: spec_of(c, j, left, run_dir.parent),
    )
    try:
        return ex.run([j for j in c.jobs if j.name not in skip], deadline, hooks)
    finally:
        if own:
            ex.close()


def collect(
    c: Campaign,
    run_dir: Path,
    coverage: bool = True,
    coverage_s: float | None = None,
    recover: bool = False,
    interrupted: list[str] | None = None,
) -> RunReport:
    """The report of the jobs that ended (done, failed, timeout). A job that did not run, or was stopped
    at the deadline, is no result: summary() names it. Its crashes are still triaged. With recover, so
    are the crash inputs killed runs left unrecorded under the reports folder (fuzz/orphans.py).

    Ctrl-C (or SIGTERM) during the sweep of what killed runs left, or during the coverage of the corpora,
    cuts that part short and the report is made of the rest; the parts cut short ("sweep", "coverage")
    are appended to `interrupted`, so that the caller ends as interrupted once the report is written."""
    cut = interrupted if interrupted is not None else []
    report = RunReport(
        run_id=c.run_id,
        started=c.started,
        variant="release+fuzz",
        revision=_revision(),
        environment=environment(),
    )
    for j in c.jobs:
        if j.state not in ENDED_STATES:
            continue
        results = ingest.job_results(j, run_dir)
        report.fuzz.extend(results.fuzz)
        report.workloads.extend(results.workloads)
        report.programs.extend(results.programs)
    report.jobs = [ingest.job_entry(j) for j in c.jobs]
    report.crashes = _triage(c, run_dir, recover, cut)
    # Not after an interrupt: Ctrl-C keeps what finished at once, without a build and a replay.
    report.fuzz_coverage = {}
    if coverage and not cut:
        try:
            report.fuzz_coverage = fuzz_coverage(c, run_dir, coverage_s)
        except KeyboardInterrupt:
            again = output.shell_join(
                ["kpool", "fuzz", "--coverage", "--reports", str(run_dir.absolute().parent)]
            )
            output.warn(
                "interrupted while measuring the coverage of the fuzz corpora: the report goes without it "
                f"({again} measures it)"
            )
            cut.append("coverage")
    report.finished = time.time()
    return report


def _triage(c: Campaign, run_dir: Path, recover: bool, cut: list[str]) -> list[CrashEntry]:
    """The jobs' crashes, and with recover what killed runs (`kpool fuzz`, campaigns) left under the
    reports folder unrecorded, recorded under this run (their folders locked meanwhile)."""
    if not recover:
        return ingest.triage(c.jobs, c.run_id, c.plant, run_dir)
    from harness.fuzz import orphans

    with contextlib.ExitStack() as held:
        try:
            left = held.enter_context(
                orphans.left(run_dir.parent, run_dir.parent / record.DB_NAME, skip=run_dir)
            )
        except KeyboardInterrupt:  # the sweep stops; this campaign's own crashes are still its report's
            output.warn(
                "interrupted while recovering the crash inputs killed runs left: those not recorded yet, the"
                f" next kpool fuzz or kpool campaign over {run_dir.parent} replays and records; this"
                " campaign's own crashes are triaged"
            )
            cut.append("sweep")
            left = []
        found = [
            (crash, rate)
            for one in left
            for r in one.results
            for crash, rate in zip(
                record.fuzz_crashes([r], c.run_id, one.plant), record.fuzz_replays([r]), strict=False
            )
        ]
        return ingest.triage(c.jobs, c.run_id, c.plant, run_dir, recovered=found)


def fuzz_coverage(c: Campaign, run_dir: Path, timeout_s: float | None = None) -> dict[str, Any]:
    """libkpool's edges the fuzz targets' corpora (under the reports folder, run_dir's parent) reach
    (kpool fuzz --coverage), {} when none ran. At most timeout_s.

    A failure is a warning: it must not cost the report of everything else.
    """
    from harness.fuzz import NATIVE

    native = [j.target for j in c.jobs if j.kind == "fuzz" and j.state == "done" and j.target in NATIVE]
    if not native:
        return {}
    if timeout_s is not None and timeout_s <= 0:
        output.warn("libkpool coverage of the fuzz corpora: no time left in the budget's margin")
        return {}
    from harness.fuzz import runner

    try:
        report = runner.coverage(native, run_dir.parent, write=False, timeout_s=timeout_s)
        atomic.write_text(run_dir / "coverage.json", json.dumps(report.to_json(), indent=2) + "\n")
    except Exception as exc:  # whatever went wrong, the rest of the report is written
        output.warn(f"libkpool coverage of the fuzz corpora: {exc}")
        return {}
    return report.to_json()


def resume_command(run_id: str, reports: Path) -> str:
    """The command that resumes run_id, for the shell: its reports folder named (run as printed from
    another folder, a bare --resume looked in ./reports), both quoted."""
    return output.shell_join(["kpool", "campaign", "--resume", run_id, "--reports", str(reports)])


def _headline(
    report: RunReport, c: Campaign, run_dir: Path, finished: bool, skipped: Collection[str] = ()
) -> str:
    resume = resume_command(c.run_id, run_dir.absolute().parent)
    verdict = "clean" if report.ok_so_far else "PROBLEMS"  # "so far" when interrupted (below)
    not_run = [
        j.name for j in c.jobs if j.state in ("pending", "running", "not-run") and j.name not in skipped
    ]
    left = [j.name for j in c.jobs if j.name in skipped and j.state in ("pending", "not-run")]
    stopped = [j.name for j in c.jobs if j.state == "stopped"]
    ended = sum(1 for j in c.jobs if j.state in ENDED_STATES)
    if not finished:
        line = (
            f"kpool campaign {c.run_id}: interrupted after {ended} of {len(c.jobs)} jobs ({verdict} so far)"
        )
        if not_run or stopped:
            line += f"; not run: {', '.join(stopped + not_run)} ({resume} runs them)"
        return line
    line = f"kpool campaign {c.run_id}: {verdict if ended else 'no job ran'}"
    if left:  # a resume's fuzz jobs on a machine without clang (command.py): not the budget's doing
        line += f"; left for a machine with clang: {', '.join(left)} (install clang, then {resume} runs them)"
    if stopped or not_run:
        line += f"; the budget ({c.budget_s:.0f}s) ran out"
        if stopped:
            line += f": stopped at the deadline: {', '.join(stopped)}"
        if not_run:
            line += f"{';' if stopped else ':'} not run: {', '.join(not_run)}"
        line += " (a longer --budget, or --resume, runs them)"
    return line


def summary(
    report: RunReport, run_dir: Path, c: Campaign, finished: bool = True, skipped: Collection[str] = ()
) -> str:
    """The one-screen summary; skipped: jobs this run left as they were (a resume's fuzz jobs without
    clang), named as such and not as the budget's."""
    lines = [_headline(report, c, run_dir, finished, skipped)]
    for w in report.workloads:
        p99 = ", ".join(f"{lat.op} p99 {lat.percentile(0.99)} ns" for lat in w.latency)
        why = f" | broken: {'; '.join(w.broken)}" if w.broken else ""
        why += f" | {w.rerun}" if w.rerun else ""
        lines.append(f"  workload {w.name:<24} {'ok  ' if w.ok else 'FAIL'} {p99}{why} {w.error}")
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
