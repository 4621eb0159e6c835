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
import traceback
from collections.abc import Callable
from pathlib import Path

from harness import atomic, build
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
    atomic.write_bytes(path, HISTORY_MAGIC + records + bytes(4))  # a reproducer: whole or not there


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


REPLAY_EACH_FLAG = "--kpool-replay-each"
# What replay_each prints on its standard output when an input's replay has ended: "<index> <exit code>".
REPLAYED = "kpool-replayed"
_PR_SET_PDEATHSIG = 1  # prctl(2)


def _run_alone(entry: Callable[[bytes], None], argv: list[str], out: Path) -> None:
    """In a child of replay_each: libFuzzer's replay of one input (its crash handlers, its -timeout, its
    exit code), its output into out. Never returns."""
    code = 1
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, 9)  # SIGKILL: the batch (or kpool) gone, nothing waits
        import atheris  # imported by replay_each already: a name lookup here

        atheris.Setup(fuzz_env.libfuzzer_argv(argv), entry)
        atheris.Fuzz()  # runs the input and exits with libFuzzer's code
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


def _wait(pid: int, timeout_s: float) -> int:
    """The exit code of child pid as subprocess gives it (-N: killed by signal N); -1 when it ran past
    timeout_s and was killed."""
    import select

    fd = os.pidfd_open(pid)
    try:
        if not select.select([fd], [], [], timeout_s)[0]:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return -1
    finally:
        os.close(fd)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def replay_each(entry: Callable[[bytes], None], out_dir: Path, inputs: list[str], timeout_s: float) -> int:
    """Replay each input alone, as `<target>.py -timeout=T INPUT` does, without starting Python and the
    sanitizer runtime again for each: this process loads the library and atheris once, and forks a child
    per input that runs libFuzzer on that input only. The child starts from pools no input has touched
    (they live across inputs in one process: a plain `<target>.py A B` runs B on what A left, and ends at
    the first crash). Input i's output goes to <out_dir>/<i>.out; its exit code (-1: it ran past
    timeout_s) is printed on standard output as "kpool-replayed <i> <code>" when it has ended."""
    import atheris  # noqa: F401 (once, here: each child has it without importing it again)

    timeout_arg = next((a for a in sys.argv if a.startswith("-timeout=")), "-timeout=10")
    for i, data in enumerate(inputs):
        sys.stdout.flush()
        sys.stderr.flush()
        out = out_dir / f"{i}.out"
        pid = os.fork()
        if pid == 0:
            _run_alone(entry, [sys.argv[0], timeout_arg, data], out)
        code = _wait(pid, timeout_s)
        if code == -1:
            with out.open("a") as f:
                f.write(f"\nkpool: replay timed out after {timeout_s}s\n")
        print(f"{REPLAYED} {i} {code}", flush=True)
    return 0


def native_main(entry: str) -> None:
    """Fuzz the C entry point `entry` with libFuzzer's command line in sys.argv; with
    `--kpool-history FILE`, replay the inputs of a history file instead; with
    `--kpool-replay-each OUT_DIR TIMEOUT_S [-timeout=T] INPUT...`, replay each input alone (replay_each)."""
    fuzz_env.refuse_seed_output(sys.argv)
    path = library()
    if not fuzz_env.preloaded(os.environ):
        env = fuzz_env.target_env(path)
        script = str(Path(sys.argv[0]).resolve())
        os.execve(sys.executable, [sys.executable, script, *sys.argv[1:]], env)
    if len(sys.argv) == 3 and sys.argv[1] == HISTORY_FLAG:
        os.environ.pop(HISTORY_ENV, None)  # a replay keeps no history of its own
        sys.exit(replay_history(entry, Path(sys.argv[2])))
    if len(sys.argv) >= 4 and sys.argv[1] == REPLAY_EACH_FLAG:
        os.environ.pop(HISTORY_ENV, None)
        out_dir, timeout_s = Path(sys.argv[2]), float(sys.argv[3])
        inputs = [a for a in sys.argv[4:] if not a.startswith("-")]
        sys.exit(replay_each(entry_point(entry, path), out_dir, inputs, timeout_s))
    import atheris

    atheris.Setup(fuzz_env.libfuzzer_argv(sys.argv), entry_point(entry, path))
    atheris.Fuzz()
