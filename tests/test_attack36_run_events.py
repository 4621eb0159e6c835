"""Session 36's attacks on `kpool run` from outside: an integrity error whose line never reached the kept
stderr (a program that closed its stderr, as daemons do, or one that wrote more than kpool keeps after it).

Before: the crash text was the stderr tail alone, so a double free in a program that had closed fd 2 was
filed under the bare "SIGABRT in program:x" beside every other abort of that program, and one that went on
(--on-error log) and printed 300 KB more was "unknown in program:x", though the pool's own figures (its
KPOOL_STATS_OUT file, which `kpool run` reads and prints) named the double free. Now the figures' events
are the crash text's when the tail holds none, and a replay reads them the same way."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness.triage.db import CrashDB

PROGRAM = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
	if (!strcmp(argv[1], "write-after-free")) {  /* found at reuse (poison:on), by a sweep of kpool's */
		char *q = malloc(64);
		free(q);
		memset(q, 'A', 64);
		for (int i = 0; i < 3000; i++)
			free(malloc(64));
		return 0;
	}
	if (!strcmp(argv[1], "closed")) {
		close(2);  /* a daemon's stderr: the preload's line goes nowhere */
	}
	char *p = malloc(24);
	free(p);
	free(p);
	if (!strcmp(argv[1], "noisy")) {  /* --on-error log: it goes on, and its output pushes the line out */
		for (int i = 0; i < 40000; i++)
			fprintf(stderr, "noise line %d\n", i);
	}
	return 0;
}
"""


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    folder = tmp_path_factory.mktemp("att36")
    (folder / "p.c").write_text(PROGRAM)
    exe = folder / "p"
    subprocess.run([cc, "-O0", "-fno-builtin", "-w", "-o", str(exe), str(folder / "p.c")], check=True)
    return exe


def kpool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).parents[1]), "LANG": "C"},
    )


@pytest.mark.parametrize(
    ("how", "options", "status"),
    [("closed", [], 128 + signal.SIGABRT), ("noisy", ["--on-error", "log"], 0)],
)
def test_an_integrity_error_whose_line_left_no_stderr_is_still_its_signature(
    program: Path, tmp_path: Path, how: str, options: list[str], status: int
) -> None:
    proc = kpool("run", *options, "--reports", str(tmp_path), "--", str(program), how, cwd=tmp_path)
    assert proc.returncode == status, proc.stderr[-2000:]
    assert "kpool: integrity: double_frees 1" in proc.stderr, proc.stderr[-2000:]
    assert "crash recorded: signature" in proc.stderr, proc.stderr[-2000:]
    db = CrashDB.open(tmp_path / "crashes.sqlite")
    (sig,) = db.signatures()
    assert sig.kind == "kpool-double_free", sig.title
    assert "double free in free()" in sig.title, sig.title

    replay = kpool(
        "triage", "--db", str(tmp_path / "crashes.sqlite"), "replay", str(sig.id), "-n", "2", cwd=tmp_path
    )
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert "reproduced 2 of 2" in replay.stdout, replay.stdout


def test_the_figures_name_the_call_of_an_event_kpool_found_on_its_own_whole(
    program: Path, tmp_path: Path
) -> None:
    """The preload's line said "use_after_free ... in a check of kpool's own", its figures (and so the
    summary `kpool run` prints, and the signature of a run whose line was lost) "in a check of kpoo": the
    record kept 16 bytes of the call's name."""
    proc = kpool(
        "run",
        "--conf",
        "poison:on",
        "--reports",
        str(tmp_path),
        "--",
        str(program),
        "write-after-free",
        cwd=tmp_path,
    )
    assert proc.returncode == 128 + signal.SIGABRT, proc.stderr[-2000:]
    assert "use_after_free 0x" in proc.stderr and " in a check of kpool's own; abort" in proc.stderr, (
        proc.stderr
    )
    assert "kpool:   use_after_free in a check of kpool's own: 0x" in proc.stderr, proc.stderr


# ---- a program that leaves a process behind ----------------------------------------------------------


