"""Trends across runs, the morning after: per night (each run with a record, summary.json) the crash
signatures that were new, known, fixed and flaky, the fuzz coverage and the p99 per workload; and per
signature its history across the runs. Read from what runs leave: their summary.json and the crash
database of the reports folder (reports/crashes.sqlite), so that no runner has to write anything more.

How a signature's state on a night is decided (each run of the index, oldest first; a run of the
database that has no record, such as a `kpool fuzz` run, counts where the signature was seen in it):

- new: seen, and never before (or seen again in this run after `kpool triage recheck` called it fixed);
- known: seen, and seen the run before too;
- flaky: seen, after a run in which it was not (it comes and goes), or its reproducer replays only
  sometimes (status flaky in the database);
- fixed: not seen, seen the run before, and never seen since.

A run stopped before it ended (interrupted) that did not see a signature is left out of its history: it
may never have run the job that finds it.

Without a crash database a night counts its own record's crashes (new, and known for the rest), and
fixed and flaky are unknown (None).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property

from harness.jobs.model import ENDED_STATES
from harness.report.model import Latency, RunReport, WorkloadResult
from harness.triage.db import FLAKY, NEW, CrashDB, Occurrence, SignatureRow

NEW_STATE, KNOWN_STATE, FLAKY_STATE, FIXED_STATE = "new", "known", "flaky", "fixed"
NOT_SEEN = "not seen"
# The operation whose p99 stands for a workload in the nights table: allocation, the one every workload
# does (a workload without it shows its first operation's).
P99_OP = "alloc"


@dataclass(frozen=True)
class Sighting:
    """One run in a signature's history; or, for runs in a row where it was not seen, all of them
    (run_id the first, `through` the last, `runs` how many): a history stays as long as its events, not
    as long as the index."""

    run_id: str
    started: float  # the run's start (its record's), else the time of the signature's first occurrence in it
    in_index: bool  # the run has a record (a page of its own)
    occurrences: int  # 0: not seen in this run
    sources: tuple[str, ...]
    state: str  # new, known, flaky, fixed, "not seen"
    through: str = ""  # the last of several runs in a row where it was not seen
    runs: int = 1


@dataclass(frozen=True)
class SignatureHistory:
    row: SignatureRow
    sightings: list[Sighting]

    @cached_property
    def _states(self) -> dict[str, str]:
        return {s.run_id: s.state for s in self.sightings}

    def state(self, run_id: str) -> str:
        return self._states.get(run_id, "")


@dataclass(frozen=True)
class Night:
    run_id: str
    started: float
    new: int
    known: int
    fixed: int | None  # None: unknown (no crash database)
    flaky: int | None
    coverage: float | None  # % of libkpool's edges the fuzz corpora reach; None: not measured
    p99_ns: dict[str, int] = field(default_factory=dict)  # per workload (see workload_key)
    # Stopped before its jobs ended (jobs_cut): what it counted is of the jobs that ran (a lower bound; 0
    # says nothing): no point of a trend. (An interrupted run's coverage is None in any case.)
    interrupted: bool = False


def workload_key(w: WorkloadResult) -> str:
    return w.name if w.allocator == "kpool" else f"{w.name} ({w.allocator})"


def cut_short(w: WorkloadResult) -> bool:
    """An interrupt stopped the workload's workers (its result marked interrupted): its figures are of
    however many operations ran, no point of a trend."""
    return w.error == "interrupted"


def jobs_cut(r: RunReport) -> bool:
    """An interrupt stopped the run before every job ended (or a run without jobs, interrupted): what it
    counted is of the jobs that ran, no point of the crash trend. A campaign interrupted after every job
    ended (during the coverage replay) counted a whole night's crashes."""
    return r.interrupted and not (r.jobs and all(j.state in ENDED_STATES for j in r.jobs))


def p99(w: WorkloadResult) -> int | None:
    measured = [lat for lat in w.latency if lat.count]
    chosen: Latency | None = next((lat for lat in measured if lat.op == P99_OP), None)
    chosen = chosen or (measured[0] if measured else None)
    return chosen.percentile(0.99) if chosen else None


def _epoch(iso: str) -> float:
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:  # a damaged row's time: the sighting sorts first, the others keep theirs
        return 0.0


