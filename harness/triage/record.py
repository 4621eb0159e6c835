"""From what a runner found to rows of the crash database: every command that finds a crash records it.

`kpool fuzz` and `kpool stress` record their crashes themselves (record_fuzz, record_stress) in the crash
database of their reports folder, under their own run id; the campaign tells its jobs its own database and
run id through the environment (KPOOL_CRASH_DB, KPOOL_CRASH_RUN), so that a job's crashes are recorded
once, under the campaign's run. Each runner writes in its JSON where it recorded (`crash_db`, `crash_run`)
and each crash's signature hash, and the campaign records only what no job recorded in its database.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import output, paths
from harness.errors import KpoolError
from harness.triage import signature
from harness.triage.crash import DEFAULT_TIMEOUT_S, Crash, Reproducer
from harness.triage.db import CrashDB, Recorded

if TYPE_CHECKING:
    from harness.fuzz.orphans import Left

# Set by the campaign for its jobs: the database they record in, and the run id they record under.
DB_ENV = "KPOOL_CRASH_DB"
RUN_ENV = "KPOOL_CRASH_RUN"
DB_NAME = "crashes.sqlite"
# What a fuzz reproducer needs from the runner's environment to rerun the input the same way.
# Reproducers run here: the folder holding the harness package (a checkout's root).
ROOT = paths.PACKAGE_DIR.parent
# KPOOL_FUZZ_LAYOUT: the pools an input's first byte picks among (fuzz_targets.c): the same bytes pick
# another pool without it.
FUZZ_ENV = ("KPOOL_LIB", "LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS", "PYTHONPATH", "KPOOL_FUZZ_LAYOUT")


def db_path(reports: Path, env: Mapping[str, str] = os.environ) -> Path:
    """Where a runner records: $KPOOL_CRASH_DB, else <reports>/crashes.sqlite (absolute)."""
    return Path(env.get(DB_ENV) or reports / DB_NAME).absolute()


def run_id(own: str, env: Mapping[str, str] = os.environ) -> str:
    """The run a runner records under: $KPOOL_CRASH_RUN (a campaign's), else its own run id."""
    return env.get(RUN_ENV) or own


# ---- fuzz ---------------------------------------------------------------------------------------------


def fuzz_reproducer(
    target: str, input_path: str, env: Mapping[str, str], history: str | None = None
) -> Reproducer:
    """The input alone; or, for a crash that needs the state earlier inputs left in the pools, every
    input since the pools were made replayed in one process (`<target>.py --kpool-history FILE`)."""
    from harness.fuzz import runner
    from harness.fuzz.target import HISTORY_FLAG

    script = str(runner.script(target))
    argv = (sys.executable, script, "-timeout=10", "${input_path}")
    meta: dict[str, Any] = {}
    if history:
        argv = (sys.executable, script, HISTORY_FLAG, "${history}")
        meta = {"history": history, "shrink": "harness.triage.minimize:history_shrink"}
    return Reproducer(
        argv=argv,
        kind="fuzz",
        env={k: env[k] for k in FUZZ_ENV if k in env},
        cwd=str(ROOT),
        input_path=input_path,
        target=target,
        meta=meta,
    )


def fuzz_crashes(results: Sequence[Mapping[str, Any]], run: str, plant: int) -> list[Crash]:
    """The crashes of fuzz.json's results: each crash input with the report of its replay (<input>.txt)."""
    from harness.fuzz import runner

    out = []
    for r in results:
        target = str(r.get("target", "?"))
        if not r.get("crashes"):
            continue
        env = runner.target_env(target, plant)
        # the layout the run narrowed its pools to (fuzz.json), not this process's environment's
        env.pop(runner.LAYOUT_ENV, None)
        if r.get("layout"):
            env[runner.LAYOUT_ENV] = str(r["layout"])
        replays = r.get("replays") or {}
        for path in r["crashes"]:
            how = replays.get(path) or {}
            report = Path(path + ".txt")
            text = signature.read_output(report) if report.exists() else ""
            if not text or how.get("reproducer") == "none" or (not how and _replay_exit_0(text)):
                # Neither the input alone nor the inputs before it crash again: the report is the one
                # in the fuzzing log, and the crash is recorded as non-reproducible (with its rate).
                log = Path(str(r.get("log", "")))
                # the part signing reads: a night's log in fork mode is hundreds of MB
                text = signature.read_output(log) if log.is_file() else text
                report = log
            out.append(
                Crash(
                    text=text,
                    run_id=run,
                    source=f"fuzz:{target}",
                    reproducer=fuzz_reproducer(target, path, env, how.get("history")),
                    text_path=str(report),
                )
            )
    return out


def _replay_exit_0(text: str) -> bool:
    first = text.split("\n", 1)[0]
    return first.startswith("# kpool fuzz replay") and first.endswith(": exit 0")


def fuzz_replays(results: Sequence[Mapping[str, Any]]) -> list[tuple[int, int] | None]:
    """(reproduced, runs) of each crash of fuzz_crashes(results), in its order; None when not replayed."""
    out: list[tuple[int, int] | None] = []
    for r in results:
        replays = r.get("replays") or {}
        for path in r.get("crashes") or []:
            how = replays.get(path)
            out.append((int(how["reproduced"]), int(how["runs"])) if how else None)
    return out


# ---- stress -------------------------------------------------------------------------------------------


def _program_keys(argv: list[str], cwd: Path) -> dict[str, str]:
    """The driver keys a kpdrive command runs with: its program file's lines, then its key=value
    arguments (kpdrive reads them in that order, a later key winning). {} when the program is gone."""
    if len(argv) < 2 or "=" in argv[1]:
        return {}
    try:
        lines = (cwd / argv[1]).read_text().splitlines()
    except OSError:
        return {}
    keys: dict[str, str] = {}
    for line in [*lines, *argv[2:]]:
        key, eq, value = line.partition("=")
        if not eq:
            continue
        keys[key.strip()] = value.strip()
        if key.strip() == "duration_ms":  # the driver: a duration clears the op count
            keys.pop("count", None)
    return keys


def workload_reproducer(rep: Mapping[str, Any]) -> Reproducer:
    """A worker's replay command, with its size as fields the command takes through placeholders
    (count=${ops} threads=${threads}), so that minimisation can cut them. The command replays one worker:
    one process (the workload's own count of processes is kept in meta as workload_processes)."""
    argv = shlex.split(str(rep.get("command", "true")))
    # an integrity record's command runs kpdrive through harness.stress.integrity: kpdrive's keys follow it
    wrapped = 3 if argv[1:3] == ["-m", "harness.stress.integrity"] else 0
    keys = _program_keys(argv[wrapped:], ROOT)
    count = keys.get("count", "")
    ops = int(count) if count.isdigit() and int(count) > 0 else None
    threads = int(keys["threads"]) if keys.get("threads", "").isdigit() else None
    if ops is not None:
        argv.append("count=${ops}")
    if threads is not None:
        argv.append("threads=${threads}")
    meta = {k: rep[k] for k in ("op_index", "phase", "allocator") if rep.get(k) is not None}
    if rep.get("processes") is not None:
        meta["workload_processes"] = rep["processes"]
    # the time limit the worker ran under: a hang killed at 3 s replays for 3 s, not for the default 120
    limit = rep.get("time_limit_s")
    timeout_s = float(limit) if isinstance(limit, int | float) and limit > 0 else DEFAULT_TIMEOUT_S
    return Reproducer(
        argv=tuple(argv),
        kind="workload",
        cwd=str(ROOT),
        workload=rep.get("workload"),
        sha256=rep.get("sha256"),
        seed=rep.get("seed"),
        worker=rep.get("worker"),
        ops=ops,
        processes=1 if keys else None,
        threads=threads,
        meta=meta,
        timeout_s=timeout_s,
    )


def stress_crash(w: Mapping[str, Any], cr: Mapping[str, Any], run: str) -> Crash:
    """One crash record of stress.json's workload `w` as a Crash."""
    rep = {"processes": w.get("processes"), **cr.get("reproducer", {})}
    text = cr.get("sanitizer_report") or cr.get("stderr_tail") or ""
    if cr.get("thread_stacks"):  # a worker killed at its time limit: every thread's stack (stress/stacks.py)
        text = f"{cr['thread_stacks']}\n{text}"
    if cr.get("signal_name"):
        text += f"\nkpool: worker killed by {cr['signal_name']}\n"
    return Crash(
        text=text,
        run_id=run,
        source=f"workload:{w.get('name', '?')}",
        reproducer=workload_reproducer(rep),
        returncode=cr.get("returncode"),
        kind="timeout" if cr.get("kind") == "timeout" else None,
    )


def stress_crashes(doc: Mapping[str, Any], run: str) -> list[Crash]:
    return [stress_crash(w, cr, run) for w in doc.get("workloads", []) for cr in w.get("crashes", [])]


# ---- recording ----------------------------------------------------------------------------------------


def record(
    crashes: Sequence[Crash], path: Path, replays: Sequence[tuple[int, int] | None] = ()
) -> list[Recorded]:
    """Record each crash, with the (reproduced, runs) of its runner's replay (a crash that never reproduced
    is listed as non-reproducible with that rate, not left unknown), in one transaction; a database that
    cannot be written is a warning (the run's results stand)."""
    if not crashes:
        return []
    try:
        return CrashDB(path).record_all(crashes, replays)
    except KpoolError as exc:
        output.warn(f"the crashes were not recorded in {path}: {exc}")
        return []


def record_fuzz(summary: dict[str, Any], reports: Path, own_run: str, plant: int) -> None:
    """Record fuzz.json's crashes (summary, changed in place: crash_db, crash_run, signatures)."""
    path, run = db_path(reports), run_id(own_run)
    for r in summary["results"]:
        recorded = record(fuzz_crashes([r], run, plant), path, fuzz_replays([r]))
        if recorded:
            r["signatures"] = {c: rec.hash for c, rec in zip(r["crashes"], recorded, strict=True)}
            summary["crash_db"], summary["crash_run"] = str(path), run
            _say(recorded, path)


def record_left(left: Sequence[Left], reports: Path, own_run: str) -> list[dict[str, Any]]:
    """Record the crash inputs killed runs left unrecorded (harness/fuzz/orphans.py's Left, replayed) under
    this run: per input, {"input", "signature", "status", "from": its run's folder}."""
    path, run = db_path(reports), run_id(own_run)
    out: list[dict[str, Any]] = []
    everything: list[Recorded] = []
    for one in left:
        for r in one.results:
            recorded = record(fuzz_crashes([r], run, one.plant), path, fuzz_replays([r]))
            everything += recorded
            for crash, rec in zip(r["crashes"], recorded, strict=False):
                out.append(
                    {"input": crash, "signature": rec.hash, "status": rec.status, "from": str(one.folder)}
                )
    if everything:
        _say(everything, path)
    return out


def record_stress(report: dict[str, Any], workload: dict[str, Any], reports: Path) -> None:
    """Record one workload's crashes of stress.json (changed in place: crash_db, crash_run, signature)."""
    path, run = db_path(reports), run_id(str(report["run_id"]))
    todo = [cr for cr in workload.get("crashes", []) if not cr.get("signature")]
    recorded = record([stress_crash(workload, cr, run) for cr in todo], path)
    for cr, rec in zip(todo, recorded, strict=False):
        cr["signature"] = rec.hash
    if recorded:
        report["crash_db"], report["crash_run"] = str(path), run
        _say(recorded, path)


def record_ended(
    workload: Mapping[str, Any], crashes: Sequence[dict[str, Any]], reports: Path, own_run: str
) -> list[tuple[dict[str, Any], str]]:
    """Record crash records of one workload's workers as they end (the runner goes on): each recorded
    one with its signature's hash."""
    path, run = db_path(reports), run_id(own_run)
    recorded = record([stress_crash(workload, cr, run) for cr in crashes], path)
    if recorded:
        _say(recorded, path)
    return [(cr, rec.hash) for cr, rec in zip(crashes, recorded, strict=False)]


def _say(recorded: Sequence[Recorded], path: Path) -> None:
    new = sum(1 for r in recorded if r.new)
    output.progress(
        f"{len(recorded)} crash(es) recorded in {path} ({len({r.hash for r in recorded})} signature(s),"
        f" {new} new): {output.shell_join(['kpool', 'triage', '--db', str(path), 'list'])}"
    )


def recorded_in(doc: Mapping[str, Any], path: Path) -> bool:
    """Whether a runner's JSON says it recorded its crashes in the database at path."""
    where = doc.get("crash_db")
    return bool(where) and Path(str(where)).resolve() == path.resolve()
