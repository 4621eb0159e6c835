"""The binding matches kpool.h, and Pool turns the C contract into Python values and exceptions."""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
import sys
import types
from collections.abc import Callable
from ctypes import POINTER, c_char, c_char_p, c_int, c_size_t, c_uint, c_uint64, c_void_p
from pathlib import Path

import pytest

from harness import binding, build, cli
from harness.binding import KP_EDOUBLEFREE, KP_ENOTOURS, KpEvent, KpOptionInfo, Pool
from harness.errors import (
    AllocError,
    ArgumentError,
    ArgumentTypeError,
    BuildError,
    ClosedError,
    ConfError,
    DeniedError,
    FreeError,
    KpoolError,
)

HEADER = Path(__file__).resolve().parents[1] / "allocator" / "include" / "kpool.h"

# C spelling in kpool.h -> the ctypes type the binding must declare for it.
C_TYPES: dict[str, object] = {
    "void": None,
    "int": c_int,
    "unsigned": c_uint,
    "size_t": c_size_t,
    "uint64_t": c_uint64,
    "kp_pool *": c_void_p,
    "void *": c_void_p,
    "const void *": c_void_p,
    "const char *": c_char_p,
    "char *": POINTER(c_char),
    "kp_event *": POINTER(KpEvent),
    "const kp_option_info **": POINTER(POINTER(KpOptionInfo)),
}

EVENT_NAMES = [
    "none", "grow", "shrink", "backup_enter", "backup_leave", "backup_alloc", "denied", "oom",
    "bad_size", "double_free", "invalid_free", "corruption", "token", "os_fail", "daemon",
    "fault_injected",
]  # fmt: skip

REQUIRED_OPTIONS = {
    "primary_initial", "primary_max", "backup", "low_wm", "high_wm", "critical_wm", "recover_wm",
    "daemon", "daemon_interval_ms", "decay_ms", "seed",
}  # fmt: skip

STATS_SHAPE = {
    "primary": {"capacity_bytes", "max_bytes", "in_use_bytes", "peak_in_use_bytes", "committed_bytes",
                "segments", "allocs", "frees", "failures", "grows", "shrinks"},
    "backup": {"capacity_bytes", "in_use_bytes", "peak_in_use_bytes", "allocs", "frees", "refusals",
               "active", "enters", "leaves"},
    "daemon": {"running", "wakeups", "timer_wakeups", "passes", "grows", "shrinks", "backup_refills"},
    "integrity": {"double_frees", "invalid_frees", "corruptions", "bad_sizes"},
    "syscalls": {"alloc", "daemon", "total"},
    "events": {"recorded", "dropped"},
    "threads": None,
}  # fmt: skip
SYSCALL_KINDS = {"mmap", "munmap", "madvise", "mprotect", "other"}


def _c_type(decl: str) -> str:
    """'kp_pool *pool' -> 'kp_pool *'; 'unsigned' -> 'unsigned'."""
    decl = " ".join(decl.split())
    match = re.fullmatch(r"(.*?[\s*])\s*\w+", decl)
    spelled = match.group(1) if match and match.group(1).strip() not in {"", "const"} else decl
    return re.sub(r"\s*(\*+)\s*$", r" \1", spelled.strip())


def header_prototypes() -> dict[str, tuple[str, list[str]]]:
    """Every function of kpool.h: name -> (return type, parameter types)."""
    text = HEADER.read_text()
    found = re.findall(r"^(?![ /*])([\w ]+?[\s*]+)(kp_\w+)\(([^)]*)\)", text, re.M)
    return {
        name: (_c_type(ret + "x"), [] if args.strip() == "void" else [_c_type(a) for a in args.split(",")])
        for ret, name, args in found
    }


# ---- the declarations ---------------------------------------------------------------------------------


def test_every_header_function_is_declared_with_its_types() -> None:
    header = header_prototypes()
    assert len(header) >= 18
    assert set(binding.PROTOTYPES) == set(header)
    for name, (ret, args) in header.items():
        restype, argtypes = binding.PROTOTYPES[name]
        assert restype == C_TYPES[ret], name
        assert list(argtypes) == [C_TYPES[a] for a in args], name


def test_loaded_functions_carry_the_declarations() -> None:
    lib = binding.load()
    for name, (restype, argtypes) in binding.PROTOTYPES.items():
        fn = getattr(lib, name)
        assert fn.restype == restype, name
        assert tuple(fn.argtypes) == tuple(argtypes), name


