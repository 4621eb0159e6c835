"""`kpool bench`: kpool against glibc, jemalloc, mimalloc, tcmalloc and Scudo, side by side.

The measuring is done in C by allocator/bench/kpbench (built with `make -C allocator bench`): one binary
that runs each workload against kpool (`--alloc kpool`) or against the process's malloc (`--alloc
malloc`), so a peer is measured by loading its Debian library with LD_PRELOAD. This module only
schedules runs, interleaving the allocators round-robin so that a noisy neighbour hurts them all alike,
and reduces them to medians: ops/s, alloc latency p50/p99/p99.9 (timed in C), kpool's ratio to each
peer, peak RSS (the process's VmHWM) and RSS over time (kpbench's sampler thread), and for workload
(d) the allocating thread's page faults and the time of each round. "The best peer" is the best of
issue 14's four (harness.peers.TARGETS); Scudo, the hardened peer, has its own column beside them. A run
that fails (a peer's defaults may abort) is a row saying how, with the first line of its stderr.

Issue 14 also asks for the cost of kpool's integrity checks: on workloads a-c kpool runs a second time in
every round with `--conf checks:off` (the row "kpool-checks-off"), and each of those workloads gets a line
"cost of checks: X% (ops/s on vs off, medians of N rounds' ratios; ...)", X being how much longer an
operation takes with checks on (off's ops/s ÷ on's, less one; the median of the rounds' ratios, each round
running both back to back with one seed); the --json file carries it under "cost_of_checks".

kpool's default small path is the pool option `layout:outline` (allocator/src/outline.c: metadata out of line,
the default since session 24); the earlier one, `layout:inline` (block headers, the per-thread cache),
runs the same way on a-d as the row "kpool-inline" (every kpool row on kpool's defaults but its own options),
and the ratio table gets a column "inline ÷ best peer" beside kpool's own.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import atomic, output, paths
from harness.build import make_command, run_make
from harness.peers import ALLOCATORS, TARGETS, Allocator, available_allocators
from harness.triage.patterns import SIGNALS

KPBENCH = paths.build_dir("release") / "kpbench"
WORKLOADS = ("a", "b", "c", "d", "f")
# kpool with its integrity checks off, beside kpool in every round. Only where the pool's conf is kpbench's
# default (a-c): d measures growth (the daemon's pre-faulting), f realloc's copies, not the checks.
CHECKS_OFF = Allocator("kpool-checks-off", "kpool", conf="checks:off")
# kpool with its earlier small path (layout:inline: block headers; the default was outline's from session 24),
# on the same workloads and on d.
INLINE = Allocator("kpool-inline", "kpool", conf="layout:inline")
CONF_ROWS = (CHECKS_OFF, INLINE)  # kpool in a configuration of its own, beside kpool
CHECKS_OFF_WORKLOADS = ("a", "b", "c")
# The workloads each configuration row runs on.
CONF_WORKLOADS = {CHECKS_OFF.name: CHECKS_OFF_WORKLOADS, INLINE.name: ("a", "b", "c", "d")}
BENCH_ALLOCATORS = (ALLOCATORS[0], *CONF_ROWS, *ALLOCATORS[1:])
# The slowest single invocation (glibc on (c), or three 1 GiB rounds of (d)) takes seconds; ten minutes
# means the allocator hangs, and the remaining runs are still worth having.
RUN_TIMEOUT_S = 600
U64_MAX = 2**64 - 1  # kpbench reads --seed and --ops as uint64_t (parse_u64), and refuses a sign


@dataclass
class Runner:
    binary: Path
    preload: dict[str, str]  # allocator name -> library path
    ops: int | None
    failures: list[str] = field(default_factory=list)
    # (workload, allocator) -> how each failed run failed: "signal 6 (SIGABRT): <first stderr line>"
    failed: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def run(self, alloc: Allocator, workload: str, seed: int) -> dict[str, Any] | None:
        """One kpbench process for one workload; its JSON object, or None when it failed."""
        cmd = [str(self.binary), "--alloc", alloc.alloc, "--workload", workload, "--seed", str(seed)]
        cmd.append("--json")
        if alloc.conf:
            cmd += ["--conf", alloc.conf]
        if self.ops is not None:
            cmd += ["--ops", str(self.ops)]
        env = {"LD_PRELOAD": self.preload[alloc.name]} if alloc.soname else {}
        try:
            proc = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                errors="replace",
                check=False,
                timeout=RUN_TIMEOUT_S,
                env=_env(env),
            )
        except subprocess.TimeoutExpired:
            self._fail(alloc, workload, f"timed out after {RUN_TIMEOUT_S} s", "")
            return None
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            how = f"exit {proc.returncode}"
            if proc.returncode < 0:
                how = f"signal {-proc.returncode}" + (
                    f" ({SIGNALS[-proc.returncode]})" if -proc.returncode in SIGNALS else ""
                )
            self._fail(alloc, workload, how, proc.stderr)
            if not lines:
                return None
        result: dict[str, Any] = json.loads(lines[-1])
        result["seed"] = seed  # the round's: cost_of_checks pairs kpool's run with checks-off's by it
        return result

    def _fail(self, alloc: Allocator, workload: str, how: str, stderr: str) -> None:
        tail = "\n".join(stderr.strip().splitlines()[-10:])
        self.failures.append(f"({workload}) {alloc.name}: {how}")
        first = next((ln.strip() for ln in stderr.splitlines() if ln.strip()), "")
        self.failed.setdefault((workload, alloc.name), []).append(how + (f": {first}" if first else ""))
        output.warn(f"kpbench ({workload}) with {alloc.name}: {how}" + (f"\n{tail}" if tail else ""))


def runs_on(alloc: Allocator, workload: str) -> bool:
    """Whether the row runs this workload: a peer and kpool on all, a configuration row where it says."""
    return not alloc.conf or workload in CONF_WORKLOADS.get(alloc.name, CHECKS_OFF_WORKLOADS)


def _env(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without its own LD_PRELOAD, plus extra."""
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    env.update(extra)
    return env


