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
