"""The nightly job: build the variants, split a time budget across fuzz targets and workloads, run them
in parallel up to the core count, triage the crashes, write the report, and say in the exit code
whether anything new broke.

Each piece of work is a job: one `kpool fuzz TARGET` or one `kpool stress WORKLOAD` child process
writing JSON into the run's directory. The plan and every job's state live in
reports/<run-id>/campaign.json, rewritten after each change, so an interrupted campaign (Ctrl-C, kill)
keeps what finished and `--resume` runs only what did not.

Exit codes: 0 clean; 1 a new crash signature or a broken SLO; 2 bad arguments or a failed build;
130 interrupted (what finished is reported).
"""

from __future__ import annotations

import argparse
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

from harness import build, output
from harness.errors import KpoolError
from harness.report import ingest
from harness.report.model import RunReport, environment, git_revision
from harness.report.writers import write_run

ROOT = Path(__file__).resolve().parents[1]
FUZZ_TARGETS = ("api_sequence", "conf", "faults", "workload_yaml", "concurrent")
# The default budget gives a newcomer a full report within minutes on a fresh machine.
DEFAULT_BUDGET = "2m"
# Progress: a line whenever a job starts or ends, else one this often (a night is 8 hours).
PROGRESS_EVERY_S = 30.0
# Share of the budget for fuzzing; the workloads take the rest (they are bounded by their own size).
FUZZ_SHARE = 0.6
# A job may overrun its slot by this much (start-up, builds, a last report) before it is killed.
GRACE_S = 60


def parse_budget(text: str) -> float:
    """'90s', '2m', '1h30m', '8h' -> seconds."""
    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?", text.strip())
    if not text.strip() or not m or not any(m.groups()):
        raise KpoolError(f"--budget {text!r}: expected e.g. 90s, 2m, 1h30m or 8h")
    h, mi, s = (int(g or 0) for g in m.groups())
    seconds = h * 3600 + mi * 60 + s
    if seconds < 20:
        raise KpoolError(f"--budget {text!r}: at least 20s (builds and start-up need some)")
    return float(seconds)


@dataclass
class Job:
    name: str
    kind: str  # "fuzz" or "stress"
    argv: list[str]
    slot_s: float
    out: str  # the JSON the job writes, relative to the run directory
    state: str = "pending"  # pending, running, done, failed
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
        d = json.loads((run_dir / "campaign.json").read_text())
        jobs = [Job(**j) for j in d.pop("jobs")]
        c = cls(**d)
        c.jobs = jobs
        return c


def _kpool(*args: str) -> list[str]:
    return [sys.executable, "-m", "harness.cli", "-q", *args]