# ---- finding things ------------------------------------------------------------------------------------


def build_kpbench() -> Path:
    """`make -C allocator bench` (a no-op when kpbench is up to date)."""
    if shutil.which("make") is None and KPBENCH.is_file():
        return KPBENCH
    run_make(make_command("release", "bench"))
    return KPBENCH


# ---- reducing runs to medians --------------------------------------------------------------------------


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarize(runs: Sequence[dict[str, Any]], failed: Sequence[str] = ()) -> dict[str, Any]:
    """Medians over the runs of one allocator on one workload (NaN without any), and how the failed ones
    failed."""
    lat = [r["lat_ns"]["alloc"] for r in runs]
    summary: dict[str, Any] = {
        "runs": len(runs),
        "ops_per_s": _median([r["ops_per_s"] for r in runs]),
        "p50": _median([x["p50"] for x in lat]),
        "p99": _median([x["p99"] for x in lat]),
        "p999": _median([x["p999"] for x in lat]),
        "clock_ns": _median([r["clock_ns"] for r in runs]),
        "errors": sum(r["verify_errors"] + r["alloc_failures"] + r["free_errors"] for r in runs),
    }
    if failed:
        summary["failed"] = list(failed)
    cpu = [r.get("ops_per_cpu_s", 0.0) for r in runs]
    if runs and all(x > 0 for x in cpu):  # a and b: one timed thread
        summary["ops_per_cpu_s"] = _median(cpu)
    # Each round's figures by its seed (ops/s, ops per CPU second or 0), for cost_of_checks's pairs.
    summary["by_seed"] = {
        r["seed"]: (r["ops_per_s"], r.get("ops_per_cpu_s", 0.0)) for r in runs if "seed" in r
    }
    if runs and "rounds" in runs[0]:
        nrounds = min(len(r["rounds"]) for r in runs)
        summary["round_s"] = [_median([r["rounds"][i]["alloc_s"] for r in runs]) for i in range(nrounds)]
        summary["faults"] = [_median([r["rounds"][i]["thread_minflt"] for r in runs]) for i in range(nrounds)]
        summary["pages"] = [_median([r["rounds"][i]["pages"] for r in runs]) for i in range(nrounds)]
    rss = [r["rss"] for r in runs if r.get("rss")]
    if rss:
        summary["peak_rss_kib"] = _median([x["hwm_kib"] or x["peak_kib"] for x in rss])
        mid = sorted(rss, key=lambda x: x["hwm_kib"] or x["peak_kib"])[len(rss) // 2]
        summary["rss_trace"] = {"interval_ms": mid["interval_ms"], "kib": mid["kib"]}
    stats = [r["kpool_stats"] for r in runs if r.get("kpool_stats")]
    if stats:
        summary["kpool_syscalls"] = _syscalls(stats[-1])
    return summary


def _syscalls(stats: dict[str, Any]) -> dict[str, Any]:
    """The system-call part of kp_stats_json: every top-level key that names OS calls."""
    keys = ("syscall", "os_", "mmap", "munmap", "madvise", "mprotect")
    return {k: v for k, v in stats.items() if any(s in k for s in keys)}


# ---- printing ------------------------------------------------------------------------------------------


def _si(x: float) -> str:
    if x != x:  # NaN: no successful run
        return "-"
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= scale:
            return f"{x / scale:.1f}{unit}"
    return f"{x:.0f}"


NAN = float("nan")
TRACE_POINTS = 12


def _mib(kib: float | None) -> str:
    return "-" if kib is None or kib != kib else f"{kib / 1024:.1f}"


def _trace(trace: dict[str, Any]) -> str:
    """A sampled RSS trace as TRACE_POINTS figures in MiB, evenly spaced, with the sampling period."""
    kib = trace["kib"]
    if not kib:
        return "-"
    n = min(TRACE_POINTS, len(kib))
    picks = [kib[round(i * (len(kib) - 1) / max(n - 1, 1))] for i in range(n)]
    every = trace["interval_ms"] * (len(kib) - 1) / max(n - 1, 1)
    return " ".join(f"{k / 1024:.0f}" for k in picks) + f"  (every {every:.0f} ms)"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if a == a and b == b and b > 0 else "-"


def workload_table(workload: str, desc: str, sums: dict[str, dict[str, Any]]) -> str:
    """One workload: allocator, ops/s, latency percentiles, kpool's ratio to it (and d's extras)."""
    kp = sums.get("kpool")
    headers = ["allocator", "ops/s", "p50 ns", "p99 ns", "p99.9 ns", "kpool ops/s ÷ this"]
    headers += ["peak RSS MiB", "kpool peak RSS ÷ this"]
    if workload == "d":
        headers += ["kpool p99.9 ÷ this", "thread page faults per round", "alloc+touch s per round"]
    rows = []
    for name, s in sums.items():
        if not s["runs"]:  # every run failed: say how, in the row
            rows.append([name, "failed: " + s.get("failed", ["no result"])[0]] + ["-"] * (len(headers) - 2))
            continue
        row = [name, _si(s["ops_per_s"]), f"{s['p50']:.0f}", f"{s['p99']:.0f}", f"{s['p999']:.0f}"]
        row.append(_ratio(kp["ops_per_s"], s["ops_per_s"]) if kp and name != "kpool" else "")
        row.append(_mib(s.get("peak_rss_kib")))
        peak = _ratio(kp.get("peak_rss_kib", NAN), s.get("peak_rss_kib", NAN)) if kp else ""
        row.append(peak if name != "kpool" else "")
        if workload == "d":
            row.append(_ratio(kp["p999"], s["p999"]) if kp and name != "kpool" else "")
            row.append(" / ".join(f"{f:.0f}" for f in s["faults"]))
            row.append(" / ".join(f"{t:.3f}" for t in s["round_s"]))
        if s["errors"]:
            row[0] += f" ({s['errors']} ERRORS)"
        if s.get("failed"):
            row[0] += f" ({len(s['failed'])} run(s) failed: {s['failed'][0]})"
        rows.append(row)
    lines = [f"({workload}) {desc}", "", output.markdown_table(headers, rows)]
    timed = {"d": "malloc + touching every page", "f": "one realloc call"}.get(
        workload, "one allocation call"
    )
    clock = _median([s["clock_ns"] for s in sums.values() if s["runs"]])
    lines.append(f"latency: {timed}, timed in C; each figure includes one clock read (~{clock:.0f} ns)")
    for name in ("kpool", INLINE.name):
        row_sum = sums.get(name)
        if workload == "d" and row_sum and row_sum["runs"]:
            pages = " / ".join(f"{p:.0f}" for p in row_sum["pages"])
            rounds = zip(row_sum["faults"], row_sum["pages"], strict=True)
            share = " / ".join(f"{100 * f / p:.1f}%" for f, p in rounds if p)
            lines.append(f"pages allocated per round: {pages}; {name}'s thread faulted on {share} of them")
    cost = cost_of_checks(sums)
    if cost is not None:
        lines.append(cost_line(cost))
    traces = [f"  {name}: {_trace(s['rss_trace'])}" for name, s in sums.items() if s.get("rss_trace")]
    if traces:
        lines.append("RSS over time, MiB (the median run's sampler, 12 points from start to end):")
        lines += traces
    for name in ("kpool", INLINE.name):
        if sums.get(name, {}).get("kpool_syscalls"):
            calls = json.dumps(sums[name]["kpool_syscalls"], separators=(",", ":"))
            lines.append(f"{name} system calls: {calls}")
    return "\n".join(lines)


def cost_of_checks(sums: dict[str, dict[str, Any]]) -> dict[str, float] | None:
    """How much longer an operation takes with checks on than off, in percent (off's ops/s ÷ on's, less
    one: negative when the checked pool is the faster); the same by CPU time where there is one. None
    without runs of both.

    The ratio is the median of the rounds' own ratios: a round runs kpool and kpool-checks-off back to
    back with one seed (run_all), so both meet the same minute of the machine's load, and a drift of the
    load from round to round cancels. The ratio of the two medians, taken over different minutes, does not:
    on a shared machine it said +15.2% where the rounds said -0.9% (test_bench_checks). Runs without a
    common seed (none recorded) fall back to the ratio of the medians."""
    on, off = sums.get("kpool"), sums.get(CHECKS_OFF.name)
    if not on or not off or not on["runs"] or not off["runs"]:
        return None
    cost = {"on_ops_per_s": on["ops_per_s"], "off_ops_per_s": off["ops_per_s"]}
    pairs = [
        (on["by_seed"][k], off["by_seed"][k]) for k in on.get("by_seed", {}) if k in off.get("by_seed", {})
    ]
    if pairs:
        cost["rounds"] = len(pairs)
        cost["pct"] = 100 * (_median([b[0] / a[0] for a, b in pairs]) - 1)
        if all(a[1] > 0 and b[1] > 0 for a, b in pairs):
            cost["pct_cpu"] = 100 * (_median([b[1] / a[1] for a, b in pairs]) - 1)
        return cost
    cost["pct"] = 100 * (off["ops_per_s"] / on["ops_per_s"] - 1)
    if "ops_per_cpu_s" in on and "ops_per_cpu_s" in off:
        cost["pct_cpu"] = 100 * (off["ops_per_cpu_s"] / on["ops_per_cpu_s"] - 1)
    return cost


def cost_line(cost: dict[str, float]) -> str:
    line = f"cost of checks: {cost['pct']:+.1f}% (ops/s on vs off, medians"
    if "rounds" in cost:
        n = int(cost["rounds"])
        line += f" of {n} rounds' ratios; of the runs " if n > 1 else " of 1 round's ratio; of the runs "
    else:
        line += ": "
    line += f"{_si(cost['on_ops_per_s'])} against {_si(cost['off_ops_per_s'])})"
    if "pct_cpu" in cost:
        line += f"; by ops per CPU second {cost['pct_cpu']:+.1f}%"
    return line


def _failed(sums: dict[str, dict[str, Any]], peer: str) -> bool:
    return peer in sums and not sums[peer]["runs"] and bool(sums[peer].get("failed"))


def _best(sums: dict[str, dict[str, Any]], key: str, pick: Any) -> tuple[str, float]:
    """The best of issue 14's peers (TARGETS; never kpool's preload or Scudo) by key: its name and figure."""
    have = [(p, sums[p].get(key, NAN)) for p in TARGETS if p in sums]
    have = [(p, x) for p, x in have if x == x]
    return pick(have, key=lambda px: px[1]) if have else ("", NAN)


def _vs_best(kp: dict[str, Any] | None, sums: dict[str, dict[str, Any]], key: str, pick: Any) -> str:
    name, best = _best(sums, key, pick)
    return f"{_ratio(kp.get(key, NAN), best)} ({name})" if kp and name else "-"


def ratio_table(summary: dict[str, dict[str, dict[str, Any]]], peers: Sequence[str]) -> str:
    """kpool ops/s divided by each peer's, one row per workload, and by the best of issue 14's peers (and
    kpool-inline's by the best peer's, when it ran)."""
    inline = any(INLINE.name in sums for sums in summary.values())
    rows = []
    for workload, sums in summary.items():
        kp = sums.get("kpool")
        rows.append(
            [workload]
            + [
                "failed"
                if _failed(sums, p)
                else _ratio(kp["ops_per_s"], sums[p]["ops_per_s"])
                if kp and p in sums
                else "-"
                for p in peers
            ]
            + [_vs_best(kp, sums, "ops_per_s", max)]
            + ([_vs_best(sums.get(INLINE.name), sums, "ops_per_s", max)] if inline else [])
        )
    best_note = f"best peer: the best of {', '.join(TARGETS)} (issue 14's)"
    text = f"kpool ops/s ÷ peer ops/s (medians; {best_note})\n\n"
    extra = ["inline ÷ best peer"] if inline else []
    text += output.markdown_table(["workload", *peers, "kpool ÷ best peer", *extra], rows)
    rss_rows = []
    for workload, sums in summary.items():
        kp = sums.get("kpool")
        rss_rows.append(
            [workload, _mib(kp.get("peak_rss_kib") if kp else None)]
            + [
                "failed" if _failed(sums, p) else _mib(sums[p].get("peak_rss_kib")) if p in sums else "-"
                for p in peers
            ]
            + [_vs_best(kp, sums, "peak_rss_kib", min)]
            + ([_vs_best(sums.get(INLINE.name), sums, "peak_rss_kib", min)] if inline else [])
        )
    headers = ["workload", "kpool", *peers, "kpool ÷ best peer", *extra]
    text += "\n\npeak RSS, MiB (VmHWM, medians)\n\n" + output.markdown_table(headers, rss_rows)
    # One-thread workloads also by the timed thread's CPU time: on a shared machine the CPU other
    # processes take from the loop moves wall-time ratios run to run, not these.
    cpu_rows = [
        [workload]
        + [
            "failed"
            if _failed(sums, p)
            else _ratio(kp["ops_per_cpu_s"], sums[p].get("ops_per_cpu_s", NAN))
            if p in sums
            else "-"
            for p in peers
        ]
        for workload, sums in summary.items()
        if (kp := sums.get("kpool")) and "ops_per_cpu_s" in kp
    ]
    if cpu_rows:
        text += "\n\nkpool ops per CPU second ÷ peer's (one-thread workloads, medians)\n\n"
        text += output.markdown_table(["workload", *peers], cpu_rows)
    return text


# ---- the command ---------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="kpool bench",
        description="Benchmark kpool against glibc, jemalloc, mimalloc, tcmalloc and Scudo (the hardened "
        "peer; loaded by LD_PRELOAD) on the same five workloads, measured in C by allocator/bench's kpbench.",
    )
    p.add_argument("--workloads", default=None, help="comma-separated subset of a,b,c,d,f (default all)")
    # --runs and --seed default to None here, to tell them given from not (see below), then to 5 and 1
    p.add_argument("--runs", type=int, default=None, help="runs per allocator and workload (default 5)")
    p.add_argument("--ops", type=int, default=None, help="ops per run for a/b/c (default: kpbench's)")
    p.add_argument("--seed", type=int, default=None, help="seed of run 1; run i uses seed+i-1 (default 1)")
    p.add_argument(
        "--allocators",
        default=",".join(a.name for a in BENCH_ALLOCATORS),
        help="comma-separated subset of "
        + ",".join(a.name for a in BENCH_ALLOCATORS)
        + " (default all; "
        + ", ".join(
            f"{a.name} is kpool with --conf {a.conf}, on {','.join(CONF_WORKLOADS[a.name])} only"
            for a in CONF_ROWS
        )
        + ")",
    )
    p.add_argument(
        "--json",
        type=paths.given,
        default=None,
        metavar="FILE",
        help="write the raw results here (default: none)",
    )
    p.add_argument(
        "--workload",
        type=paths.given,
        action="append",
        default=[],
        metavar="YAML",
        help="run this stress workload on every allocator instead of a-d (repeatable)",
    )
    p.add_argument(
        "--programs",
        nargs="?",
        const="",
        default=None,
        metavar="GLOB",
        help="instead: every real program (workloads/programs/*.yaml, or GLOB) on kpool and each peer, "
        "kpool's time and peak RSS as ratios to each, medians of 3 (harness/bench_programs.py; its own "
        "--runs, --allocators, --reports)",
    )
    p.add_argument(
        "--harness-speed",
        action="store_true",
        help="print the driver's timed ops/s per core and the 4-process start time",
    )
    p.add_argument(
        "--reports",
        type=paths.given,
        default=None,
        metavar="DIR",
        help="where --workload runs keep results "
        "(default: $KPOOL_REPORTS, else reports/ in the current directory)",
    )
    args = p.parse_args(list(argv))
    args.reports = args.reports or paths.reports()
    if args.workload and args.workloads is not None:  # kpbench's a-f do not run beside --workload
        p.error(
            f"--workload runs YAML workloads instead of kpbench's a-f: --workloads {args.workloads!r} too"
        )
    if args.workload or args.harness_speed:  # kpbench's settings, which the stress driver's runs ignore
        instead = "--workload" if args.workload else "--harness-speed"
        for option, value in (
            ("--workloads", args.workloads),
            ("--runs", args.runs),
            ("--ops", args.ops),
            ("--seed", args.seed),
        ):
            if value is not None:
                p.error(
                    f"{option} {value}: a setting of kpbench's a-f, which {instead} does not run (a workload"
                    " file states its own ops and seed, and runs once on each allocator)"
                )
    args.runs = 5 if args.runs is None else args.runs
    args.seed = 1 if args.seed is None else args.seed
    if args.workloads is None:
        args.workloads = ",".join(WORKLOADS)
    # a workload named twice ran twice a round, with the same seeds: runs counted twice in its medians
    workloads = list(dict.fromkeys(w.strip() for w in args.workloads.split(",") if w.strip()))
    bad = [w for w in workloads if w not in WORKLOADS]
    if bad or not workloads:
        p.error(f"--workloads {args.workloads!r}: choose from {','.join(WORKLOADS)}")
    names = [a.strip() for a in args.allocators.split(",") if a.strip()]
    unknown = [n for n in names if n not in {a.name for a in BENCH_ALLOCATORS}]
    if unknown or not names:
        known = ",".join(a.name for a in BENCH_ALLOCATORS)
        what = ", ".join(unknown) or "(empty)"
        p.error(f"--allocators {args.allocators!r}: unknown {what}; choose from {known}")
    rows_named = [n for n in names if n in {a.name for a in CONF_ROWS}]
    default_allocators = ",".join(a.name for a in BENCH_ALLOCATORS)
    if args.workload and rows_named and args.allocators != default_allocators:  # named, not by default:
        # the stress driver runs kpool with the workload's own pool options
        p.error(
            f"--allocators {rows_named[0]}: a row of kpbench's a-f, not an allocator --workload runs on (give"
            " kpool's options in the workload's pool: field, or KPOOL_CONF)"
        )
    conf_only = set(names) <= {a.name for a in CONF_ROWS}
    rows = [a for a in CONF_ROWS if a.name in names]
    bare = [w for w in workloads if not any(runs_on(a, w) for a in rows)] if conf_only else []
    if bare:  # an empty table that says nothing, and exit 0
        on = sorted({w for a in rows for w in CONF_WORKLOADS[a.name]})
        p.error(
            f"--allocators {','.join(names)} runs on {','.join(on)} only: nothing to run on"
            f" --workloads {','.join(bare)} (add kpool or a peer)"
        )
    if not 1 <= args.runs <= U64_MAX:  # past it, the seeds of the runs do not fit kpbench's 64 bits
        p.error(f"--runs {args.runs}: expected 1 to {U64_MAX}")
    if args.ops is not None and not 1 <= args.ops <= U64_MAX:
        p.error(f"--ops {args.ops}: expected 1 to {U64_MAX} (kpbench's 64 bits)")
    if not 0 <= args.seed <= U64_MAX - (args.runs - 1):
        p.error(
            f"--seed {args.seed}: expected 0 to {U64_MAX - (args.runs - 1)} (run i uses seed+i-1, in "
            f"kpbench's 64 bits)"
        )
    if args.json is not None:  # said before the runs, not after them
        folder = args.json.absolute().parent
        if args.json.is_dir():
            p.error(f"--json {args.json}: is a folder: nowhere to write the results")
        if not folder.is_dir():
            p.error(f"--json {args.json}: is not in a folder: nowhere to write the results")
        if not os.access(folder, os.W_OK | os.X_OK):  # EROFS for root too
            p.error(
                f"--json {args.json}: {folder} cannot be written in (a read-only file system, or no "
                "permission)"
            )
    args.workloads = workloads
    args.allocators = names
    return args


