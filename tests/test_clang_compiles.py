"""libkpool's sources compile with clang too (the fuzz and coverage builds use it), with the warnings
the Makefile makes errors: a check that takes seconds where `kpool fuzz` and the slow fuzz regression
tests build the whole instrumented library. gcc accepts atomic_load_explicit on a plain pointer
variable, clang refuses it (the flat pagemap's base pointer, declared `_Atomic uint32_t *`, broke the
fuzz build: every fuzz target and tests/test_fuzz_regressions.py failed to build)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ALLOC = ROOT / "allocator"
FLAGS = ["-std=gnu11", "-fsyntax-only", "-pthread", "-Iinclude", "-Isrc", "-Wall", "-Wextra", "-Werror"]
FLAGS += ["-Wshadow", "-Wstrict-prototypes", "-Wmissing-prototypes", "-Wno-unused-parameter"]


@pytest.mark.skipif(shutil.which("clang") is None, reason="no clang")
@pytest.mark.parametrize("src", sorted(p.name for p in (ALLOC / "src").glob("*.c")))
def test_source_compiles_with_clang(src: str) -> None:
    proc = subprocess.run(
        ["clang", *FLAGS, f"src/{src}"], cwd=ALLOC, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


PRELOAD_FLAGS = ["-Ipreload", "-fno-builtin-malloc", "-fno-builtin-calloc", "-fno-builtin-realloc"]


@pytest.mark.skipif(shutil.which("clang") is None, reason="no clang")
def test_the_preload_compiles_with_clang() -> None:
    """gcc's `copy` attribute on the preload's glibc aliases (__libc_malloc, ...) is unknown to clang, and
    -Werror made `make CC=clang preload` fail (s37-robust: 9 errors, unknown attribute 'copy')."""
    proc = subprocess.run(
        ["clang", *FLAGS, *PRELOAD_FLAGS, "preload/preload.c"],
        cwd=ALLOC,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("clang") is None, reason="no clang")
def test_the_preload_builds_and_runs_with_clang(tmp_path: Path) -> None:
    """`make CC=clang preload` builds libkpool-preload.so (libkpool and the preload, linked by clang), and a
    program runs on it: its allocations served, its aliases exported."""
    build = tmp_path / "build"
    proc = subprocess.run(
        ["make", "-s", "-C", str(ALLOC), "CC=clang", f"BUILD={build}", "-j2", "preload"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lib = build / "libkpool-preload.so"
    syms = subprocess.run(
        ["nm", "-D", "--defined-only", str(lib)], capture_output=True, text=True, check=True
    )
    assert {"malloc", "__libc_malloc", "__libc_free", "cfree"} <= {
        line.split()[-1] for line in syms.stdout.splitlines()
    }
    out = subprocess.run(
        ["sh", "-c", "echo $(seq 1 200 | sort -n | tail -1)"],
        env={"PATH": "/usr/bin:/bin", "LD_PRELOAD": str(lib), "KPOOL_STATS_OUT": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0 and out.stdout.strip() == "200", out.stderr
    assert list(tmp_path.glob("kpool-*.json")), "no process on the preload wrote its figures"
