"""Replay: run a reproducer, take the signature of what it printed, compare with the stored one.

The reproduction rate of N runs is the share whose signature matches. A run that outlives the reproducer's
timeout is killed (its whole process group) and read as a timeout. Recheck replays every open signature
and marks it fixed (rate 0), known, i.e. still crashing (rate 1) or flaky (in between).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import tempfile
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from harness import atomic, child_faults, output
from harness.errors import KpoolError
from harness.triage import signature as S
from harness.triage.crash import Reproducer
from harness.triage.db import OPEN_STATUSES, CrashDB, CrashDBError, SignatureRow

DEFAULT_RUNS = 5  # replays per signature: tells "always" from "sometimes" without taking all night
# What the preload reads, and its file's name (harness/run.py, allocator/preload/preload.c)
STATS_ENV = "KPOOL_STATS_OUT"
PRELOAD_NAME = "libkpool-preload.so"
_OUTPUT_MAX = 1 << 20  # bytes of a replay's output kept for its signature (its tail)
# How long a replay's output is read past the program's end (what a process it left behind still holds),
# and, after that process is stopped, past its end: a writer that is gone is the pipe's end at once.
_LEFT_S = 1.0
_POLL_S = 0.1  # how often the reader looks whether it was told to stop (a select timeout)


@dataclass(frozen=True)
class RunOutcome:
    signature: S.Signature
    returncode: int | None
    timed_out: bool
    output: str


@dataclass(frozen=True)
class ReplayResult:
    runs: int
    reproduced: int
    others: Counter[str] = field(default_factory=Counter)  # titles of the other outcomes, by count
    # Ctrl-C (or SIGTERM) stopped the replays: `runs` counts those that ended, not those asked for
    interrupted: bool = False

    @property
    def rate(self) -> float:
        return self.reproduced / self.runs if self.runs else 0.0


def run_once(repro: Reproducer, source: str = "", depth: int = S.DEFAULT_DEPTH) -> RunOutcome:
    """Run the reproducer's command once and compute the signature of its output (stdout + stderr)."""
    argv, env = repro.command()
    with tempfile.TemporaryDirectory(prefix="kpool-replay-") as figures:
        # a program on kpool's preload (`kpool run`'s reproducer) writes its pool's figures here: their
        # integrity events are its signature's when its output holds none, as when it was recorded
        on_preload = repro.kind == "command" and PRELOAD_NAME in env.get("LD_PRELOAD", "")
        extra = {STATS_ENV: figures} if on_preload else {}
        outcome = _run_once(repro, argv, {**env, **extra}, source, depth)
        if not on_preload:
            return outcome
        text = S.with_pool_events(outcome.output, _figures(Path(figures)))
        # the processes it started that a fault signal killed, as kpool run's record says them (run.crash_of)
        children = child_faults.read(Path(figures), parent=os.getpid())
        text += child_faults.lines(children)
    returncode = outcome.returncode
    if children and not outcome.timed_out and (returncode or 0) >= 0:
        returncode = -children[0].signal  # the program went on: the first child's death is the crash
    if text == outcome.output and returncode == outcome.returncode:
        return outcome
    sig = S.compute(
        text,
        returncode=returncode,
        guess="timeout" if outcome.timed_out else None,
        source=source,
        depth=depth,
    )
    return RunOutcome(sig, returncode, outcome.timed_out, text)


def _figures(folder: Path) -> list[dict[str, Any]]:
    """The figures the preload wrote into folder (one file a process); one cut short is skipped."""
    docs = []
    for path in sorted(folder.glob("kpool-*.json")):
        with contextlib.suppress(OSError, ValueError):
            doc = atomic.loads(atomic.read_bytes(path))
            if isinstance(doc, dict):
                docs.append(doc)
    return docs


def _read_output(pipe: IO[bytes], out: bytearray, stop: threading.Event) -> None:
    """Read a replay's output to its end, or until stop is set; its last _OUTPUT_MAX bytes are kept."""
    fd = pipe.fileno()
    while not stop.is_set():
        if not select.select([fd], [], [], _POLL_S)[0]:
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return
        out += chunk
        if len(out) > 2 * _OUTPUT_MAX:
            del out[: len(out) - _OUTPUT_MAX]


