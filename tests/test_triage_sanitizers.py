"""Sanitizer reports from stress workers are parsed into a kind and frames, as the fuzz path's are (issue 15,
point 4): a ThreadSanitizer race is a data race in the racing functions, not "exit-code (66)"."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from harness import build, cli
from harness.stress import worker as W
from harness.triage import signature as S
from harness.triage.db import CrashDB

# A ThreadSanitizer report as a kpdrive worker prints it (release symbols: file:line (module+offset)).
TSAN_RACE = """\
==================
WARNING: ThreadSanitizer: data race (pid=11603)
  Write of size 8 at 0x7f6ecabd1628 by thread T4:
    #0 partial_push src/primary.c:221 (kpdrive+0x1fe81)
    #1 kp__central_give src/primary.c:335 (kpdrive+0x1fe81)
    #2 kp__tcache_flush_bin src/tcache.c:230 (kpdrive+0x23f01)
    #3 kp_free src/alloc.c:820 (kpdrive+0x179fa)
    #4 x_free driver/driver.c:209 (kpdrive+0x5bdc)

  Previous read of size 8 at 0x7f6ecabd1628 by thread T3 (mutexes: write M16):
    #0 kp__central_take src/primary.c:278 (kpdrive+0x223e9)
    #1 small_alloc src/alloc.c:51 (kpdrive+0x16fe0)
    #2 kp_alloc src/alloc.c:331 (kpdrive+0x1751a)
    #3 x_alloc driver/driver.c:191 (kpdrive+0x6764)

  Mutex M16 (0x7f6ecabd1600) created at:
    #0 pthread_mutex_init ../../src/libsanitizer/tsan/tsan_interceptors_posix.cpp:1295 (libtsan.so.2+0x50468)
    #1 locks_init src/pool.c:95 (kpdrive+0x1df2a)

SUMMARY: ThreadSanitizer: data race src/primary.c:221 in partial_push
==================
"""
# The same race with the two accesses the other way round (the reader reported first).
TSAN_RACE_SWAPPED = """\
==================
WARNING: ThreadSanitizer: data race (pid=200)
  Read of size 8 at 0x7f00000010 by thread T3 (mutexes: write M16):
    #0 kp__central_take src/primary.c:278 (kpdrive+0x223e9)
    #1 small_alloc src/alloc.c:51 (kpdrive+0x16fe0)

  Previous write of size 8 at 0x7f00000010 by thread T4:
    #0 partial_push src/primary.c:221 (kpdrive+0x1fe81)
    #1 kp__central_give src/primary.c:335 (kpdrive+0x1fe81)

SUMMARY: ThreadSanitizer: data race src/primary.c:278 in kp__central_take
==================
"""


def test_a_tsan_race_is_a_data_race_in_its_two_functions() -> None:
    sig = S.compute(TSAN_RACE, returncode=66)
    assert sig.kind == "data-race"
    assert sig.frames == ("kp__central_take", "partial_push")
    assert S.compute(TSAN_RACE_SWAPPED, returncode=66).hash == sig.hash  # either order: one race


def test_the_worker_keeps_a_tsan_report(tmp_path: Path) -> None:
    lines = ["kpdrive: progress ops=10", *TSAN_RACE.splitlines(), "kpdrive: progress ops=20"]
    report = W._sanitizer_report(lines)
    assert "WARNING: ThreadSanitizer: data race" in report and "SUMMARY: ThreadSanitizer" in report
    assert "kp__central_take" in report


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("clang") is None and shutil.which("gcc") is None, reason="no compiler")
def test_a_tsan_race_in_a_stress_worker_has_a_parsed_signature(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make = build.make_command("tsan", "driver", plant=11)  # planted 11: central lists pushed unlocked
    subprocess.run(make, check=True, capture_output=True)
    kpdrive = build.paths.build_dir("tsan", 11) / "kpdrive"
    monkeypatch.setenv("KPOOL_KPDRIVE", str(kpdrive))
    wl = tmp_path / "race.yaml"
    wl.write_text(
        "name: race\nprocesses: 1\nthreads: 2\nops: 20000\nseed: 21\nmix: {alloc: 50, xfree: 40, free: 10}\n"
        "sizes: {dist: list, sizes: [{size: 32, weight: 4}, {size: 128, weight: 3}]}\nworking_set: 200\n"
        # planted 11 is in the inline layout's central lists
        "pool: {layout: inline}\n"
    )
    reports = tmp_path / "reports"
    args = [
        "stress",
        str(wl),
        "--variant",
        "tsan",
        "--reports",
        str(reports),
        "--run-id",
        "r",
        "--time-limit",
        "30",
    ]
    assert cli.main(["-q", *args]) == 1
    [sig] = CrashDB.open(reports / "crashes.sqlite").signatures()
    assert sig.kind == "data-race", sig.title
    assert sig.frames and all(f.startswith(("kp_", "partial_", "span_", "small_")) for f in sig.frames), sig


def test_a_zero_offset_to_null_is_pointer_arithmetic_not_a_null_dereference() -> None:
    # issue 15, point 8
    text = "src/alloc.c:70:20: runtime error: applying zero offset to null pointer\n"
    assert S.classify(text)[0] == "ubsan-pointer-overflow"
    deref = "pool.c:30:10: runtime error: member access within null pointer of type 'kp_pool'\n"
    assert S.classify(deref)[0] == "ubsan-null-dereference"
