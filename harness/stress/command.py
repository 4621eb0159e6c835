"""`kpool stress workloads/x.yaml [...]`: parse, run, print a summary table, exit 1 on a crash or a
broken SLO."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import output, paths, peers, spec
from harness.build import VARIANTS
from harness.errors import UsageError
from harness.spec import poolcheck
from harness.spec.validate import DEFAULT_TIME_LIMIT_S
from harness.stress.runner import Options, check_run_id, run

# What each variant is, as `kpool stress` says it before a run.
VARIANT_MEANS = {
    "release": "-O2, without sanitizers (latency)",
    "debug": "-O0 with assertions",
    "asan": "with ASan+UBSan (memory errors, undefined behaviour)",
    "tsan": "with TSan (data races)",
}
GLOB_CHARS = "*?["  # an argument with one of these is a pattern (glob syntax), not a file name


def _run_id(text: str) -> str:
    try:
        return check_run_id(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--run-id ")) from exc


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    cpus = os.cpu_count() or 1
    p = argparse.ArgumentParser(
        prog="kpool stress",
        description="Run YAML workloads with worker processes of the C op driver (kpdrive) and report "
        "latency, crashes, outliers and SLO verdicts under REPORTS/<run-id>/stress.json; a program "
        "workload (`program:`, workloads/programs/) runs a real program on kpool's preload and on glibc "
        "side by side (and on --peers), judged by its exit status, output, integrity events and time and "
        "RSS ratios. Exit status: 0 "
        "every workload passed, 1 a crash or a broken SLO, 2 a usage or configuration error (nothing "
        "ran), 130 interrupted.",
    )
    p.add_argument(
        "workloads",
        nargs="+",
        help="workload files, folders (their *.yaml) or quoted glob patterns, e.g. 'workloads/*.yaml'; "
        "each must match at least one file",
    )
    p.add_argument(
        "--allocator",
        choices=peers.NAMES,
        default=None,
        help="run every workload on this allocator (default: each workload's own, kpool unless it says)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=cpus,
        metavar="N",
        help=f"worker processes at a time (default: the number of CPUs, {cpus} here)",
    )
    p.add_argument(
        "--time-limit",
        type=float,
        default=None,
        metavar="S",
        help="kill a worker after S seconds (default: each workload's time_limit_s, "
        f"{DEFAULT_TIME_LIMIT_S:g} unless it says)",
    )
    p.add_argument(
        "--reports",
        type=paths.given,
        default=paths.reports(),
        metavar="DIR",
        help="reports folder; the run writes DIR/<run-id>/ (default: $KPOOL_REPORTS, else reports/ in the "
        "current directory)",
    )
    p.add_argument(
        "--run-id",
        type=_run_id,
        default=None,
        help="the run's folder name under --reports: letters, digits, '-', '_', '.', not starting with '.'"
        "; a folder that holds an earlier run's report, or a run still going, is refused "
        "(default: the date and time and 4 random hex digits)",
    )
    p.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the second run without interference (default: workloads with interference run twice, "
        "for the interference ratio)",
    )
    p.add_argument(
        "--variant",
        choices=VARIANTS,
        default="release",
        help="build variant of kpdrive and libkpool (default: release)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a key of the driver program in every worker, e.g. count=1000; repeatable; checked "
        "before any worker starts (default: none)",
    )
    p.add_argument(
        "--peers",
        default="",
        metavar="NAMES",
        help="program workloads: also run on these peers, comma-separated (jemalloc,mimalloc,tcmalloc or "
        "'all'), beside kpool and glibc, for their time and peak-RSS ratios (default: none)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="program workloads: runs per allocator, the ratios from their medians (default: 1)",
    )
    args = p.parse_args(list(argv))
    args.peers = _peers(p, args.peers)
    if args.repeat < 1:
        p.error(f"--repeat {args.repeat}: must be at least 1")
    if args.jobs < 1:
        p.error(f"--jobs {args.jobs}: must be at least 1")
    if args.time_limit is not None and not 0 < args.time_limit < float("inf"):
        p.error(f"--time-limit {args.time_limit}: must be a positive number of seconds")
    bad = [s for s in args.set if "=" not in s or s.startswith("=")]
    if bad:
        p.error(f"--set {bad[0]!r}: expected KEY=VALUE")
    return args


PROGRAM_PEERS = ("jemalloc", "mimalloc", "tcmalloc")


def _peers(p: argparse.ArgumentParser, text: str) -> tuple[str, ...]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return PROGRAM_PEERS
    bad = [n for n in names if n not in PROGRAM_PEERS]
    if bad:
        p.error(f"--peers {bad[0]!r}: expected names among {', '.join(PROGRAM_PEERS)}, or 'all'")
    return tuple(names)


def workload_paths(patterns: Sequence[str]) -> list[Path]:
    """Each argument as files: a file, a folder's *.yaml, or a glob's matches; a relative one the current
    folder does not hold is looked up beside the shipped workloads/ (an installed kpool run from another
    folder: `kpool stress workloads/x.yaml`, as `kpool campaign --workloads` does). One that names nothing
    is a usage error naming it and where it was looked for."""
    out: list[Path] = []
    shipped = paths.workloads().parent
    for pattern in patterns:
        if not pattern.strip():  # a script's unset variable: as a path, the current folder's *.yaml
            raise UsageError(f"{pattern!r}: an empty workload path (an unset variable?)")
        found = _named(pattern, Path())
        if found is None and not Path(pattern).is_absolute() and shipped.resolve() != Path.cwd().resolve():
            found = _named(pattern, shipped)
            if found is None:
                raise UsageError(f"{pattern}: {_missing(pattern)} (looked in {Path.cwd()} and {shipped})")
        if found is None:
            raise UsageError(f"{pattern}: {_missing(pattern)}")
        # one file given twice (through a symlink, or `..`) runs once: two would be refused as two files
        # of one workload name
        seen = {o.resolve() for o in out}
        for f in found:
            if f.resolve() not in seen:
                out.append(f)
                seen.add(f.resolve())
    return out


def _missing(pattern: str) -> str:
    if any(c in pattern for c in GLOB_CHARS):
        return "the pattern matches no workload file"
    return "no such workload file"


def _named(pattern: str, base: Path) -> list[Path] | None:
    """The files pattern names under base (a relative pattern), None when it names nothing there;
    UsageError for a folder without workloads or a path that is no regular file."""
    path = base / pattern
    if any(c in pattern for c in GLOB_CHARS):
        root = Path(path.anchor or ".")
        return sorted(p for p in root.glob(str(path.relative_to(root))) if p.is_file()) or None
    if path.is_dir():
        found = sorted(path.glob("*.yaml"))
        if not found:
            raise UsageError(f"{pattern}: the folder holds no *.yaml workload file")
        return found
    if path.is_file():
        return [path]
    if path.exists():  # a device, a FIFO, a socket: reading it could block or never end
        raise UsageError(f"{pattern}: not a regular file: a workload is a YAML file")
    return None


def _fmt_ns(v: Any) -> str:
    return "-" if v is None else f"{v:,.0f}"


def _ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def program_table(results: Sequence[dict[str, Any]]) -> str:
    """Program workloads: kpool's (or --allocator's) wall time, peak RSS and their ratios to each other
    allocator that ran, the exit status, integrity events and the verdict."""
    rows = []
    for r in results:
        me = r["figures"].get(r["allocator"], {})
        ratios = ", ".join(
            f"{peer} {_ratio(x['time'])}/{_ratio(x['rss'])}" for peer, x in r.get("ratios", {}).items()
        )
        statuses = sorted(
            {
                str(run["returncode"])
                for run in r["runs"]
                if run["allocator"] == r["allocator"] and run["returncode"] is not None  # never started
            }
        )
        rows.append(
            [
                r["name"],
                r["allocator"],
                "-" if me.get("wall_s") is None else f"{me['wall_s']:.2f}",
                "-" if me.get("peak_rss_kib") is None else f"{me['peak_rss_kib'] / 1024:.1f}",
                ratios or "-",
                ",".join(statuses) or "-",
                str(r["integrity_errors"]),
                str(len(r["crashes"])),
                "ok" if r["passed"] else "FAIL",
            ]
        )
    headers = ["program", "allocator", "wall s", "peak RSS MiB", "time/RSS ratio to", "exit", "integrity"]
    return output.markdown_table([*headers, "crashes", "verdict"], rows)


def summary_table(report: dict[str, Any]) -> str:
    programs = [r for r in report["workloads"] if r.get("kind") == "program"]
    others = [r for r in report["workloads"] if r.get("kind") != "program"]
    tables = [program_table(programs)] if programs else []
    if others or not programs:
        tables.insert(0, _opstream_table({**report, "workloads": others}))
    return "\n\n".join(tables)


def _opstream_table(report: dict[str, Any]) -> str:
    rows = []
    for r in report["workloads"]:
        lat = r["latency"].get("alloc") or r["latency"].get("critical") or {}
        ratio = (r.get("interference") or {}).get("ratio", {}).get("alloc", {})
        rows.append(
            [
                r["name"],
                r["allocator"],
                f"{r['ops'] / 1e6:.2f}M",
                f"{r['ops_per_s_per_thread'] / 1e6:.1f}M",
                _fmt_ns(lat.get("p50")),
                _fmt_ns(lat.get("p99")),
                _fmt_ns(lat.get("p999")),
                str(len(r["crashes"])),
                str(r["integrity_errors"]),
                f"{ratio['p50']:.2f}/{ratio['p99']:.2f}" if ratio else "",
                f"{r['start_s']:.3f}" if r.get("start_s") is not None else "-",
                "ok" if r["passed"] else "FAIL",
            ]
        )
    headers = [
        "workload",
        "allocator",
        "ops",
        "ops/s/thread",
        "alloc p50 ns",
        "p99",
        "p99.9",
        "crashes",
        "integrity",
        "interference p50/p99",
        "start s",
        "verdict",
    ]
    return output.markdown_table(headers, rows)


def details(report: dict[str, Any]) -> list[str]:
    lines = []
    for r in report["workloads"]:
        for b in r["broken"]:
            if b.startswith("configuration error: "):
                continue  # main() reports these as errors
            lines.append(f"{r['name']}: broken: {b}")
        for c in r["crashes"]:
            rep = c["reproducer"]
            lines.append(
                f"{r['name']}: worker {c['worker']} {c['kind']}: {c['message']}; reproduce: {rep['command']}"
            )
    return lines


def main(argv: Sequence[str]) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    files = workload_paths(args.workloads)
    if args.allocator in (None, "kpool", "kpool-preload"):  # every kpool pool opens it
        poolcheck.check_log()
    workloads = [spec.load(p) for p in files]
    if not any(isinstance(w, spec.ProgramWorkload) for w in workloads):  # else run once, in silence
        for option, given in (("--repeat", args.repeat != 1), ("--peers", bool(args.peers))):
            if given:
                raise UsageError(
                    f"{option} applies to program workloads (program:, workloads/programs/); none is given"
                )
    if args.set and all(isinstance(w, spec.ProgramWorkload) for w in workloads):  # the driver's keys
        raise UsageError(
            f"--set {args.set[0]}: sets a key of the op driver's program, and every workload given is a"
            " program workload (for kpool's pool options there: KPOOL_CONF)"
        )
    paths.check_reports(args.reports, "--reports" in argv or any(a.startswith("--reports=") for a in argv))
    overrides = dict(s.split("=", 1) for s in args.set)
    opts = Options(
        allocator=args.allocator,
        jobs=args.jobs,
        time_limit_s=args.time_limit,
        reports_dir=args.reports,
        run_id=args.run_id,
        baseline=not args.no_baseline,
        variant=args.variant,
        overrides=overrides,
        peers=args.peers,
        repeat=args.repeat,
    )
    output.progress(
        f"variant {opts.variant}: kpdrive and libkpool built {VARIANT_MEANS.get(opts.variant, '')}"
    )
    if opts.variant == "release":
        output.warn(
            "the release build catches crashes, not races or canary damage: run the workloads with "
            "--variant asan (ASan+UBSan) and --variant tsan for correctness"
        )
    report = run(workloads, opts)
    output.result(summary_table(report))
    for line in details(report):
        output.warn(line)
    if report.get("unwritten"):  # a full disk: the table above is what ran; the file lacks some
        output.error(
            f"{report['unwritten']}: the report could not be written whole; the table above is what ran"
            + (f"; not run: {', '.join(report['not_run'])}" if report.get("not_run") else "")
        )
        return 1
    output.progress(f"report: {report['path']}")
    if report.get("interrupted"):
        output.error("interrupted; the report holds what finished")
        return 130
    refused = [(r["name"], e) for r in report["workloads"] for e in r.get("config_errors", ())]
    for name, message in refused:
        output.error(f"{name}: configuration error: {message}")
    if refused:
        return 2
    return 0 if report["passed"] else 1
