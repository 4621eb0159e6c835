"""What every native fuzz target does: load the fuzz build of libkpool, hand each input to one C entry
point (kpfuzz.h) in one ctypes call, and let atheris (libFuzzer) drive it.

The library is $KPOOL_LIB, else the fuzz variant of the source tree (built if missing). A target
started without the sanitizer runtime preloaded re-executes itself with it, so the scripts can be run
by hand as well as by `kpool fuzz` (libFuzzer's -fork, -merge and -minimize_crash re-run them too).
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable
from pathlib import Path

from harness import build
from harness.fuzz import env as fuzz_env


def library() -> Path:
    """The fuzz library: $KPOOL_LIB, else the fuzz variant (built when absent)."""
    given = os.environ.get("KPOOL_LIB")
    if given:
        return Path(given)
    path = build.variant_path("fuzz")
    return path if path.is_file() else build.build("fuzz")


def entry_point(name: str, path: Path) -> Callable[[bytes], None]:
    """The C entry point `name` of the library at path, as a function of one input."""
    lib = ctypes.CDLL(str(path))
    fn = getattr(lib, name)
    fn.argtypes = (ctypes.c_char_p, ctypes.c_size_t)
    fn.restype = ctypes.c_int

    def one_input(data: bytes) -> None:
        fn(data, len(data))

    return one_input


def native_main(entry: str) -> None:
    """Fuzz the C entry point `entry` with libFuzzer's command line in sys.argv."""
    path = library()
    if not fuzz_env.preloaded(os.environ):
        env = fuzz_env.target_env(path)
        script = str(Path(sys.argv[0]).resolve())
        os.execve(sys.executable, [sys.executable, script, *sys.argv[1:]], env)
    import atheris

    atheris.Setup(sys.argv, entry_point(entry, path))
    atheris.Fuzz()
