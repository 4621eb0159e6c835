"""Variants of libkpool: build them on demand and say where their libraries live.

The release library is built at install time (hatch_build.py) and shipped as harness/_lib/libkpool.so.
The other variants are built on demand with `make -C <allocator sources> VARIANT=<v> BUILD=<dir>`: in a
checkout into allocator/build/<v>/, from an installed wheel (which ships the sources) into a cache folder
of its own (harness/paths.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from harness import output, paths
from harness.errors import BuildError, UsageError

VARIANTS = ("release", "debug", "asan", "tsan", "fuzz", "coverage")
# -fsanitize=fuzzer-no-link exists only in clang.
NEEDS_CLANG = frozenset({"fuzz", "coverage"})

PACKAGE_DIR = paths.PACKAGE_DIR
PACKAGED_LIB = paths.PACKAGED_LIB_DIR / "libkpool.so"
# The preload library (allocator/preload/): malloc for any program, built by `make preload`.
PRELOAD_NAME = "libkpool-preload.so"
PACKAGED_PRELOAD = paths.PACKAGED_LIB_DIR / PRELOAD_NAME
# A sanitizer or fuzz build brings a malloc of its own: the preload exists in these two.
PRELOAD_VARIANTS = ("release", "debug")
# What `kpool run` execs the program with under GNU time (allocator/preload/kpool-exec.c): env(1)'s
# part, static, so that the program's rusage peak is its own (harness/run.py).
EXEC_NAME = "kpool-exec"
PACKAGED_EXEC = paths.PACKAGED_LIB_DIR / EXEC_NAME


def variant_path(variant: str, plant: int = 0) -> Path:
    """Where `make VARIANT=variant [PLANT=n]` puts the library (it may not exist yet)."""
    return paths.build_dir(variant, plant) / "libkpool.so"


# A planted bug's lines in the allocator sources: "#if KP_PLANT == 8 /* planted 8: ... */" and
# "if (KP_PLANT != 3) /* planted 3: ... */".
_PLANT_MARK = re.compile(rb"KP_PLANT\s*[=!]=\s*(\d+)")


def plants() -> set[int]:
    """The planted bugs the allocator sources hold."""
    found: set[int] = set()
    for f in paths.allocator_sources().rglob("*.[ch]"):
        found.update(int(n) for n in _PLANT_MARK.findall(f.read_bytes()))
    return found


def check_plant(plant: int) -> None:
    """UsageError unless plant is 0 (none) or a planted bug of the sources: any other number builds an
    allocator with no bug planted, and a fuzz run of it proves nothing."""
    if plant == 0:
        return
    known = sorted(plants())
    if plant not in known:
        have = ", ".join(map(str, known)) or "none"
        raise UsageError(f"--plant {plant}: the allocator sources plant no bug {plant} (they plant {have})")


CLANG_HINT = "install it with scripts/setup.sh (or the Debian package clang)"


def clang_missing() -> bool:
    """No clang on PATH: the fuzz and coverage variants (so every fuzz target) cannot be built."""
    return shutil.which("clang") is None


def make_command(variant: str, *targets: str, plant: int = 0) -> list[str]:
    """`make` for one variant's targets, from the allocator sources into the variant's build folder.

    Checks what the variant needs (make, a C compiler, clang for the coverage-instrumented variants)
    and raises BuildError naming the Debian package that brings what is missing."""
    if variant not in VARIANTS:
        raise BuildError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    sources = paths.allocator_sources()
    paths.usable_build_root()
    if shutil.which("make") is None:
        raise BuildError("make not found; install the Debian package build-essential")
    cmd = ["make", "-C", str(sources), f"VARIANT={variant}", f"PLANT={plant}"]
    cmd.append(f"BUILD={paths.build_dir(variant, plant)}")
    if variant in NEEDS_CLANG:
        if clang_missing():
            raise BuildError(f"the {variant} variant needs clang; {CLANG_HINT}")
        cmd.append("CC=clang")
    elif shutil.which(os.environ.get("CC", "cc")) is None:
        raise BuildError("no C compiler (cc); install the Debian package build-essential")
    return [*cmd, *targets]


def packaged_library() -> Path:
    """The release library: the installed copy, else the source tree's release build.

    In a source checkout both exist (an editable install copies the build into harness/_lib/); then
    the newer one wins, so that `make -C allocator` after the install is not shadowed by a stale copy.
    """
    found = [p for p in (PACKAGED_LIB, variant_path("release")) if p.is_file()]
    if found:
        return max(found, key=lambda p: p.stat().st_mtime)  # max() keeps the first on a tie
    if paths.checkout() is not None:
        # A checkout nothing was built in yet (a fresh clone run with `python3 -m harness.cli`): every
        # command needs the release library, if only to check a workload's pool settings.
        return build("release")
    raise BuildError(
        f"libkpool.so not found (looked for {PACKAGED_LIB}); run `pip install -e .` or `kpool build`"
    )


def build(variant: str = "release", plant: int = 0) -> Path:
    """Build one variant with make and return the path of its libkpool.so.

    plant > 0 builds with the planted bug KP_PLANT=plant (the fuzzers' quality tests), in a build
    directory of its own.
    """
    check_plant(plant)
    cmd = make_command(variant, "lib", plant=plant)
    output.progress(f"building libkpool ({variant}{f', planted bug {plant}' if plant else ''})")
    run_make(cmd)
    return variant_path(variant, plant)


@contextlib.contextmanager
def _make_lock() -> Iterator[None]:
    """One make at a time in this machine's build folder: two kpool commands started together (two
    `kpool fuzz` on a fresh install) both ran make on the same variant, and one loaded the library while
    the other was still writing it ("invalid ELF header"). A build folder that cannot hold the lock file
    is left to make, which says what is wrong with it."""
    handle: IO[str] | None = None
    with contextlib.suppress(OSError):
        root = paths.build_root()
        root.mkdir(parents=True, exist_ok=True)
        handle = (root / ".kpool-make.lock").open("a")
    if handle is None:
        yield
        return
    with handle:  # the lock goes with the descriptor
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            output.progress("waiting for another kpool's build to end")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def run_make(cmd: list[str]) -> None:
    """Run a make command (one at a time on this machine: _make_lock); a failure is a BuildError carrying
    the last lines of its output."""
    with _make_lock():
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", check=False)
    output.detail(proc.stdout)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
        raise BuildError(f"`{' '.join(cmd)}` failed (exit {proc.returncode})", tail)


@functools.cache
def exec_helper() -> Path | None:
    """kpool-exec (allocator/preload/kpool-exec.c), built with `make exec` in a checkout (once a process:
    a no-op when it is up to date), shipped by a wheel; None where it cannot be built (no static C
    library: kpool run then execs with env(1) and samples the program's own peak). One this user cannot
    execute (a package copied without its modes: GNU time said "cannot run ...: Permission denied", exit
    126, and the program never ran) is as none."""
    if paths.checkout() is None:
        return PACKAGED_EXEC if _executable(PACKAGED_EXEC) else None
    try:
        run_make(make_command("release", "exec"))
    except (BuildError, UsageError, OSError):
        return None
    built = paths.build_dir("release") / EXEC_NAME
    return built if _executable(built) else None


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def preload_library(variant: str = "release") -> Path:
    """libkpool-preload.so of a variant (release or debug), for LD_PRELOAD.

    In a source checkout it is (re)built with `make preload` (a no-op when it is up to date), so a
    change to allocator/ is never shadowed by an old copy. An installed wheel uses the release copy it
    ships (harness/_lib/), and builds a debug one into its cache folder. BuildError when the variant
    has no preload library or the build fails."""
    if variant not in PRELOAD_VARIANTS:
        raise BuildError(
            f"the preload library is built in the {' or '.join(PRELOAD_VARIANTS)} variant, not {variant!r}"
            " (a sanitizer variant brings a malloc of its own)"
        )
    if paths.checkout() is None and variant == "release" and PACKAGED_PRELOAD.is_file():
        return PACKAGED_PRELOAD
    built = paths.build_dir(variant) / PRELOAD_NAME
    cmd = make_command(variant, "preload")
    if not built.is_file():
        output.progress(f"building {PRELOAD_NAME} ({variant})")
    run_make(cmd)
    return built
