"""Jobs as tasks of a Dask `distributed` cluster: a running scheduler (`tcp://host:8786`, `tls://...`) or a
LocalCluster of N worker processes that kpool starts and stops (`local:N`).

Before any job, every worker's kpool (version and source hash, harness/jobs/identity.py) is compared with
this one's: a mismatch is an error naming each worker. A worker that joins later and runs another kpool
refuses the job it is given (task.run_job): it is named, gets no more jobs, and the job runs elsewhere.
Each job is one task (harness/jobs/task.py) that returns its results as bytes; they are handed to the
campaign the moment they come back, so a job that
finished is never lost. A worker that dies mid-job: the scheduler runs the job again on another worker, at
most MAX_RETRIES more times (the scheduler's allowed-failures; for a scheduler kpool did not start, its own
setting), after which the job is 'failed' with the reason. At the deadline or on an interrupt a Dask Event
asks the running jobs to stop (each looks at it every task.POLL_S).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Sequence
from typing import Any

from harness import output
from harness.errors import ConfigError, KpoolError, UsageError
from harness.jobs import identity, task
from harness.jobs.executor import Hooks, Interrupted, Progress, interruptible
from harness.jobs.model import RERUN_STATES, Job, JobResult, JobSpec

# A job whose worker died runs again this many times more at most (on a LocalCluster kpool starts; a
# scheduler of your own has its own distributed.scheduler.allowed-failures, 3 unless set).
MAX_RETRIES = 2
# Connecting to a scheduler, and waiting for a LocalCluster's workers to start.
CONNECT_TIMEOUT_S = 30.0
# A scheduler that answers with no worker: this long for one to join (workers started at the same
# moment as the campaign, by the same night's script), then an error saying so.
WORKERS_TIMEOUT_S = 30.0
# After the stop request (deadline, interrupt), the running jobs get this long to send back what they
# have (task.STOP_WAIT_S to stop, and the transfer), after which they are cancelled and left pending.
RETURN_WAIT_S = task.STOP_WAIT_S + 10.0
# Waiting for the next result: short enough to see the deadline and Ctrl-C promptly.
WAIT_S = 0.5

_LOCAL = re.compile(r"local:(\d+)")
# scheme://HOST:PORT, HOST a name, an IPv4 address or a bracketed IPv6 one
_REMOTE = re.compile(r"(tcp|tls|ucx)://(\[[0-9A-Fa-f:.]+\]|[^\s/:\[\]]+)(?::(\d*))?/?")


def _cores() -> int:
    """The cores this process may use (its affinity, as a container or taskset gives it)."""
    return len(os.sched_getaffinity(0))


def parse_address(text: str) -> str:
    """--cluster's value, checked: local:N (1 <= N <= the cores here) or a scheduler address
    (tcp://HOST:PORT, tls://..., ucx://...) with a port."""
    m = _LOCAL.fullmatch(text)
    if m:
        n, cores = int(m[1]), _cores()
        if n < 1:
            raise UsageError(f"--cluster {text!r}: local:N needs N >= 1 worker processes")
        if n > cores:  # each worker runs one job at a time: more than the cores only slows each down
            raise UsageError(
                f"--cluster {text!r}: this machine has {cores} cores and local:N starts N worker "
                f"processes here, one job each; at most local:{cores} (more slots: a scheduler with "
                "workers on other machines, tcp://HOST:PORT)"
            )
        return text
    m = _REMOTE.fullmatch(text)
    if m and m[3] is None:
        raise UsageError(f"--cluster {text!r}: no port; a scheduler's address is {m[1]}://HOST:PORT")
    if m and not 1 <= int(m[3] or 0) <= 65535:
        raise UsageError(f"--cluster {text!r}: the port must be 1 to 65535")
    if m:
        return text
    raise UsageError(f"--cluster {text!r}: expected local:N (N worker processes here) or tcp://HOST:PORT")


def killed_message(where: str, why: object) -> str:
    """A job's error when its workers kept dying: the retries are ours on a local:N cluster, the
    scheduler's own setting elsewhere."""
    if _LOCAL.fullmatch(where):
        return f"its worker died {MAX_RETRIES + 1} time(s) ({why})"
    return (
        "its worker died as often as the scheduler allows (its distributed.scheduler.allowed-failures) "
        f"({why})"
    )


def _distributed() -> Any:
    """The `distributed` package (untyped: its calls are typed Any here)."""
    return importlib.import_module("distributed")


def _stop_requested(name: str) -> bool:
    try:
        return bool(_distributed().Event(name).is_set())
    except Exception:  # the scheduler gone: the worker is going too, nothing to stop by request
        return False


def run_remote(spec: JobSpec, stop_event: str) -> JobResult:
    """The task: run the job on this worker (harness/jobs/task.py), stopping when the event is set."""
    where = str(_distributed().get_worker().address)
    return task.run_job(spec, stop=lambda: _stop_requested(stop_event), where=where)


def prepare_remote(specs: Sequence[JobSpec]) -> str:
    """The build task: this worker builds (or finds built) what the jobs need; "" or the error."""
    try:
        for spec in specs:
            task.prepare(spec)
    except KpoolError as exc:
        return str(exc)
    return ""


def _report_identity() -> dict[str, str]:
    return identity.describe()


@contextlib.contextmanager
def _hold_interrupts() -> Any:
    """Ctrl-C held while a LocalCluster and its client are made, then raised: an interrupt in the middle
    left a half-made cluster that Dask's finalizers tore down with an `AssertionError: Status.init`
    traceback. The caller closes a whole cluster. (Signal handlers exist in the main thread only.)"""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) in (
        signal.SIG_IGN,
        None,
    ):
        yield  # no handler here, or Ctrl-C ignored (a background job of a shell): nothing to hold
        return
    pending: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pending:
        raise KeyboardInterrupt


