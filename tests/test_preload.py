"""The preload library, libkpool-preload.so (allocator/preload/): the C allocation API's edge cases against
glibc's (tests/data/preload/conformance.c), the known traps of a malloc preload (tests/data/preload/traps.c),
integrity errors, the critical scope's example program, and real programs as smoke checks."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness import build

DATA = Path(__file__).parent / "data" / "preload"
# The line an integrity error prints (kpool's event-log format, which triage reads).
ABORT_LINE = re.compile(
    r"^kpool \d+\.\d{3} (?P<event>\w+) 0x[0-9a-f]+ (?P<size>size class \d+|size \d+|size unknown): "
    r"(?P<what>[^\n]*) in (?P<call>\w+\(\)); (?P<then>abort|going on)"
)
TIMEOUT_S = 120  # the slowest program here (gcc under the preload) takes a few seconds


@pytest.fixture(scope="module")
def preload() -> Path:
    return build.preload_library()


@pytest.fixture(scope="module")
def cc() -> str:
    found = shutil.which("cc") or shutil.which("gcc")
    if found is None:
        pytest.skip("no C compiler")
    return found


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory, cc: str) -> dict[str, Path]:
    """tests/data/preload/*.c, compiled without optimisation (so that every call stays)."""
    out = tmp_path_factory.mktemp("preload-programs")
    built = {}
    for src in sorted(DATA.glob("*.c")):
        exe = out / src.stem
        subprocess.run(
            [cc, "-O0", "-fno-builtin", "-pthread", "-Wall", "-Wno-alloc-size-larger-than", "-o", str(exe),
             str(src)],
            check=True,
        )  # fmt: skip
        built[src.stem] = exe
    return built


# KPOOL_CONF of the tests of the inline layout's own behaviour under the preload: the default became
# outline in session 24.
INLINE = "layout:inline"


def run(
    argv: list[str], preload: Path | None, env: dict[str, str] | None = None, cwd: Path | str | None = None
) -> subprocess.CompletedProcess[str]:
    full = {"PATH": "/usr/bin:/bin", "LANG": "C", **(env or {})}
    if preload is not None:
        full["LD_PRELOAD"] = str(preload)
    return subprocess.run(
        argv, env=full, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )


def figures(folder: Path, pid: int | None = None) -> dict[str, object]:
    files = sorted(folder.glob("kpool-*.json"))
    assert files, f"no figures in {folder}"
    path = folder / f"kpool-{pid}.json" if pid else files[-1]
    return json.loads(path.read_text())  # type: ignore[no-any-return]


# ---- conformance -----------------------------------------------------------------------------------


def test_conformance_suite_gives_glibc_results(programs: dict[str, Path], preload: Path) -> None:
    glibc = run([str(programs["conformance"])], None)
    kpool = run([str(programs["conformance"])], preload)
    assert glibc.returncode == 0, glibc.stderr
    assert kpool.returncode == 0, kpool.stderr
    lines = glibc.stdout.splitlines()
    assert len(lines) > 40 and lines[-1].startswith("threads:")
    assert kpool.stdout.splitlines() == lines
    assert kpool.stderr == ""


# ---- the traps --------------------------------------------------------------------------------------


@pytest.mark.parametrize("bootstrap", [0, 1000])
def test_malloc_before_any_constructor_and_pointers_the_pool_never_gave(
    programs: dict[str, Path], preload: Path, tmp_path: Path, bootstrap: int
) -> None:
    """Blocks from .preinit_array and a constructor are measured, grown and freed in main; with bootstrap:1000
    they come from the bootstrap buffer (pointers the pool never gave out) and nothing complains."""
    env = {"KPOOL_STATS_OUT": str(tmp_path), "KPOOL_PRELOAD": f"bootstrap:{bootstrap}"}
    proc = run([str(programs["traps"]), "early"], preload, env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "early blocks: ok\n"
    assert proc.stderr == ""
    doc = figures(tmp_path)
    boot = doc["bootstrap"]
    assert isinstance(boot, dict)
    if bootstrap:
        assert boot["allocs"] >= 6 and boot["frees"] >= 4
    assert doc["integrity_total"] == 0


# Either layout's daemon starts once 1 MiB is in use (daemon.c, kp__daemon_wanted; outline.c, kp__ol_wanted):
# the default's only at a second segment before (session 24), so a program of a few MiB got none.
LAYOUTS = ["layout:outline", INLINE]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_fork_from_a_threaded_program_child_allocates_and_its_daemon_restarts(
    programs: dict[str, Path], preload: Path, layout: str
) -> None:
    proc = run([str(programs["traps"]), "fork"], preload, {"KPOOL_CONF": layout})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "parent daemon: running" in proc.stdout
    assert "children that allocated with a running daemon: 20 of 20" in proc.stdout


def test_blocks_aligned_past_the_pool_are_made_and_freed_without_a_complaint(
    programs: dict[str, Path], preload: Path, tmp_path: Path
) -> None:
    """Alignments of 8-64 KiB come from the preload's own table: free() hands their pointers, which are
    inside a block of the pool's, to the preload (kp__free_miss) after kp_free's fast path refused them."""
    proc = run([str(programs["traps"]), "aligned"], preload, {"KPOOL_STATS_OUT": str(tmp_path)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == "aligned blocks: ok\n"
    assert figures(tmp_path)["integrity_total"] == 0


# C++'s operators new and delete as the Itanium ABI names them: the preload defines each (one call and one PLT
# jump less than libstdc++'s, which call malloc and free).
CXX_OPERATORS = {
    "_Znwm", "_Znam", "_ZnwmRKSt9nothrow_t", "_ZnamRKSt9nothrow_t", "_ZnwmSt11align_val_t",
    "_ZnamSt11align_val_t", "_ZnwmSt11align_val_tRKSt9nothrow_t", "_ZnamSt11align_val_tRKSt9nothrow_t",
    "_ZdlPv", "_ZdaPv", "_ZdlPvm", "_ZdaPvm", "_ZdlPvRKSt9nothrow_t", "_ZdaPvRKSt9nothrow_t",
    "_ZdlPvSt11align_val_t", "_ZdaPvSt11align_val_t", "_ZdlPvmSt11align_val_t", "_ZdaPvmSt11align_val_t",
    "_ZdlPvSt11align_val_tRKSt9nothrow_t", "_ZdaPvSt11align_val_tRKSt9nothrow_t",
}  # fmt: skip


def test_cxx_operators_new_and_delete_are_the_preloads_and_keep_their_contract(
    preload: Path, tmp_path: Path
) -> None:
    """tests/data/preload/operators.cc: every form of new and delete, the new-handler and std::bad_alloc on a
    request nobody can serve (the preload's new hands its failure to libstdc++'s, which throws); the same
    lines as under glibc, and the program's operator new is the preload's."""
    gxx = shutil.which("g++") or shutil.which("c++")
    if gxx is None:
        pytest.skip("no C++ compiler")
    exe = tmp_path / "operators"
    subprocess.run([gxx, "-O2", "-std=c++17", "-o", str(exe), str(DATA / "operators.cc")], check=True)
    glibc = run([str(exe)], None)
    kpool = run([str(exe)], preload, {"LD_DEBUG": "bindings"})
    assert glibc.returncode == 0 and kpool.returncode == 0, glibc.stderr + kpool.stderr[-2000:]
    assert "std::bad_alloc after 1 new-handler call(s)" in glibc.stdout
    assert kpool.stdout == glibc.stdout
    bound = re.search(r"binding file \S*operators \[0\] to (\S+) \[0\]: normal symbol `_Znwm'", kpool.stderr)
    assert bound and Path(bound[1]).name == preload.name, bound and bound[0]


def test_threads_that_exit_with_cached_blocks_give_their_caches_back(
    programs: dict[str, Path], preload: Path
) -> None:
    proc = run([str(programs["traps"]), "threads"], preload)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "threads with a cache after 128 exited: 1\n"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_small_program_keeps_one_window_of_the_text_resident_and_little_bss(
    programs: dict[str, Path], preload: Path, layout: str
) -> None:
    """The functions small programs run sit together in the first 64 KiB window of the library's text
    (allocator/preload/hot.txt), so the rest is never faulted in: all 88 KiB were resident before. The
    small state every call reads shares a page, the large arrays are apart (.lbss): 20-28 KiB of bss were
    resident before, 8 now (the rest: a page of the page map's root, whose index is the address's)."""
    # hot.txt lists both layouts' functions: the default layout's (outline.c) were not in it before session
    # 24's s24-preload, and the program kept 124 KiB of the text resident on it
    proc = run([str(programs["resident"])], preload, {"KPOOL_CONF": layout})
    assert proc.returncode == 0, proc.stderr
    found = re.fullmatch(
        r"text resident KiB: (\d+) of (\d+)\nbss resident KiB: (\d+) of (\d+)\nlibrary resident KiB: (\d+)\n",
        proc.stdout,
    )
    assert found, proc.stdout
    text, text_all, bss, library = int(found[1]), int(found[2]), int(found[3]), int(found[5])
    assert text_all > 64, "the text fits one window: nothing to keep out"
    # the default layout's window: the inline layout's own small paths (warm.txt) left it in s32 for room,
    # and open the cold text: two windows on layout:inline. resident.c's cross-thread frees (as in
    # thread_churn) kept 128 KiB on the default layout before (their functions were not in hot.txt), and
    # so did its thread whose first call is a free (false_sharing's workers: kp__ol_free) until s33. The
    # hot text is the default layout's functions alone since s33 (the inline layout's slow paths, 16 KiB,
    # in warm.txt): 48.1 KiB, 13 pages, where it was a full 64 KiB window (every small program's RSS)
    # 52 -> 56 in s38: the hot list's functions are 50.8 KiB since the slot's tag (slot_name, kp__pool_ref,
    # kp__pool_unref), LEND's and the stale-free readers' (ol_reader_note, ol_reader_exit) joined it; 14 pages
    bound = 128 if layout == "layout:inline" else 56
    assert text <= bound, f"{text} KiB of the text resident: a function small programs run is not in hot.txt"
    # 12 KiB on main (s32). s33: pagemap.c's 64 KiB of grace records and 32 KiB page-map root in .lbss (the
    # small state after them, its locks and the pool registry, kept a page of its own), and alloc.c's
    # prefetch table (2 KiB, filled at the inline primary's first segment, not at load) and conf.c's
    # option list there too: .data and .bss share their one page (the library's, not counted here); what
    # is left is the page of the grace record this program's daemon takes (small_objects: none); the inline
    # layout's primary touches the table's page and its page-map root's too
    assert bss <= (12 if layout == "layout:inline" else 4), f"{bss} KiB of the bss resident"
    # All the library's file pages (Makefile: the first segment with the dynamic symbols, relocations and
    # .rodata, 28 KiB since s33's DT_RELR, 36 before; the hot text; relro and data, 8): 172 KiB on the
    # default layout before s33 (the cold text's window for kp__ol_free, and 64 KiB of hot text), 88 now
    assert library <= bound + 36, f"{library} KiB of the library's pages resident"


def test_the_hot_text_holds_when_the_threads_are_preempted(programs: dict[str, Path], preload: Path) -> None:
    """Paths that only contention takes stay in the hot text too. callgrind, which hot.txt is measured
    with, runs one thread at a time; CI's run beside other tests took drain_class's dirty_unlink (a refill
    meeting a span another thread's free had just put on the dirty list) and faulted the cold window in:
    116 KiB resident. Here resident.c's threads share one CPU with a busy process, so they are preempted
    anywhere: before dirty_unlink joined hot.txt, 17 of 30 such runs were over (0 of 30 after)."""
    cpu = min(os.sched_getaffinity(0))
    pin = functools.partial(os.sched_setaffinity, 0, {cpu})
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=pin)
    try:
        for attempt in range(3):
            proc = subprocess.run(
                [str(programs["resident"])],
                env={"PATH": "/usr/bin:/bin", "LANG": "C", "LD_PRELOAD": str(preload)},
                preexec_fn=pin, capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
            )  # fmt: skip
            assert proc.returncode == 0, proc.stderr
            found = re.match(r"text resident KiB: (\d+) of", proc.stdout)
            assert found, proc.stdout
            # the bound of the quiet run above: the hot text's 13 pages
            assert int(found[1]) <= 56, (
                f"run {attempt + 1}: {found[1]} KiB of the text resident beside a busy process on its CPU: "
                "a function that contention takes is not in hot.txt"
            )
    finally:
        busy.kill()
        busy.wait()


def test_a_small_program_whose_daemon_makes_passes_keeps_one_window_of_the_cold_text(
    programs: dict[str, Path], preload: Path
) -> None:
    """The daemon's passes (resident.c daemon: 3 MiB live for 300 ms) run cold text small programs without
    a daemon never do; its functions open the cold text (warm.txt), in its first 64 KiB window. s34's main:
    the hot text's 52 KiB and the whole cold mapping, 92 KiB (bench-prodcons' too)."""
    proc = run([str(programs["resident"]), "daemon"], preload)
    assert proc.returncode == 0, proc.stderr
    found = re.match(r"text resident KiB: (\d+) of (\d+)\n", proc.stdout)
    assert found, proc.stdout
    text, text_all = int(found[1]), int(found[2])
    assert text_all > 52 + 64, "the cold text fits one window: nothing to keep out"
    assert text <= 56 + 64, f"{text} KiB of the text resident: a function the daemon runs is not in warm.txt"


# The anonymous memory kpool keeps resident beyond glibc's in a small program of one thread
# (tests/data/preload/anon_resident.c small: 1,000 live blocks of 8-256 bytes, glibc 284 KiB): its blocks'
# rounding and classes, its metadata, its tables. 272 KiB on main (s27), 124 of them the metadata mapping:
# each class's span of small blocks had its stack and records sized for the slice's blocks (a span of
# 16-byte blocks: 8 KiB of stack, then 64 KiB of records), two or three pages touched per class. A heap's
# first span of a class is short now (outline.c, span_blocks): 48 KiB of metadata, 200 KiB beyond glibc.
# s33: 180 KiB on main, of which 24 were the inline primary's first segment and its page-map entries, which
# the default layout under the preload maps only on the first block over 64 KiB now, and 4 a page of the
# bss (pagemap.c's arrays in .lbss).
# s37: 156 -> 172. A young heap's classes up to 1 KiB pop a coarser class's span until it runs dry
# (outline.c, LEND): this program's classes leave their lenders at their first refill, and the lenders'
# first blocks stay with the pages they took: 432 -> 448 KiB here (lend:off 428; glibc 284-288), where
# anon_resident.c churn (8 threads of 64 blocks of 16-512 B) went 372-460 -> 268-332 KiB (glibc 220).
ANON_EXCESS_KIB = 172


def test_a_small_program_keeps_little_anonymous_memory_beyond_glibcs(
    programs: dict[str, Path], preload: Path
) -> None:
    """Anonymous pages only (/proc/self/smaps_rollup): the libraries' resident text depends on the page cache
    (100 KiB from run to run in libc's), so the peak RSS could not bound this; these are the same from run to
    run of one build."""
    kib = {}
    for name, lib in (("kpool", preload), ("glibc", None)):
        proc = run([str(programs["anon_resident"]), "small"], lib)
        assert proc.returncode == 0, proc.stderr
        found = re.fullmatch(r"anonymous KiB: (\d+)\n", proc.stdout)
        assert found, proc.stdout
        kib[name] = int(found[1])
    assert kib["kpool"] - kib["glibc"] <= ANON_EXCESS_KIB, kib


def test_the_code_every_exit_runs_is_in_the_first_window_of_the_text(preload: Path) -> None:
    """_fini (DT_FINI: crti's prologue and crtn's epilogue) runs at every exit, when the program's RSS is at
    its peak: after .text it faulted a second window in, 24 KiB more in every small program's peak RSS
    (bench-thread-churn, bench-small-objects). The resident test above measures before the exit, so it could
    not see it."""
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("no readelf")
    dynamic, segments = (
        subprocess.run([readelf, flag, str(preload)], capture_output=True, text=True, check=True).stdout
        for flag in ("-dW", "-lW")
    )
    fini = re.search(r"\(FINI\)\s+0x([0-9a-f]+)", dynamic)
    text = re.search(r"^\s*LOAD\s+0x[0-9a-f]+ 0x([0-9a-f]+) .* R E ", segments, re.M)
    assert text, segments
    if fini is None:
        return  # no DT_FINI: nothing runs there
    start, at = int(text[1], 16), int(fini[1], 16)
    window = 64 << 10
    assert at // window == start // window, f"_fini at {at:#x}, the text's first window is {start:#x}+64 KiB"


# What every exit runs under `kpool run` and `kpool bench`, which set KPOOL_STATS_OUT: crtbeginS.o's
# destructor walk, the preload's destructor and the figures it writes (callgrind over small_objects with the
# variable set).
EXIT_PATH = ("__do_global_dtors_aux", "preload_fini", "stats_write", "kp_stats_json", "kp__stats_json",
             "kp__stats_primary", "put", "out_flush")  # fmt: skip


def test_the_exit_that_writes_the_figures_runs_in_the_first_window_of_the_text(preload: Path) -> None:
    """The figures written at exit (KPOOL_STATS_OUT) ran kp_stats_json and its callees from the cold text, and
    a hot list 200 bytes longer pushed __do_global_dtors_aux (the start of .text) past the window: the exit
    faulted in the second window, 32 KiB more in every small program's peak RSS under kpool bench, when it
    is at its highest. The resident test measures before the exit, so it could not see it."""
    nm, readelf = shutil.which("nm"), shutil.which("readelf")
    if nm is None or readelf is None:
        pytest.skip("no nm or readelf")
    segments = subprocess.run([readelf, "-lW", str(preload)], capture_output=True, text=True, check=True)
    text = re.search(r"^\s*LOAD\s+0x[0-9a-f]+ 0x([0-9a-f]+) .* R E ", segments.stdout, re.M)
    assert text, segments.stdout
    start, window = int(text[1], 16), 64 << 10
    symbols = subprocess.run([nm, "--defined-only", str(preload)], capture_output=True, text=True, check=True)
    at: dict[str, list[int]] = {}
    for f in (line.split() for line in symbols.stdout.splitlines()):
        if len(f) == 3 and f[1] in "tT":
            at.setdefault(f[2].split(".")[0], []).append(int(f[0], 16))
    assert [n for n in EXIT_PATH if n not in at] == []
    outside = {n: hex(a) for n in EXIT_PATH for a in at[n] if a // window != start // window}
    assert outside == {}, f"past the text's first window ({start:#x}+64 KiB)"


def test_the_read_only_data_shares_the_first_segment_and_the_unwind_tables_part_the_text(
    preload: Path,
) -> None:
    """The library's own pages in every small program (bench-small-objects, bench-thread-churn): 116 KiB on
    main (the first segment 12, the text's first 64 KiB window, .rodata and .eh_frame 32, relro and data 8),
    84 now. .rodata opened the read-only segment after the text, with .eh_frame behind it: a touch of a
    setting's name or the class table faulted all 32 KiB in. Now .rodata sits in the first segment with the
    dynamic symbols the loader reads anyway, and the unwind tables (read only when an exception unwinds
    through the library) sit between the hot text and the rest, so the hot text is a mapping of its own and a
    fault in it maps that (52 KiB), not a 64 KiB window with the start of the cold text in it. The
    constructors and destructors every program runs are in the hot text. libgcc's CPU probe (4.5 KiB run at
    load) is gone: integrity.c asks CPUID itself."""
    readelf, nm = shutil.which("readelf"), shutil.which("nm")
    if readelf is None or nm is None:
        pytest.skip("no readelf or nm")
    segments = subprocess.run(
        [readelf, "-lW", str(preload)], capture_output=True, text=True, check=True
    ).stdout
    mapping = segments.split("Section to Segment mapping:")[1]
    loads = [line.split()[1:] for line in mapping.splitlines() if re.match(r"^\s*\d\d\s", line)]
    with_rodata = [names for names in loads if any(n.startswith(".rodata") for n in names)]
    assert with_rodata and all(".dynsym" in names for names in with_rodata), mapping
    hot = next((i for i, names in enumerate(loads) if ".text.kp_hot" in names), None)
    assert hot is not None and ".text" not in loads[hot], mapping
    assert loads[hot + 1] and all(n.startswith(".eh_frame") for n in loads[hot + 1]), mapping
    assert ".text" in loads[hot + 2], mapping
    text = re.findall(
        r"^\s*LOAD\s+0x[0-9a-f]+ 0x([0-9a-f]+) 0x[0-9a-f]+ 0x[0-9a-f]+ 0x([0-9a-f]+) R E ", segments, re.M
    )
    start, size = (int(x, 16) for x in text[0])
    # the segment holds .init and .plt with the hot text, from a 64 KiB boundary: one window (hot.txt lists
    # both layouts' functions since session 24: 61 KiB)
    assert size <= 64 << 10, f"the hot text is {size} bytes: past a 64 KiB window with .init and .plt"
    symbols = subprocess.run([nm, "--defined-only", str(preload)], capture_output=True, text=True, check=True)
    at = {f[2]: int(f[0], 16) for f in (line.split() for line in symbols.stdout.splitlines()) if len(f) == 3}
    assert "__cpu_indicator_init" not in at
    for name in ("preload_init", "preload_fini"):
        assert start <= at[name] < start + size, f"{name} at {at[name]:#x}, outside the hot text"


def test_the_figures_at_exit_take_no_block_of_the_pool(
    programs: dict[str, Path], preload: Path, tmp_path: Path
) -> None:
    """The figures were formatted into a 34 KiB block of the pool, live when the stats in them were taken: a
    large class's span and the end of the thread cache, 16 KiB of a small program's peak RSS under kpool
    bench. Now into a page of the library's own: the figures find in use what the program saw as main
    returned (36,848 bytes more before)."""
    proc = run([str(programs["traps"]), "in-use"], preload, {"KPOOL_STATS_OUT": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    seen = re.fullmatch(r"in use: (\d+)\n", proc.stdout)
    assert seen, proc.stdout
    doc = figures(tmp_path)
    stats = doc["stats"]
    assert isinstance(stats, dict)
    assert stats["primary"]["in_use_bytes"] == int(seen[1])
    assert doc["integrity"] == [] and doc["daemon_started"] is False


def test_every_name_in_the_hot_list_is_a_function_of_the_library(preload: Path) -> None:
    """hot.txt and warm.txt name functions; a renamed one would silently go cold."""
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("no nm")
    folder = Path(__file__).parents[1] / "allocator" / "preload"
    names = [n for f in ("hot.txt", "warm.txt") for n in (folder / f).read_text().split("\n")
             if n and not n.startswith("#")]  # fmt: skip
    symbols = subprocess.run([nm, "--defined-only", str(preload)], capture_output=True, text=True, check=True)
    functions = {f[2].split(".")[0] for f in (line.split() for line in symbols.stdout.splitlines())
                 if len(f) == 3 and f[1] in "tT"}  # fmt: skip
    assert [n for n in names if n not in functions] == []


def test_the_daemon_starts_lazily(programs: dict[str, Path], preload: Path, tmp_path: Path) -> None:
    """A program that allocates little never gets the thread; one that allocates much has it; daemon:off in
    KPOOL_CONF is obeyed."""
    few = run([str(programs["traps"]), "few"], preload, {"KPOOL_STATS_OUT": str(tmp_path)})
    assert few.stdout == "daemon: off\n"
    assert figures(tmp_path)["daemon_started"] is False


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_busy_program_of_little_memory_never_gets_the_daemon(
    programs: dict[str, Path], preload: Path, tmp_path: Path, layout: str
) -> None:
    """200,000 allocations that never hold more than 160 KiB: the pool's first segment serves them all and
    the daemon would pre-fault nothing (it starts once 1 MiB was handed out), so the thread would only cost
    its stack, a segment it maps ahead and the libc code that starts it: 96-128 KiB of bench-small-objects'
    and bench-false-sharing's peak RSS (glibc's is 1.5 MiB). It started at the 1,000th allocation."""
    busy = run(
        [str(programs["traps"]), "busy"], preload, {"KPOOL_STATS_OUT": str(tmp_path), "KPOOL_CONF": layout}
    )
    assert busy.stdout == "daemon: off\n", busy.stderr
    doc = figures(tmp_path)
    assert doc["daemon_started"] is False
    assert doc["stats"]["primary"]["allocs"] >= 200000
    many = run([str(programs["traps"]), "many"], preload, {"KPOOL_CONF": layout})
    assert many.stdout == "daemon: running\n"
    off = run([str(programs["traps"]), "many"], preload, {"KPOOL_CONF": layout + ",daemon:off"})
    assert off.stdout == "daemon: off\n"


# ---- integrity -----------------------------------------------------------------------------------


def test_a_double_free_aborts_with_one_line(programs: dict[str, Path], preload: Path, tmp_path: Path) -> None:
    proc = run([str(programs["traps"]), "double-free"], preload, {"KPOOL_STATS_OUT": str(tmp_path)})
    assert proc.returncode == -signal.SIGABRT
    assert "still running" not in proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    m = ABORT_LINE.match(lines[0])
    assert m, lines[0]
    assert (m["event"], m["call"], m["then"]) == ("double_free", "free()", "abort")
    assert m["size"].startswith("size class ")
    doc = figures(tmp_path)
    assert doc["integrity_total"] == 1
    events = doc["integrity"]
    assert isinstance(events, list) and events[0]["kind"] == "double_free"


def test_on_error_log_keeps_running(programs: dict[str, Path], preload: Path, tmp_path: Path) -> None:
    env = {"KPOOL_PRELOAD": "on_error:log", "KPOOL_STATS_OUT": str(tmp_path)}
    proc = run([str(programs["traps"]), "double-free"], preload, env)
    assert proc.returncode == 0
    assert proc.stdout == "still running after the double free\n"
    m = ABORT_LINE.match(proc.stderr)
    assert m and m["then"] == "going on", proc.stderr
    assert figures(tmp_path)["integrity_total"] == 1


def test_a_free_of_a_pointer_never_given_out_aborts(programs: dict[str, Path], preload: Path) -> None:
    proc = run([str(programs["traps"]), "bad-free"], preload)
    assert proc.returncode == -signal.SIGABRT
    m = ABORT_LINE.match(proc.stderr)
    assert m and m["event"] == "invalid_free", proc.stderr


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"KPOOL_PRELOAD": "on_error:maybe"}, "on_error takes abort or log"),
        ({"KPOOL_PRELOAD": "colour:blue"}, "keys: on_error, daemon_after, bootstrap"),
        ({"KPOOL_CONF": "primary_max:lots"}, "primary_max"),
    ],
)
def test_a_bad_setting_is_one_line_and_status_127(
    programs: dict[str, Path], preload: Path, env: dict[str, str], says: str
) -> None:
    proc = run([str(programs["traps"]), "few"], preload, env)
    assert proc.returncode == 127
    assert proc.stderr.count("\n") == 1 and says in proc.stderr, proc.stderr


def test_only_the_allocation_api_is_exported(preload: Path) -> None:
    if shutil.which("nm") is None:
        pytest.skip("no nm (binutils)")
    out = subprocess.run(
        ["nm", "-D", "--defined-only", str(preload)], capture_output=True, text=True, check=True
    )
    names = {line.split()[-1] for line in out.stdout.splitlines() if line.strip()}
    assert {
        "malloc",
        "free",
        "calloc",
        "realloc",
        "posix_memalign",
        "__libc_malloc",
        "malloc_usable_size",
    } <= names
    assert not CXX_OPERATORS - names, sorted(CXX_OPERATORS - names)
    assert {n for n in names if n.startswith("kp_")} == {
        "kp_preload_critical_enter",
        "kp_preload_critical_exit",
        "kp_preload_stats_json",
    }


# ---- the critical scope ----------------------------------------------------------------------------


@pytest.mark.parametrize("scope", [True, False])
def test_example_program_saves_its_state_from_the_backup(preload: Path, tmp_path: Path, scope: bool) -> None:
    example = preload.parent / "example_critical"
    state = tmp_path / "state.txt"
    env = {"KPOOL_CONF": "primary_initial:4m,primary_max:4m,backup:1m"}
    proc = run([str(example), str(state), *([] if scope else ["noscope"])], preload, env)
    assert "primary exhausted" in proc.stdout
    if scope:
        assert proc.returncode == 0, proc.stderr
        assert "saved 1000 records" in proc.stdout
        assert len(state.read_text().splitlines()) == 1000
    else:  # unprivileged: the backup is not for it
        assert proc.returncode == 1
        assert not state.exists() or state.read_text() == ""


# ---- real programs ------------------------------------------------------------------------------


PY_WORK = """
import json, re, sqlite3, zlib, collections
d = [{"k": i, "v": str(i) * (i % 17), "l": list(range(i % 9))} for i in range(60000)]
text = json.dumps(d)
back = json.loads(text)
db = sqlite3.connect(":memory:")
db.execute("create table t (k integer primary key, v text)")
db.executemany("insert into t values (?, ?)", ((x["k"], x["v"]) for x in back))
rows = db.execute("select count(*), sum(length(v)) from t where k % 3 = 0").fetchone()
words = collections.Counter(re.findall(r"[0-9]+", text[:400000]))
print(len(text), rows, len(zlib.compress(text.encode())), words.most_common(2))
"""


@pytest.mark.slow
def test_real_programs_give_glibc_results(
    preload: Path, programs: dict[str, Path], tmp_path: Path, cc: str
) -> None:
    """python (PYTHONMALLOC=malloc), ls, sort and gcc under the preload, each against its run on glibc."""
    data = tmp_path / "lines.txt"
    data.write_text("".join(f"{(i * 7919) % 100003:06d} line {i}\n" for i in range(200000)))
    src = tmp_path / "hello.c"
    src.write_text('#include <stdio.h>\nint main(void) { printf("%d\\n", 6 * 7); return 0; }\n')
    python = sys.executable
    cases = [
        ([python, "-c", PY_WORK], {"PYTHONMALLOC": "malloc"}),
        ([python, "-c", "import harness.binding as b; p = b.Pool(); print(p.alloc(100) > 0); p.close()"], {}),
        (["ls", "-la", "--time-style=+", "/usr/include"], {}),
        (["sort", "-S", "16M", str(data)], {}),
        ([cc, "-O2", "-o", "{out}", str(src)], {}),
    ]
    for i, (argv, env) in enumerate(cases):
        results = []
        for which, lib in (("glibc", None), ("kpool", preload)):
            exe = tmp_path / f"hello-{which}-{i}"
            cmd = [a.replace("{out}", str(exe)) for a in argv]
            proc = run(cmd, lib, {**env, "PYTHONPATH": str(Path(__file__).parents[1])}, cwd=tmp_path)
            assert proc.returncode == 0, (which, cmd, proc.stderr[-2000:])
            out = proc.stdout
            if exe.exists():
                out += run([str(exe)], None).stdout
            results.append(out)
        assert results[0] == results[1], argv
        assert results[0], argv
