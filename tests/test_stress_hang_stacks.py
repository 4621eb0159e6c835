"""A stress worker killed at its time limit leaves every thread's stack (issue 15, point 6 for stress):
taken before the kill (gdb when it is installed, else the kernel side from /proc), attached to the crash
record (kind timeout), and signed with the stuck thread's frames, as a fuzz hang is (triage/threads.py)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from harness.stress import stacks, worker
from harness.triage import record
from harness.triage import signature as S

# A program whose second thread deadlocks on a mutex it holds, while the main thread joins it, as a
# worker whose op thread hangs in the allocator: the stack to sign with is the second thread's.
HANG_C = r"""
#include <pthread.h>
#include <unistd.h>
static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
__attribute__((noinline)) void stuck_here(void) { pthread_mutex_lock(&m); pthread_mutex_lock(&m); }
__attribute__((noinline)) void *op_thread(void *a) { (void)a; stuck_here(); return 0; }
int main(void) { pthread_t t; pthread_create(&t, 0, op_thread, 0); pthread_join(t, 0); return 0; }
"""


@pytest.fixture(scope="module")
def hang_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler")
    d = tmp_path_factory.mktemp("hang")
    (d / "hang.c").write_text(HANG_C)
    subprocess.run([cc, "-g", "-O0", "-pthread", "-o", str(d / "hang"), str(d / "hang.c")], check=True)
    return d / "hang"


def _run_to_time_limit(program: Path, tmp_path: Path) -> dict[str, object]:
    w = worker.Worker(
        index=0,
        seed=1,
        program_path=program,
        out_path=tmp_path / "out",
        err_path=tmp_path / "err",
        cmd=[str(program)],
        env={},
        time_limit_s=0.5,
    )
    w.start()
    deadline = time.monotonic() + 60
    while not w.poll():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    crash = w.result()["crash"]
    assert isinstance(crash, dict)
    return crash


@pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is not installed")
def test_a_worker_killed_at_its_time_limit_is_signed_with_the_stuck_thread(
    hang_program: Path, tmp_path: Path
) -> None:
    crash = _run_to_time_limit(hang_program, tmp_path)
    assert crash["kind"] == "timeout"
    dump = str(crash.get("thread_stacks", ""))
    assert "running the workload" in dump and "waiting for the workload's threads" in dump, dump
    c = record.stress_crash({"name": "hang"}, crash, "run-1")
    sig = S.of_crash(c)
    assert sig.kind == "timeout", sig
    assert sig.frames[:2] == ("stuck_here", "op_thread"), sig  # not main in pthread_join


def test_without_gdb_the_kernel_side_of_each_thread_is_kept(
    hang_program: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = shutil.which
    monkeypatch.setattr(worker.shutil, "which", lambda name, *a, **k: None if name == "gdb" else real(name))
    crash = _run_to_time_limit(hang_program, tmp_path)
    assert crash["kind"] == "timeout"
    dump = str(crash.get("thread_stacks", ""))
    assert dump.count("==kpfuzz== thread ") == 2, dump
    assert "wchan:" in dump and stacks.UNKNOWN in dump
    sig = S.of_crash(record.stress_crash({"name": "hang"}, crash, "run-1"))
    assert sig.kind == "timeout"


GDB_OUTPUT = """\
[New LWP 101]
Thread 2 (Thread 0x7f1c2d3fe6c0 (LWP 101) "kpdrive"):
#0  0x00007f0000001234 in __futex_abstimed_wait_common64 (private=0) at ./nptl/futex-internal.c:57
#1  0x00007f0000001300 in kp__span_lock (s=0x1) at allocator/src/primary.c:120
#2  0x00007f0000001400 in kp_alloc (pool=0x1, size=8) at allocator/src/alloc.c:40
#3  0x0000555555551000 in run_loop (t=0x1) at allocator/driver/driver.c:600
#4  0x0000555555552000 in thread_main (arg=0x1) at allocator/driver/driver.c:668
Thread 3 (Thread 0x7f1c2d3fe6c1 (LWP 102) "kpdrive"):
#0  0x00007f0000001234 in clock_nanosleep () at ./x.c:1
#1  0x0000555555553000 in thread_main (arg=0x1) at allocator/driver/interfere.c:210
Thread 4 (Thread 0x7f1c2d3fe6c2 (LWP 103) "kpool-daemon"):
#0  0x00007f0000001234 in pthread_cond_timedwait () at ./x.c:1
#1  0x00007f0000005000 in daemon_main (arg=0x1) at allocator/src/daemon.c:300
Thread 1 (Thread 0x7f1c2d3fe6c3 (LWP 100) "kpdrive"):
#0  0x00007f0000001234 in __pthread_clockjoin_ex () at ./x.c:1
#1  0x0000555555554000 in kpd_run (run=0x1) at allocator/driver/driver.c:790
"""


def test_kpdrive_threads_are_told_apart() -> None:
    threads = stacks.parse_gdb(GDB_OUTPUT)
    assert [t.tid for t in threads] == [101, 102, 103, 100]
    assert stacks.states(threads, 100) == {
        101: stacks.RUNNING,
        102: stacks.INTERFERING,
        103: stacks.IDLE,
        100: stacks.WAITING,
    }
    sig = S.compute(stacks.dump(100, "killed", threads), returncode=-9, guess="timeout")
    assert sig.frames[:2] == ("kp__span_lock", "kp_alloc"), sig


# ---- a program workload's integrity errors without a crash (issue 15, point 5, program workloads) ------


def test_a_program_run_that_went_on_after_integrity_errors_is_a_crash_entry(tmp_path: Path) -> None:
    from harness import run
    from harness.spec.program import ProgramWorkload
    from harness.stress import program

    wl = ProgramWorkload(
        path=str(tmp_path / "w.yaml"),
        sha256="0" * 64,
        data={
            "name": "logs",
            "program": {"command": ["./p"]},
            "slo": {"max_integrity_events": 5, "exit_status": 0},
        },
    )
    result = run.RunResult(
        argv=("./p",),
        allocator="kpool",
        conf=None,
        env={"LD_PRELOAD": "libkpool-preload.so", "KPOOL_CONF": "on_error:log"},
        cwd=str(tmp_path),
        returncode=0,
        timed_out=False,
        wall_s=0.1,
        user_s=0.0,
        sys_s=0.0,
        peak_rss_kib=1,
        rss_exact=True,
        stderr_tail="kpool 1.5 double_free 0x7f0a3c001040 size 64: double free in free(); going on\n",
        figures={"integrity_total": 1, "integrity": [{"kind": "double_free", "call": "free", "text": "x"}]},
    )
    assert result.damaged and result.recordable and not result.crashed
    one = program.Run("kpool", 0, tmp_path, result=result, signature="abcd")
    entry = program.judge(wl, [one], "kpool")
    (crash,) = entry["crashes"]
    assert crash["kind"] == "integrity" and crash["signature"] == "abcd"
    assert "./p" in crash["reproducer"]["command"]
    assert entry["passed"], entry["broken"]  # tolerated by max_integrity_events: a record, not a failure
