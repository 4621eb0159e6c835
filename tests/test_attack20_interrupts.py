"""Session 20's outside review: a real program that kpool runs (a program workload of `kpool stress` or
`kpool bench --programs`, the command of `kpool run`) when kpool is interrupted. On main (e193d3a):

- Ctrl-C (SIGINT) during a program workload did nothing: kpool ignored it while it waited (the program's
  to handle, as `time` does), but the program runs in a session of its own (for its time limit), which
  a terminal's ^C never reaches; kpool went on to the end of the program, then ran it on glibc;
- SIGTERM (`timeout`, CI) ended kpool with the program still running, an orphan;
- `kpool bench --programs` took SIGTERM as the end of one program, left it running, and started the
  next one (a sweep with `timeout 60` ran for minutes and left two programs behind).

Now kpool interrupted stops the program it waits for (its process group, or its process tree when it
shares kpool's group), reaps it, and stops: exit 130, nothing left running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
# kpool started and waiting for the program (imports, preflight, a build check): generous for a machine
# shared by four test runs
STARTED_S = 8.0
# kpool interrupted is to be gone within this (it stops the program, writes what finished)
STOP_S = 30.0


def _left(marker: str) -> list[str]:
    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = p.info["cmdline"] or []
        if marker in cmd:
            out.append(f"{p.info['pid']} {' '.join(cmd)}")
    return out


def _program_workload(tmp_path: Path, name: str, marker: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f'name: {name}\ntime_limit_s: 120\nprogram:\n  command: ["sleep", "{marker}"]\n')
    return path


def _interrupt(argv: list[str], sig: signal.Signals, marker: str, tmp_path: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "KPOOL_REPORTS": str(tmp_path / "reports"), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", *argv],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # SIGINT as a terminal's ^C would have it: not ignored (a test run in the background ignores it)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    # the program started: kpool's own command line holds the marker too (`kpool run -- sleep MARKER`), and
    # found alone it is kpool still starting, before its SIGTERM handler (exit -15 on a loaded machine)
    while not [ln for ln in _left(marker) if int(ln.split()[0]) != proc.pid]:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the program never started"
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(sig)
    try:
        proc.wait(timeout=STOP_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        for line in _left(marker):
            os.kill(int(line.split()[0]), signal.SIGKILL)
        pytest.fail(f"kpool {argv[0]} still running {STOP_S:g} s after {sig.name}")
    return proc


def _no_program_left(marker: str) -> None:
    deadline = time.monotonic() + 5
    while _left(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = _left(marker)
    for line in left:
        os.kill(int(line.split()[0]), signal.SIGKILL)
    assert not left, f"left running after kpool ended: {left}"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_stress_of_a_program_stops_it_when_interrupted(tmp_path: Path, sig: signal.Signals) -> None:
    marker = f"61.{os.getpid() % 1000:03d}{sig.value:02d}"
    one = _program_workload(tmp_path, "p1", marker)
    two = _program_workload(tmp_path, "p2", marker)
    proc = _interrupt(["stress", str(one), str(two)], sig, marker, tmp_path)
    _, err = proc.communicate()
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    _no_program_left(marker)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_bench_programs_stops_at_an_interrupt(tmp_path: Path, sig: signal.Signals) -> None:
    marker = f"62.{os.getpid() % 1000:03d}{sig.value:02d}"
    one = _program_workload(tmp_path, "b1", marker)
    argv = ["bench", "--programs", str(one), "--runs", "2", "--allocators", "kpool"]
    proc = _interrupt(argv, sig, marker, tmp_path)
    _, err = proc.communicate()
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    _no_program_left(marker)


def test_run_stops_its_program_at_sigterm(tmp_path: Path) -> None:
    """`timeout 60 kpool run -- CMD`: SIGTERM reaches kpool alone; the program is stopped with it."""
    marker = f"63.{os.getpid() % 1000:03d}"
    proc = _interrupt(["run", "--", "sleep", marker], signal.SIGTERM, marker, tmp_path)
    _, err = proc.communicate()
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    _no_program_left(marker)
