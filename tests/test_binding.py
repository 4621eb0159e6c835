"""The binding matches kpool.h, and Pool turns the C contract into Python values and exceptions."""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
import sys
import types
from ctypes import POINTER, c_char, c_char_p, c_int, c_size_t, c_uint, c_uint64, c_void_p
from pathlib import Path

import pytest

from harness import binding, build, cli
from harness.binding import KP_EDOUBLEFREE, KP_ENOTOURS, KpEvent, KpOptionInfo, Pool
from harness.errors import BuildError, ClosedError, ConfError, DeniedError, FreeError, KpoolError

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