def history(
    row: SignatureRow, occurrences: Sequence[Occurrence], runs: Sequence[RunReport]
) -> SignatureHistory:
    """A signature's history over the runs of the index and the other runs it was seen in, from its first
    sighting on (before it, it has none)."""
    partial = frozenset(r.run_id for r in runs if r.interrupted)
    return _history(row, occurrences, sorted((r.started, r.run_id) for r in runs), partial)


def _history(
    row: SignatureRow,
    occurrences: Sequence[Occurrence],
    indexed: Sequence[tuple[float, str]],
    partial: frozenset[str] = frozenset(),
) -> SignatureHistory:
    """history() with the index's runs given as (start, run id), sorted once for all signatures.
    `partial`: the runs stopped before they ended (interrupted): one that did not see the signature may not
    have run what finds it, so it is left out of its history (neither 'not seen' nor 'fixed', and the
    sighting after it is not 'flaky'); one that saw it counts."""
    seen: dict[str, list[Occurrence]] = {}
    for o in occurrences:
        seen.setdefault(o.run_id, []).append(o)
    if not seen:
        return SignatureHistory(row, [])
    in_index = {rid for _, rid in indexed}
    first_time = {rid: min(_epoch(o.time) for o in occ) for rid, occ in seen.items()}
    starts = {rid: t for t, rid in indexed}
    own = sorted((starts.get(rid, t), rid) for rid, t in first_time.items())
    # the timeline: the index's runs from the first sighting on, and the runs it was seen in
    begin = bisect.bisect_left(indexed, own[0])
    timeline = sorted(
        {(t, rid) for t, rid in indexed[begin:] if rid not in partial or rid in seen} | set(own)
    )
    last_seen = max(i for i, (_, rid) in enumerate(timeline) if rid in seen)
    out: list[Sighting] = []
    gap: list[tuple[float, str]] = []  # runs in a row where it was not seen, not yet in `out`

    def flush() -> None:
        if gap:
            (t, first), last = gap[0], gap[-1][1]
            out.append(
                Sighting(first, t, first in in_index, 0, (), NOT_SEEN, last if len(gap) > 1 else "", len(gap))
            )
            gap.clear()

    missed = False  # not seen in an indexed run since it was last seen
    for i, (when, rid) in enumerate(timeline):
        occ = seen.get(rid, [])
        if occ:
            flush()
            if not out or (row.status == NEW and row.new_run == rid):
                state = NEW_STATE
            elif missed or row.status == FLAKY:
                state = FLAKY_STATE
            else:
                state = KNOWN_STATE
            missed = False
            sources = tuple(dict.fromkeys(o.source for o in occ))
            out.append(Sighting(rid, when, rid in in_index, len(occ), sources, state))
        elif i - 1 == last_seen:
            out.append(Sighting(rid, when, rid in in_index, 0, (), FIXED_STATE))
            missed = True
        else:
            gap.append((when, rid))
            missed = True
    flush()
    return SignatureHistory(row, out)


def histories(db: CrashDB | None, runs: Sequence[RunReport]) -> list[SignatureHistory]:
    if db is None:
        return []
    indexed = sorted((r.started, r.run_id) for r in runs)
    partial = frozenset(r.run_id for r in runs if r.interrupted)
    by_signature = db.occurrences_by_signature()
    return [_history(row, by_signature.get(row.id, []), indexed, partial) for row in db.signatures()]


def nights(runs: Sequence[RunReport], found: Sequence[SignatureHistory] | None) -> list[Night]:
    """Per run of the index (in the order given): the signature counts, coverage and p99s. `found` None:
    no crash database; the counts come from the runs' own records."""
    out = []
    for r in runs:
        states = [h.state(r.run_id) for h in found] if found is not None else []
        if found is not None:
            counts: tuple[int, int, int | None, int | None] = (
                states.count(NEW_STATE),
                states.count(KNOWN_STATE),
                states.count(FIXED_STATE),
                states.count(FLAKY_STATE),
            )
        else:
            counts = (len(r.new_crashes), len(r.crashes) - len(r.new_crashes), None, None)
        cov = r.fuzz_coverage
        coverage = 100 * cov["union"] / cov["edges"] if cov and cov.get("edges") else None
        if r.interrupted:  # of however long its fuzzers ran, or cut short itself
            coverage = None
        figures = {workload_key(w): p for w in r.workloads if (p := p99(w)) is not None and not cut_short(w)}
        out.append(Night(r.run_id, r.started, *counts, coverage, figures, jobs_cut(r)))
    return out