def test_struct_layouts_match_the_compiler(tmp_path: Path) -> None:
    fields = {"kp_event": KpEvent, "kp_option_info": KpOptionInfo}
    lines = ["#include <stdio.h>", "#include <stddef.h>", '#include "kpool.h"', "int main(void) {"]
    for cname, struct in fields.items():
        lines.append(f'printf("{cname} %zu\\n", sizeof({cname}));')
        for field, _ in struct._fields_:
            lines.append(f'printf("{cname}.{field} %zu\\n", offsetof({cname}, {field}));')
    (tmp_path / "layout.c").write_text("\n".join([*lines, "return 0; }"]))
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    exe = tmp_path / "layout"
    subprocess.run([cc, "-I", str(HEADER.parent), "-o", str(exe), str(tmp_path / "layout.c")], check=True)
    got = dict(
        line.split()
        for line in subprocess.run([str(exe)], capture_output=True, text=True).stdout.splitlines()
    )
    for cname, struct in fields.items():
        assert int(got[cname]) == ctypes.sizeof(struct)
        for field, _ in struct._fields_:
            assert int(got[f"{cname}.{field}"]) == getattr(struct, field).offset, field


def test_event_names_follow_the_enum() -> None:
    assert [binding.event_name(k) for k in range(len(EVENT_NAMES))] == EVENT_NAMES
    assert binding.event_name(9999) == "unknown"


def test_option_table() -> None:
    opts = binding.options()
    names = [o["name"] for o in opts]
    assert set(names) >= REQUIRED_OPTIONS
    assert len(names) == len(set(names))
    for o in opts:
        assert o["kind"] in {"size", "int", "bool", "percent", "string"}, o
        assert o["help"], o
        assert o["default"] or o["kind"] == "string", o
    assert {o["name"]: o["default"] for o in opts}["daemon"] == "on"


# ---- configuration ------------------------------------------------------------------------------------


def test_unknown_key_names_key_and_value() -> None:
    with pytest.raises(ConfError) as info:
        Pool("bogus_knob:77")
    assert "bogus_knob" in info.value.text
    assert "77" in info.value.text


@pytest.mark.parametrize(
    ("key", "value"),
    [("primary_initial", "banana"), ("primary_max", "12q"), ("daemon", "maybe"), ("decay_ms", "soon")],
)
def test_bad_value_names_key_and_value(key: str, value: str) -> None:
    with pytest.raises(ConfError) as info:
        Pool({key: value})
    assert key in info.value.text
    assert value in info.value.text
    assert isinstance(info.value, KpoolError)


def test_conf_is_applied_from_a_dict() -> None:
    with Pool({"primary_max": "64m", "daemon": False}) as pool:
        stats = pool.stats()
    assert stats["primary"]["max_bytes"] == 64 << 20
    assert stats["daemon"]["running"] is False


def test_kpool_conf_env_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KPOOL_CONF", "bogus_knob:3")
    with pytest.raises(ConfError, match="bogus_knob"):
        Pool()
    monkeypatch.setenv("KPOOL_CONF", "primary_max:64m")
    with Pool() as pool:
        assert pool.stats()["primary"]["max_bytes"] == 64 << 20
    with Pool("primary_max:128m") as pool:  # conf wins over the environment
        assert pool.stats()["primary"]["max_bytes"] == 128 << 20


# ---- lifecycle, stats, events -------------------------------------------------------------------------


def test_context_manager_closes_the_pool() -> None:
    with Pool("daemon:off") as pool:
        pool.free(pool.alloc(64))
    assert pool.closed
    with pytest.raises(ClosedError):
        pool.alloc(64)
    pool.close()  # closing twice is harmless


def test_stats_shape(pool: Pool) -> None:
    stats = pool.stats()
    assert set(stats) >= set(STATS_SHAPE)
    for section, keys in STATS_SHAPE.items():
        if keys is not None:
            assert set(stats[section]) >= keys, section
    for caller in ("alloc", "daemon"):
        assert set(stats["syscalls"][caller]) == SYSCALL_KINDS
    assert isinstance(stats["threads"], int)
    assert stats["daemon"]["running"] is True
    assert stats["backup"]["active"] is False
    assert stats["primary"]["capacity_bytes"] > 0
    assert stats["backup"]["capacity_bytes"] > 0


