"""What a pool does: allocation semantics, bad input contained, stats balance, fork, growth and shrink."""

from __future__ import annotations

import ctypes
import itertools
import os
import random
import resource
import threading
import time
from pathlib import Path

import psutil
import pytest

from harness.binding import KP_EDOUBLEFREE, KP_ENOTOURS, KP_ZERO, SIZE_MAX, Pool
from harness.errors import AllocError

KiB, MiB = 1 << 10, 1 << 20
PAGE = os.sysconf("SC_PAGESIZE")


def fill(addr: int, size: int, seed: int) -> None:
    """A pattern that differs per block and per offset, so overlaps and stale data both show."""
    ctypes.memmove(addr, pattern(size, seed), size)


def pattern(size: int, seed: int) -> bytes:
    unit = bytes((seed * 31 + i) & 0xFF for i in range(251))  # 251 is prime: no period of 2^k
    return (unit * (size // 251 + 1))[:size]


def read(addr: int, size: int) -> bytes:
    return ctypes.string_at(addr, size)


def kinds(pool: Pool) -> list[str]:
    return [e.kind for e in pool.events()]


def balanced(pool: Pool) -> dict[str, int]:
    pool.thread_flush()
    primary: dict[str, int] = pool.stats()["primary"]
    assert primary["allocs"] == primary["frees"]
    assert primary["in_use_bytes"] == 0
    return primary


# ---- the primary pool ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 15, 16, 17, 100, 1000, 4096, 5000, 65536, 300 * KiB, MiB + 1, 64 * MiB])
def test_alloc_write_read_free(quiet_pool: Pool, size: int) -> None:
    addr = quiet_pool.alloc(size)
    assert addr % 16 == 0
    assert quiet_pool.usable_size(addr) >= size
    fill(addr, size, size)
    assert read(addr, size) == pattern(size, size)
    quiet_pool.free(addr)
    balanced(quiet_pool)


def test_live_blocks_never_overlap(quiet_pool: Pool) -> None:
    rng = random.Random(7)
    blocks = {}
    for i in range(3000):
        size = int(2 ** rng.uniform(0, 17))
        addr = quiet_pool.alloc(size)
        fill(addr, size, i)
        blocks[addr] = (size, i)
        if rng.random() < 0.3:  # free a random live block, so reuse happens
            victim = rng.choice(list(blocks))
            vsize, vseed = blocks.pop(victim)
            assert read(victim, vsize) == pattern(vsize, vseed)
            quiet_pool.free(victim)
    spans = sorted((a, a + quiet_pool.usable_size(a)) for a in blocks)
    assert all(end <= nxt for (_, end), (nxt, _) in itertools.pairwise(spans))
    for addr, (size, seed) in blocks.items():
        assert read(addr, size) == pattern(size, seed)
        quiet_pool.free(addr)
    balanced(quiet_pool)


def test_size_zero_gives_unique_blocks(quiet_pool: Pool) -> None:
    a, b = quiet_pool.alloc(0), quiet_pool.alloc(0)
    assert a and b and a != b
    assert quiet_pool.usable_size(a) >= 0
    quiet_pool.free(a)
    quiet_pool.free(b)
    balanced(quiet_pool)


@pytest.mark.parametrize("size", [SIZE_MAX, SIZE_MAX - 1, SIZE_MAX - 4095, SIZE_MAX - 65536, 1 << 63])
def test_impossible_sizes_return_null_with_an_event(quiet_pool: Pool, size: int) -> None:
    with pytest.raises(AllocError, match=r"bad_size|oom"):
        quiet_pool.alloc(size)
    assert quiet_pool.try_alloc(size) is None
    with pytest.raises(AllocError):
        quiet_pool.alloc_aligned(size, 4096)
    seen = kinds(quiet_pool)
    assert len(seen) == 3 and set(seen) <= {"bad_size", "oom"}
    if size > SIZE_MAX - 65536:
        assert set(seen) == {"bad_size"}
        assert quiet_pool.stats()["integrity"]["bad_sizes"] == 3


def test_failed_realloc_leaves_the_block(quiet_pool: Pool) -> None:
    addr = quiet_pool.alloc(300)
    fill(addr, 300, 1)
    with pytest.raises(AllocError):
        quiet_pool.realloc(addr, SIZE_MAX)
    assert read(addr, 300) == pattern(300, 1)
    quiet_pool.free(addr)
    balanced(quiet_pool)


@pytest.mark.parametrize("size", [1, 100, 5000, 70000])
def test_aligned(quiet_pool: Pool, size: int) -> None:
    addrs = []
    for shift in range(13):  # 1 .. 4096
        align = 1 << shift
        addr = quiet_pool.alloc_aligned(size, align)
        assert addr % align == 0 and addr % 16 == 0
        assert quiet_pool.usable_size(addr) >= size
        fill(addr, size, shift)
        addrs.append((addr, shift))
    for addr, shift in addrs:
        assert read(addr, size) == pattern(size, shift)
        quiet_pool.free(addr)
    balanced(quiet_pool)


@pytest.mark.parametrize("align", [0, 3, 24, 8192, 1 << 40])
def test_bad_alignment_is_refused_with_an_event(quiet_pool: Pool, align: int) -> None:
    with pytest.raises(AllocError):
        quiet_pool.alloc_aligned(64, align)
    assert kinds(quiet_pool) == ["bad_size"]


@pytest.mark.parametrize("size", [24, 256, 3000, 100 * KiB, 2 * MiB])
def test_zero_flag_clears_reused_memory(quiet_pool: Pool, size: int) -> None:
    for _ in range(4):  # dirty blocks, free them, so the zeroed allocations reuse them
        dirty = [quiet_pool.alloc(size) for _ in range(8)]
        for a in dirty:
            ctypes.memset(a, 0xAB, quiet_pool.usable_size(a))
            quiet_pool.free(a)
        clean = [quiet_pool.alloc(size, KP_ZERO) for _ in range(8)]
        assert size > 4096 or set(clean) & set(dirty)  # small blocks were reused: the test can fail
        for a in clean:
            assert read(a, size) == bytes(size)
            quiet_pool.free(a)
    balanced(quiet_pool)


def test_realloc_keeps_contents(quiet_pool: Pool) -> None:
    addr = quiet_pool.realloc(0, 100)  # NULL allocates
    fill(addr, 100, 5)
    for size in (200, 5000, 300 * KiB, 3 * MiB):
        addr = quiet_pool.realloc(addr, size)
        assert quiet_pool.usable_size(addr) >= size
        assert read(addr, 100) == pattern(100, 5)
    addr = quiet_pool.realloc(addr, 50)
    assert read(addr, 50) == pattern(100, 5)[:50]
    assert quiet_pool.realloc(addr, 0) == 0  # size 0 frees
    assert quiet_pool.try_free(addr) == KP_EDOUBLEFREE
    balanced(quiet_pool)


@pytest.mark.parametrize("flags", [0, KP_ZERO])
def test_realloc_keeps_the_whole_old_usable_size(quiet_pool: Pool, flags: int) -> None:
    addr = quiet_pool.alloc(100)
    old = quiet_pool.usable_size(addr)
    ctypes.memset(addr, 0xCD, old)
    addr = quiet_pool.realloc(addr, 10000, flags)
    assert read(addr, old) == b"\xcd" * old  # kp_realloc keeps min(old usable, size) bytes
    if flags & KP_ZERO:
        assert read(addr + old, 10000 - old) == bytes(10000 - old)
    quiet_pool.free(addr)


def test_usable_size_of_dead_and_foreign_pointers(quiet_pool: Pool) -> None:
    addr = quiet_pool.alloc(64)
    quiet_pool.free(addr)
    assert quiet_pool.usable_size(addr) == 0
    buf = ctypes.create_string_buffer(64)
    assert quiet_pool.usable_size(ctypes.addressof(buf)) == 0
    assert quiet_pool.usable_size(0) == 0


def test_bad_frees_are_contained(quiet_pool: Pool) -> None:
    assert quiet_pool.try_free(0) == 0
    with Pool("daemon:off") as other:
        theirs = other.alloc(64)
        assert quiet_pool.try_free(theirs) == KP_ENOTOURS
        other.free(theirs)  # still theirs, still live
    live = quiet_pool.alloc(256)
    fill(live, 256, 9)
    assert quiet_pool.try_free(live + 16) < 0  # interior pointer
    assert read(live, 256) == pattern(256, 9)
    quiet_pool.free(live)
    seen = kinds(quiet_pool)
    assert seen.count("invalid_free") + seen.count("corruption") == 2
    balanced(quiet_pool)


def test_full_event_ring_keeps_the_newest_and_counts_drops(quiet_pool: Pool) -> None:
    buf = ctypes.create_string_buffer(64)
    base = ctypes.addressof(buf)
    total = 100_000  # more than any sane ring holds
    dropped_before = quiet_pool.stats()["events"]["dropped"]
    for i in range(total):
        quiet_pool.try_free(base + 16 * (i % 4))
    events = quiet_pool.events()
    dropped = quiet_pool.stats()["events"]["dropped"] - dropped_before
    assert dropped > 0
    assert len(events) + dropped == total
    assert events[-1].addr == base + 16 * ((total - 1) % 4)
    assert events[-1].seq - events[0].seq == len(events) - 1


def test_two_threads_free_each_others_blocks(pool: Pool) -> None:
    handoff: list[tuple[int, int, int]] = []
    lock = threading.Lock()
    errors: list[str] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        for i in range(20000):
            size = rng.randint(1, 2048)
            addr = pool.alloc(size)
            fill(addr, min(size, 64), seed + i)
            with lock:
                handoff.append((addr, size, seed + i))
                item = handoff.pop(rng.randrange(len(handoff))) if len(handoff) > 64 else None
            if item is not None:
                a, s, tag = item
                if read(a, min(s, 64)) != pattern(min(s, 64), tag):
                    errors.append(f"block {a:#x} corrupted")
                pool.free(a)
        pool.thread_flush()

    threads = [threading.Thread(target=worker, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, s, tag in handoff:
        assert read(a, min(s, 64)) == pattern(min(s, 64), tag)
        pool.free(a)
    assert errors == []
    balanced(pool)
    integrity = pool.stats()["integrity"]
    assert {"double_frees", "invalid_frees", "corruptions", "bad_sizes"} <= set(integrity)
    assert all(v == 0 for v in integrity.values()), integrity


# ---- fork ---------------------------------------------------------------------------------------------


def _child(pool: Pool, inherited: int) -> int:
    """Runs in the forked child: 0 when the inherited pool works there."""
    if read(inherited, 4096) != pattern(4096, 42):
        return 2
    # sizes from 38: each block holds the 16-byte pattern (a write past a block is an overflow)
    addrs = [pool.alloc(size) for size in range(38, 20000, 37)]
    for i, a in enumerate(addrs):
        fill(a, 16, i)
    for i, a in enumerate(addrs):
        if read(a, 16) != pattern(16, i):
            return 3
        pool.free(a)
    big = [pool.alloc(64 * KiB) for _ in range(256)]  # 16 MiB: past the initial pool, so it grows
    for a in big:
        ctypes.memset(a, 1, 64 * KiB)
        pool.free(a)
    pool.free(inherited)
    pool.thread_flush()
    primary = pool.stats()["primary"]
    return 0 if primary["in_use_bytes"] == 0 else 4


def test_fork_child_uses_the_inherited_pool(pool: Pool) -> None:
    inherited = pool.alloc(4096)
    fill(inherited, 4096, 42)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = _child(pool, inherited)
        finally:
            os._exit(code)
    deadline = time.monotonic() + 30  # generous: the child does well under a second of work
    while (done := os.waitpid(pid, os.WNOHANG)) == (0, 0) and time.monotonic() < deadline:
        time.sleep(0.01)
    if done == (0, 0):
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung (deadlock after fork?)")
    assert os.waitstatus_to_exitcode(done[1]) == 0
    assert read(inherited, 4096) == pattern(4096, 42)  # the parent's block is untouched
    pool.free(inherited)
    balanced(pool)


# ---- growth and shrink --------------------------------------------------------------------------------


def test_pool_shrinks_after_decay_and_rss_drops() -> None:
    proc = psutil.Process()
    total, block, decay_ms = 128 * MiB, 64 * KiB, 200
    with Pool(f"primary_initial:1m,decay_ms:{decay_ms}") as pool:
        addrs = []
        for _ in range(total // block):
            addrs.append(pool.alloc(block))
            ctypes.memset(addrs[-1], 0x5A, block)
        full_rss = proc.memory_info().rss
        full_capacity = pool.stats()["primary"]["capacity_bytes"]
        assert full_capacity >= total
        for a in addrs:
            pool.free(a)
        pool.thread_flush()
        deadline = time.monotonic() + decay_ms / 1000 + 2.0  # the decay, plus the daemon's timer and work
        # Waits for all that is asserted below: it stopped at the first shrink once the purge had dropped
        # the RSS, and under load (pytest -n 2 beside two busy loops, one run in three) the other
        # segments' shrinks came after it looked: capacity 148 MiB of 152.
        while True:
            dropped = full_rss - proc.memory_info().rss
            primary = pool.stats()["primary"]
            shrunk = primary["capacity_bytes"] < full_capacity - 0.75 * total
            if (dropped > 0.75 * total and primary["shrinks"] > 0 and shrunk) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert primary["shrinks"] > 0
        assert primary["capacity_bytes"] < full_capacity - 0.75 * total
        assert dropped > 0.75 * total, f"RSS dropped by {dropped / MiB:.1f} MiB of {total / MiB:.0f} MiB"


def _daemon_tids() -> set[int]:
    out = set()
    for task in Path("/proc/self/task").iterdir():
        try:
            if (task / "comm").read_text().strip() == "kpool-daemon":
                out.add(int(task.name))
        except OSError:
            continue
    return out


class _DaemonWait:
    """How long a daemon thread waited for a CPU: the longest stretch, from reads of its run_delay that
    found it grew by half the time since the last read or more (kpdrive's daemon_sched, in Python), and
    in all since the first read (total_ms: many short waits, a few ms at each of its wake-ups beside
    busy threads, hold it back as surely as one long one and leave no stretch)."""

    def __init__(self, others: set[int]) -> None:
        self.others: set[int] = others
        self.tid: int | None = None
        self.last, self.t, self.stretch, self.longest_ms = -1, 0.0, 0, 0.0
        self.first, self.total_ms = -1, 0.0

    def read(self) -> None:
        if self.tid is None:
            # The daemon names itself once it runs: just after kp_create it was most often not yet
            # "kpool-daemon", no thread was read, and the rerun rule never applied (CI failed with
            # 1,746 faults and 0 ms of waiting read).
            mine = _daemon_tids() - self.others
            if len(mine) != 1:
                return
            self.tid = min(mine)
        try:
            delay = int(Path(f"/proc/self/task/{self.tid}/schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            return
        now = time.monotonic_ns()
        if self.first < 0:
            self.first = delay
        self.total_ms = (delay - self.first) / 1e6
        if self.last >= 0:
            step = delay - self.last
            self.stretch = self.stretch + step if step > 0 and 2 * step >= now - self.t else 0
            self.longest_ms = max(self.longest_ms, self.stretch / 1e6)
        self.last, self.t = delay, now


def _paced_run(layout: str = "layout:inline,") -> tuple[dict[str, int], float]:
    """The paced loop once: its figures and the longest stretch its daemon waited for a CPU (ms). The
    bounds below are the inline layout's (pinned since the default became outline, s24-flip); layout ""
    is the default's (test_the_default_layout_grows_ahead_of_the_allocating_thread)."""
    rng = random.Random(3)
    total, start = 256 * MiB, 16 * MiB
    # grow_wait_us: on a loaded 2-core machine (pytest -n auto) the daemon thread can be descheduled
    # for a few milliseconds; the grace period keeps this a test of the daemon's capacity, not of the
    # scheduler. The C test test_daemon.c runs the same check without it.
    others = _daemon_tids()
    with Pool(layout + "primary_initial:1m,grow_wait_us:5000") as pool:
        wait = _DaemonWait(others)
        wait.read()
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        addrs, done, paced, at_start = [], 0, 0, None
        while done < total:
            size = rng.randint(4 * KiB, 64 * KiB)
            addrs.append(pool.alloc(size))
            ctypes.memset(addrs[-1], 0x77, size)
            done += size
            # A pace the daemon can keep ahead of: at most ~200 MiB/s (one 4 MiB segment per 20 ms).
            if done - paced >= MiB:
                paced = done
                wait.read()
                time.sleep(0.005)
            if at_start is None and done >= start:
                at_start = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        after = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        wait.read()
        stats = pool.stats()
        for a in addrs:
            pool.free(a)
    assert at_start is not None
    figures = {
        "mmap": stats["syscalls"]["alloc"]["mmap"],
        "grows": stats["primary"]["grows"],
        "start_faults": at_start - before,
        "steady_faults": after - at_start,
        "steady_pages": (total - start) // PAGE,
    }
    return figures, max(wait.longest_ms, wait.total_ms)


def _paced_ok(f: dict[str, int]) -> bool:
    return (
        f["mmap"] == 0
        and f["grows"] > 0
        and f["start_faults"] < 6 * MiB / PAGE
        and f["steady_faults"] < 0.01 * f["steady_pages"]
    )


@pytest.mark.slow
def test_daemon_grows_ahead_of_the_allocating_thread() -> None:
    """256 MiB in 4-64 KiB blocks, every page touched: no mmap on the allocation path, and once the
    daemon has measured the rate (the first 16 MiB) the allocating thread takes page faults on under
    1% of the pages (the daemon pre-faulted them); the start, while a fresh pool's daemon learns the
    rate, stays under 5 MiB of faults (a peer allocator faults all 16 MiB of it).

    Measured under load (3 busy loops on 2 cores), the same before and after session 5's daemon
    changes: ~550 faults in the first 16 MiB, ~5 per 16 MiB after; the old single bound over the
    whole 256 MiB (655 faults) sat right at that start-up cost and failed a CI run with 662.

    Session 6: the floor follows the bytes in use (high_wm:auto) and the headroom share ramps up over
    passes that find growth (a program's start no longer pre-faults 8 MiB beside a few MB): the start
    costs 820-970 faults here, so its bound is 5 MiB (1,280); past it, 80-95 faults for 61,440 pages.

    Session 7: 75 size classes (twice as many spans start in 4-64 KiB) and thread caches bounded by bytes
    moved the start to 1,050-1,270 faults on a loaded machine (730-1,130 just before, same runs
    alternated; one CI run reached 1,351), so the bound is 6 MiB (1,536 of the 4,096 pages a peer
    faults); the steady-state bound (under 1%, the issue's guarantee) is unchanged: 24-107 faults.
    Session 8: a daemon the machine keeps off every CPU for tens of milliseconds cannot keep ahead (the
    paced loop failed 5 runs of 12 here under busy loops, before and after session 8's daemon changes,
    with the daemon's passes 30-150 ms apart). The loop reads the daemon thread's run_delay (the
    kernel's schedstat) and a run whose daemon waited 10 ms or more in one stretch, as kpool stress's
    rerun rule says (harness/stress/runner.py, STARVED_MS), is run once more; the second run's figures
    are the verdict. Session 18: the daemon's thread was looked for once, just after kp_create, when it
    had most often not yet named itself: no thread was read, the rule never applied, and a fresh-clone CI
    failed with 1,746 faults and 0 ms of waiting read. It is now found at the first read that sees it,
    and its waiting is the longest stretch or the total since, whichever is more: beside two busy loops
    the daemon waits 88-126 ms over the run in many short waits and no long stretch (steady faults
    99-573 against main's 56-1,339, the same code), and 60-85 ms on a quiet machine (56-401 faults:
    the margin under the bound of 614 is thinner than session 7's 24-107)."""
    f, waited = _paced_run()
    first = ""
    if not _paced_ok(f) and waited >= 10.0:
        first = f"first run {f} while the daemon waited {waited:.0f} ms for a CPU; "
        f, waited = _paced_run()
    assert f["mmap"] == 0, f"{first}{f}"
    assert f["grows"] > 0
    assert f["start_faults"] < 6 * MiB / PAGE, f"{first}{f['start_faults']} page faults in the first 16 MiB"
    assert f["steady_faults"] < 0.01 * f["steady_pages"], (
        f"{first}{f['steady_faults']} page faults for {f['steady_pages']} pages"
    )


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="the default layout (outline) pre-faults only past 256 MiB in use (OL_PREFAULT_MIN): 5-7 mmap "
    "on the allocation path and a fault on every page of this paced 256 MiB (s24-flip)",
)
def test_the_default_layout_grows_ahead_of_the_allocating_thread() -> None:
    f, waited = _paced_run("")
    if not _paced_ok(f) and waited >= 10.0:
        f, waited = _paced_run("")
    assert _paced_ok(f), f"{f} (the daemon waited {waited:.0f} ms for a CPU)"
