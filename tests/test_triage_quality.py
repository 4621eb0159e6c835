"""Signatures tell planted bugs apart (issue 15, point 2): one signature per bug, one bug per signature.

Each planted bug (`make PLANT=N`, lines marked "planted N" in allocator/src) is fuzzed from nothing, twice
(two libFuzzer seeds), and every crash is signed as `kpool fuzz` records it. The figures, signatures per bug
and bugs per signature, are printed (run with -s to see them) for the signatures of today and for the stack
alone (the fuzz oracle's verdict line taken out: what the signature was before it named the violation),
under which three of these bugs shared one signature. One bug (planted 8) is also reached by two paths of
the fuzz interpreter from two hand-made inputs: one signature.
"""

from __future__ import annotations

import re
import shutil
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

import pytest

from harness.triage import record
from harness.triage import signature as S

# plant: what it is (the target is api_sequence for all of them)
PLANTS = {
    6: "a pointer 16 bytes off for alignments of 4096 and up",
    9: "a block aligned to 4096 or more reports 16 bytes less than it has",
    10: "a block aligned to 4096 or more handed out again while still live",
    7: "a moving realloc copies 8 bytes too few",
    8: "KP_ZERO leaves the first 8 bytes of a small block as they were",
}
# Planted in both layouts' code: outline.c carries its own planted 8 (allocator/src/outline.c's opening
# comment), the same defect written in a second place. A crash there is signed "oracle-outline-<kind>"
# (fuzz_model.c, fz_fail), one signature per layout, so this bug may have two: one per place. Since the
# default pool is layout:outline (session 24) both are found (CI: 'oracle-not-zeroed in kp_alloc' and
# 'oracle-outline-not-zeroed in kp_alloc').
BOTH_LAYOUTS = {8}
SEEDS = (1, 2)
# Each of these bugs is found in a few seconds; a run stops at its first crash.
FUZZ_SECONDS = 30
_VERDICT = re.compile(r"^==kpfuzz== VIOLATION .*\n", re.MULTILINE)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.quality,
    pytest.mark.skipif(shutil.which("clang") is None, reason="the fuzz build needs clang"),
]


def _crash_texts(plant: int, seed: int, reports: Path) -> list[str]:
    """The texts `kpool fuzz` records its crashes with."""
    from harness.fuzz import runner

    run = runner.run(
        "api_sequence", FUZZ_SECONDS, plant=plant, seeds=False, reports=reports, extra=[f"-seed={seed}"]
    )
    [result] = run.results
    assert result.crashes, f"planted bug {plant} ({PLANTS[plant]}) not found with seed {seed}"
    return [c.text for c in record.fuzz_crashes([asdict(result)], "quality", plant)]


def _figures(found: dict[int, set[str]]) -> tuple[dict[int, int], dict[str, int]]:
    per_bug = {plant: len(sigs) for plant, sigs in found.items()}
    bugs: dict[str, set[int]] = defaultdict(set)
    for plant, sigs in found.items():
        for sig in sigs:
            bugs[sig].add(plant)
    return per_bug, {sig: len(p) for sig, p in bugs.items()}


def _show(label: str, found: dict[int, set[str]]) -> tuple[dict[int, int], dict[str, int]]:
    per_bug, per_sig = _figures(found)
    print(f"\n{label}: signatures per bug")
    for plant, n in per_bug.items():
        print(f"  planted {plant:<2} {n}  {sorted(found[plant])}")
    print(f"{label}: bugs per signature")
    for sig, n in per_sig.items():
        print(f"  {n}  {sig}")
    return per_bug, per_sig


def test_one_signature_per_planted_bug_and_one_bug_per_signature(tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    now: dict[int, set[str]] = defaultdict(set)
    stack_only: dict[int, set[str]] = defaultdict(set)
    for plant in PLANTS:
        for seed in SEEDS:
            for text in _crash_texts(plant, seed, tmp_path / f"plant{plant}-seed{seed}"):
                now[plant].add(S.compute(text).title)
                stack_only[plant].add(S.compute(_VERDICT.sub("", text)).title)
    _, before = _show("the stack alone", stack_only)
    per_bug, per_sig = _show("today", now)
    assert max(before.values()) >= 3, "these planted bugs no longer share a stack: pick others"

    def place(plant: int, sig: str) -> str:
        return sig.replace("oracle-outline-", "oracle-", 1) if plant in BOTH_LAYOUTS else sig

    per_place = {plant: {place(plant, sig) for sig in sigs} for plant, sigs in now.items()}
    assert {len(sigs) for sigs in per_place.values()} == {1}, per_bug
    assert all(per_bug[plant] == 1 for plant in PLANTS if plant not in BOTH_LAYOUTS), per_bug
    assert set(per_sig.values()) == {1}, per_sig


# api_sequence inputs: the pool (0), then operations: op byte (index into ops_api), slot, size (0, n bytes).
ALLOC, ALLOC_ZERO, REALLOC_ZERO, FREE = 0, 5, 13, 15
# a block of 100 bytes allocated (and filled) and freed; then asked for again with KP_ZERO, either by
# alloc_zero or by realloc_zero of an empty slot (which allocates): two paths to the one planted bug 8
ZERO_BY_ALLOC = bytes([0, ALLOC, 0, 0, 100, FREE, 0, ALLOC_ZERO, 0, 0, 100])
ZERO_BY_REALLOC = bytes([0, ALLOC, 0, 0, 100, FREE, 0, REALLOC_ZERO, 1, 0, 100])


def test_one_bug_reached_by_two_paths_has_one_signature(tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    from harness.fuzz import runner

    env = runner.target_env("api_sequence", 8)
    texts = []
    for name, data in (("alloc", ZERO_BY_ALLOC), ("realloc", ZERO_BY_REALLOC)):
        path = tmp_path / name
        path.write_bytes(data)
        code, text = runner.replay("api_sequence", path, env)
        assert code != 0 and "VIOLATION not-zeroed in kp_alloc" in text, text[-3000:]
        texts.append(text)
    stacks = [[f.name() for f in S.crash_frames(t, "SIGABRT")] for t in texts]
    assert "do_realloc" in stacks[1] and "do_realloc" not in stacks[0]  # two paths
    sigs = [S.compute(t) for t in texts]
    print(f"\ntwo paths, one signature: {sigs[0].title}")
    assert sigs[0].hash == sigs[1].hash
    assert sigs[0].kind == "oracle-not-zeroed" and sigs[0].frames == ("kp_alloc",)
