"""Crash inputs a killed run left unrecorded: found, replayed, and handed to the caller to record.

libFuzzer writes a crash input into <run>/crashes/ the moment it finds it; `kpool fuzz` replays it (for
its report, <input>.txt) and records it in the crash database once libFuzzer has ended, and a campaign
records its fuzz jobs' crashes once its jobs have ended. A kpool killed in between (kill -9, the machine
going down) leaves the input on disk and nowhere else.

The next `kpool fuzz` (before it fuzzes) and `kpool campaign` (when it triages) over the same reports
folder look for such inputs with `left()`: every crash input of a fuzz run's folder (<reports>/<run>/
crashes/, or a campaign's <reports>/<run>/fuzz-<target>/crashes/) that the crash database does not hold by
its path from the run folder on (TAILS), where the run has ended: nobody holds the folder's lock, nor the
campaign's around it (harness/runlock.py). A run folder is one with a run.lock: its run wrote it before it
fuzzed, and a kill leaves it; a crashes/ folder without one was never a kpool run's, and its files are no
crash of kpool's. A run still going records its own. Each input is replayed as its run would have
(runner._keep_reports, on the build of the run's planted bug; one replayed before the kill keeps its
report), and the locks are held until the caller has recorded them, so that two runs sweeping at once
record each input once.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import atomic, output, runlock
from harness.errors import KpoolError
from harness.fuzz import TARGETS
from harness.triage.db import CrashDB, MissingCrashDB


@dataclass
class Left:
    """The crash inputs one ended run left unrecorded."""

    folder: Path  # the fuzz run's folder
    plant: int  # the planted bug of its build (0: none)
    # as fuzz.json's results: target, crashes, replays, log
    results: list[dict[str, Any]] = field(default_factory=list)


# A recorded input is known by its path's last parts, from its run's folder on (<run>/crashes/<input>, or
# a campaign's <run>/fuzz-<target>/crashes/<input>), not by the whole path: a reports folder moved, or
# restored from a CI cache into another workspace, keeps its database's absolute paths. Run folders are
# named by their time and inputs by their content's hash, so the tail names one input.
TAILS = (3, 4)


def _recorded(db: Path) -> set[tuple[str, ...]]:
    try:
        paths = [Path(p).parts for p in CrashDB.open(db).inputs()]
    except MissingCrashDB:
        return set()
    return {parts[-n:] for parts in paths for n in TAILS if len(parts) >= n}


def _is_recorded(path: Path, reports: Path, recorded: set[tuple[str, ...]]) -> bool:
    return path.relative_to(reports).parts in recorded


def _unrecorded(reports: Path, recorded: set[tuple[str, ...]], skip: Path | None) -> dict[Path, list[Path]]:
    """Run folder -> its crash inputs the database does not hold."""
    from harness.fuzz import runner

    out: dict[Path, list[Path]] = {}
    for crashes in sorted([*reports.glob("*/crashes"), *reports.glob("*/*/crashes")]):
        folder = crashes.parent
        if skip is not None and folder.resolve().is_relative_to(skip.resolve()):
            continue
        if not os.path.lexists(folder / runlock.NAME):  # no kpool run's folder: its files are not ours
            continue
        found = [p for t in TARGETS for p in runner._artifacts(crashes, t)]
        inputs = [p for p in found if not _is_recorded(p, reports, recorded)]
        if inputs:
            out[folder] = inputs
    return out


def _take(folder: Path, reports: Path, held: dict[Path, runlock.RunLock]) -> bool:
    """Take (into held) the locks of the folder and of the folders around it up to reports (a campaign's);
    False, and nothing more held, when a run holds one of them."""
    new: list[Path] = []
    for f in [folder, *folder.parents]:
        if f == reports or not f.is_relative_to(reports):
            break
        if f in held:
            continue
        try:
            lock = runlock.take(f)
        except runlock.Unusable as exc:  # said, not taken for a run still going (and silently skipped)
            output.warn(f"{folder}: its crash inputs are left alone: {exc}")
            lock = None
        if lock is None:
            for n in new:
                held.pop(n).release()
            return False
        held[f], new = lock, [*new, f]
    return True


def _plant(lock: runlock.RunLock) -> int:
    """The planted bug of the run's build: from its lock, else its fuzz.json, else none."""
    plant = lock.info().get("plant")
    if plant is None:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            plant = atomic.loads(atomic.read_bytes(lock.folder / "fuzz.json")).get("plant")
    return int(plant) if isinstance(plant, int) else 0


def _layout(lock: runlock.RunLock) -> str:
    """The layout the run narrowed its pools to (runner.resolve_layout): from its lock, "" (any) when the
    lock does not say (a run of a kpool before session 23, which had none but by the environment)."""
    layout = lock.info().get("layout")
    return layout if isinstance(layout, str) else ""


def _replay(folder: Path, inputs: list[Path], plant: int, layout: str = "") -> Left:
    from harness.fuzz import runner

    left = Left(folder, plant)
    for target in TARGETS:
        found = [p for p in inputs if p.name.startswith(f"{target}-")]
        if not found:
            continue
        try:
            env = runner.target_env(target, plant)
            env.pop(runner.LAYOUT_ENV, None)
            if layout:
                env[runner.LAYOUT_ENV] = layout
        except KpoolError as exc:  # the build failed: they wait for a later run, this one goes on
            output.warn(f"{folder}: the {target} crash inputs cannot be replayed, so stay unrecorded: {exc}")
            continue
        runner._histories(found, folder / "history" / target)
        replays = runner._keep_reports(target, found, env)
        log = folder / "logs" / f"{target}.log"
        crashes = [str(p) for p in found]
        left.results.append(
            {"target": target, "crashes": crashes, "replays": replays, "log": str(log), "layout": layout}
        )
    return left


@contextlib.contextmanager
def left(reports: Path, db: Path, skip: Path | None = None) -> Iterator[list[Left]]:
    """The crash inputs ended runs under reports left out of the crash database at db, replayed; the runs'
    folders stay locked until the block ends (record them in it). skip: the caller's own run folder."""
    reports = reports.absolute()
    if not reports.is_dir():
        yield []
        return
    held: dict[Path, runlock.RunLock] = {}
    try:
        try:
            candidates = _unrecorded(reports, _recorded(db), skip)
        except KpoolError as exc:  # not a crash database, locked: what is recorded is unknown
            output.warn(f"crash inputs killed runs left unrecorded are not looked for: {exc}")
            candidates = {}
        taken = {f: inputs for f, inputs in candidates.items() if _take(f, reports, held)}
        recorded = _recorded(db) if taken else set()  # again: a run may have recorded them as it ended
        found = []
        for folder, all_inputs in taken.items():
            inputs = [p for p in all_inputs if not _is_recorded(p, reports, recorded)]
            if not inputs:
                continue
            output.warn(
                f"{folder}: {len(inputs)} crash input(s) its run never recorded (it was killed, or the"
                " machine stopped, before it could): replaying and recording them now"
            )
            found.append(_replay(folder, inputs, _plant(held[folder]), _layout(held[folder])))
        yield found
    finally:
        for lock in held.values():
            lock.release()
