"""Jobs as child processes of this machine, `slots` at a time: each runs in the run's folder and writes
its results there (nothing to send back), with its crashes left to the coordinator to record."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import output
from harness.jobs import task
from harness.jobs.executor import Hooks, Interrupted, Progress, interruptible
from harness.jobs.model import RERUN_STATES, Job

# Where `harness` is imported from: the jobs (run in the run's folder) import the same package.
_IMPORT_ROOT = Path(__file__).resolve().parents[2]
# Polling the running jobs: twice a second costs nothing and stops a job within half a second.
POLL_S = 0.5
# An interrupted job gets this long to end after SIGTERM before SIGKILL.
INTERRUPT_WAIT_S = 10.0


def child_env(run_id: str, db: Path | None) -> dict[str, str]:
    """The jobs' environment: they import this same package, whatever their working directory, and
    record under the campaign's run into a scratch database (db): the coordinator records every crash
    in the campaign's."""
    from harness.triage import record

    env = dict(os.environ)
    if db is not None:
        env[record.DB_ENV] = str(db)
        env[record.RUN_ENV] = run_id
    path = env.get("PYTHONPATH", "")
    if str(_IMPORT_ROOT) not in path.split(os.pathsep):
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(_IMPORT_ROOT), path)))
    return env


def _stop_with_campaign() -> None:
    """In the job: SIGTERM when the campaign dies (kill -9), which the job takes as an interrupt: it stops
    its fuzzer or workers and keeps what it did; it would otherwise run on, unsupervised, to its slot's end
    (the job is in a session of its own: nothing else reaches it). Jobs start from the main thread."""
    task.die_with_parent(signal.SIGTERM)


@dataclass
class _Running:
    job: Job
    proc: subprocess.Popen[bytes]
    started: float
    stopping: float | None = None  # when SIGINT was sent at the deadline


class LocalExecutor:
    def __init__(self, run_dir: Path, run_id: str, slots: int) -> None:
        self.run_dir, self.run_id, self.slots = run_dir, run_id, max(1, slots)
        self.where = "local"
        self.scratch = Path(tempfile.mkdtemp(prefix="kpool-campaign-"))

    def close(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)

    def _start(self, j: Job) -> subprocess.Popen[bytes]:
        log = self.run_dir / "logs" / (j.name.replace(":", "-") + ".log")
        log.parent.mkdir(parents=True, exist_ok=True)
        j.log = str(log.relative_to(self.run_dir))
        j.worker, j.attempts = "local", j.attempts + 1
        db = self.scratch / (j.name.replace(":", "-").replace("@", "-") + ".sqlite")
        with log.open("wb") as f:
            return subprocess.Popen(
                j.argv,
                cwd=self.run_dir,
                env=child_env(self.run_id, db),
                stdout=f,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_stop_with_campaign,
            )

    @staticmethod
    def _poll(r: _Running, now: float, deadline: float | None) -> int | None:
        """The job's exit status once it has ended; stops it past its slot (SIGKILL, a timeout) or at
        the deadline (SIGINT, then SIGKILL after STOP_WAIT_S)."""
        rc = r.proc.poll()
        if rc is not None:
            return rc
        if r.stopping is None and now - r.started > r.job.slot_s + task.GRACE_S:
            task._signal_group(r.proc, signal.SIGKILL)
            r.job.error = f"timeout: killed after {now - r.started:.0f} s (its slot {r.job.slot_s:.0f} s + "
            r.job.error += f"{task.GRACE_S:.0f} s)"
            return r.proc.wait()
        if r.stopping is None and deadline is not None and now >= deadline:
            task._signal_group(r.proc, signal.SIGINT)
            r.stopping = now
        elif r.stopping is not None and now - r.stopping > task.STOP_WAIT_S:
            task._signal_group(r.proc, signal.SIGKILL)
            return r.proc.wait()
        return None

    def run(self, jobs: Sequence[Job], deadline: float | None, hooks: Hooks) -> bool:
        pending = [j for j in jobs if j.state in RERUN_STATES]
        for j in pending:
            j.state = "pending"
        running: dict[str, _Running] = {}
        progress = Progress(self.run_id, jobs)
        with interruptible():
            try:
                while pending or running:
                    while pending and len(running) < self.slots:
                        j = pending.pop(0)
                        if deadline is not None and not hooks.fit(j, deadline - time.monotonic()):
                            j.state = "not-run"
                            hooks.changed()
                            continue
                        j.error = ""
                        running[j.name] = _Running(j, self._start(j), time.monotonic())
                        j.state = "running"
                        hooks.changed()
                    if not running:
                        break
                    time.sleep(POLL_S)
                    now = time.monotonic()
                    for name, r in list(running.items()):
                        rc = self._poll(r, now, deadline)
                        if rc is None:
                            continue
                        j = r.job
                        j.returncode, j.seconds = rc, round(now - r.started, 1)
                        if r.stopping is not None:
                            j.state = "stopped"
                        elif j.error.startswith("timeout"):
                            j.state = "timeout"
                        else:
                            j.state = "done" if task.wrote_result(self.run_dir / j.out) else "failed"
                        del running[name]
                        hooks.changed()
                    progress(list(running))
            except Interrupted as why:
                output.progress(
                    f"campaign interrupted ({why}): stopping {len(running)} job(s); --resume runs them again"
                )
                for r in running.values():
                    task._signal_group(r.proc, signal.SIGTERM)
                    try:
                        r.proc.wait(timeout=INTERRUPT_WAIT_S)
                    except subprocess.TimeoutExpired:
                        task._signal_group(r.proc, signal.SIGKILL)
                        r.proc.wait()
                    r.job.state = "pending"
                hooks.changed()
                return False
        return True
