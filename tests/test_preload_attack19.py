"""Session 19's attack on the preload library from outside (tests/data/preload/attack19.c): bad input that
glibc refuses loudly must be refused loudly here too, and hostile programs must end, never hang."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path

import pytest

from harness import build

SRC = Path(__file__).parent / "data" / "preload" / "attack19.c"
# The line an integrity error prints (as tests/test_preload.py reads it).
ABORT_LINE = re.compile(
    r"^kpool \d+\.\d{3} (?P<event>\w+) 0x[0-9a-f]+ (?P<size>size class \d+|size \d+|size unknown): "
    r"(?P<what>[^\n]*) in (?P<call>\w+\(\)); (?P<then>abort|going on)"
)
# How a program re-entered from a signal handler ends: an event of kpool's own checks (the event-log
# format), or the line of a lock its thread holds.
ENDED_LINE = re.compile(r"^kpool(: .*holds the pool's lock .*| \d+\.\d{3} \w+ 0x[0-9a-f]+ .*); abort$")
TIMEOUT_S = 120  # each program here ends within a second or two, even under a loaded machine


def run(
    argv: list[str], preload: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full = {"PATH": "/usr/bin:/bin", "LANG": "C", "LD_PRELOAD": str(preload), **(env or {})}
    return subprocess.run(argv, env=full, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)


@pytest.fixture(scope="module")
def preload() -> Path:
    return build.preload_library()


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    exe = tmp_path_factory.mktemp("attack19") / "attack19"
    subprocess.run(["cc", "-O0", "-fno-builtin", "-pthread", "-Wall", "-o", str(exe), str(SRC)], check=True)
    return exe


@pytest.mark.parametrize("mode", ["foreign-first", "foreign-later"])
def test_a_free_of_a_stack_address_aborts_even_before_the_first_allocation(
    program: Path, preload: Path, mode: str
) -> None:
    """Before the pool existed, free() of any pointer but the bootstrap buffer's returned in silence."""
    proc = run([str(program), mode], preload)
    assert proc.returncode == -signal.SIGABRT, (proc.returncode, proc.stdout, proc.stderr)
    assert "still running" not in proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    m = ABORT_LINE.match(lines[0])
    assert m, lines[0]
    assert (m["event"], m["call"], m["size"]) == ("invalid_free", "free()", "size unknown")


def test_a_signal_handler_that_mallocs_ends_the_program_never_hangs_it(program: Path, preload: Path) -> None:
    """A handler's malloc that interrupted malloc waited for its own thread's lock, forever (4 runs in 5).

    malloc is not async-signal-safe: glibc, re-entered so, finds its arena damaged and aborts. kpool now
    ends the same way, with one line that says why (a lock its thread holds, or a cache link the
    interrupted call left half made), or runs to the end; a hang is the failure (the timeout)."""
    # layout:inline: its locks know their holder; the default layout's heap lock does not, and a handler's
    # refill spins on it forever (test_outline_gaps.py)
    for _ in range(3):
        proc = run([str(program), "signal-malloc"], preload, {"KPOOL_CONF": "layout:inline"})
        if proc.returncode == 0:
            assert proc.stdout == "done\n"
            continue
        assert proc.returncode == -signal.SIGABRT, (proc.returncode, proc.stderr[-2000:])
        lines = proc.stderr.splitlines()
        assert len(lines) == 1, proc.stderr
        assert ENDED_LINE.match(lines[0]), lines[0]


def test_a_program_whose_main_ends_by_pthread_exit_ends_when_its_threads_do(
    program: Path, preload: Path, tmp_path: Path
) -> None:
    """The daemon (a thread that takes no signal) kept the process alive after its last thread, forever."""
    env = {"KPOOL_PRELOAD": "daemon_after:100", "KPOOL_STATS_OUT": str(tmp_path)}
    proc = run([str(program), "main-exit"], preload, env)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert proc.stdout == "main ends\n"
    doc = json.loads(next(tmp_path.glob("kpool-*.json")).read_text())
    assert doc["daemon_started"] is True  # the case needs the daemon: without it there was no hang
