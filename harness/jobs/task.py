"""One job, run where it is sent: make its folder, build (or find built) the variant it needs, run it in a
child process within its time limit, and return everything it wrote as bytes (harness/jobs/model.py).
Nothing is left behind: the folder is removed, and the crash database is the coordinator's to write.

The child is `kpool fuzz` or `kpool stress` (the same commands a local campaign runs), in a session of
its own so that its whole process group can be stopped: SIGINT at the deadline or on request (a stress
job writes what finished), SIGKILL STOP_WAIT_S later, and SIGKILL past its slot (a timeout).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from harness import atomic, paths
from harness.errors import KpoolError
from harness.jobs.identity import identity
from harness.jobs.model import JobResult, JobSpec

# A job may overrun its slot by this much (start-up, a last report) before it is killed as a timeout.
GRACE_S = 60.0
# After SIGINT (the deadline, an interrupt), a job gets this long to write what it has before SIGKILL.
STOP_WAIT_S = 5.0
# How often a running job's child, the deadline and the stop request are looked at: a job stops within
# about this long, and a stop request is one small message to the scheduler per running job.
POLL_S = 0.5
# A file larger than this is not sent back (named in the result's error instead): crash inputs and
# reports are kilobytes; nothing a job is meant to return comes near it.
MAX_FILE_BYTES = 64 << 20
# Crash databases and working histories are the coordinator's or scratch, never sent.
_NOT_SENT = (".sqlite", ".sqlite-journal", ".sqlite-wal", ".sqlite-shm")
_PR_SET_PDEATHSIG = 1


def wrote_result(out: Path) -> bool:
    """Whether a job's child wrote its result file (fuzz.json, stress.json) whole: a stress.json that
    kpool stress writes as its workers end, before the run's end, says "unfinished" (a child that died
    then, the OOM killer's say, failed)."""
    if not out.is_file():
        return False
    if out.name != "stress.json":
        return True
    try:
        doc = atomic.loads(atomic.read_bytes(out))
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and "unfinished" not in doc


def kpool(*args: str) -> list[str]:
    return [sys.executable, "-m", "harness.cli", "-q", *args]


def command(
    kind: str,
    target: str,
    run_dir: Path,
    reports: Path,
    *,
    seconds: int = 0,
    plant: int = 0,
    variant: str = "release",
    workload: Path | None = None,
    peers: bool = False,
) -> list[str]:
    """The `kpool fuzz` or `kpool stress` command of a job whose run folder is run_dir. A fuzz job keeps
    its working corpus under reports (<reports>/corpus/<target>/); a stress job writes its run under
    run_dir."""
    if kind == "fuzz":
        argv = kpool("fuzz", target, "--time", str(seconds), "--run-dir", str(run_dir / f"fuzz-{target}"))
        argv += ["--reports", str(reports)]
        return [*argv, "--plant", str(plant)] if plant else argv
    assert workload is not None, "a stress job names its workload"
    run_id = f"stress-{target}" + ("" if variant == "release" else f".{variant}")
    argv = kpool("stress", str(workload), "--reports", str(run_dir), "--run-id", run_id, "--jobs", "1")
    if variant != "release":
        argv += ["--variant", variant]
    return [*argv, "--peers", "all"] if peers else argv