def plan(
    run_id: str,
    run_dir: Path,
    budget_s: float,
    jobs_n: int,
    plant: int,
    targets: Sequence[str],
    workloads: Sequence[Path],
) -> Campaign:
    """Split the budget: the fuzz share across targets run `jobs_n` at a time, the rest across the
    workloads, each workload bounded by a time limit of its slot."""
    c = Campaign(run_id=run_id, budget_s=budget_s, jobs_n=jobs_n, plant=plant)
    lanes = max(jobs_n, 1)
    fuzz_waves = max(1, -(-len(targets) // lanes))
    fuzz_s = max(10, int(budget_s * FUZZ_SHARE / fuzz_waves))
    for t in targets:
        argv = _kpool("fuzz", t, "--time", str(fuzz_s), "--run-dir", str(run_dir / f"fuzz-{t}"))
        if plant:
            argv += ["--plant", str(plant)]
        c.jobs.append(Job(f"fuzz:{t}", "fuzz", argv, fuzz_s, f"fuzz-{t}/fuzz.json"))
    stress_waves = max(1, -(-len(workloads) // lanes))
    stress_s = max(15.0, budget_s * (1 - FUZZ_SHARE) / stress_waves)
    for w in workloads:
        name = w.stem
        argv = _kpool(
            "stress",
            str(w),
            "--reports",
            str(run_dir),
            "--run-id",
            f"stress-{name}",
            "--jobs",
            "1",
            "--time-limit",
            f"{stress_s:.0f}",
        )
        c.jobs.append(Job(f"stress:{name}", "stress", argv, stress_s, f"stress-{name}/stress.json"))
    return c


class Interrupted(Exception):
    pass


def _on_signal(signum: int, frame: object) -> None:
    raise Interrupted(signal.Signals(signum).name)


def run_jobs(c: Campaign, run_dir: Path) -> bool:
    """Run the pending jobs, jobs_n at a time. False if interrupted (running jobs are stopped and
    left pending, so --resume runs them again)."""
    pending = [j for j in c.jobs if j.state in ("pending", "running")]
    for j in pending:
        j.state = "pending"
    running: dict[str, tuple[Job, subprocess.Popen[bytes], float]] = {}
    t0 = time.monotonic()
    last_state, last_shown = (-1, -1), t0
    old = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while pending or running:
            while pending and len(running) < c.jobs_n:
                j = pending.pop(0)
                log = run_dir / "logs" / (j.name.replace(":", "-") + ".log")
                log.parent.mkdir(parents=True, exist_ok=True)
                j.log = str(log.relative_to(run_dir))
                f = log.open("wb")
                proc = subprocess.Popen(
                    j.argv, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
                )
                f.close()
                j.state = "running"
                running[j.name] = (j, proc, time.monotonic())
                c.save(run_dir)
            time.sleep(0.5)
            for name, (j, proc, started) in list(running.items()):
                rc = proc.poll()
                elapsed = time.monotonic() - started
                if rc is None and elapsed > j.slot_s + GRACE_S:
                    os.killpg(proc.pid, signal.SIGKILL)
                    rc = proc.wait()
                if rc is None:
                    continue
                j.returncode, j.seconds = rc, round(elapsed, 1)
                j.state = "done" if (run_dir / j.out).exists() else "failed"
                del running[name]
                c.save(run_dir)
            done = sum(1 for j in c.jobs if j.state in ("done", "failed"))
            now = time.monotonic()
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
        for j, proc, _ in running.values():
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(proc.pid, signal.SIGKILL)
            j.state = "pending"
        c.save(run_dir)
        return False
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return True


def collect(c: Campaign, run_dir: Path, coverage: bool = True) -> RunReport:
    report = RunReport(
        run_id=c.run_id,
        started=c.started,
        variant="release+fuzz",
        revision=git_revision(ROOT),
        environment=environment(),
    )
    for j in c.jobs:
        path = run_dir / j.out
        doc = json.loads(path.read_text()) if path.exists() else None
        if j.kind == "fuzz":
            report.fuzz.extend(ingest.fuzz_results(doc, j, run_dir))
        else:
            report.workloads.extend(ingest.workload_results(doc, j, run_dir))
    report.crashes = ingest.triage(c, run_dir)
    # Not after an interrupt: Ctrl-C keeps what finished at once, without a build and a replay.
    report.fuzz_coverage = fuzz_coverage(c, run_dir) if coverage else {}
    report.finished = time.time()
    return report


def fuzz_coverage(c: Campaign, run_dir: Path) -> dict[str, Any]:
    """libkpool's edges the fuzz targets' corpora reach (kpool fuzz --coverage), {} when none ran.

    A failure is a warning: it must not cost the report of everything else.
    """
    from harness.fuzz import NATIVE

    targets = [j.name.split(":", 1)[1] for j in c.jobs if j.kind == "fuzz" and j.state == "done"]
    native = [t for t in targets if t in NATIVE]
    if not native:
        return {}
    from harness.fuzz import runner

    try:
        report = runner.coverage(native, runner.REPORTS, write=False)
        (run_dir / "coverage.json").write_text(json.dumps(report.to_json(), indent=2) + "\n")
    except Exception as exc:  # whatever went wrong, the rest of the report is written
        output.warn(f"libkpool coverage of the fuzz corpora: {exc}")
        return {}
    return report.to_json()


def summary(report: RunReport, run_dir: Path) -> str:
    lines = [f"kpool campaign {report.run_id}: {'clean' if report.ok else 'PROBLEMS'}"]
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
        prog="kpool campaign", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    p.add_argument(
        "--budget", default=DEFAULT_BUDGET, help=f"total time, e.g. 90s, 30m, 8h (default {DEFAULT_BUDGET})"
    )
    p.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="jobs at a time (default: the core count)"
    )
    p.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        default=None,
        metavar="RUN_ID",
        help="continue an interrupted campaign (default: the latest)",
    )
    p.add_argument("--reports", type=Path, default=ROOT / "reports", help="reports directory")
    p.add_argument(
        "--targets", default=",".join(FUZZ_TARGETS), help="fuzz targets, comma-separated ('' for none)"
    )
    p.add_argument(
        "--workloads", default="workloads/*.yaml", help="workload files (a glob, relative to the repository)"
    )
    p.add_argument(
        "--plant", type=int, default=0, help="fuzz a build with planted bug N (tests of the campaign)"
    )
    args = p.parse_args(list(argv))
    if args.jobs < 1:
        p.error(f"--jobs {args.jobs}: must be at least 1")
    return args


def _latest(reports: Path) -> str:
    runs = sorted((p.parent for p in reports.glob("*/campaign.json")), key=lambda d: d.stat().st_mtime)
    if not runs:
        raise KpoolError(f"--resume: no campaign under {reports}")
    return runs[-1].name


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    budget = parse_budget(args.budget)
    if args.resume:
        run_id = _latest(args.reports) if args.resume == "latest" else args.resume
        run_dir = args.reports / run_id
        c = Campaign.load(run_dir)
        output.progress(f"resuming campaign {run_id}: {sum(j.state != 'done' for j in c.jobs)} job(s) to run")
    else:
        run_id = "campaign-" + time.strftime("%Y%m%d-%H%M%S")
        run_dir = args.reports / run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        targets = [t for t in args.targets.split(",") if t]
        for t in targets:
            if t not in FUZZ_TARGETS:
                raise KpoolError(f"--targets: unknown target {t!r} (known: {', '.join(FUZZ_TARGETS)})")
        # Build every variant once, up front: jobs running side by side must not run make on the
        # same build directory at once.
        output.progress("building the release library, the op driver and the fuzz variant")
        build.build("release")
        from harness.stress.binary import ensure_kpdrive

        ensure_kpdrive("release")
        if targets:
            build.build("fuzz", args.plant)
        workloads = (
            sorted(ROOT.glob(args.workloads))
            if not Path(args.workloads).is_absolute()
            else sorted(Path("/").glob(args.workloads.lstrip("/")))
        )
        c = plan(run_id, run_dir, budget, args.jobs, args.plant, targets, workloads)
        c.save(run_dir)
        output.progress(
            f"campaign {run_id}: {len(c.jobs)} jobs over {budget:.0f}s, {args.jobs} at a time; "
            f"reports in {run_dir}"
        )
    finished = run_jobs(c, run_dir)
    report = collect(c, run_dir, coverage=finished)
    write_run(report, args.reports)
    output.result(summary(report, run_dir))
    if not finished:
        return 130
    return 0 if report.ok else 1