def test_stats_grow_the_buffer_when_needed(pool: Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(binding, "STATS_BUFFER", 8)
    assert set(pool.stats()) >= set(STATS_SHAPE)


def test_double_free_raises_with_code_and_event(quiet_pool: Pool) -> None:
    addr = quiet_pool.alloc(100)
    quiet_pool.free(addr)
    with pytest.raises(FreeError) as info:
        quiet_pool.free(addr)
    assert info.value.code == KP_EDOUBLEFREE
    assert info.value.code_name == "KP_EDOUBLEFREE"
    assert "double_free" in str(info.value)
    assert quiet_pool.try_free(addr) == KP_EDOUBLEFREE
    doubles = [e for e in quiet_pool.events() if e.kind == "double_free"]
    assert [e.addr for e in doubles] == [addr, addr]  # the one drained for the message is kept
    assert quiet_pool.stats()["integrity"]["double_frees"] == 2


def test_double_free_text_gives_the_blocks_size_class_never_a_false_zero() -> None:
    """free clears the requested size from the header; the class remains: the text gives the class's
    capacity (the most the block could hold), and the event's size field the same number."""
    with Pool("daemon:off,checks:off") as pool:
        pool.events()
        addr = pool.alloc(100)
        capacity = pool.usable_size(addr)  # checks off: the whole capacity of its class
        pool.free(addr)
        with pytest.raises(FreeError) as info:
            pool.free(addr)
        (event,) = [e for e in pool.events() if e.kind == "double_free"]
    assert 100 <= capacity < 256
    assert event.text == f"{addr:#x} size class {capacity}: double free"
    assert event.size == capacity
    assert f"size class {capacity}" in str(info.value)
    assert "size 0" not in str(info.value)


@pytest.mark.parametrize("size", [100, 200_000])  # a small class block, a large (page run) block
def test_double_free_text_with_checks_on(quiet_pool: Pool, size: int) -> None:
    addr = quiet_pool.alloc(size)
    quiet_pool.free(addr)
    with pytest.raises(FreeError):
        quiet_pool.free(addr)
    (event,) = [e for e in quiet_pool.events() if e.kind == "double_free"]
    assert "size 0" not in event.text
    if size == 100:
        assert re.fullmatch(rf"{addr:#x} size class (\d+): double free", event.text), event.text
        assert 100 <= event.size < 256
    else:  # a large block's span may be merged once free: its size is not known any more
        assert event.text == f"{addr:#x} size unknown: double free"
        assert event.size == 0


def test_free_of_a_foreign_pointer_says_size_unknown(quiet_pool: Pool) -> None:
    buf = ctypes.create_string_buffer(256)
    addr = ctypes.addressof(buf) + 64
    assert quiet_pool.try_free(addr) == KP_ENOTOURS
    (event,) = [e for e in quiet_pool.events() if e.kind == "invalid_free"]
    assert event.text == f"{addr:#x} size unknown: free of a pointer never given out"
    assert event.size == 0


@pytest.mark.parametrize(
    "line",
    [
        "kpool 1718000000.123 double_free 0x7f0a3c001040 size class 112: double free",
        "kpool 1718000000.123 double_free 0x7f0a3c001040 size unknown: double free",
        "kpool 1718000000.123 double_free 0x7f0a3c001040 size 64: double free",
    ],
)
def test_triage_reads_every_size_form_of_the_event_text(line: str) -> None:
    from harness.triage import signature

    assert signature.classify(line) == ("kpool-double_free", "double free")


def test_foreign_pointer_is_not_ours(quiet_pool: Pool) -> None:
    buf = ctypes.create_string_buffer(256)
    addr = ctypes.addressof(buf) + 64
    with pytest.raises(FreeError) as info:
        quiet_pool.free(addr)
    assert info.value.code == KP_ENOTOURS
    assert [e.addr for e in quiet_pool.events() if e.kind == "invalid_free"] == [addr]
    assert quiet_pool.stats()["integrity"]["invalid_frees"] == 1
    assert buf.raw == bytes(256)  # left alone


def test_events_drain_oldest_first_and_once(quiet_pool: Pool) -> None:
    addrs = [quiet_pool.alloc(32) for _ in range(3)]
    for a in addrs:
        quiet_pool.free(a)
    quiet_pool.events()
    for a in addrs:
        assert quiet_pool.try_free(a) == KP_EDOUBLEFREE
    events = quiet_pool.events()
    assert [e.addr for e in events if e.kind == "double_free"] == addrs
    seqs = [e.seq for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    times = [e.time_ns for e in events]
    assert times == sorted(times)
    assert all(e.pool in {"primary", "backup"} for e in events)
    assert quiet_pool.events() == []


def test_critical_token_is_given_once(quiet_pool: Pool) -> None:
    token = quiet_pool.critical_token()
    assert token != 0
    quiet_pool.events()
    assert quiet_pool.critical_token() == 0
    assert {e.kind for e in quiet_pool.events()} & {"token", "denied"}
    with Pool("daemon:off") as other:
        assert other.critical_token() not in {0, token}


def test_critical_scope(quiet_pool: Pool) -> None:
    token = quiet_pool.critical_token()
    with pytest.raises(DeniedError):
        quiet_pool.critical_enter(token ^ 1)
    with quiet_pool.critical(token), quiet_pool.critical(token):  # scopes nest
        quiet_pool.free(quiet_pool.alloc(64, binding.KP_CRITICAL))
    quiet_pool.thread_flush()
    s = quiet_pool.stats()
    assert s["primary"]["allocs"] == s["primary"]["frees"] == 1


def test_daemon_hooks(quiet_pool: Pool) -> None:
    assert quiet_pool.daemon_step(0) >= 0
    quiet_pool.daemon_wake()
    assert quiet_pool.stats()["daemon"]["passes"] >= 1


# ---- arguments: every integer passed to C fits its C type, every value has the right type -------------

U64 = 2**64  # size_t, uintptr_t and uint64_t are 64-bit on every platform the harness runs on

SIZE_T = "from 0 to 18446744073709551615"
UINT = "from 0 to 4294967295"
# (id, the call, the bad value as it must appear in the message, the range it must name)
OUT_OF_RANGE: list[tuple[str, Callable[[Pool], object], int, str]] = [
    ("alloc 2**64+100", lambda p: p.alloc(U64 + 100), U64 + 100, SIZE_T),
    ("alloc 2**64", lambda p: p.alloc(U64), U64, SIZE_T),
    ("alloc -1", lambda p: p.alloc(-1), -1, SIZE_T),
    ("try_alloc", lambda p: p.try_alloc(U64 + 1), U64 + 1, SIZE_T),
    ("alloc flags 2**32", lambda p: p.alloc(16, 2**32), 2**32, UINT),
    ("alloc flags -1", lambda p: p.alloc(16, -1), -1, UINT),
    ("alloc_aligned size", lambda p: p.alloc_aligned(U64 + 16, 16), U64 + 16, SIZE_T),
    ("alloc_aligned align", lambda p: p.alloc_aligned(16, U64 + 16), U64 + 16, SIZE_T),
    ("realloc size", lambda p: p.realloc(0, U64 + 5), U64 + 5, SIZE_T),
    ("realloc addr", lambda p: p.realloc(-8, 16), -8, SIZE_T),
    ("free 2**64", lambda p: p.free(U64), U64, SIZE_T),
    ("free -1", lambda p: p.free(-1), -1, SIZE_T),
    ("try_free", lambda p: p.try_free(U64 + 8), U64 + 8, SIZE_T),
    ("usable_size", lambda p: p.usable_size(2**65), 2**65, SIZE_T),
    ("critical_enter", lambda p: p.critical_enter(U64), U64, SIZE_T),
    ("daemon_step -1", lambda p: p.daemon_step(-1), -1, SIZE_T),
    ("daemon_step 2**64", lambda p: p.daemon_step(U64), U64, SIZE_T),
]  # fmt: skip


@pytest.mark.parametrize(("what", "call", "bad", "span"), OUT_OF_RANGE, ids=[c[0] for c in OUT_OF_RANGE])
def test_integer_out_of_range_raises_naming_value_and_range(
    quiet_pool: Pool, what: str, call: Callable[[Pool], object], bad: int, span: str
) -> None:
    before = quiet_pool.stats()["primary"]["allocs"]
    with pytest.raises(ArgumentError) as info:
        call(quiet_pool)
    message = str(info.value)
    assert re.search(rf"(?<![\d-]){bad}(?!\d)", message), message
    assert span in message, message
    assert isinstance(info.value, ValueError) and isinstance(info.value, KpoolError)
    assert quiet_pool.stats()["primary"]["allocs"] == before  # nothing reached the allocator


WRONG_TYPE: list[tuple[str, Callable[[Pool], object]]] = [
    ("alloc str", lambda p: p.alloc("x")),
    ("alloc float", lambda p: p.alloc(1.5)),
    ("alloc bool", lambda p: p.alloc(True)),
    ("alloc None", lambda p: p.alloc(None)),
    ("alloc flags str", lambda p: p.alloc(16, "zero")),
    ("alloc_aligned", lambda p: p.alloc_aligned(16, "16")),
    ("realloc", lambda p: p.realloc("0x10", 16)),
    ("free str", lambda p: p.free("x")),
    ("try_free", lambda p: p.try_free(b"x")),
    ("usable_size", lambda p: p.usable_size(1.0)),
    ("critical_enter", lambda p: p.critical_enter("token")),
    ("daemon_step", lambda p: p.daemon_step(0.5)),
    ("fault_inject", lambda p: p.fault_inject(5)),
]  # fmt: skip


@pytest.mark.parametrize(("what", "call"), WRONG_TYPE, ids=[w for w, _ in WRONG_TYPE])
def test_wrong_type_raises_the_packages_error(
    quiet_pool: Pool, what: str, call: Callable[[Pool], object]
) -> None:
    with pytest.raises(ArgumentTypeError, match=r"expected (an integer|a string)") as info:
        call(quiet_pool)
    assert isinstance(info.value, TypeError) and isinstance(info.value, KpoolError)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: Pool(123), r"conf.*123.*expected a string, a mapping or None"),  # type: ignore[arg-type]
        (lambda: Pool([("daemon", "off")]), r"conf.*expected a string, a mapping or None"),  # type: ignore[arg-type]
        (lambda: Pool({1: "off"}), r"conf key 1.*expected a string"),  # type: ignore[dict-item]
        (lambda: Pool({"seed": [1, 2]}), r"conf value \[1, 2\] of 'seed'.*expected"),
        (lambda: Pool(lib=5), r"library path 5.*expected a path"),  # type: ignore[arg-type]
        (lambda: binding.load(5), r"library path 5.*expected a path"),  # type: ignore[arg-type]
        (lambda: binding.event_name("grow"), r"event kind 'grow'.*expected an integer"),  # type: ignore[arg-type]
        (lambda: binding.last_error("libkpool"), r"expected a loaded library"),  # type: ignore[arg-type]
        (lambda: binding.options(lib=3), r"expected a loaded library"),  # type: ignore[arg-type]
        (lambda: binding.conf_string(7), r"conf.*7.*expected a string, a mapping or None"),  # type: ignore[arg-type]
    ],
)
def test_module_functions_and_constructor_check_types(call: Callable[[], object], match: str) -> None:
    with pytest.raises(ArgumentTypeError, match=match):
        call()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: Pool("daemon:off\0bogus:1"), r"NUL"),
        (lambda: Pool({"seed": "1,daemon:on"}), r"conf value '1,daemon:on' of 'seed'.*','"),
        (lambda: Pool({"se:ed": 1}), r"conf key 'se:ed'.*':'"),
        (lambda: binding.event_name(2**32 + 1), r"4294967297.*from 0 to 4294967295"),
    ],
)
def test_values_the_c_side_would_misread_are_refused(call: Callable[[], object], match: str) -> None:
    with pytest.raises(ArgumentError, match=match):
        call()