class DaskExecutor:
    def __init__(self, address: str, run_id: str) -> None:
        dask: Any = importlib.import_module("dask")
        distributed = _distributed()
        self.where, self.run_id = address, run_id
        self.cluster: Any = None
        m = _LOCAL.fullmatch(address)
        try:
            if m:
                with (
                    _hold_interrupts(),
                    dask.config.set({"distributed.scheduler.allowed-failures": MAX_RETRIES}),
                ):
                    self.cluster = distributed.LocalCluster(
                        n_workers=int(m[1]),
                        threads_per_worker=1,
                        processes=True,
                        dashboard_address=None,
                        silence_logs=logging.ERROR,
                    )
                    self.client = distributed.Client(self.cluster, timeout=CONNECT_TIMEOUT_S)
            else:
                self.client = distributed.Client(address, timeout=CONNECT_TIMEOUT_S)
        except KeyboardInterrupt:
            self.close()
            raise
        except Exception as exc:  # OSError, TimeoutError, a ValueError for an address distributed refuses
            self.close()
            raise ConfigError(f"--cluster {address}: cannot reach the scheduler: {exc}") from None
        self.stop_name = f"kpool-stop-{run_id}-{time.time_ns()}"
        # Workers that refused a job (another kpool, joined after the check): address -> why. They get
        # no more jobs; a job they refused runs elsewhere.
        self.refused: dict[str, str] = {}

    @property
    def workers(self) -> dict[str, dict[str, Any]]:
        return dict(self.client.scheduler_info().get("workers", {}))

    @property
    def slots(self) -> int:
        return max(1, sum(int(w.get("nthreads", 1)) for w in self.workers.values()))

    def check(self) -> None:
        """Every worker runs this kpool, or VersionMismatch naming those that do not; ConfigError when
        the cluster has no worker."""
        if not self.workers:
            output.progress(f"--cluster {self.where}: no worker yet, waiting up to {WORKERS_TIMEOUT_S:g} s")
            with contextlib.suppress(Exception):
                self.client.wait_for_workers(1, timeout=WORKERS_TIMEOUT_S)
        if not self.workers:
            raise ConfigError(
                f"--cluster {self.where}: the scheduler has no worker (none joined within "
                f"{WORKERS_TIMEOUT_S:g} s); start some with `dask worker {self.where} --nthreads 1`"
            )
        identity.check(identity.identity(), self.client.run(_report_identity))

    def prepare(self, specs: Sequence[JobSpec]) -> dict[str, str]:
        """Every worker builds (or finds built) what the jobs need, each in a task of its own, before the
        budget's clock starts: a remote worker built inside its first job's time. A worker whose build
        fails is warned about by name and gets no job. Returns worker -> "" or the error."""
        futures = {
            w: self.client.submit(
                prepare_remote,
                list(specs),
                key=f"kpool-prepare-{self.run_id}-{i}-{time.time_ns()}",
                pure=False,
                workers=[w],
                allow_other_workers=False,
            )
            for i, w in enumerate(sorted(self.workers))
        }
        done: dict[str, str] = {}
        for w, future in futures.items():
            try:
                done[w] = str(future.result())
            except Exception as exc:  # the worker died, or the task could not run there
                done[w] = f"{type(exc).__name__}: {exc}"
            if done[w]:
                self.refused[w] = f"its build failed: {done[w]}"
                output.warn(f"--cluster {self.where}: worker {w} gets no job, its build failed: {done[w]}")
        return done

    def close(self) -> None:
        for thing in (getattr(self, "client", None), self.cluster):
            if thing is not None:
                with contextlib.suppress(Exception):
                    thing.close()

    def _submit(self, spec: JobSpec) -> Any:
        good = [w for w in self.workers if w not in self.refused] if self.refused else None
        return self.client.submit(
            run_remote,
            spec,
            self.stop_name,
            key=f"kpool-{spec.name}-{time.time_ns()}",
            pure=False,
            workers=good,
            allow_other_workers=False,
        )

    def _refused_all(self) -> str:
        """Why no worker may run a job: every worker refused one; "" while some worker may."""
        if not self.refused or any(w not in self.refused for w in self.workers):
            return ""
        return "every worker runs another kpool than this one: " + "; ".join(
            self.refused[w] for w in sorted(self.refused)
        )

    def run(self, jobs: Sequence[Job], deadline: float | None, hooks: Hooks) -> bool:
        """Run the jobs in a rerun state, `slots` at a time (hooks.spec makes what is sent)."""
        pending = [j for j in jobs if j.state in RERUN_STATES]
        for j in pending:
            j.state = "pending"
        running: dict[Any, Job] = {}
        progress = Progress(f"{self.run_id} on {self.where}", jobs)
        stop = _distributed().Event(self.stop_name, client=self.client)
        with interruptible():
            try:
                while pending or running:
                    while pending and len(running) < self.slots:
                        j = pending.pop(0)
                        if self._refused_all():
                            j.state, j.error = "failed", self._refused_all()
                            hooks.changed()
                            continue
                        left = None if deadline is None else deadline - time.monotonic()
                        if left is not None and not hooks.fit(j, left):
                            j.state = "not-run"
                            hooks.changed()
                            continue
                        running[self._submit(hooks.spec(j, left))] = j
                        j.state, j.attempts, j.error = "running", j.attempts + 1, ""
                        hooks.changed()
                    if not running:
                        break
                    time.sleep(WAIT_S)
                    for fut in [f for f in running if f.done()]:
                        j = running.pop(fut)
                        if not self._land(fut, j, hooks):
                            pending.insert(0, j)  # refused by its worker: it runs elsewhere
                    if deadline is not None and time.monotonic() > deadline + RETURN_WAIT_S:
                        # the jobs stop themselves at the deadline; these never answered (a worker lost)
                        for fut, j in running.items():
                            fut.cancel()
                            j.state = "stopped"
                        running.clear()
                        hooks.changed()
                    progress([j.name for j in running.values()])
            except Interrupted as why:
                output.progress(
                    f"campaign interrupted ({why}): stopping {len(running)} cluster job(s); what "
                    "finished is kept and --resume runs the rest again"
                )
                stop.set()
                with contextlib.suppress(Exception, Interrupted), interruptible():
                    until = time.monotonic() + RETURN_WAIT_S
                    while time.monotonic() < until and not all(f.done() for f in running):
                        time.sleep(WAIT_S)
                for fut, j in running.items():
                    if fut.done() and fut.status == "finished":  # it stopped and sent what it had
                        self._land(fut, j, hooks)
                        if j.state == "stopped":
                            j.state = "pending"
                        continue
                    fut.cancel()
                    j.state = "pending"
                hooks.changed()
                return False
        return True

    def _land(self, fut: Any, j: Job, hooks: Hooks) -> bool:
        """Hand a finished task's result to the campaign; False when its worker refused it (the job is
        pending again, the worker gets no more)."""
        try:
            result: JobResult = fut.result()
        except _distributed().KilledWorker as exc:
            j.state, j.error = "failed", killed_message(self.where, exc)
        except Exception as exc:  # the task itself failed (a build on the worker, say)
            j.state, j.error = "failed", f"on the cluster: {type(exc).__name__}: {exc}"
        else:
            if result.state == "refused":
                if result.worker not in self.refused:
                    output.warn(f"{result.error}: it gets no job of this campaign, the others run them")
                self.refused[result.worker] = result.error
                j.state, j.attempts = "pending", j.attempts - 1
                hooks.changed()
                return False
            hooks.landed(j, result)
        hooks.changed()
        return True
