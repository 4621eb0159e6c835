"""Instructions per operation of kp_alloc + kp_free, counted by callgrind: exact and repeatable whatever
else the machine runs, so a slower allocation path fails a test where a timing could not.

Until 81482b7 a pool with checks:off ran 40% slower than the default (checks on) on kpbench's workload
(a), and nothing noticed: kp_free's fast path sent the top 8 bytes of every class to the slow free.
These tests run kpbench (allocator/bench) under `valgrind --tool=callgrind`, collecting only inside
kp_alloc and kp_free (--toggle-collect: kpbench's own loop and the daemon thread are not counted), at
two operation counts: the instructions per operation are the difference of the two totals divided by
the difference of the two numbers of kp_alloc calls (from callgrind's call counts), so pool creation,
the fill of the slots and the destruction cancel. One operation is one kp_free and one kp_alloc.

Figures (gcc 12.2 -O2, valgrind 3.19, Debian 12; 100k against 300k operations):

    workload  checks  81482b7 (main)  7b00711 (before)
    a         on      183.1           183.1
    a         off     212.1           335.5
    b         on      248.5           248.7
    b         off     261.0           314.8

layout:outline (allocator/src/outline.c, the out-of-line small path behind a pool option, session 22) is
measured the same way, checks on: a 75.0, b 90.1 since s23-entry (100.0 and 119.2 before: kp_alloc reached
it by a tail call behind the fast word's test, kp_free behind the grace record's tests and free_body's, and
each paid a test of the pool's mode; now both inline, no call, the slot's id tells the mode). The default
path beside it: 188.1 and 227.9 (186.1 and 225.8 before: kp_alloc tests the outline slot first, 2
instructions); checks:off 220.6 and 243.0, as before. The prototype it came from (allocator/proto/, malloc
and free by LD_PRELOAD) does 60.1 and 74.0: the pool's test and its id's compare with the thread's words
in kp_alloc and kp_free, the flags' test, and the allocation count kp_stats reads are most of the
difference.

On layout:inline a checks-off pool still runs more instructions than a checks-on one (a +15.5%, b
+5.3%, s25-off): the fast paths in alloc.c are specialised for the default mode, and a checks-off pool
goes through alloc_other and free_other. That gap is OFF_MARGIN's, and the strict xfail below is the bound it
should meet. On layout:outline (the default) checks:off went the same way, through a tail call in
kp_alloc and free_other in kp_free: 88.0 and 105.1 against checks on's 75.0 and 92.3. Since s25-off both
modes take the inline outline paths (kp_alloc tests the slot's aid, the pool's id in either mode; kp_free
the slot's aid after its id, 2 instructions where checks on tests the canary), kp_free tests the outline
slot before the inline path's fast word (2 instructions fewer on outline, 2 more on inline: 188.1 ->
190.1 and 227.9 -> 229.9), and finds the block's index by exact division (outline.h, kp__ol_index: 2
fewer). layout:outline, a and b: checks on 75.0 -> 71.0 and 92.3 -> 88.1, checks:off 88.0 -> 72.0 and
105.1 -> 88.8.

s29-fast (layout:outline, this file's method on main 5382e92: a 70.0 and b 87.2 checks on, 71.0 and 88.0
off), s26-fast's cuts redone on the 8-byte record: kp_free masks the slice number where it compared it with
the map's size, each access to a record is its own base + index address (no lea: kp__ol_rec_apart), checks
off's free returns its own 0 (a 67.0); kp__ol_class_big by one bsr and no mask; the owner's free into its
own retired span by kp__ol_free_retired (kp__ol_free_own's checks and push), where 3 in 10 of b's frees went
through kp__ol_free_other (b 80.1). s26-fast's move of the stack pointer by one add or subtract to memory
(2 fewer) is not taken: a read-modify-write of sp turns a signal handler's push to the same span between
its load and its add into a stale entry on the stack (ASan, test_outline_signal's relist test failed 1 of
6 rounds with it), where the plain store loses the handler's blocks (a leak). Now a 67.0, b 80.1 checks
on; 68.0 and 81.0 checks off.

s32-fast (main 6e9c7bd measured so: a 67.0, b 81.71 checks on; 68.0 and 82.76 off): the slice map holds each
span's address less the map's, so that an empty entry names the nil span (the map's own first 64 zero bytes,
whose lim refuses every index: kp_free adds where it tested and branched), and the big classes' refill
recomputes its class (no copy kept on the pop): a 66.0, b 80.37 checks on; 67.0 and 81.43 off. Tried and
dropped: kp_alloc's flags folded into the pool id it compares (id ^ flags << 32, ids kept below 2^32), one
instruction fewer (a 65.0, b 79.36), but kpbench b 8-12% slower by CPU time in every alternated series
(medians of 7-9), a no faster, for no reason the code shows (the instructions the same but the fold).
s34-sig (the outline slot marked for each call's length against signal handlers' calls, outline.h
kp__ol_enter): the compare of the slot's id is one subtract to memory that marks it, the unmark one store,
the stack pointer moved by one add or subtract to memory: a 66.0, b 80.35 checks on; 66.0 and 80.15 off
(main b7ad467: 66.0, 79.86, 67.0, 80.76; s33-sig2's compare and store: 68.0, 82.4, 68.0, 82.2).
s38-fasta (main fc15e96 measured so: a 66.0, b 75.19 checks on; 66.0 and 75.42 off): the outline slot names
a pool by its address + 1 (outline.h, kp__ol_slot_id; a reference to the pool's structure keeps a new pool
off an address a slot names: pool.c, kp__pool_unref), so kp_alloc and kp_free make the tag by one lea where
they tested the pool for NULL and loaded its id (2 fewer a call), and kp_free adds the slice map's entry to
the map's address from memory (1 fewer): a 61.0, b 70.15 checks on; 61.0 and 70.42 off. layout:inline pays
the lea past its failed compare (then its NULL test and id as before): a 190.15 -> 192.15, b 229.94 ->
231.87 (off: 219.59 -> 221.59, 242.01 -> 244.04).
Another compiler makes other code: the budgets are this one's.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import callgrind
import pytest
from test_c_suite import release_kpbench

from harness import build

# Two operation counts: 200k operations apart, each run ~3 s under callgrind on an idle core.
OPS = (100_000, 300_000)
# The bound issue 14 means: off is no dearer than on, but for a few instructions of mode tests.
OFF_MARGIN_GOAL = 0.02
# How many more instructions per operation checks:off may run than checks on, by layout. inline: its
# gap on (a) is 15.5% (219.6 against 190.1, s25-off); 7b00711's was 83% on (a) and 27% on (b), which
# this bound fails. outline (the default): the goal, since s25-off (+17.3% on (a) and +13.9% on (b) before).
OFF_MARGIN = {"inline": 0.20, "outline": OFF_MARGIN_GOAL}
# Each layout's modes (CONF) with checks on and off.
OFF_PAIR = {"inline": ("on", "off"), "outline": ("outline", "outline-off")}
# kp_alloc + kp_free per operation on main (81482b7) plus 5% headroom: 183.1 -> 192, 212.1 -> 223,
# 248.5 -> 261, 261.0 -> 274. Lower them when a change makes the path cheaper. b since s21-bins (a lone
# thread's bins grow with a big heap, tcache.c KP_TC_SOLO; the 64 KiB class on kp_free's fast path): on
# 250.7 -> 225.8, off 260.0 -> 236.9, so 238 and 249.
# layout:outline (s22-v2): 97.0 -> 102 on a, 118.8 -> 125 on b (5% headroom, as above); s23-entry: 75.0 ->
# 79, 90.1 -> 95 (main's 100.0 and 119.2 fail them). s25-off: 71.0 -> 73, 88.1 -> 90 (2%; main's 75.0 and
# 92.3 fail them), and checks:off (outline-off) the same budgets (72.0 and 88.8). s29-fast: on 67.0 -> 69,
# 80.1 -> 82; off 68.0 -> 70, 81.0 -> 83 (~2 instructions; main 5382e92's 70.0, 87.2, 71.0 and 88.0 fail
# them). The retired-span free was off in s29 (outline.h, KP_OL_RETIRED_OWN: a TSan failure, explained in
# s30 as a cross-thread list bug either path could meet): b 81.9 and 82.8, so 84 and 85; on again (s30):
# 80.06 and 80.99, so 82 and 83 (81.9 and 82.8 with it off fail them). s32-fast: on 66.0 -> 66.5, 80.37 -> 81;
# off 67.0 -> 67.5, 81.43 -> 82 (main 6e9c7bd's 67.0, 81.71, 68.0 and 82.64-82.76 fail them; a's counts are
# exact, b's vary by ~0.05 run to run). s35 (outline.c, OL_SPAN_BLOCKS: spans of classes over 2 KiB sized for
# 64 blocks, so fewer refills and fewer frees into retired spans): b on 80.39 -> 76.94, off 80.19 -> 76.82, so
# 78 and 78 (main 47b37d0's fail them). s37-fast (the owner's free into its retired span inline in kp_free, 1
# free in 8 on b: outline.h, kp__ol_free_check; and a refill's scan of its avail list reading no stack,
# outline.c, avail_take_free): b on 76.85 -> 75.19, off 76.63 -> 75.38, so 75.8 and 76.0 (main 74a960a's fail
# them; the first change alone, 75.56 and 75.84, passes them). s38-fasta (the slot's tag, the map's add): a
# on 66.0 -> 61.0, off 66.0 -> 61.0, so 61.5 and 61.5; b on 75.19 -> 70.15, off 75.42 -> 70.42, so 70.8 and
# 71.0 (main fc15e96's fail them). layout:inline's a on 190.15 -> 192.15 (the lea before its tests): 193.
BUDGET = {
    ("a", "on"): 193.0,
    ("a", "off"): 223.0,
    ("b", "on"): 238.0,
    ("b", "off"): 249.0,
    ("a", "outline"): 61.5,
    ("b", "outline"): 70.8,
    ("a", "outline-off"): 61.5,
    ("b", "outline-off"): 71.0,
}
# "on" and "off" are the inline layout's paths (alloc.c's fast paths, the block headers): pinned to
# layout:inline since the default became outline (s24-flip), so that their budgets keep measuring them.
CONF = {
    "on": "layout:inline",
    "off": "layout:inline,checks:off",
    "outline": "layout:outline",
    "outline-off": "layout:outline,checks:off",
}


@cache
def kpbench() -> Path:
    callgrind.require()
    return release_kpbench()


def kpbench_argv(workload: str, ops: int, conf: str) -> list[str]:
    """kpbench running workload for ops operations on a pool with conf (the default: "")."""
    return [str(kpbench()), "--workload", workload, "--ops", str(ops), *(["--conf", conf] if conf else [])]


def parse_callgrind(text: str) -> tuple[int, int]:
    """(instructions collected, calls to kp_alloc) from a callgrind output file (callgrind.parse)."""
    p = callgrind.parse(text)
    return p.totals.get("Ir", 0), p.calls.get("kp_alloc", 0)


def callgrind_run(workload: str, ops: int, conf: str) -> tuple[int, int]:
    # collecting inside kp_alloc and kp_free only: kpbench's loop and the daemon thread are not counted
    p = callgrind.run(
        kpbench_argv(workload, ops, conf), options=["--toggle-collect=kp_alloc", "--toggle-collect=kp_free"]
    )
    return p.totals.get("Ir", 0), p.calls.get("kp_alloc", 0)


@cache
def per_op(workload: str, mode: str) -> float:
    """kp_alloc + kp_free instructions per operation: the difference between OPS[1] and OPS[0]."""
    (ir0, calls0), (ir1, calls1) = (callgrind_run(workload, n, CONF[mode]) for n in OPS)
    assert ir0 > 0 and calls1 - calls0 >= OPS[1] - OPS[0], (ir0, calls0, ir1, calls1)
    return (ir1 - ir0) / (calls1 - calls0)


@pytest.mark.slow
@pytest.mark.parametrize("layout", sorted(OFF_PAIR))
@pytest.mark.parametrize("workload", ["a", "b"])
def test_checks_off_runs_no_more_instructions_than_on(workload: str, layout: str) -> None:
    on, off = (per_op(workload, mode) for mode in OFF_PAIR[layout])
    assert off <= on * (1 + OFF_MARGIN[layout]), (
        f"({workload}) layout:{layout},checks:off runs {off:.1f} instructions per kp_alloc+kp_free, checks "
        f"on {on:.1f}: {100 * (off / on - 1):+.1f}%, more than {100 * OFF_MARGIN[layout]:.0f}%"
    )


# The inline layout's checks:off still misses the goal (alloc.c's alloc_other and free_other).
INLINE_OFF_XFAIL = pytest.mark.xfail(
    strict=True,
    reason="layout:inline,checks:off goes through alloc_other/free_other, not the fast paths: +15.5% on "
    "(a), +5.3% on (b); when this passes, lower OFF_MARGIN's inline to OFF_MARGIN_GOAL and drop this mark",
)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["outline", pytest.param("inline", marks=INLINE_OFF_XFAIL)])
@pytest.mark.parametrize("workload", ["a", "b"])
def test_checks_off_is_no_dearer_than_on(workload: str, layout: str) -> None:
    on, off = (per_op(workload, mode) for mode in OFF_PAIR[layout])
    assert off <= on * (1 + OFF_MARGIN_GOAL), f"({workload}) layout:{layout} off {off:.1f}, on {on:.1f}"


@pytest.mark.slow
@pytest.mark.parametrize(("workload", "mode"), sorted(BUDGET))
def test_alloc_and_free_stay_within_their_instruction_budget(workload: str, mode: str) -> None:
    got = per_op(workload, mode)
    budget = BUDGET[workload, mode]
    assert got <= budget, (
        f"({workload}) {CONF[mode] or 'default'}: kp_alloc+kp_free run {got:.1f} instructions per operation, "
        f"over the budget of {budget:.0f}"
    )


def test_parse_callgrind_counts_the_calls_of_kp_alloc() -> None:
    text = "\n".join(
        [
            "events: Ir",
            "fn=run_slots",
            "cfn=kp_alloc",
            "calls=1000 507",
            "152 353087",
            "cfn=kp_free",
            "calls=999 1308",
            "159 2512251",
            "cfn=kp_alloc",
            "calls=20000 507",
            "152 1281147",
            "summary: 4146485",
        ]
    )
    assert parse_callgrind(text) == (4146485, 21000)


def test_only_the_shared_helper_runs_callgrind_or_reads_its_output() -> None:
    """Three tests each built their own callgrind command and output reader (tests/callgrind.py now)."""
    tests = Path(__file__).parent
    tool, reader = '"--tool=' + 'callgrind"', 'startswith("' + "cfn=" + '")'
    for path in sorted(tests.glob("*.py")):
        if path.name != "callgrind.py":
            text = path.read_text()
            assert tool not in text and reader not in text, f"{path.name}: use tests/callgrind.py"


# ---- kp_usable_size and kp_realloc -------------------------------------------------------------------
#
# tests/data/realloc_cost.c calls kp_usable_size (a live block of 8-256 bytes), kp_realloc within a class
# (100 <-> 101 bytes, in place) and kp_realloc across classes (40 <-> 200 bytes, a move), each from a
# function of its own, whose inclusive cost callgrind gives (a call through a function pointer included).
# Per call: the difference of two step counts, as above. Figures (gcc 12.2 -O2, valgrind 3.19):
#
#     call                     46a3b3e (main)   after (s19-realloc)
#     kp_usable_size           341.0            88.0
#     kp_realloc, same class   464.0            119.0
#     kp_realloc, cross class  988.5            245.5
#
# main ran both through the slow path: the segment's keyed magic, primary_hdr's lookup and class test,
# and (cross class) kp_alloc and kp_free after block_usable had verified the block once already. Now a
# small block of a pool in its default mode is verified as kp_free's fast path verifies it (alloc.c,
# small_live), resized in place or moved with kp_alloc's fast path and put in its bin without a second
# check. The budgets: after plus 5% headroom; lower them when a change makes a path cheaper.
REALLOC_STEPS = (2_000, 6_000)
REALLOC_BUDGET = {"usable": 93.0, "same": 125.0, "cross": 258.0}
REALLOC_DATA = Path(__file__).parent / "data" / "realloc_cost.c"
# The budgets are the inline layout's (alloc.c, small_live; the 16-byte header in the classes named in
# realloc_cost.c): pinned since the default became outline (s24-flip).
REALLOC_CONF = "layout:inline,daemon:off"


@cache
def realloc_cost() -> Path:
    """realloc_cost.c built with -O2 into a folder of this process's own."""
    return callgrind.build_program(REALLOC_DATA, "-ldl")


@cache
def realloc_per_call() -> dict[str, float]:
    """Instructions per call of each one_* function of realloc_cost.c, straight to libkpool.so."""
    from test_preload_instructions import one_calls

    lib = str(build.build("release"))
    runs = [
        one_calls(callgrind.run([str(realloc_cost()), lib, str(steps), REALLOC_CONF]))
        for steps in REALLOC_STEPS
    ]
    calls = REALLOC_STEPS[1] - REALLOC_STEPS[0]
    return {name: (runs[1][name] - runs[0][name]) / calls for name in REALLOC_BUDGET}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REALLOC_BUDGET))
def test_usable_size_and_realloc_stay_within_their_instruction_budget(name: str) -> None:
    got = realloc_per_call()[name]
    budget = REALLOC_BUDGET[name]
    assert got <= budget, (
        f"one_{name} (tests/data/realloc_cost.c): {got:.1f} instructions per call, over the budget of "
        f"{budget:.0f}"
    )