def test_fault_spec_with_nul_is_refused(quiet_pool: Pool) -> None:
    with pytest.raises(ArgumentError, match="NUL"):
        quiet_pool.fault_inject("os_mmap@1\0junk")


def test_integers_in_range_still_work(quiet_pool: Pool) -> None:
    class Index:  # any object with __index__ is an integer (numpy integers are)
        def __index__(self) -> int:
            return 48

    addr = quiet_pool.alloc(Index())  # type: ignore[arg-type]
    assert quiet_pool.usable_size(addr) >= 48
    quiet_pool.free(addr)
    assert quiet_pool.try_alloc(2**63) is None  # in range for size_t, impossible for the pool
    with pytest.raises(AllocError, match="bad_size"):
        quiet_pool.alloc(2**64 - 1)


# ---- build and command line ---------------------------------------------------------------------------


def test_fuzz_variant_without_clang_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name: None if name == "clang" else real_which(name))
    with pytest.raises(BuildError, match=r"Debian package clang"):
        build.build("fuzz")


def test_unknown_variant_is_refused() -> None:
    with pytest.raises(BuildError, match="nope"):
        build.build("nope")


def test_cli_reports_errors_without_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name: None if name == "clang" else real_which(name))
    assert cli.main(["build", "--variant", "fuzz"]) == 1
    err = capsys.readouterr().err
    assert "clang" in err and "Traceback" not in err


def test_cli_options_prints_a_markdown_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["options"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| option | kind | default | meaning |"
    assert lines[1] == "| --- | --- | --- | --- |"
    assert {line.split("`")[1] for line in lines[2:]} >= REQUIRED_OPTIONS


def test_cli_bench_forwards_its_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    def main(argv: list[str]) -> int:
        seen.append(list(argv))
        return 3

    fake = types.ModuleType("harness.bench")
    fake.main = main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "harness.bench", fake)
    assert cli.main(["bench", "--workload", "a", "-n", "5"]) == 3
    assert seen == [["--workload", "a", "-n", "5"]]
