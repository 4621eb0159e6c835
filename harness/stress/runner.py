"""The stress runner: workers for each workload, watched, merged, judged and written down.

Each workload runs through its kind's launch (harness/stress/launch.py): an op-stream workload here
(OpStreamLaunch), a program workload in harness/stress/program.py (ProgramLaunch).

For an op-stream workload: compile it to a driver program, spawn `processes` kpdrive workers (seed = base
seed + worker index; at most `jobs` at a time), poll them (psutil samples, time limit), and when all are done
merge what they produced. A crashed or hung worker becomes a crash record with its reproducer, and so does
one that ended well with integrity errors in its result (integrity.py); the others' results are kept.
With interference, the same workers run again without it (same seeds), and the ratio of their latency
percentiles is the interference ratio.

Results go to reports/<run-id>/stress.json, rewritten after each workload, so an interrupted run keeps
everything finished so far, and as each worker ends, with the running workload's workers that ended (the
entry marked `unfinished`, the report `interrupted`, until the workload's end writes it whole), so a run
killed mid-workload (SIGKILL) keeps what they measured; every worker's raw JSON and stderr stay beside it.
A worker's crash is recorded in the crash database as the worker ends, so the database keeps those too.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import atomic, output, peers, runlock
from harness.errors import ConfigError, UsageError
from harness.spec import AnyWorkload, ProgramWorkload, Workload, poolcheck
from harness.spec.compile import conf_string
from harness.spec.validate import DURATION_MARGIN_MS
from harness.stress import integrity, slo
from harness.stress.binary import ensure_kpdrive
from harness.stress.launch import Launch
from harness.stress.merge import integrity_errors, merge
from harness.stress.worker import NO_SPACE, Worker, child_env
from harness.triage import record

POLL_S = 0.05  # psutil sample and exit check: 20 a second is smooth and costs ~1% of a core
# stress.json written again with the running workload's ended workers at most this often: each write merges
# and dumps every ended worker (a 64-process workload's, 0.2 MB), and done for each of 64 workers as they
# ended it cost the harness 0.4 s of CPU beside the workers still measuring (3.4 s runs, 2 cores); a kill
# loses at most this long of ended workers from stress.json (their own result files are on disk).
SNAPSHOT_EVERY_S = 1.0
RATIO_FIGURES = ("p50", "p99", "p999", "mean")
TSAN_OPTIONS = "halt_on_error=1"
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
    peers: tuple[str, ...] = ()  # program workloads: also run on these allocators, beside glibc
    repeat: int = 1  # program workloads: runs per allocator (medians)
    # crashes recorded in the crash database as each worker ends (kpool stress); kpool bench's runs on
    # kpool and its peers record none
    record: bool = True
    # Called with a workload's entry so far (marked unfinished) as its workers end: run() writes
    # stress.json again with it, so that a runner killed mid-workload (SIGKILL, the OOM killer) leaves the
    # figures of every worker that ended, not only their crashes.
    on_partial: Callable[[dict[str, Any]], None] | None = None


# A run id names a folder under the reports folder: a plain name, never a path (no '/', no leading '.').
RUN_ID_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def new_run_dir(reports: Path) -> tuple[str, Path]:
    """A run folder of its own: mkdir without exist_ok, so two runs of the same second (whose random
    suffixes collide) never share one; on a collision a new id is drawn."""
    reports.mkdir(parents=True, exist_ok=True)
    while True:
        run_id = new_run_id()
        try:
            (reports / run_id).mkdir()
        except FileExistsError:
            continue
        return run_id, reports / run_id


def check_run_id(run_id: str) -> str:
    if not RUN_ID_RE.match(run_id):
        raise UsageError(
            f"--run-id {run_id!r}: expected a plain name (letters, digits, '-', '_', '.'; not starting "
            "with '.'), not a path"
        )
    return run_id


def _preload(allocator: str) -> str | None:
    path = peers.preload_path(allocator)
    return str(path) if path else None


# ---- before any worker starts: everything the driver and kp_create would refuse ---------------------------

CHECK_TIMEOUT_S = 30  # `kpdrive --check` only parses: milliseconds; the margin is for a loaded machine
# "kpdrive: bad program: line 14: " before the driver's message (kpdrive.c): the line is of the program
# text, which the user never sees.
BAD_PROGRAM_RE = re.compile(r"^kpdrive: (bad program: )?(line \d+: )?")


def _programs(wl: Workload, opts: Options) -> list[str]:
    allocator = opts.allocator or wl.allocator
    phases = [True, False] if wl.interference and opts.baseline else [True]
    return [wl.program(interference=i, allocator=allocator) for i in phases]


def _driver_refusal(kpdrive: Path, program: str, args: Sequence[str]) -> str | None:
    """kpdrive's own words on the program with these arguments, or None when it accepts them."""
    proc = subprocess.run(
        [str(kpdrive), "--check", "-", *args],
        input=program,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=CHECK_TIMEOUT_S,
        check=False,
    )
    if proc.returncode == 0:
        return None
    text = BAD_PROGRAM_RE.sub("", proc.stderr.strip())
    return text or f"kpdrive --check exited {proc.returncode}"


