"""A hang shows the stuck thread (issue 15, point 6): on a fuzz target's timeout every thread's stack is
recorded, and the crash is signed with the thread that was running the input, not with the fuzzing
thread waiting for it (pthread_join, pthread_cond_wait)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness.triage.db import CrashDB

# Planted 12 (allocator/driver/fuzz_targets.c): the concurrent target's second thread takes a lock it
# already holds when its half of the input opens with "HG". 0xf0: the input runs on two fresh threads,
# so the fuzzing thread waits in pthread_join; the halves are "\0\0" and "HG".
HANG_PLANT = 12
HANG_INPUT = b"\xf0\x00\x00HG"
# libFuzzer's -timeout for the test: its alarm fires every timeout/2+1 s, so a hang is reported 2-4 s in.
HANG_TIMEOUT_S = 2
JOIN = "pthread_join (/lib/x86_64-linux-gnu/libc.so.6+0x8ce2)"
WAIT = "pthread_cond_wait (/lib/x86_64-linux-gnu/libc.so.6+0x8ae2)"
WAITS = ("pthread_join", "pthread_cond_wait", "run_halves", "kp_fuzz_concurrent")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("clang") is None, reason="the fuzz build needs clang")
def test_a_hang_in_a_second_thread_is_signed_with_the_stuck_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("atheris")
    from harness.fuzz import runner

    monkeypatch.setattr(runner, "INPUT_TIMEOUT_S", HANG_TIMEOUT_S)
    reports = tmp_path / "reports"
    hang = tmp_path / "hang"
    hang.mkdir()
    (hang / "input").write_bytes(HANG_INPUT)
    # the hang input goes in as a second corpus: libFuzzer runs it in its first pass
    run = runner.run("concurrent", 5, plant=HANG_PLANT, seeds=False, reports=reports, extra=[str(hang)])
    [result] = run.results
    timeouts = [c for c in result.crashes if Path(c).name.startswith("concurrent-timeout-")]
    assert timeouts, result
    report = Path(timeouts[0] + ".txt").read_text()
    # every thread's stack is in the report, the stuck one marked
    assert report.count("==kpfuzz== thread ") >= 3, report
    assert "running the input" in report, report
    db = CrashDB.open(reports / "crashes.sqlite")
    [sig] = db.signatures()
    assert sig.kind == "timeout", sig
    assert sig.title.split(" in ", 1)[1].startswith("fz_planted_hang"), sig.title
    assert not any(w in sig.title for w in WAITS), sig.title


def _thread(tid: int, state: str, frames: list[str]) -> str:
    lines = [f'==kpfuzz== thread {tid} "python3" {state}']
    lines.append("    #0 0x7f0000000001 in __sanitizer_print_stack_trace asan_stack.cpp:87:3")
    lines.append("    #1 0x7f0000000002 in fz_stacks_print_own /k/allocator/driver/fuzz_stacks.c:177:3")
    lines.append("    #2 0x7f0000000003 in fz_stacks_on_signal /k/allocator/driver/fuzz_stacks.c:189:2")
    lines.append("    #3 0x7f0000000004  (/lib/x86_64-linux-gnu/libc.so.6+0x3c04f)")
    lines += [f"    #{i + 4} 0x7f00000001{i:02x} in {f}" for i, f in enumerate(frames)]
    return "\n".join(lines) + "\n\n"


def _timeout(*threads: str) -> str:
    return (
        "==kpfuzz== STACKS: an input has run for 9.5 s (libFuzzer's -timeout is 10 s): every thread's stack\n"
        + "".join(threads)
        + "==kpfuzz== end of stacks\n==1== ERROR: libFuzzer: timeout after 12 seconds\n"
        + "    #0 0x7f0000000001 in __sanitizer_print_stack_trace asan_stack.cpp:87:3\n"
        + f"    #1 0x7f0000000002 in {JOIN}\n"
        + "    #2 0x7f0000000003 in run_halves /k/allocator/driver/fuzz_targets.c:163:4\n"
        + "    #3 0x7f0000000004 in kp_fuzz_concurrent /k/allocator/driver/fuzz_targets.c:204:2\n\n"
        + "SUMMARY: libFuzzer: timeout\n"
    )


def test_a_hang_is_signed_with_the_thread_running_the_input() -> None:
    from harness.triage import signature as S

    text = _timeout(
        _thread(1, "waiting for the input's threads", [JOIN, "run_halves x.c:1"]),
        _thread(2, "idle", [WAIT, "worker_main x.c:2"]),
        _thread(3, "running the input", ["kp__span_lock src/primary.c:9", "kp_alloc src/alloc.c:3"]),
    )
    sig = S.compute(text, returncode=70)
    assert (sig.kind, sig.frames) == ("timeout", ("kp__span_lock", "kp_alloc")), sig


def test_two_stuck_threads_sign_with_both_whichever_is_listed_first() -> None:
    from harness.triage import signature as S

    a = _thread(2, "running the input", ["kp__lock_a src/primary.c:9", "kp_alloc src/alloc.c:3"])
    b = _thread(3, "running the input", ["kp__lock_b src/backup.c:9", "kp_free src/alloc.c:5"])
    one, other = S.compute(_timeout(a, b), returncode=70), S.compute(_timeout(b, a), returncode=70)
    assert one.frames == ("kp__lock_a", "kp__lock_b"), one
    assert one.hash == other.hash


def test_a_timeout_without_thread_stacks_keeps_the_stack_it_has() -> None:
    from harness.triage import signature as S

    sig = S.compute(_timeout(), returncode=70)
    assert sig.frames == ("run_halves", "kp_fuzz_concurrent"), sig


def test_the_thread_header_example_matches_its_pattern() -> None:
    from harness.triage import patterns as P
    from harness.triage import threads

    assert P.THREAD_HEADER.match(P.THREAD_HEADER_EXAMPLE)
    [t] = threads.thread_stacks(P.THREAD_HEADER_EXAMPLE + "\n")
    assert (t.tid, t.name, t.running) == (20487, "python3", True)