def run_all(
    runner: Runner, allocs: Sequence[Allocator], workloads: Sequence[str], runs: int, seed: int
) -> tuple[dict[str, dict[str, list[dict[str, Any]]]], bool]:
    """Every run, round-robin: for each run and workload, each allocator once, starting one further along.
    (the runs, False), or (the runs that finished, True) when interrupted (Ctrl-C, SIGTERM)."""
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {
        w: {a.name: [] for a in allocs if runs_on(a, w)} for w in workloads
    }
    try:
        for i in range(runs):
            order = list(allocs[i % len(allocs) :]) + list(allocs[: i % len(allocs)])
            for workload in workloads:
                for alloc in order:
                    if alloc.name not in raw[workload]:  # kpool-checks-off on d or f, kpool-inline on f
                        continue
                    output.progress(f"run {i + 1}/{runs}: ({workload}) {alloc.name}")
                    result = runner.run(alloc, workload, seed + i)
                    if result is not None:
                        raw[workload][alloc.name].append(result)
    except KeyboardInterrupt:  # subprocess.run has killed the kpbench it ran
        return raw, True
    return raw, False


def main(argv: list[str]) -> int:
    if any(a == "--programs" or a.startswith("--programs=") for a in argv):
        from harness import bench_programs

        return bench_programs.main(argv)
    try:
        args = parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage or the help
        return int(exc.code or 0)
    check_environment(args.allocators)
    if args.workload or args.harness_speed:
        return _stress_bench(args)
    binary = build_kpbench()
    allocs, preload = available_allocators(args.allocators)
    for row in reversed(CONF_ROWS):  # kpool's own, not peers: beside kpool, after it
        if row.name in args.allocators:
            allocs.insert(next((i + 1 for i, a in enumerate(allocs) if a.name == "kpool"), 0), row)
    runner = Runner(binary, preload, args.ops)
    raw, interrupted = run_all(runner, allocs, args.workloads, args.runs, args.seed)

    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for workload, per_alloc in raw.items():
        sums = {
            name: summarize(runs, runner.failed.get((workload, name), ()))
            for name, runs in per_alloc.items()
            if runs or (workload, name) in runner.failed
        }
        summary[workload] = sums
        desc = next((runs[0]["desc"] for runs in per_alloc.values() if runs), "")
        output.result(workload_table(workload, desc, sums) + "\n")
    peers = [a.name for a in allocs if a.name != "kpool"]
    if peers and any(a.name == "kpool" for a in allocs):
        output.result(ratio_table(summary, peers))

    if args.json is not None:
        meta = {"runs": args.runs, "ops": args.ops, "seed": args.seed, "preload": preload}
        if interrupted:
            meta["interrupted"] = True  # the runs that finished, fewer than "runs" for some
        costs = {w: c for w, sums in summary.items() if (c := cost_of_checks(sums)) is not None}
        doc = {
            "meta": meta,
            "summary": summary,
            "cost_of_checks": costs,
            "raw": raw,
            "failures": runner.failures,
        }
        atomic.write_text(args.json, json.dumps(doc, indent=1) + "\n")
        output.progress(f"raw results written to {args.json}")
    if interrupted:
        output.warn("interrupted: the tables hold the runs that finished")
        raise KeyboardInterrupt
    if runner.failures:
        output.error(f"{len(runner.failures)} run(s) failed: " + "; ".join(runner.failures))
        return 1
    return 0


