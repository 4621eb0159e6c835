"""The one protocol for running a campaign's jobs: an executor takes the jobs still to run and runs them
up to its number of slots at a time until a deadline, telling the campaign of every change through its
hooks. Two implementations: local processes (harness/jobs/local.py) and a Dask cluster
(harness/jobs/dask.py).

Shared policy: a job is started only while there is time for it (hooks.fit, else 'not-run'); a job still
running at the deadline is stopped ('stopped'); one past its slot is killed ('timeout'); an interrupt
(SIGINT, SIGTERM) stops the running jobs, leaves them 'pending' for --resume, and run() returns False.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from harness import output
from harness.jobs.model import Job, JobResult, JobSpec

# Progress: a line whenever a job starts or ends, else one this often (a night is 8 hours).
PROGRESS_EVERY_S = 30.0


@dataclass
class Hooks:
    """What an executor tells the campaign, and asks it."""

    fit: Callable[[Job, float], bool]  # may this job start with this many seconds left? (may trim it)
    changed: Callable[[], None]  # a job's state changed: save the record
    landed: Callable[[Job, JobResult], None]  # a job's results came back as bytes: write them into the run
    # what is sent to a remote worker for a job, given the seconds left of the budget (None: no deadline)
    spec: Callable[[Job, float | None], JobSpec]


class Executor(Protocol):
    @property
    def where(self) -> str:
        """ "local", "local:2", or the scheduler's address: for messages."""
        ...

    @property
    def slots(self) -> int:
        """Jobs at a time."""
        ...

    def run(self, jobs: Sequence[Job], deadline: float | None, hooks: Hooks) -> bool:
        """Run the jobs (in order, those in a rerun state) until the deadline (time.monotonic()); False
        when interrupted."""
        ...

    def close(self) -> None: ...


class Interrupted(Exception):
    pass


def _on_signal(signum: int, frame: object) -> None:
    raise Interrupted(signal.Signals(signum).name)


@contextmanager
def interruptible() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP (unless ignored: nohup) raise Interrupted inside, as they are restored
    after (in the main thread: only it receives signals; elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = [signal.SIGINT, signal.SIGTERM]
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        signals.append(signal.SIGHUP)
    old = {s: signal.signal(s, _on_signal) for s in signals}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class Progress:
    """A line per change of what runs, else one every PROGRESS_EVERY_S (never one per poll)."""

    def __init__(self, label: str, jobs: Sequence[Job]) -> None:
        self.label, self.jobs = label, jobs
        self.t0 = self.last_shown = time.monotonic()
        self.last: tuple[int, tuple[str, ...]] = (-1, ())

    def __call__(self, running: Sequence[str]) -> None:
        now = time.monotonic()
        done = sum(1 for j in self.jobs if j.state in ("done", "failed", "timeout"))
        state = (done, tuple(running))
        if state != self.last or now - self.last_shown >= PROGRESS_EVERY_S:
            self.last, self.last_shown = state, now
            output.progress(
                f"campaign {self.label}: {done}/{len(self.jobs)} jobs done, running "
                f"{', '.join(running) or 'none'}, {now - self.t0:.0f}s elapsed"
            )
