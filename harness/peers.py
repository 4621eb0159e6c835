"""The allocators kpool is measured against, and where their libraries are.

A peer is the process's malloc with a Debian library loaded by LD_PRELOAD; kpool itself is driven
through its own API, and, as "kpool-preload", through malloc with its preload library
(libkpool-preload.so, harness.build.preload_library), on the same path as the peers. Shared by
`kpool bench`, `kpool stress --allocator` and `kpool run --allocator`.

Issue 14's targets are against the best of glibc, jemalloc, mimalloc and tcmalloc (TARGETS). Scudo, a
hardened allocator like kpool (LLVM's standalone Scudo, shipped in clang's resource directory, not in
the Debian library directories), is measured beside them and never counted as the best peer.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import output

LIB_DIRS = (Path("/usr/lib/x86_64-linux-gnu"), Path("/lib/x86_64-linux-gnu"), Path("/usr/lib"), Path("/lib"))
# Debian installs clang's compiler-rt files under /usr/lib/llvm-<major>/lib/clang/<version>/.
LLVM_ROOTS = "/usr/lib/llvm-*/lib/clang/*"


@dataclass(frozen=True)
class Allocator:
    name: str
    alloc: str  # kpbench --alloc
    soname: str = ""  # preloaded library, "" for none
    package: str = ""  # the Debian package that ships it
    clang_rt: bool = False  # the library is a compiler-rt runtime, in clang's resource directory lib/linux/
    target: bool = False  # one of issue 14's peers: "the best peer" is the best of these
    conf: str = ""  # kpbench --conf: kpool in a configuration of its own (`kpool bench`'s checks-off row)


ALLOCATORS = (
    Allocator("kpool", "kpool"),
    Allocator("kpool-preload", "malloc", "libkpool-preload.so"),  # kpool's own: built, not installed
    Allocator("glibc", "malloc", target=True),
    Allocator("jemalloc", "malloc", "libjemalloc.so.2", "libjemalloc2", target=True),
    Allocator("mimalloc", "malloc", "libmimalloc.so.2", "libmimalloc2.0", target=True),
    Allocator("tcmalloc", "malloc", "libtcmalloc_minimal.so.4", "libtcmalloc-minimal4", target=True),
    # the hardened peer, with its defaults (no SCUDO_OPTIONS)
    Allocator(
        "scudo", "malloc", "libclang_rt.scudo_standalone-x86_64.so", "libclang-rt-14-dev", clang_rt=True
    ),
)


NAMES = tuple(a.name for a in ALLOCATORS)
TARGETS = tuple(a.name for a in ALLOCATORS if a.target)


def by_name(name: str) -> Allocator:
    """The allocator called name; KeyError names the choices."""
    for alloc in ALLOCATORS:
        if alloc.name == name:
            return alloc
    raise KeyError(f"unknown allocator {name!r}; choose one of {', '.join(NAMES)}")


def clang_resource_file(relative: str) -> Path | None:
    """A file of clang's resource directory (where clang looks for it), else any LLVM's on the machine.
    Also `kpool doctor`'s lookup of the sanitizer headers."""
    clang = shutil.which("clang")
    if clang:
        proc = subprocess.run(
            [clang, "-print-resource-dir"], capture_output=True, text=True, errors="replace", check=False
        )
        candidate = Path(proc.stdout.strip(), relative)
        if proc.returncode == 0 and proc.stdout.strip():
            return candidate if candidate.is_file() else None
    return next(iter(sorted(Path("/").glob(f"{LLVM_ROOTS.lstrip('/')}/{relative}"))), None)


def find_library(soname: str) -> Path | None:
    """The path of a shared library: the linker cache first, then the usual Debian directories; a
    compiler-rt runtime (Scudo) in clang's resource directory.

    kpool's own preload library is built (or found in the package) instead: None when it cannot be."""
    if any(a.clang_rt and a.soname == soname for a in ALLOCATORS):
        return clang_resource_file(f"lib/linux/{soname}")
    if soname == "libkpool-preload.so":
        from harness import build
        from harness.errors import BuildError

        try:
            return build.preload_library()
        except BuildError as exc:
            output.warn(f"the kpool preload library is not available: {exc}")
            return None
    ldconfig = shutil.which("ldconfig") or ("/sbin/ldconfig" if Path("/sbin/ldconfig").exists() else None)
    if ldconfig:
        proc = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, errors="replace", check=False)
        for line in proc.stdout.splitlines():
            name, _, path = line.strip().partition(" => ")
            if name.split(" ", 1)[0] == soname and "x86-64" in name and Path(path).is_file():
                return Path(path)
    return next((d / soname for d in LIB_DIRS if (d / soname).is_file()), None)


def preload_path(name: str) -> Path | None:
    """The library LD_PRELOAD loads to run on allocator name (None for glibc); KpoolError naming the
    package when it is missing. Shared by `kpool run` and the stress runner."""
    from harness.errors import KpoolError

    alloc = by_name(name)
    if not alloc.soname:
        return None
    path = find_library(alloc.soname)
    if path is None:
        raise KpoolError(
            f"{name}: {alloc.soname} not found; install it with `apt-get install {alloc.package}`"
        )
    return path


def available_allocators(wanted: Sequence[str]) -> tuple[list[Allocator], dict[str, str]]:
    """The allocators to run and the library each preloads; a missing peer is skipped with a message."""
    chosen: list[Allocator] = []
    preload: dict[str, str] = {}
    for alloc in ALLOCATORS:
        if alloc.name not in wanted:
            continue
        if alloc.soname:
            path = find_library(alloc.soname)
            if path is None:
                output.warn(
                    f"{alloc.name} skipped: {alloc.soname} not found; "
                    f"install it with `apt-get install {alloc.package}`"
                )
                continue
            preload[alloc.name] = str(path)
        chosen.append(alloc)
    return chosen, preload
