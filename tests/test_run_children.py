"""`kpool run` and the processes its program starts: a child that dies of a fault signal (SIGSEGV, SIGBUS,
SIGILL, SIGFPE, SIGABRT, SIGSYS) is named in the summary (its command, its pid, the signal) and recorded as
a crash, as the program's own death by one is; the preload records it (allocator/preload/preload.c,
fault_record). A child stopped by SIGTERM, SIGKILL or SIGPIPE is process management, not a fault: neither."""

from __future__ import annotations

import re
from pathlib import Path

from kpool_cli import kpool

from harness import run
from harness.triage.db import CrashDB

CRASHER = 'python3 -c "import os; os.kill(os.getpid(), 11)"'


def test_a_childs_segfault_is_named_and_recorded(tmp_path: Path) -> None:
    proc = kpool("run", "--reports", str(tmp_path), "--", "sh", "-c", f"{CRASHER}; true", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr  # the program's own status: sh went on
    found = re.search(r"a child process died: (.*) \(pid (\d+)\) killed by SIGSEGV", proc.stderr)
    assert found, proc.stderr
    assert found.group(1) == "python3 -c 'import os; os.kill(os.getpid(), 11)'", proc.stderr
    assert "crash recorded: signature" in proc.stderr, proc.stderr
    db = CrashDB.open(tmp_path / "crashes.sqlite")
    (sig,) = db.signatures()
    assert db.source(sig.id) == "program:python3" and sig.kind == "SIGSEGV", sig
    repro = db.reproducer(sig.id)
    assert repro is not None and repro.argv[0] == "sh"  # the command kpool ran, which starts the child


def test_a_child_stopped_by_sigterm_is_no_crash(tmp_path: Path) -> None:
    proc = kpool(
        "run", "--reports", str(tmp_path), "--", "sh", "-c", "sleep 30 & kill $!; wait; true", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "child process" not in proc.stderr and "crash recorded" not in proc.stderr, proc.stderr


def test_the_programs_own_segfault_is_not_also_a_childs(tmp_path: Path) -> None:
    proc = kpool(
        "run",
        "--reports",
        str(tmp_path),
        "--",
        "python3",
        "-c",
        "import os; os.kill(os.getpid(), 11)",
        cwd=tmp_path,
    )
    assert proc.returncode == 128 + 11, proc.stderr
    assert "killed by SIGSEGV" in proc.stderr and "child process" not in proc.stderr, proc.stderr


def test_a_child_crash_alone_makes_a_run_recordable() -> None:
    base = run.RunResult(
        argv=("sh",),
        allocator="kpool",
        conf=None,
        env={},
        cwd="/",
        returncode=0,
        timed_out=False,
        wall_s=0.1,
        user_s=0.0,
        sys_s=0.0,
        peak_rss_kib=1,
        rss_exact=True,
        stderr_tail="",
    )
    assert not base.recordable
    crashed = run.RunResult(**{**base.__dict__, "child_signals": [run.ChildSignal(12, 11, 11, ("python3",))]})
    assert crashed.recordable and not crashed.crashed


def test_a_childs_segfault_replays(tmp_path: Path) -> None:
    proc = kpool("run", "--reports", str(tmp_path), "--", "sh", "-c", f"{CRASHER}; true", cwd=tmp_path)
    found = re.search(r"crash recorded: signature (\w+)", proc.stderr)
    assert found, proc.stderr
    db = str(tmp_path / "crashes.sqlite")
    replay = kpool("triage", "--db", db, "replay", found.group(1), "--runs", "2", cwd=tmp_path)
    assert "reproduced 2 of 2" in replay.stdout + replay.stderr, replay.stdout + replay.stderr


def test_a_program_workload_run_whose_child_crashed_is_a_crash_entry_and_breaks_the_verdict(
    tmp_path: Path,
) -> None:
    from harness.spec.program import ProgramWorkload
    from harness.stress import program

    wl = ProgramWorkload(
        path=str(tmp_path / "w.yaml"),
        sha256="0" * 64,
        data={"name": "kids", "program": {"command": ["sh", "-c", "x"]}, "slo": {"exit_status": 0}},
    )
    result = run.RunResult(
        argv=("sh", "-c", "x"), allocator="kpool", conf=None, env={}, cwd=str(tmp_path), returncode=0,
        timed_out=False, wall_s=0.1, user_s=0.0, sys_s=0.0, peak_rss_kib=1, rss_exact=True, stderr_tail="",
        child_signals=[run.ChildSignal(77, 70, 11, ("./worker", "--n", "3"))],
    )  # fmt: skip
    one = program.Run("kpool", 0, tmp_path, result=result, signature="abcd")
    entry = program.judge(wl, [one], "kpool")
    (crash,) = entry["crashes"]
    assert crash["kind"] == "child-signal" and crash["signal"] == 11 and crash["signature"] == "abcd", crash
    assert "./worker --n 3 (pid 77) killed by SIGSEGV" in crash["message"], crash
    assert not entry["passed"] and any(b.startswith("crashes: 1") for b in entry["broken"]), entry["broken"]


def test_a_fault_signal_the_program_ignores_stays_ignored(tmp_path: Path) -> None:
    """The preload's record is installed only where the action is the default: an ignored SIGABRT (inherited
    across exec) is still ignored in the program."""
    look = "import signal; print(signal.getsignal(signal.SIGABRT) is signal.SIG_IGN)"
    proc = kpool(
        "run",
        "--reports",
        str(tmp_path),
        "--",
        "sh",
        "-c",
        f"trap '' ABRT; python3 -c '{look}'",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True", proc.stdout