def check_environment(allocators: Sequence[str]) -> None:
    """What kpool's runs read from the environment, judged before any run as `kpool run` judges it: a
    KPOOL_CONF kp_create refuses, a KPOOL_LOG it cannot open or a KPOOL_PRELOAD the preload refuses made
    every kpool run fail (exit 1, or the preload's 127) after every peer's rounds. UsageError naming it."""
    from harness import run
    from harness.spec import poolcheck

    if {"kpool", *(a.name for a in CONF_ROWS), "kpool-preload"} & set(allocators):
        run.check_conf(os.environ.get(run.CONF_ENV), None)
        poolcheck.check_log()
    if "kpool-preload" in allocators:
        run.check_preload(os.environ.get(run.PRELOAD_ENV))


def _stress_bench(args: argparse.Namespace) -> int:
    """Workload files on kpool and its peers (the stress driver), and the harness's own speed."""
    from harness.stress import compare  # the stress runner is only needed here

    doc: dict[str, Any] = {}
    interrupted = False
    if args.workload:
        from harness.stress.command import workload_paths  # the shipped ones too, from another folder

        allocs, _ = available_allocators(args.allocators)
        paths = workload_paths([str(w) for w in args.workload])
        results, interrupted = compare.compare(paths, allocs, args.reports)
        output.result(compare.compare_text(results))
        doc["workloads"] = results
    if interrupted:  # what finished is written, marked so; the harness speed is not measured
        doc["interrupted"] = True
        if args.json is not None:
            atomic.write_text(args.json, json.dumps(doc, indent=1) + "\n")
        output.warn("interrupted: the tables hold the runs that finished")
        raise KeyboardInterrupt
    if args.harness_speed:
        doc["harness_speed"] = compare.harness_speed(args.reports)
        output.result(compare.speed_text(doc["harness_speed"]))
    if args.json is not None:
        atomic.write_text(args.json, json.dumps(doc, indent=1) + "\n")
    failed = [
        f"{w} on {a}" for w, per in doc.get("workloads", {}).items() for a, r in per.items() if r["crashes"]
    ]
    if failed:
        output.error("crashed: " + ", ".join(failed))
        return 1
    return 0
