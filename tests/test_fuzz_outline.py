"""The fuzzers reach the second small path, layout:outline (allocator/src/outline.c), and find its
planted bugs there.

api_sequence and faults each have pools made with layout:outline (fuzz_targets.c: the first input byte
picks one). With KPOOL_FUZZ_LAYOUT=outline in its environment a target picks among those pools only:
a plant (KP_PLANT 2, 5, 8) is planted in both paths, and the inline pools would otherwise be found first.
The oracle's verdict on an outline pool is "VIOLATION outline-<kind>", so an outline finding is signed
apart from the inline path's (harness/triage: oracle-outline-<kind>), and the three plants apart from
each other. Planted 11 (the owner's avail lists moved without their lock, raced by the daemon's purge)
is a race: the TSan build of the C tests finds it (test_outline_integrity), not these sequential targets.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.triage import signature as S

ROOT = Path(__file__).resolve().parents[1]
FUZZ_SECONDS = 60
OVERHEAD_S = 240
# plant: (target that finds it on outline, what it is there)
PLANTS = {
    2: ("faults", "no double-free check: the owner's free block pushed again"),
    5: ("api_sequence", "a realloc in place 8 bytes past the room"),
    8: ("api_sequence", "KP_ZERO leaves the first 8 bytes of a block as they were"),
}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.quality,
    pytest.mark.skipif(shutil.which("clang") is None, reason="the fuzz build needs clang"),
]


def _fuzz(target: str, plant: int, reports: Path) -> tuple[int, dict[str, object], str]:
    pytest.importorskip("atheris")
    cmd = [sys.executable, "-m", "harness.cli", "-q", "fuzz", target, "--plant", str(plant), "--no-seeds"]
    cmd += ["--time", str(FUZZ_SECONDS), "--reports", str(reports)]
    env = dict(os.environ, KPOOL_FUZZ_LAYOUT="outline")
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=FUZZ_SECONDS + OVERHEAD_S, check=False
    )
    runs = sorted(reports.glob("fuzz-*/fuzz.json"))
    assert runs, f"no fuzz.json written:\n{proc.stdout}\n{proc.stderr}"
    result: dict[str, object] = json.loads(runs[-1].read_text())["results"][0]
    return proc.returncode, result, proc.stdout + proc.stderr


_found: dict[int, str] = {}


@pytest.mark.parametrize("plant", sorted(PLANTS), ids=[f"plant{n}" for n in sorted(PLANTS)])
def test_planted_bug_is_found_on_outline(plant: int, tmp_path: Path) -> None:
    target, what = PLANTS[plant]
    code, result, out = _fuzz(target, plant, tmp_path)
    crashes = result["crashes"]
    assert code == 1 and isinstance(crashes, list) and crashes, f"planted {plant} ({what}) not found:\n{out}"
    report = Path(crashes[0] + ".txt")
    assert report.is_file(), f"no replay report for {crashes[0]}"
    text = report.read_text(errors="replace")
    # found on an outline pool: the oracle's verdict names it, and outline.c is on the way there
    assert "==kpfuzz== VIOLATION outline-" in text, f"planted {plant} not found on an outline pool:\n{text}"
    sig = S.compute(text, source=f"fuzz:{target}")
    assert "outline" in sig.kind, sig
    _found[plant] = sig.hash
    seconds = result["seconds"]
    assert isinstance(seconds, float | int) and seconds <= FUZZ_SECONDS + 15


def test_outline_findings_have_distinct_signatures(tmp_path: Path) -> None:
    """Each plant's outline finding under a signature of its own. The findings of the test above when this
    worker ran it; the others fuzzed again here (under xdist the parametrized cases run in other workers,
    and a test that skipped then would never run in CI)."""
    found = dict(_found)
    for plant in sorted(set(PLANTS) - set(found)):
        target = PLANTS[plant][0]
        code, result, out = _fuzz(target, plant, tmp_path / f"plant{plant}")
        crashes = result["crashes"]
        assert code == 1 and isinstance(crashes, list) and crashes, f"planted {plant} not found:\n{out}"
        text = Path(crashes[0] + ".txt").read_text(errors="replace")
        found[plant] = S.compute(text, source=f"fuzz:{target}").hash
    assert len(set(found.values())) == len(PLANTS), found


# The outline functions a target's committed seeds must enter (kpool fuzz --coverage, the coverage
# build): the seeds named outline-* pick an outline pool with their first byte.
OUTLINE_ENTERED = {
    "api_sequence": {"kp__ol_create", "kp__ol_alloc", "kp__ol_realloc", "kp__ol_usable"},
    "faults": {"kp__ol_create", "kp__ol_alloc", "kp__ol_free_slow", "kp__ol_knows"},
    "concurrent": {"kp__ol_create", "kp__ol_alloc", "kp__ol_free_other"},
}


@pytest.mark.parametrize("target", sorted(OUTLINE_ENTERED))
def test_seeds_reach_outline(target: str, tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    cmd = [sys.executable, "-m", "harness.cli", "fuzz", target, "--coverage", "--reports", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    saved = json.loads((tmp_path / "coverage.json").read_text())
    missed = {m.split(" ", 1)[0] for m in saved["missed"]}
    never = OUTLINE_ENTERED[target] & missed
    assert not never, f"{target}'s seeds never enter {never}"
    files = {f["file"]: f for f in saved["files"]}
    assert files["src/outline.c"]["covered"] > files["src/outline.c"]["edges"] // 10, files["src/outline.c"]


def test_outline_reproducer_replays_without_the_environment(tmp_path: Path) -> None:
    """A crash found with `kpool fuzz --layout outline` replays from its reproducer alone: the layout that
    narrowed the first byte's pick of a pool is in the reproducer, not only in the fuzzing shell's
    environment. Before (session 23), the reproducer kept no KPOOL_FUZZ_LAYOUT: `kpool triage replay` in
    a shell without it picked an inline pool with the same byte and said "non-reproducible: reproduced 0
    of 3, otherwise 3x: oracle-not-zeroed" for planted 8's outline finding."""
    pytest.importorskip("atheris")
    cmd = [sys.executable, "-m", "harness.cli", "-q", "fuzz", "api_sequence", "--plant", "8", "--no-seeds"]
    cmd += ["--layout", "outline", "--time", str(FUZZ_SECONDS), "--reports", str(tmp_path)]
    env = {k: v for k, v in os.environ.items() if k != "KPOOL_FUZZ_LAYOUT"}
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=FUZZ_SECONDS + OVERHEAD_S, check=False
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    result = json.loads(sorted(tmp_path.glob("fuzz-*/fuzz.json"))[-1].read_text())["results"][0]
    assert result["layout"] == "outline", result
    db = tmp_path / "crashes.sqlite"
    replay = [sys.executable, "-m", "harness.cli", "triage", "--db", str(db), "replay", "1", "-n", "2"]
    proc = subprocess.run(replay, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "reproduced 2 of 2" in out, out


# An input planted 8 crashes on only when it runs a second time in one process: its one KP_ZERO
# allocation of 4096 bytes (on an outline pool: the first byte) is handed the block its first run wrote
# and freed. Alone, in a fresh process, it must not crash; after itself, it must.
_TWICE = b"unkn"


def test_an_input_runs_once_in_its_replay(tmp_path: Path) -> None:
    """`<target>.py INPUT` (the reproducer of a crash found alone) runs the input once. Before
    (session 24's CI), libFuzzer ran it a second time now and then, to look for a leak (its malloc hooks
    counted Python's allocations unbalanced), in the same process and on the same pools: a replay of
    planted 8's finding said "reproduced 1 of 2" and "60% of 10", and a crash that needed the state its
    first run left was filed as one the input alone reproduces."""
    pytest.importorskip("atheris")
    from harness.fuzz import runner
    from harness.fuzz.target import write_history

    env = dict(runner.target_env("api_sequence", 8), **{runner.LAYOUT_ENV: "outline"})
    data = tmp_path / "twice"
    data.write_bytes(_TWICE)
    codes = [runner.replay("api_sequence", data, env)[0] for _ in range(8)]
    assert codes == [0] * 8, codes
    history = tmp_path / "history"
    write_history(history, [_TWICE, _TWICE])
    code, text = runner.replay("api_sequence", history, env, history=True)
    assert code != 0 and "VIOLATION outline-not-zeroed" in text, text
