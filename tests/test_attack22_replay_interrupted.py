"""Session 22's outside review: `kpool triage replay` (and recheck, minimize) interrupted while a
reproducer runs. A reproducer runs in a session of its own (so that a timeout can kill its whole group),
which a Ctrl-C at the terminal does not reach; on main (21fec7b) kpool stopped and left it running: a hang
signature's reproducer (`sleep 37` under the preload, kept by a program workload's time limit) went on
after `kpool triage replay` had exited 130, for up to its 120 s timeout, a fuzz target's with ASan for
its own. Now the interrupted reproducer's group is killed and reaped before kpool stops."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from harness.triage import db as D
from harness.triage.crash import Crash, Reproducer

ROOT = Path(__file__).resolve().parents[1]


def _pids(marker: str) -> list[int]:
    found = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]


def _alive(marker: str) -> bool:
    return bool(_pids(marker))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("action", [["replay", "1"], ["recheck"]], ids=lambda a: a[0])
def test_an_interrupted_replay_leaves_no_reproducer_running(
    tmp_path: Path, sig: signal.Signals, action: list[str]
) -> None:
    marker = f"kpool-attack22-{uuid.uuid4().hex}"
    repro = Reproducer(argv=("sh", "-c", f"sleep 60; : {marker}"), timeout_s=120)
    db = tmp_path / "crashes.sqlite"
    D.CrashDB(db).record(
        Crash(text="", run_id="r1", source="hang", reproducer=repro, returncode=-9, kind="timeout")
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "harness.cli", "triage", "--db", str(db), *action]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not _alive(marker):
            assert time.monotonic() < deadline and proc.poll() is None, "the reproducer never started"
            time.sleep(0.05)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        time.sleep(0.2)
        assert not _alive(marker), "the reproducer is still running after kpool stopped"
    finally:
        proc.kill()
        for pid in _pids(marker):  # this test's own reproducer, by its id
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