def test_kpool_run_ends_with_its_program_not_with_a_process_it_left_behind(tmp_path: Path) -> None:
    """`kpool run -- sh -c 'server & ...'`: the program ended, but a process it started in the background
    kept its stderr open, and kpool read that pipe to its end: it printed nothing more and did not exit
    until the background process did (30 s for a `sleep 30`, forever for a server). Now what comes within
    a moment of the program's end is passed on, and kpool says it stopped reading and goes on."""
    import os
    import time

    script = "sleep 60 >/dev/null & echo $! > bg.pid; echo started >&2; exit 3"
    start = time.monotonic()
    try:
        proc = kpool("run", "--allocator", "glibc", "--", "sh", "-c", script, cwd=tmp_path)
        took = time.monotonic() - start
    finally:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int((tmp_path / "bg.pid").read_text()), signal.SIGKILL)
    assert took < 20, f"kpool run waited {took:.0f} s for a process its program left behind"
    assert proc.returncode == 3, proc.stderr
    assert "started" in proc.stderr and "exit status 3" in proc.stderr, proc.stderr
    assert "still holds its stderr" in proc.stderr, proc.stderr


def test_a_replay_ends_with_its_program_not_with_a_process_it_left_behind(tmp_path: Path) -> None:
    """A crash `kpool run` recorded of a program that had started a background process (`sleep 200 &`, a
    server) before it crashed: `kpool triage replay` waited for the output pipe's end, which the
    background process held, up to the reproducer's time limit (120 s), then called the run a timeout:
    "non-reproducible: reproduced 0 of 1, otherwise 1x: timeout" (and `recheck` marked it fixed). Now a
    replay ends with its program; what is left of its session is stopped."""
    import os
    import time

    from harness.triage import replay
    from harness.triage.crash import Reproducer

    script = "sleep 60 & echo $! > bg.pid; echo crashing; kill -SEGV $$"
    repro = Reproducer(argv=("sh", "-c", script), cwd=str(tmp_path), timeout_s=20)
    start = time.monotonic()
    try:
        outcome = replay.run_once(repro, source="program:sh")
        took = time.monotonic() - start
        pid = int((tmp_path / "bg.pid").read_text())
        time.sleep(0.2)
        left = Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
    finally:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int((tmp_path / "bg.pid").read_text()), signal.SIGKILL)
    assert not outcome.timed_out and took < 10, f"{took:.1f} s, {outcome.signature.title}"
    assert outcome.returncode == -signal.SIGSEGV, outcome
    assert outcome.signature.kind == "SIGSEGV" and "crashing" in outcome.output, outcome.signature.title
    assert not left, "the process it left behind runs on"


# ---- a program the preload cannot reach ----------------------------------------------------------------


