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


HISTORY_FLAG = "--kpool-history"
HISTORY_ENV = "KPOOL_FUZZ_HISTORY"  # the folder the C side writes history-<pid> into on a crash
HISTORY_MAGIC = b"kpfuzz-history 1\n"


def read_history(path: Path) -> list[bytes]:
    """The inputs of a history file (allocator/driver/fuzz_history.c), oldest first; the last one crashed."""
    data = path.read_bytes()
    if not data.startswith(HISTORY_MAGIC):
        raise ValueError(f"{path} is not a kpfuzz input history")
    out, at = [], len(HISTORY_MAGIC)
    while at + 4 <= len(data):
        n = int.from_bytes(data[at : at + 4], "little")
        if n == 0:  # the end (the file is longer: a sparse mapping of a fixed size)
            break
        out.append(data[at + 4 : at + 4 + n])
        at += 4 + n
    return out


def write_history(path: Path, inputs: list[bytes]) -> None:
    records = b"".join(len(i).to_bytes(4, "little") + i for i in inputs)
    path.write_bytes(HISTORY_MAGIC + records + bytes(4))


def replay_history(entry: str, path: Path) -> int:
    """Run every input of a history through `entry` in this one process, as the fuzzing process did:
    the pools the crash needed are in the state the earlier inputs left. Returns 0 when nothing crashed
    (a crash ends the process with the sanitizer's or the oracle's report)."""
    inputs = read_history(path)
    one_input = entry_point(entry, library())
    for data in inputs:
        one_input(data)
    sys.stderr.write(f"kpool: {len(inputs)} inputs of {path} replayed without a crash\n")
    return 0


def native_main(entry: str) -> None:
    """Fuzz the C entry point `entry` with libFuzzer's command line in sys.argv; with
    `--kpool-history FILE`, replay the inputs of a history file instead."""
    path = library()
    if not fuzz_env.preloaded(os.environ):
        env = fuzz_env.target_env(path)
        script = str(Path(sys.argv[0]).resolve())
        os.execve(sys.executable, [sys.executable, script, *sys.argv[1:]], env)
    if len(sys.argv) == 3 and sys.argv[1] == HISTORY_FLAG:
        os.environ.pop(HISTORY_ENV, None)  # a replay keeps no history of its own
        sys.exit(replay_history(entry, Path(sys.argv[2])))
    import atheris

    atheris.Setup(sys.argv, entry_point(entry, path))
    atheris.Fuzz()
