"""The default layout's known gaps (layout:outline since session 24), as xfails.

Each C file of allocator/tests/outline_gaps/ builds a test of allocator/tests/ with the default layout where
that test is pinned to layout:inline, and fails today (the README there says what each finds). The tests
below it do the same for the Python tests pinned to layout:inline (test_preload.py, test_run.py,
test_stress_starved.py, test_preload_attack19.py). A fix makes its test pass here, which a strict xfail
reports as a failure: then the property moves back to the default layout in its own test and its xfail goes.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
from pathlib import Path

import pytest
from test_c_suite import ALLOCATOR, SANITIZER_ENV, _failure_lines, _make, _tail

from harness import build, spec
from harness.stress.binary import ensure_kpdrive

BUILD = "build/pytest-gaps"
GAPS = sorted(p.stem for p in (ALLOCATOR / "tests" / "outline_gaps").glob("test_*.c"))
PRELOAD_DATA = Path(__file__).parent / "data" / "preload"


@pytest.fixture(scope="module")
def preload() -> Path:
    return build.preload_library()


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The preload programs these tests run, built as test_preload.py builds them."""
    out = tmp_path_factory.mktemp("gap-programs")
    built = {}
    for name in ("traps", "resident", "attack19"):
        built[name] = out / name
        src = PRELOAD_DATA / f"{name}.c"
        argv = ["cc", "-O0", "-fno-builtin", "-pthread", "-o", str(built[name]), str(src)]
        subprocess.run(argv, check=True)
    return built


def _built(name: str) -> str:
    lock = ALLOCATOR / f"{BUILD}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        made = _make("release", f"{BUILD}/tests/outline_gaps/{name}", build=BUILD)
    assert made.returncode == 0, _tail(made.stdout + made.stderr)
    return str(ALLOCATOR / BUILD / "tests" / "outline_gaps" / name)


def test_gaps_are_listed() -> None:
    """The folder holds the gaps its README names: a file added or removed is said there. None at
    present (s25-mem moved test_memory_threads_outline.c back to test_memory_threads.c); with none,
    test_outline_gap below is one skipped item (an empty parameter set)."""
    readme = (ALLOCATOR / "tests" / "outline_gaps" / "README.md").read_text()
    if not GAPS:
        assert "Files: none at present" in readme, "outline_gaps/README.md lists files the folder lacks"
    for name in GAPS:
        assert f"`{name}.c`" in readme, f"{name}.c is not in outline_gaps/README.md"


@pytest.mark.xfail(strict=True, reason="a known gap of layout:outline (outline_gaps/README.md)")
@pytest.mark.parametrize("name", GAPS)
def test_outline_gap(name: str) -> None:
    exe = _built(name)
    env = {k: v for k, v in {**SANITIZER_ENV, **os.environ}.items() if k != "KPOOL_CONF"}
    proc = subprocess.run(
        [exe], cwd=ALLOCATOR, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, "\n".join(_failure_lines(out)[:20])


PACED = """\
name: paced
processes: 1
ops: 4000
mix: {alloc: 2, free: 1}
sizes: {dist: loguniform, min: 16, max: 8k}
working_set: 500
"""


def test_a_paced_workload_maps_nothing_on_the_allocation_path(tmp_path: Path) -> None:
    """test_stress_starved.py's workload, ten runs of kpdrive on the default layout: its allocation path
    made 2-3 mmap and 2 mprotect (a segment and its guarded metadata: outline.c, segment_map) in 5 of 10
    runs, layout:inline none in 10: its second segment came before the daemon's pass had mapped a spare.
    Two spares are kept mapped from kp_create on now (outline.c, OL_SPARES_MIN)."""
    path = tmp_path / "paced.yaml"
    path.write_text(PACED)
    prog = tmp_path / "paced.prog"
    prog.write_text(spec.load(path).program(interference=False, allocator="kpool"))
    env = {k: v for k, v in os.environ.items() if k != "KPOOL_CONF"}
    made = []
    for _ in range(10):
        argv = [str(ensure_kpdrive()), str(prog)]
        out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60, env=env)
        made.append(sum(json.loads(out.stdout)["kpool_stats"]["syscalls"]["alloc"].values()))
    assert made == [0] * 10, f"allocation-path system calls per run: {made}"


def test_a_signal_handler_that_mallocs_on_the_default_layout_never_hangs(
    programs: dict[str, Path], preload: Path
) -> None:
    """test_preload_attack19.py's signal-malloc on the default layout: the handler's malloc waited in
    avail_lock (outline.c) for the heap lock its own thread held in refill_span, yielding forever (1 run
    in 4); a call inside a refill now takes alloc.c's path (outline.c, ol_busy; test_outline_signal.c)."""
    for _ in range(3):
        env = {"PATH": "/usr/bin:/bin", "LANG": "C", "LD_PRELOAD": str(preload)}
        argv = [str(programs["attack19"]), "signal-malloc"]
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30, check=False)
        assert proc.returncode in (0, -6), proc.stderr[-2000:]
