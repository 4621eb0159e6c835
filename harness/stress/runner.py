"""The stress runner: workers for each workload, watched, merged, judged and written down.

For each workload: compile it to a driver program, spawn `processes` kpdrive workers (seed = base seed +
worker index; at most `jobs` at a time), poll them (psutil samples, time limit), and when all are done
merge what they produced. A crashed or hung worker becomes a crash record with its reproducer; the
others' results are kept. With interference, the same workers run again without it (same seeds), and
the ratio of their latency percentiles is the interference ratio.

Results go to reports/<run-id>/stress.json, rewritten after each workload, so an interrupted run keeps
everything finished so far; every worker's raw JSON and stderr stay beside it.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import output, peers
from harness.errors import KpoolError
from harness.spec import Workload
from harness.stress import slo
from harness.stress.binary import ensure_kpdrive
from harness.stress.merge import merge
from harness.stress.worker import Worker, child_env

POLL_S = 0.05  # psutil sample and exit check: 20 a second is smooth and costs ~1% of a core
RATIO_FIGURES = ("p50", "p99", "p999", "mean")
RATIO_KINDS = ("alloc", "free", "realloc", "calloc", "aligned", "free_remote", "critical")


@dataclass
class Options:
    allocator: str | None = None  # None: each workload's own
    jobs: int = field(default_factory=lambda: os.cpu_count() or 1)
    time_limit_s: float | None = None  # None: each workload's own
    reports_dir: Path = Path("reports")
    run_id: str | None = None
    baseline: bool = True  # measure the interference ratio when a workload has interference
    variant: str = "release"
    overrides: dict[str, str] = field(default_factory=dict)  # extra program keys, e.g. count=1000
    progress_s: float = 1.0


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def _preload(allocator: str) -> str | None:
    alloc = peers.by_name(allocator)
    if not alloc.soname:
        return None
    path = peers.find_library(alloc.soname)
    if path is None:
        raise KpoolError(
            f"{allocator}: {alloc.soname} not found; install it with `apt-get install {alloc.package}`"
        )
    return str(path)


# ---- one phase: the workers of one workload, run to the end -------------------------------------------


@dataclass
class Phase:
    wl: Workload
    label: str  # "main" or "baseline"
    program: str
    directory: Path
    allocator: str
    kpdrive: Path
    opts: Options
    on_progress: Callable[[str], None]
    interrupted: bool = False

    def run(self) -> list[dict[str, Any]]:
        self.directory.mkdir(parents=True, exist_ok=True)
        prog_path = self.directory / f"{self.label}.prog"
        prog_path.write_text(self.program)
        env = child_env(_preload(self.allocator))
        limit = self.opts.time_limit_s or self.wl.time_limit_s
        pending = [self._worker(i, prog_path, env, limit) for i in range(self.wl.processes)]
        running: list[Worker] = []
        done: list[Worker] = []
        t0 = last = time.monotonic()
        try:
            while pending or running:
                while pending and len(running) < max(1, self.opts.jobs):
                    w = pending.pop(0)
                    w.start()
                    running.append(w)
                time.sleep(POLL_S)
                for w in list(running):
                    if w.poll():
                        running.remove(w)
                        done.append(w)
                if time.monotonic() - last >= self.opts.progress_s:
                    last = time.monotonic()
                    self._progress(t0, running, done)
        except KeyboardInterrupt:
            # Keep what finished; stop the rest (no orphans) and record them as interrupted.
            self.interrupted = True
            for w in running:
                w.kill(interrupted=True)
            done += running
        return [w.result() for w in sorted(done, key=lambda w: w.index)]

    def _worker(self, i: int, prog_path: Path, env: dict[str, str], limit: float) -> Worker:
        seed = self.wl.seed + i
        stem = self.directory / f"{self.label}-worker-{i}"
        cmd = [str(self.kpdrive), str(prog_path), f"seed={seed}"]
        cmd += [f"{k}={v}" for k, v in self.opts.overrides.items()]
        return Worker(
            i, seed, prog_path, stem.with_suffix(".json"), stem.with_suffix(".stderr"), cmd, env, limit
        )

    def _progress(self, t0: float, running: Sequence[Worker], done: Sequence[Worker]) -> None:
        ops = sum(w.ops_so_far() for w in [*running, *done])
        crashes = sum(1 for w in done if w.proc is not None and (w.proc.returncode != 0 or w.timed_out))
        self.on_progress(
            f"{self.wl.name} ({self.label}): {time.monotonic() - t0:.1f} s, {ops / 1e6:.2f}M ops, "
            f"{len(running)}/{self.wl.processes} workers alive, {crashes} crashed"
        )


# ---- one workload ----------------------------------------------------------------------------------------


def _crash_records(
    wl: Workload, allocator: str, workers: Sequence[dict[str, Any]], phase: str
) -> list[dict[str, Any]]:
    out = []
    for w in workers:
        crash = w.get("crash")
        if not crash or crash["kind"] == "interrupted":
            continue
        repro = {
            "workload": wl.path,
            "sha256": wl.sha256,
            "seed": w["seed"],
            "worker": w["worker"],
            "allocator": allocator,
            "phase": phase,
            "op_index": crash.get("op_index"),
            "command": shlex.join(w["cmd"]),
        }
        out.append({**crash, "workload": wl.name, "worker": w["worker"], "reproducer": repro})
    return out


def _ratio(with_i: dict[str, Any], without: dict[str, Any]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for kind in RATIO_KINDS:
        a, b = with_i["latency"].get(kind), without["latency"].get(kind)
        if a and b:
            out[kind] = {p: round(a[p] / b[p], 3) if b[p] else float("nan") for p in RATIO_FIGURES}
    return out


def run_workload(wl: Workload, opts: Options, run_dir: Path, kpdrive: Path) -> dict[str, Any]:
    allocator = opts.allocator or wl.allocator
    directory = run_dir / wl.name
    if allocator != "kpool":
        directory = run_dir / f"{wl.name}-{allocator}"

    interrupted = False

    def phase(label: str, interference: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        nonlocal interrupted
        ph = Phase(
            wl,
            label,
            wl.program(interference=interference, allocator=allocator),
            directory,
            allocator,
            kpdrive,
            opts,
            output.progress,
        )
        workers = ph.run()
        interrupted = interrupted or ph.interrupted
        return workers, merge(workers, int(wl.data.get("outliers", 32)))

    t0 = time.monotonic()
    workers, merged = phase("main", True)
    crashes = _crash_records(wl, allocator, workers, "main")
    result: dict[str, Any] = {
        "name": wl.name,
        "file": wl.path,
        "sha256": wl.sha256,
        "allocator": allocator,
        "processes": wl.processes,
        "threads": wl.threads,
        "seed": wl.seed,
        **merged,
        "workers": [_worker_summary(w, directory) for w in workers],
        "crashes": crashes,
    }
    if wl.interference and opts.baseline and not interrupted:
        base_workers, base = phase("baseline", False)
        result["interference"] = {
            "ratio": _ratio(merged, base),
            "baseline_latency": base["latency"],
            "baseline_ops_per_s_per_thread": base["ops_per_s_per_thread"],
        }
        result["crashes"] += _crash_records(wl, allocator, base_workers, "baseline")
    result["slo"] = slo.verdicts(wl.slo, merged, len(result["crashes"]))
    result["broken"] = slo.broken(result["slo"])
    result["passed"] = not result["broken"]
    result["wall_s"] = round(time.monotonic() - t0, 3)
    result["interrupted"] = interrupted
    if interrupted:
        result["broken"].append("interrupted before every worker finished")
        result["passed"] = False
    return result


def _worker_summary(w: dict[str, Any], directory: Path) -> dict[str, Any]:
    doc = w.get("result") or {}
    return {
        "worker": w["worker"],
        "seed": w["seed"],
        "pid": w["pid"],
        "returncode": w["returncode"],
        "wall_s": w["wall_s"],
        "process": w["process"],
        "ops": (doc.get("counters") or {}).get("ops"),
        "ops_per_s": doc.get("ops_per_s"),
        "crash": w["crash"]["kind"] if w.get("crash") else None,
        "result_file": str(directory / f"main-worker-{w['worker']}.json"),
        "timeline": doc.get("timeline"),
        "kpool_stats": doc.get("kpool_stats"),
    }


# ---- a run -------------------------------------------------------------------------------------------------


def run(workloads: Sequence[Workload], opts: Options) -> dict[str, Any]:
    """Run every workload in turn; write and return the report."""
    kpdrive = ensure_kpdrive(opts.variant)
    run_id = opts.run_id or new_run_id()
    run_dir = opts.reports_dir / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "run_id": run_id,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "kpdrive": str(kpdrive),
        "jobs": opts.jobs,
        "workloads": [],
        "passed": True,
    }
    path = run_dir / "stress.json"
    for wl in workloads:
        output.progress(f"{wl.name}: {wl.processes} process(es) x {wl.threads} thread(s) from {wl.path}")
        result = run_workload(wl, opts, run_dir, kpdrive)
        report["workloads"].append(result)
        report["passed"] = report["passed"] and result["passed"]
        path.write_text(json.dumps(report, indent=1) + "\n")
        if result["interrupted"]:
            report["interrupted"] = True
            break
    report["path"] = str(path)
    path.write_text(json.dumps(report, indent=1) + "\n")
    return report