def _check_conf(wl: Workload, opts: Options) -> None:
    """The pool settings as kp_create will see them: KPOOL_CONF, then the workload's or --set conf."""
    allocator = opts.overrides.get("allocator") or (
        "kpool" if (opts.allocator or wl.allocator) == "kpool" else "malloc"
    )
    if allocator != "kpool":
        return
    conf = opts.overrides.get("conf", conf_string(wl.data.get("pool", {})))
    faults = opts.overrides.get("faults", str(wl.data.get("faults", "")))
    found = poolcheck.problem(conf, faults)
    if found is None:
        return
    if found.origin == "KPOOL_CONF":
        raise ConfigError(f"KPOOL_CONF={poolcheck.kpool_conf()} (in the environment): {found.text}")
    key = "faults" if found.origin == "faults" else "conf"
    if key in opts.overrides:
        raise ConfigError(f"--set {key}={opts.overrides[key]}: {found.text}")
    raise ConfigError(f"{wl.path}: the pool settings: {found.text}")


def preflight(workloads: Sequence[Workload], opts: Options, kpdrive: Path | None = None) -> None:
    """Raise ConfigError (exit 2) for anything a worker would refuse at start: the compiled programs
    with every worker's seed and the --set overrides (kpdrive --check, the driver's own parser), and
    the pool settings with KPOOL_CONF (kp_create's parser). A --set is named by itself."""
    if opts.run_id is not None:
        check_run_id(opts.run_id)
    for wl in workloads:
        duration = wl.data.get("duration_ms")
        limit = opts.time_limit_s
        if limit is not None and duration is not None and duration + DURATION_MARGIN_MS > limit * 1000:
            raise ConfigError(
                f"--time-limit {limit:g}: {wl.path} runs for duration_ms {duration}: every worker would be "
                "killed as a hang (give a limit a second or more past its duration)"
            )
    kpdrive = kpdrive or ensure_kpdrive(opts.variant)
    for wl in workloads:
        seeds = [f"seed={wl.seed}", f"seed={wl.seed + wl.processes - 1}"]
        for program in _programs(wl, opts):
            refused = _driver_refusal(kpdrive, program, seeds)
            if refused:
                raise ConfigError(f"{wl.path}: the op driver refuses the compiled workload: {refused}")
            for key, value in opts.overrides.items():
                refused = _driver_refusal(kpdrive, program, [*seeds, f"{key}={value}"])
                if refused:
                    raise ConfigError(f"--set {key}={value}: {refused}")
        _check_conf(wl, opts)


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
    # Called at every poll with the results of the workers that ended in it (often none), as they end (not
    # at the phase's end): their crashes are recorded at once, so that a runner killed mid-workload
    # (SIGKILL, the OOM killer) loses only the workers still running.
    on_ended: Callable[[list[dict[str, Any]]], None] | None = None
    interrupted: bool = False

    def run(self) -> list[dict[str, Any]]:
        self.directory.mkdir(parents=True, exist_ok=True)
        prog_path = self.directory / f"{self.label}.prog"
        prog_path.write_text(self.program)
        env = child_env(_preload(self.allocator))
        # A TSan build stops at its first report, as ASan does: a race leaves the pool's lists damaged, and
        # a worker that goes on mostly hangs until its time limit (the caller's TSAN_OPTIONS win).
        env.setdefault("TSAN_OPTIONS", TSAN_OPTIONS)
        limit = self.opts.time_limit_s or self.wl.time_limit_s
        pending = [self._worker(i, prog_path, env, limit) for i in range(self.wl.processes)]
        running: list[Worker] = []
        done: list[Worker] = []
        results: dict[int, dict[str, Any]] = {}  # of the workers that ended, by index: read once
        t0 = time.monotonic()
        pace = output.Pace(self.opts.progress_s, t0)
        shown = False
        try:
            while pending or running:
                while pending and len(running) < max(1, self.opts.jobs):
                    w = pending.pop(0)
                    w.start()
                    running.append(w)
                time.sleep(POLL_S)
                ended = [w for w in list(running) if w.poll()]
                for w in ended:
                    running.remove(w)
                    done.append(w)
                    results[w.index] = w.result()
                if self.on_ended is not None:  # every poll: a snapshot held back (SNAPSHOT_EVERY_S) goes out
                    self.on_ended([results[w.index] for w in ended])
                if pace.due(time.monotonic()):
                    self._progress(t0, running, done)
                    shown = True
            if shown:  # the closing figure: every worker's final count, the one the report shows
                self._progress(t0, running, done)
        except KeyboardInterrupt:
            # Keep what finished; stop the rest (no orphans) and record them as interrupted.
            self.interrupted = True
            for w in running:
                w.kill(interrupted=True)
            done += running
        return [results.get(w.index) or w.result() for w in sorted(done, key=lambda w: w.index)]

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
        if not crash or crash["kind"] in ("interrupted", "config", NO_SPACE):
            continue
        repro = {
            "workload": wl.path,
            "sha256": wl.sha256,
            "seed": w["seed"],
            "worker": w["worker"],
            "allocator": allocator,
            "phase": phase,
            "op_index": crash.get("op_index"),
            # an integrity record's command prints the findings again (integrity.py)
            "command": crash.get("command") or shlex.join(w["cmd"]),
            "time_limit_s": w.get("time_limit_s"),  # a replay waits as long as the run did
        }
        out.append({**crash, "workload": wl.name, "worker": w["worker"], "reproducer": repro})
    return out