def die_with_parent(sig: signal.Signals = signal.SIGKILL) -> None:
    """In the child (a preexec_fn): sig when the thread that started it dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)


def _die_with_parent() -> None:
    """In the child: SIGKILL when the worker that started it dies (a killed worker leaves no job)."""
    die_with_parent(signal.SIGKILL)


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
        os.killpg(proc.pid, sig)


def supervise(
    argv: Sequence[str],
    cwd: Path,
    env: dict[str, str],
    log: Path,
    slot_s: float,
    deadline: float | None,
    stop: Callable[[], bool],
) -> tuple[str, int | None, float]:
    """Run argv to its end, stopping it at the deadline (time.time()) or when stop() says so ("stopped")
    and killing it past slot_s + GRACE_S ("timeout"). (how it ended, exit status, seconds)."""
    started = time.monotonic()
    stopping: float | None = None
    how = "ended"
    with log.open("wb") as f:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    try:
        while proc.poll() is None:
            time.sleep(POLL_S)
            now = time.monotonic()
            if stopping is None and now - started > slot_s + GRACE_S:
                _signal_group(proc, signal.SIGKILL)
                how = "timeout"
                break
            if stopping is None and ((deadline is not None and time.time() >= deadline) or stop()):
                _signal_group(proc, signal.SIGINT)
                stopping, how = now, "stopped"
            elif stopping is not None and now - stopping > STOP_WAIT_S:
                _signal_group(proc, signal.SIGKILL)
                break
    except BaseException:  # the worker itself is stopping: the job goes with it
        _signal_group(proc, signal.SIGKILL)
        proc.wait()
        raise
    rc = proc.wait()
    _signal_group(proc, signal.SIGKILL)  # anything it left in its group
    return how, rc, round(time.monotonic() - started, 1)


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    """Jobs side by side on one machine build one at a time (make on one build folder at once breaks)."""
    root = paths.usable_build_root()
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".kpool-jobs.lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def prepare(spec: JobSpec) -> None:
    """Build (or find up to date) what the job runs, before its time starts."""
    from harness import build

    with _build_lock():
        if spec.kind == "fuzz":
            from harness.fuzz import NATIVE

            if spec.target in NATIVE:
                build.build("fuzz", spec.plant)
        else:
            from harness.stress.binary import ensure_kpdrive

            build.build(spec.variant)
            ensure_kpdrive(spec.variant)


def _workload(spec: JobSpec, scratch: Path) -> Path:
    if spec.workload_rel:
        return paths.workloads() / spec.workload_rel
    path = scratch / "workloads" / f"{spec.target}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(spec.workload_text)
    return path


def _collect(result: JobResult, folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if not path.is_file() or path.name.endswith(_NOT_SENT) or rel.startswith("history/"):
            continue
        if path.stat().st_size > MAX_FILE_BYTES:
            result.error += f"{rel} not sent ({path.stat().st_size} bytes); "
            continue
        result.files[rel] = result.add(path.read_bytes())


def run_job(spec: JobSpec, stop: Callable[[], bool] = lambda: False, where: str = "") -> JobResult:
    """Run one job here and return its results (never raises for the job's own failure: a job that
    failed is a result). State 'refused' when this kpool is not the coordinator's: nothing ran."""
    mine = identity()
    if spec.identity != ("", "") and mine != spec.identity:  # a worker that joined after the check
        return JobResult(
            name=spec.name,
            state="refused",
            worker=where,
            error=f"worker {where or '?'} (host {socket.gethostname()}) runs another kpool: kpool "
            f"{mine[0]} sources {mine[1]} from {paths.PACKAGE_DIR}, this one kpool {spec.identity[0]} "
            f"sources {spec.identity[1]}",
        )
    scratch = Path(tempfile.mkdtemp(prefix=f"kpool-job-{spec.kind}-"))
    try:
        return _run(spec, scratch, stop, where)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run(spec: JobSpec, scratch: Path, stop: Callable[[], bool], where: str) -> JobResult:
    run_dir, reports = scratch / "run", scratch / "reports"
    run_dir.mkdir()
    corpus = reports / "corpus" / spec.target
    if spec.kind == "fuzz":
        corpus.mkdir(parents=True)
        for name, data in spec.corpus.items():
            (corpus / name).write_bytes(data)
    try:
        prepare(spec)
    except KpoolError as exc:  # a worker without clang, say: every job sent to it says so, by name
        error = f"the {spec.variant if spec.kind == 'stress' else 'fuzz'} build failed on worker "
        error += f"{where or '?'} (host {socket.gethostname()}): {exc}"
        return JobResult(name=spec.name, state="failed", worker=where, error=error)
    argv = command(
        spec.kind,
        spec.target,
        run_dir,
        reports,
        seconds=spec.seconds,
        plant=spec.plant,
        variant=spec.variant,
        workload=_workload(spec, scratch) if spec.kind == "stress" else None,
        peers=spec.peers,
    )
    env = dict(os.environ)
    # the job's crashes are recorded by the coordinator: a runner's own recording goes to scratch
    from harness.triage import record

    env[record.DB_ENV] = str(scratch / "scratch.sqlite")
    env[record.RUN_ENV] = spec.run_id
    log = scratch / "job.log"
    how, rc, seconds = supervise(argv, run_dir, env, log, spec.slot_s, spec.deadline, stop)
    folder = run_dir / (f"fuzz-{spec.target}" if spec.kind == "fuzz" else argv[argv.index("--run-id") + 1])
    out = folder / ("fuzz.json" if spec.kind == "fuzz" else "stress.json")
    state = {"timeout": "timeout", "stopped": "stopped"}.get(how, "done" if wrote_result(out) else "failed")
    result = JobResult(
        name=spec.name,
        state=state,
        returncode=rc,
        seconds=seconds,
        worker=where,
        root=str(folder),
        build_root=str(paths.build_root()),
        log=log.read_bytes(),
    )
    if how == "timeout":
        result.error = (
            f"timeout: killed after {seconds:.0f} s (its slot {spec.slot_s:.0f} s + {GRACE_S:.0f} s)"
        )
    if folder.is_dir():
        _collect(result, folder)
    if corpus.is_dir():
        for path in sorted(corpus.iterdir()):
            if path.is_file() and path.name not in spec.corpus:
                result.corpus[path.name] = result.add(path.read_bytes())
    return result