def test_a_statically_linked_program_is_said_to_run_on_its_own_malloc(program: Path, tmp_path: Path) -> None:
    """`kpool run -- ./static-prog` ran it on glibc's malloc (LD_PRELOAD loads nothing into a program
    without a dynamic loader) and said "allocator kpool" and "pool: no figures (the program never
    allocated, ...)": a user read that kpool had run it. Now kpool says the program is statically linked
    and kpool was never loaded into it."""
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc is not None
    exe = tmp_path / "static"
    built = subprocess.run(
        [cc, "-static", "-O0", "-w", "-o", str(exe), str(program.parent / "p.c")],
        capture_output=True,
        check=False,
    )
    if built.returncode != 0:
        pytest.skip(f"no static libc: {built.stderr[-200:]!r}")
    proc = kpool("run", "--", str(exe), "write-after-free", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "statically linked" in proc.stderr and "never allocated" not in proc.stderr, proc.stderr
    # a dynamically linked one is not
    proc = kpool("run", "--on-error", "log", "--", str(program), "noisy", cwd=tmp_path)
    assert "statically linked" not in proc.stderr[-3000:], proc.stderr[-3000:]


def test_a_program_its_readers_end_stopped_is_no_crash(tmp_path: Path) -> None:
    """`kpool run -- yes | head -1`: `yes` ends by SIGPIPE when head has its line, as every writer of a
    pipeline does (the shell does not even say so). kpool said "killed by signal 13" and recorded a crash,
    "signal-13 in program:yes", whose replay (its output read to the end) ran until its time limit. Now
    it is said as SIGPIPE and nothing is recorded; the exit status stays 141, the shell's."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "run", "--reports", str(tmp_path), "--", "yes"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).parents[1]), "LANG": "C"},
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read(2) == b"y\n"
    proc.stdout.close()  # what `head -1` does once it has its line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 128 + signal.SIGPIPE, err
    assert "yes: killed by SIGPIPE" in err and "no crash recorded" in err, err
    assert "crash recorded: signature" not in err and not (tmp_path / "crashes.sqlite").exists(), err


def test_a_time_limited_program_leaves_no_process_behind(tmp_path: Path) -> None:
    """A program workload (a time limit: its own session) whose program started a background process
    (`server &`) and ended: the process ran on after `kpool stress` ended (a server left holding its port
    for the next allocator's run). The session is the program's: now what is left of it is stopped when
    the program ends, as at its time limit."""
    import os
    import time

    from harness import run

    script = "sleep 60 >/dev/null 2>&1 & echo $! > bg.pid"
    result = run.run_program(["sh", "-c", script], "glibc", cwd=tmp_path, timeout_s=30, echo_stderr=False)
    pid = int((tmp_path / "bg.pid").read_text())
    try:
        assert result.returncode == 0 and not result.timed_out, result
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            stat = Path(f"/proc/{pid}/stat")
            if not stat.exists() or stat.read_text().split()[2] == "Z":
                break
            time.sleep(0.05)
        else:
            pytest.fail("the process the program left behind runs on")
    finally:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


KPOOL_RUN = [sys.executable, "-m", "harness.cli", "run"]


def test_a_program_whose_name_is_not_utf8_is_run_and_recorded(tmp_path: Path) -> None:
    """`kpool run -- ./$'\\xff'prog` (a file name in another encoding) crashing: two tracebacks, the
    memory sampler's (its /proc/<pid>/status holds the name: UnicodeDecodeError) and the recorder's (the
    crash's source, "program:\\udcffprog", refused by SQLite: UnicodeEncodeError), and no summary and no
    record. Now the name is written with the byte escaped, and the crash is recorded."""
    exe = Path(os.fsdecode(bytes(tmp_path) + b"/\xffsh"))
    shutil.copy("/bin/sh", exe)
    script = "sleep 0.3; kill -SEGV $$"  # the memory sampler reads its status meanwhile
    proc = subprocess.run(
        [*KPOOL_RUN, "--allocator", "glibc", "--reports", str(tmp_path), "--", exe, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        check=False,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).parents[1]), "LANG": "C.UTF-8"},
    )
    err = proc.stderr.decode(errors="replace")
    assert "Traceback" not in err, err
    assert proc.returncode == 128 + signal.SIGSEGV, err
    assert "crash recorded: signature" in err, err
    db = CrashDB.open(tmp_path / "crashes.sqlite")
    (sig,) = db.signatures()
    assert "\\xffsh" in sig.title, sig.title


@pytest.mark.parametrize("meddle", ['rm -rf "$KPOOL_STATS_OUT"', 'mkdir "$KPOOL_STATS_OUT/x"'])
def test_a_program_that_meddles_with_the_figures_folder_is_still_summed_up_and_recorded(
    tmp_path: Path, meddle: str
) -> None:
    """The program sees kpool run's figures folder in its environment (KPOOL_STATS_OUT): one that removed
    it (a clean-up of the temporary folders it was given) or made a folder in it stopped kpool run at its
    clean-up with "kpool: error: /tmp/kpool-run-x: No such file or directory" (or "x: Is a directory"),
    exit 1: its crash (SIGSEGV) neither said nor recorded. Now the clean-up takes what is there."""
    proc = kpool(
        "run",
        "--allocator",
        "glibc",
        "--reports",
        str(tmp_path),
        "--",
        "sh",
        "-c",
        f"{meddle}; kill -SEGV $$",
        cwd=tmp_path,
    )
    assert proc.returncode == 128 + signal.SIGSEGV, proc.stderr
    assert "killed by SIGSEGV" in proc.stderr and "crash recorded: signature" in proc.stderr, proc.stderr


@pytest.mark.parametrize("allocator", ["glibc", "kpool"])
def test_a_command_that_starts_with_a_dash_is_the_command_not_an_option_of_env(
    tmp_path: Path, allocator: str
) -> None:
    """kpool run starts the program through env(1) (under GNU time): `kpool run --allocator glibc --
    --version` printed env's version, and `-- -i sh -c ...` ran sh with the environment cleared, where
    the user named a program. Now env's options end before the command: no such program, exit 127."""
    proc = kpool("run", "--allocator", allocator, "--reports", str(tmp_path), "--", "--version", cwd=tmp_path)
    assert "GNU coreutils" not in proc.stdout + proc.stderr, proc.stdout
    assert proc.returncode == 127, proc.stdout + proc.stderr
