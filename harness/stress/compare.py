"""Workloads on kpool and its peers side by side, and the speed of the harness itself.

`kpool bench --workload workloads/x.yaml [--workload ...]` runs each workload on every allocator (the same
driver program and seeds; peers by LD_PRELOAD) and prints a table per workload and a ratio table.
`kpool bench --harness-speed` prints the two figures the harness promises about itself: timed operations
per second per core of the driver on the small-object workload, and the start time of a 4-process
workload (first spawn to the last worker's first timed operation).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import output, spec
from harness.peers import Allocator
from harness.stress import runner
from harness.stress.binary import ensure_kpdrive

# Issue 4's small-object workload: 16-256 B, 1000 live, every step frees a victim and allocates.
SPEED_PROGRAM = (
    "name=speed\nsize=uniform:16:256\nworking_set=1000\nops=alloc:1\ncount=2000000\nprogress_ms=0\n"
)
START_WORKLOAD = """\
name: start-4
processes: 4
ops: 1000
mix: {alloc: 1}
sizes: {dist: uniform, min: 16, max: 256}
"""
SPEED_RUNS = 3  # medians of three: one noisy neighbour does not move the figure


def _drive(kpdrive: Path, *args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [str(kpdrive), "-", *args],
        input=SPEED_PROGRAM,
        capture_output=True,
        text=True,
        errors="replace",
        check=True,
        timeout=120,
    )
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def harness_speed(reports_dir: Path) -> dict[str, Any]:
    """Driver ops/s per core (both timers) and the 4-process start time, medians of SPEED_RUNS."""
    kpdrive = ensure_kpdrive()
    out: dict[str, Any] = {}
    for timer in ("clock", "tsc"):
        docs = [_drive(kpdrive, f"timer={timer}", f"seed={i + 1}") for i in range(SPEED_RUNS)]
        out[timer] = {
            "timer": docs[0]["timer"],
            "ops_per_cpu_s": statistics.median(d["ops_per_cpu_s"] for d in docs),
            "ops_per_s": statistics.median(d["ops_per_s"] for d in docs),
            "timed_share": docs[0]["counters"]["timed"] / max(1, docs[0]["counters"]["steps"]),
            "read_ns": docs[0]["clock_ns"],
        }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "start-4.yaml"
        path.write_text(START_WORKLOAD)
        wl = spec.load_opstream(path)
        starts = []
        for i in range(SPEED_RUNS):
            opts = runner.Options(reports_dir=Path(tmp), run_id=f"start-{i}", progress_s=3600.0, jobs=4)
            starts.append(runner.run([wl], opts)["workloads"][0]["start_s"])
    out["start_4_processes_s"] = statistics.median(s for s in starts if s is not None)
    return out


def speed_text(speed: dict[str, Any]) -> str:
    c, t = speed["clock"], speed["tsc"]
    lines = [
        "harness speed (small-object workload, every op timed, medians of 3):",
        f"  driver timed ops/s per core: {c['ops_per_cpu_s'] / 1e6:.1f}M with CLOCK_MONOTONIC "
        f"({c['read_ns']} ns a read); {t['ops_per_cpu_s'] / 1e6:.1f}M with timer={t['timer']} "
        f"({t['read_ns']} ns a read)",
        "  4-process workload start (spawn to the last worker's first op): "
        f"{speed['start_4_processes_s']:.3f} s",
    ]
    return "\n".join(lines)


# ---- workloads side by side --------------------------------------------------------------------------------


def compare(
    paths: Sequence[Path], allocs: Sequence[Allocator], reports_dir: Path
) -> tuple[dict[str, Any], bool]:
    """Each workload on each allocator (no interference baseline): (results by workload and allocator,
    interrupted). An interrupt (Ctrl-C, SIGTERM) stops the run it came in, whose result is marked
    interrupted (the stress runner's Phase), and the runs after it: (the results so far, True)."""
    by_file: dict[Path, Path] = {}  # a file given twice (through a symlink, or `..`) runs once
    for p in paths:
        by_file.setdefault(p.resolve(), p.absolute())
    unique = list(by_file.values())
    workloads = [spec.load_opstream(p) for p in unique]
    runner.check_distinct_names(workloads)  # two names alike: the second wrote over the first's results
    run_id = runner.new_run_id() + "-bench"
    out: dict[str, Any] = {}
    try:
        for wl in workloads:
            for alloc in allocs:
                output.progress(f"bench: {wl.name} on {alloc.name}")
                opts = runner.Options(
                    allocator=alloc.name,
                    reports_dir=reports_dir,
                    run_id=run_id,
                    baseline=False,
                    progress_s=3600.0,
                    record=False,  # a peer's crash is no kpool signature; the table says it
                )
                kpdrive = ensure_kpdrive()
                result = runner.run_workload(wl, opts, reports_dir / run_id, kpdrive)
                out.setdefault(wl.name, {})[alloc.name] = result
                if result["interrupted"]:
                    return out, True
    except KeyboardInterrupt:  # outside the workers' phase (the driver's check, a merge): the same
        return out, True
    return out, False


def _cell(result: dict[str, Any], kind: str, pct: str) -> str:
    lat = result["latency"].get(kind)
    return f"{lat[pct]:,}" if lat else "-"


def compare_text(results: dict[str, Any]) -> str:
    blocks = []
    peers: list[str] = []
    ratio_rows = []
    for name, per_alloc in results.items():
        rows = []
        kp = per_alloc.get("kpool")
        for alloc, r in per_alloc.items():
            verdict = "ok" if r["passed"] else "FAIL: " + "; ".join(r["broken"])
            rate = r["ops_per_s_per_thread"]
            ratio = f"{kp['ops_per_s_per_thread'] / rate:.2f}x" if kp and alloc != "kpool" and rate else ""
            rows.append(
                [
                    alloc,
                    f"{rate / 1e6:.2f}M",
                    _cell(r, "alloc", "p50"),
                    _cell(r, "alloc", "p99"),
                    _cell(r, "alloc", "p999"),
                    _cell(r, "free", "p99"),
                    ratio,
                    verdict,
                ]
            )
        headers = ["allocator", "ops/s/thread", "alloc p50 ns", "alloc p99", "alloc p99.9", "free p99"]
        headers += ["kpool ÷ this", "verdict"]
        blocks.append(f"{name}\n\n" + output.markdown_table(headers, rows))
        peers = [a for a in per_alloc if a != "kpool"]
        if kp:
            ratio_rows.append(
                [name]
                + [
                    f"{kp['ops_per_s_per_thread'] / per_alloc[p]['ops_per_s_per_thread']:.2f}x"
                    if per_alloc[p]["ops_per_s_per_thread"]
                    else "-"
                    for p in peers
                ]
            )
    if ratio_rows and peers:
        blocks.append(
            "kpool ops/s ÷ peer ops/s (driver-timed workloads)\n\n"
            + output.markdown_table(["workload", *peers], ratio_rows)
        )
    return "\n\n".join(blocks)