def _record_as_ended(
    wl: Workload, allocator: str, workers: Sequence[dict[str, Any]], phase: str, own_run: str, reports: Path
) -> None:
    """Record the crashes of workers that just ended, each worker's crash (in place) given its signature,
    which the crash record of the workload's end keeps (record_stress records only what has none).
    Recorded at the workload's end alone, a runner killed mid-workload lost every crash of the workers
    that had ended (stress.json is written at each workload's end)."""
    crashes = _crash_records(wl, allocator, workers, phase)
    doc = {"name": wl.name, "processes": wl.processes}
    by_worker = {w["worker"]: w for w in workers}
    for cr, sig in record.record_ended(doc, crashes, reports, own_run):
        by_worker[cr["worker"]]["crash"]["signature"] = sig


def _integrity_crashes(wl: Workload, workers: Sequence[dict[str, Any]], merged: dict[str, Any]) -> None:
    """Workers that exited 0 with integrity errors become crash records (integrity.py), unless the workload
    tolerates that many (slo.max_integrity_errors)."""
    if merged["integrity_errors"] <= int(wl.slo.get("max_integrity_errors", 0)):
        return
    for w in workers:
        found = integrity.crash(w)
        if found is not None:
            w["crash"] = found


def _config_errors(workers: Sequence[dict[str, Any]]) -> list[str]:
    """The distinct messages of workers that refused their configuration (not crashes: nothing ran)."""
    found = [w["crash"]["message"] for w in workers if w.get("crash") and w["crash"]["kind"] == "config"]
    return list(dict.fromkeys(found))


