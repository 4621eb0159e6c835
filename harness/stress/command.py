"""`kpool stress workloads/x.yaml [...]`: parse, run, print a summary table, exit 1 on a crash or a
broken SLO."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import output, peers, spec
from harness.stress.runner import Options, run


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="kpool stress",
        description="Run YAML workloads with worker processes of the C op driver (kpdrive) and report "
        "latency, crashes, outliers and SLO verdicts under reports/<run-id>/stress.json.",
    )
    p.add_argument("workloads", nargs="+", type=Path, help="workload files (workloads/*.yaml)")
    p.add_argument("--allocator", choices=peers.NAMES, default=None, help="run on this allocator instead")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes at a time")
    p.add_argument(
        "--time-limit", type=float, default=None, metavar="S", help="kill a worker after S seconds"
    )
    p.add_argument(
        "--reports", type=Path, default=Path("reports"), help="reports directory (default reports/)"
    )
    p.add_argument("--run-id", default=None, help="the run's directory name (default: time + random)")
    p.add_argument("--no-baseline", action="store_true", help="skip the run without interference")
    p.add_argument("--variant", default="release", help="build variant of kpdrive (release, asan, ...)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a driver program key"
    )
    args = p.parse_args(list(argv))
    if args.jobs < 1:
        p.error(f"--jobs {args.jobs}: must be at least 1")
    if args.time_limit is not None and args.time_limit <= 0:
        p.error(f"--time-limit {args.time_limit}: must be positive")
    bad = [s for s in args.set if "=" not in s]
    if bad:
        p.error(f"--set {bad[0]!r}: expected KEY=VALUE")
    return args


def _fmt_ns(v: Any) -> str:
    return "-" if v is None else f"{v:,.0f}"


def summary_table(report: dict[str, Any]) -> str:
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
    workloads = [spec.load(p) for p in args.workloads]
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
    )
    report = run(workloads, opts)
    output.result(summary_table(report))
    for line in details(report):
        output.warn(line)
    output.progress(f"report: {report['path']}")
    if report.get("interrupted"):
        output.error("interrupted; the report holds what finished")
        return 130
    return 0 if report["passed"] else 1
