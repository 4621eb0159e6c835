"""`kpool bench --programs [GLOB]`: every real program (the program workloads, workloads/programs/*.yaml)
on kpool's preload, glibc, jemalloc, mimalloc, tcmalloc and Scudo (the hardened peer, with its defaults: a
program it aborts is a "failed: signal 6 (SIGABRT): ..." cell), measured side by side in one run: `--runs`
rounds (3 by default), each allocator once per round, the order turning from round to round; the table
gives kpool's median wall time and peak RSS as ratios to each other allocator's medians (below 1: kpool
is faster or smaller).

The runs are the program launcher's (harness/stress/program.py, as `kpool stress --peers all --repeat N`):
the same setup, checks and SLO verdicts, so a program that fails under kpool shows FAIL beside its
figures. Results: REPORTS/<run-id>-programs/bench-programs.json and table.md (the README's table).
"""

from __future__ import annotations

import argparse
import json
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import atomic, output, paths, run, spec
from harness.errors import KpoolError, UsageError
from harness.stress import program, runner
from harness.stress.command import workload_paths

ALLOCATORS = ("kpool", *program.TABLE_PEERS, "scudo")
RUNS = 3  # medians of three: one slow minute of a shared machine moves no figure


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="kpool bench --programs",
        description="Run every real program (program workloads) on kpool and its peers side by side and "
        "print kpool's time and peak RSS as ratios to each (medians).",
    )
    p.add_argument(
        "--programs",
        nargs="?",
        const="",
        default="",
        metavar="GLOB",
        help="program workload files or a quoted glob (default: the shipped workloads/programs/*.yaml)",
    )
    p.add_argument(
        "--runs", type=int, default=RUNS, help=f"rounds, each allocator once a round (default {RUNS})"
    )
    p.add_argument(
        "--allocators",
        default=",".join(ALLOCATORS),
        help=f"comma-separated, kpool first (default {','.join(ALLOCATORS)}); a missing peer is skipped",
    )
    p.add_argument(
        "--reports",
        type=paths.given,
        default=None,
        metavar="DIR",
        help="reports folder (default: $KPOOL_REPORTS, else reports/ in the current directory)",
    )
    p.add_argument(
        "--time-limit", type=float, default=None, metavar="S", help="per run (default: each workload's)"
    )
    args = p.parse_args(list(argv))
    args.reports = args.reports or paths.reports()
    names = [a.strip() for a in args.allocators.split(",") if a.strip()]
    bad = [n for n in names if n not in ALLOCATORS]
    if bad or not names or names[0] != "kpool":
        p.error(f"--allocators {args.allocators!r}: kpool first, then any of {', '.join(ALLOCATORS[1:])}")
    if args.runs < 1:
        p.error(f"--runs {args.runs}: must be at least 1")
    if args.time_limit is not None and not 0 < args.time_limit < float("inf"):  # nan, 0, inf: no limit
        p.error(f"--time-limit {args.time_limit}: must be a positive number of seconds")
    args.allocators = names
    return args


def _available(names: Sequence[str]) -> list[str]:
    out = []
    for name in names:
        try:
            run.library(name)
        except KpoolError as exc:
            output.warn(f"{name} skipped: {exc}")
            continue
        out.append(name)
    return out


def load(pattern: str) -> list[spec.ProgramWorkload]:
    files = workload_paths([pattern]) if pattern else sorted((paths.workloads() / "programs").glob("*.yaml"))
    out = []
    for f in files:
        wl = spec.load(f)
        if not isinstance(wl, spec.ProgramWorkload):
            raise UsageError(f"{f}: an op-stream workload; --programs takes program workloads")
        out.append(wl)
    if not out:
        raise UsageError(f"--programs {pattern!r}: no program workload")
    return out


def measure(
    workloads: Sequence[spec.ProgramWorkload], allocators: Sequence[str], opts: runner.Options
) -> tuple[Path, list[dict[str, Any]]]:
    """Each workload on every allocator, `opts.repeat` rounds: the run's folder and the program launcher's
    results (also written to the folder's bench-programs.json)."""
    opts.peers = tuple(a for a in allocators if a not in ("kpool", program.REFERENCE))
    run_id, run_dir = runner.new_run_dir(opts.reports_dir)
    results = []
    for wl in workloads:
        launch = program.ProgramLaunch(wl)
        launch.preflight(opts)
        results.append(launch.run(opts, run_dir))
        if results[-1]["interrupted"]:  # ^C or SIGTERM: what finished is kept, nothing more is started
            break
    atomic.write_text(
        run_dir / "bench-programs.json", json.dumps({"run_id": run_id, "programs": results}, indent=1)
    )
    return run_dir, results


def render(results: Sequence[dict[str, Any]], peers: Sequence[str], command: str, runs: int) -> str:
    headers, rows = program.table(results, peers)
    note = (
        f"kpool's wall time and peak RSS over each allocator's, medians of {runs} (below 1: kpool faster or "
        f"smaller); made by `{command}`"
    )
    return note + "\n\n" + output.markdown_table(headers, rows)


def main(argv: Sequence[str]) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    workloads = load(args.programs)
    allocators = _available(args.allocators)
    opts = runner.Options(
        allocator="kpool",
        reports_dir=args.reports,
        repeat=args.runs,
        time_limit_s=args.time_limit,
        progress_s=3600.0,
    )
    run_dir, results = measure(workloads, allocators, opts)
    peers = [a for a in ALLOCATORS[1:] if a in allocators]
    text = render(results, peers, "kpool bench " + shlex.join(list(argv)), args.runs)
    atomic.write_text(run_dir / "table.md", text + "\n")
    output.result(text)
    output.progress(f"results: {run_dir / 'bench-programs.json'}")
    if any(r["interrupted"] for r in results):
        output.error("interrupted; the tables hold the runs that finished")
        return 130
    return 0 if all(r["passed"] for r in results) else 1