def _lost(workers: Sequence[dict[str, Any]]) -> list[str]:
    """The workers whose results a full disk lost (worker.NO_SPACE: not crashes), one line each."""
    return [
        f"worker {w['worker']}: {w['crash']['message']}"
        for w in workers
        if w.get("crash") and w["crash"]["kind"] == NO_SPACE
    ]


def _ratio(with_i: dict[str, Any], without: dict[str, Any]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for kind in RATIO_KINDS:
        a, b = with_i["latency"].get(kind), without["latency"].get(kind)
        if a and b:
            out[kind] = {p: round(a[p] / b[p], 3) if b[p] else float("nan") for p in RATIO_FIGURES}
    return out


# The system-call verdict is run once more when the daemon waited this long for a CPU in one stretch
# (kpdrive's longest_wait_ms: consecutive 5 ms reads of the kernel's run_delay that found it waiting
# most of the time): twice the 5 ms an allocation path waits for it in the shipped paced workload
# (grow_wait_us). Measured on paced-growth here: quiet, about 1 ms; at a load average of 6.6 on 2 cores,
# 10-45 ms in 10 runs, one of which mapped on the allocation path (25 ms); six busy loops on its one CPU,
# 42-71 ms (2 of 3 mapped). The CI failure that prompted it had the daemon stopped for 213 ms.
STARVED_MS = 10.0
# The verdicts that depend on the daemon keeping ahead, and so on its getting a CPU.
DAEMON_SLOS = frozenset({"max_alloc_path_syscalls"})


def _starved(result: dict[str, Any]) -> str | None:
    """Why result's broken verdict says more about the machine than about kpool, or None: only verdicts
    that need the daemon to keep ahead broke, and the daemon waited STARVED_MS or more for a CPU."""
    bad = [v for v in result["slo"] if not v["ok"]]
    ds = result.get("daemon_sched") or {}
    waited = float(ds.get("longest_wait_ms", 0.0))
    if (
        result["passed"]
        or result["interrupted"]
        or result["crashes"]
        or result["config_errors"]
        or not bad
        or any(v["slo"] not in DAEMON_SLOS for v in bad)
        or waited < STARVED_MS
    ):
        return None
    return f"{'; '.join(result['broken'])} while the grow daemon waited {waited:.0f} ms for a CPU"


def run_workload(wl: Workload, opts: Options, run_dir: Path, kpdrive: Path) -> dict[str, Any]:
    """Run wl's workers (and its baseline); a verdict broken only because the machine kept the daemon off
    every CPU (_starved) is run once more, the first attempt kept under first_attempt and its files under
    attempt-1/."""
    result = _run_workload(wl, opts, run_dir, kpdrive)
    why = _starved(result)
    if why is None:
        return result
    directory = Path(result["workers"][0]["result_file"]).parent if result["workers"] else run_dir / wl.name
    keep = directory / "attempt-1"
    keep.mkdir(parents=True, exist_ok=True)
    for f in directory.glob("*-worker-*"):
        shutil.move(str(f), keep / f.name)
    output.progress(f"{wl.name}: {why}; running it once more")
    again = _run_workload(wl, opts, run_dir, kpdrive)
    again["first_attempt"] = {
        "broken": result["broken"],
        "daemon_waited_ms": float((result.get("daemon_sched") or {}).get("longest_wait_ms", 0.0)),
        "files": str(keep),
    }
    again["rerun"] = f"{why}; run again: {'passed' if again['passed'] else 'broken again'}"
    return again


def _run_workload(wl: Workload, opts: Options, run_dir: Path, kpdrive: Path) -> dict[str, Any]:
    allocator = opts.allocator or wl.allocator
    directory = run_dir / wl.name
    if allocator != "kpool":
        directory = run_dir / f"{wl.name}-{allocator}"

    interrupted = False
    tolerated = int(wl.slo.get("max_integrity_errors", 0))
    so_far: list[dict[str, Any]] = []  # the workers of the running phase that ended
    main: dict[str, Any] = {}  # the main phase's entry, once it ended (a baseline's snapshots hold it)
    snap = {"pending": False, "at": 0.0}  # a worker ended since the last snapshot; when that was written

    def phase(label: str, interference: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        nonlocal interrupted
        so_far.clear()

        def ended(workers: list[dict[str, Any]]) -> None:
            # a worker whose own integrity errors pass the tolerance breaks it for the workload's sum too
            for w in workers:
                doc = w.get("result")
                if doc and integrity_errors(doc) > tolerated:
                    w["crash"] = w.get("crash") or integrity.crash(w)
            if workers and opts.record:
                _record_as_ended(wl, allocator, workers, label, run_dir.name, opts.reports_dir)
            so_far.extend(workers)
            snap["pending"] = snap["pending"] or bool(workers)
            if (
                opts.on_partial is not None
                and snap["pending"]
                and time.monotonic() - snap["at"] >= SNAPSHOT_EVERY_S
            ):
                opts.on_partial(_unfinished(wl, allocator, directory, label, so_far, main))
                snap["pending"], snap["at"] = False, time.monotonic()

        ph = Phase(
            wl,
            label,
            wl.program(interference=interference, allocator=allocator),
            directory,
            allocator,
            kpdrive,
            opts,
            output.progress,
            ended,
        )
        workers = ph.run()
        interrupted = interrupted or ph.interrupted
        merged = merge(workers, int(wl.data.get("outliers", 32)))
        _integrity_crashes(wl, workers, merged)
        return workers, merged

    t0 = time.monotonic()
    workers, merged = phase("main", True)
    main_s = round(time.monotonic() - t0, 3)  # the ops' time: wall_s adds the baseline phase's
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
        "main_wall_s": main_s,
    }
    main.update(result)
    base_workers: list[dict[str, Any]] = []
    if wl.interference and opts.baseline and not interrupted:
        if opts.on_partial is not None:  # the main phase whole, before the baseline's workers start
            opts.on_partial(_unfinished(wl, allocator, directory, "baseline", [], main))
        base_workers, base = phase("baseline", False)
        result["interference"] = {
            "ratio": _ratio(merged, base),
            "baseline_latency": base["latency"],
            "baseline_ops_per_s_per_thread": base["ops_per_s_per_thread"],
        }
        result["crashes"] += _crash_records(wl, allocator, base_workers, "baseline")
    result["config_errors"] = _config_errors([*workers, *base_workers])
    result["slo"] = slo.verdicts(wl.slo, merged, len(result["crashes"]))
    result["broken"] = slo.broken(result["slo"])
    result["broken"] += [f"configuration error: {e}" for e in result["config_errors"]]
    result["broken"] += [f"results lost: {e}" for e in _lost([*workers, *base_workers])]
    result["passed"] = not result["broken"]
    result["wall_s"] = round(time.monotonic() - t0, 3)
    result["interrupted"] = interrupted
    if interrupted:
        result["broken"].append("interrupted before every worker finished")
        result["passed"] = False
    return result


def _unfinished(
    wl: Workload,
    allocator: str,
    directory: Path,
    label: str,
    ended: Sequence[dict[str, Any]],
    main: dict[str, Any],
) -> dict[str, Any]:
    """The workload's stress.json entry while its workers run (Options.on_partial): the workers that
    ended in phase `label`, merged and judged as at the end, marked interrupted and unfinished (no
    verdict: the run may never write the whole). In the baseline phase, the main phase's entry with the
    baseline's crashes so far."""
    workers = sorted(ended, key=lambda w: int(w["worker"]))
    if label == "main":
        merged = merge(workers, int(wl.data.get("outliers", 32)))
        entry: dict[str, Any] = {
            "name": wl.name,
            "file": wl.path,
            "sha256": wl.sha256,
            "allocator": allocator,
            "processes": wl.processes,
            "threads": wl.threads,
            "seed": wl.seed,
            **merged,
            "workers": [_worker_summary(w, directory) for w in workers],
            "crashes": _crash_records(wl, allocator, workers, label),
        }
    else:
        entry = {**main, "crashes": [*main["crashes"], *_crash_records(wl, allocator, workers, label)]}
    entry["config_errors"] = _config_errors(workers)
    entry["slo"] = slo.verdicts(wl.slo, entry, len(entry["crashes"]))
    entry["broken"] = [
        *slo.broken(entry["slo"]),
        f"unfinished: {len(workers)} of {wl.processes} workers of its {label} phase had ended when this "
        "was written (a run that ends writes it again, whole)",
    ]
    entry["passed"] = False
    entry["interrupted"] = True
    entry["unfinished"] = label
    return entry


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


@dataclass
class OpStreamLaunch:
    """The launch of an op-stream workload: kpdrive workers (harness/stress/launch.py)."""

    wl: Workload
    kpdrive: Path | None = None
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.name = self.wl.name

    def _driver(self, opts: Options) -> Path:
        if self.kpdrive is None:
            self.kpdrive = ensure_kpdrive(opts.variant)
        return self.kpdrive

    def preflight(self, opts: Options) -> None:
        preflight([self.wl], opts, self._driver(opts))

    def run(self, opts: Options, run_dir: Path) -> dict[str, Any]:
        return run_workload(self.wl, opts, run_dir, self._driver(opts))


def launch(wl: AnyWorkload, kpdrive: Path | None = None) -> Launch:
    """The launch of a workload of either kind."""
    if isinstance(wl, ProgramWorkload):
        from harness.stress.program import ProgramLaunch

        return ProgramLaunch(wl)
    return OpStreamLaunch(wl, kpdrive)


def _refuse_finished(run_dir: Path) -> None:
    """A --run-id folder that already holds a report is another run's: a second run there would write
    its stress.json over the first's (and its workloads' folders over theirs). Not a campaign's job:
    `kpool campaign --resume` runs a job it stopped again under the same --run-id."""
    if (run_dir / "stress.json").exists() and not os.environ.get(record.RUN_ENV):
        raise UsageError(
            f"--run-id {run_dir.name}: {run_dir / 'stress.json'} is the report of an earlier run; give "
            "another --run-id (or none, for a new folder)"
        )


def check_distinct_names(workloads: Sequence[AnyWorkload]) -> None:
    """A workload's name is its folder in the run (and its key in the results): two files of one name
    would write over each other. UsageError naming both."""
    by_name: dict[str, Path] = {}
    for wl in workloads:
        first = by_name.setdefault(wl.name, Path(wl.path))
        if first.resolve() != Path(wl.path).resolve():  # one file named two ways is one
            raise UsageError(
                f"{wl.path}: workload name {wl.name!r} is {first}'s too; one run needs distinct names"
            )


def run(workloads: Sequence[AnyWorkload], opts: Options) -> dict[str, Any]:
    """Run every workload in turn; write and return the report. The run holds its folder's lock
    (harness/runlock.py) from start to end: a second run given the same --run-id meanwhile is refused."""
    if opts.run_id is not None:
        check_run_id(opts.run_id)
        _refuse_finished(opts.reports_dir / opts.run_id)
    check_distinct_names(workloads)
    needs_driver = any(isinstance(wl, Workload) for wl in workloads)
    kpdrive = ensure_kpdrive(opts.variant) if needs_driver else None
    launches = [launch(wl, kpdrive) for wl in workloads]
    for ln in launches:
        ln.preflight(opts)
    if opts.run_id:  # named by the caller (the campaign: inside a run folder of its own)
        run_id, run_dir = opts.run_id, opts.reports_dir / opts.run_id
    else:
        run_id, run_dir = new_run_dir(opts.reports_dir)
    with runlock.hold(run_dir, command="stress"):
        _refuse_finished(run_dir)  # one that ended between the check above and the lock
        return _run(workloads, launches, opts, run_id, run_dir, kpdrive)


def _run(
    workloads: Sequence[AnyWorkload],
    launches: Sequence[Launch],
    opts: Options,
    run_id: str,
    run_dir: Path,
    kpdrive: Path | None,
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "run_id": run_id,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "kpdrive": str(kpdrive or ""),
        "variant": opts.variant,
        "jobs": opts.jobs,
        "workloads": [],
        "passed": True,
    }
    path = run_dir / "stress.json"
    failed: list[OSError] = []

    def partial(entry: dict[str, Any]) -> None:
        """stress.json with the finished workloads and the running one's entry so far (unfinished): a
        runner killed now leaves it. One that cannot be written (a full disk) is said once; the run goes
        on, and its end writes the whole or fails as before."""
        doc = {**report, "workloads": [*report["workloads"], entry], "passed": False, "interrupted": True}
        try:
            _write_report(path, {**doc, "unfinished": entry["name"]})
        except OSError as exc:
            if not failed:
                output.warn(f"{path}: cannot write the results so far: {exc.strerror or exc}")
            failed.append(exc)

    opts = dataclasses.replace(opts, on_partial=partial)
    for wl, ln in zip(workloads, launches, strict=True):
        try:
            if isinstance(wl, Workload):
                output.progress(
                    f"{wl.name}: {wl.processes} process(es) x {wl.threads} thread(s) from {wl.path}"
                )
            else:
                output.progress(f"{wl.name}: the program {wl.command[0]} from {wl.path}")
            result = ln.run(opts, run_dir)
            report["workloads"].append(result)
            report["passed"] = report["passed"] and result["passed"]
            if any(c.get("signature") for c in result["crashes"]):  # recorded by the launch (a program's)
                report["crash_db"] = str(record.db_path(opts.reports_dir))
                report["crash_run"] = record.run_id(run_id)
            record.record_stress(report, result, opts.reports_dir)  # `kpool triage list` shows them
            # until the last workload's end the file is a snapshot of a run still going (the next
            # workload's first ending worker writes the next): a runner that dies between two left
            # "passed": true for a run that never ran the rest
            rest = [w.name for w in workloads[len(report["workloads"]) :]]
            going = (
                {"passed": False, "interrupted": True, "unfinished": rest[0], "not_run": rest} if rest else {}
            )
            try:
                _write_report(path, {**report, **going})
            except OSError as exc:
                # a full disk: the next workload's workers could not write their results either; the
                # caller prints what finished (report["unwritten"] says why the file lacks it)
                report["unwritten"] = f"{path}: {exc.strerror or exc}"
                report["not_run"] = [w.name for w in workloads[len(report["workloads"]) :]]
                report["passed"] = False
                break
        except KeyboardInterrupt:
            # outside the workers' phase (which keeps its workload, marked): before a workload's workers
            # (its driver program written), or while a finished one is recorded (a database held
            # locked by another run): the report keeps every workload that finished
            report["interrupted"], report["passed"] = True, False
            break
        if result["interrupted"]:
            report["interrupted"] = True
            break
    report["path"] = str(path)
    try:
        _write_report(path, {k: v for k, v in report.items() if k != "unwritten"})
        report.pop("unwritten", None)  # room again: the file holds every workload that ran
    except OSError as exc:
        report["unwritten"] = f"{path}: {exc.strerror or exc}"
    return report


def _write_report(path: Path, report: dict[str, Any]) -> None:
    """stress.json, whole or not at all: a rewrite that fails (a full disk, a kill) leaves the last one,
    with the workloads that finished before, not a file cut short."""
    atomic.write_text(path, json.dumps(report, indent=1) + "\n")