def _run_once(repro: Reproducer, argv: list[str], env: dict[str, str], source: str, depth: int) -> RunOutcome:
    try:
        proc = subprocess.Popen(
            argv,
            cwd=repro.cwd,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so that a timeout kills its children too
        )
    except OSError as exc:
        raise KpoolError(f"cannot run reproducer {argv[0]!r}: {exc}") from exc
    timed_out = False
    stacks = ""
    assert proc.stdout is not None
    out = bytearray()
    stop = threading.Event()
    reader = threading.Thread(target=_read_output, args=(proc.stdout, out, stop), daemon=True)
    reader.start()
    try:
        try:
            proc.wait(timeout=repro.timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            # a stress worker's: every thread's stack before the kill, as the worker's at its time limit
            # (the signature of its hang is the thread that hangs, and without them its replay never matched)
            from harness.stress.worker import capture_stacks

            try:
                if repro.kind == "workload":
                    stacks = capture_stacks(proc.pid, f"killed at its time limit ({repro.timeout_s:g} s)")
            finally:  # ^C while gdb runs: the reproducer, in a session of its own, is not left running
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        # its output is read to its end, which a process it left behind (`server &`) holds: the replay
        # waited for that process, up to the time limit, and then read as a timeout. What it writes within
        # _LEFT_S of the program's end is read, then what is left of the program's session is stopped
        reader.join(_LEFT_S)
        if reader.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            reader.join(_LEFT_S)
    except BaseException:  # ^C, SIGTERM: its session is out of the terminal's reach; it was left running
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    finally:
        stop.set()  # a process that left the session too: no longer read
        reader.join()
        proc.stdout.close()
    text = out[-_OUTPUT_MAX:].decode(errors="replace")
    if stacks:
        text = f"{stacks}\n{text}"
    sig = S.compute(
        text,
        returncode=proc.returncode,
        guess="timeout" if timed_out else None,
        source=source,
        depth=depth,
    )
    return RunOutcome(sig, proc.returncode, timed_out, text)


def outcome_title(outcome: RunOutcome) -> str:
    """What a run that did not reproduce did instead: another crash's title, or that it ran clean."""
    if not outcome.timed_out and outcome.returncode == 0 and outcome.signature.kind == "unknown":
        return "no crash (exit 0)"
    return outcome.signature.title


def replay(
    repro: Reproducer,
    expected: str,
    runs: int = DEFAULT_RUNS,
    source: str = "",
    on_run: Callable[[int, RunOutcome], None] | None = None,
) -> ReplayResult:
    """Run `repro` `runs` times; count the runs whose signature hash is `expected`."""
    if runs < 1:
        raise KpoolError(f"replay needs at least one run, not {runs}")
    reproduced = 0
    others: Counter[str] = Counter()
    for i in range(runs):
        try:
            outcome = run_once(repro, source)
        except KeyboardInterrupt:  # the replays that ended are a rate too: kept, unless there is none
            if i == 0:
                raise
            return ReplayResult(i, reproduced, others, interrupted=True)
        if outcome.signature.hash == expected:
            reproduced += 1
        else:
            others[outcome_title(outcome)] += 1
        if on_run:
            on_run(i, outcome)
    return ReplayResult(runs, reproduced, others)


def replay_signature(
    db: CrashDB, row: SignatureRow, runs: int, update_status: bool
) -> tuple[ReplayResult, str]:
    """Replay a stored signature with its best reproducer; store the rate (and status, for recheck)."""
    repro = db.reproducer(row.id)
    if repro is None:
        raise KpoolError(f"signature {row.id} has no reproducer")
    gone = repro.missing()
    if gone is not None:
        raise KpoolError(f"signature {row.id}: its reproducer's {gone} is gone (moved or deleted): no replay")
    result = replay(repro, row.hash, runs, source=db.source(row.id))
    # an interrupted replay's rate is stored (of the runs that ended), but is no verdict of a recheck
    status = db.set_replay(row.id, result.rate, result.runs, update_status and not result.interrupted)
    return result, status


def recheck(
    db: CrashDB,
    runs: int = DEFAULT_RUNS,
    on_signature: Callable[[SignatureRow, ReplayResult | None, str], None] | None = None,
) -> dict[int, str]:
    """Replay every open signature; mark it fixed / known (still crashing) / flaky. Returns id -> status.

    A signature without a reproducer, whose reproducer's input is gone, or whose stored reproducer is
    damaged (said, and the others rechecked: it stopped the whole recheck), cannot be rechecked: it keeps
    its status.
    """
    statuses: dict[int, str] = {}
    for row in db.signatures(OPEN_STATUSES):
        try:
            repro = db.reproducer(row.id)
        except CrashDBError as exc:
            output.warn(str(exc))
            repro = None
        if repro is None or repro.missing() is not None:  # its input gone: not a sign of a fix
            statuses[row.id] = row.status
            if on_signature:
                on_signature(row, None, row.status)
            continue
        result, status = replay_signature(db, row, runs, update_status=True)
        statuses[row.id] = status
        if on_signature:
            on_signature(row, result, status)
        if result.interrupted:  # said above with its rate; the rest are not rechecked
            raise KeyboardInterrupt
    return statuses
