"""The process environment of a fuzz target: the sanitizer runtime preloaded, and its options.

A library built with -fsanitize=fuzzer-no-link,address cannot be loaded into a plain Python: its
coverage hooks (__sancov_lowest_stack, ...) live in libFuzzer, which atheris ships linked into an ASan
runtime, asan_with_fuzzer.so. That runtime must be in the process from the start, so it goes in
LD_PRELOAD; a target started without it re-executes itself with it (see target.py).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from harness.errors import KpoolError

RUNTIME = "asan_with_fuzzer.so"
# detect_leaks=0: a fuzz pool lives for the whole process on purpose, and LeakSanitizer's exit scan
# costs seconds. allocator_may_return_null=1: an impossible malloc is an answer, not a crash.
# handle_abort=1: abort() (a violation of the shadow model) gets a stack trace like any ASan report.
ASAN_OPTIONS = "detect_leaks=0:allocator_may_return_null=1:handle_abort=1:symbolize=1"
# UBSan reports and carries on unless told to halt; the fuzz build is -fno-sanitize-recover anyway.
UBSAN_OPTIONS = "halt_on_error=1:print_stacktrace=1"
# libFuzzer's own -detect_leaks (1 by default) runs an input a second time, in the same process and on the
# same pools, when its malloc hooks count more mallocs than frees during it: Python's own allocations made
# that happen at random, so a replay of one input ran it once or twice (planted 8's outline finding
# reproduced "1 of 2", session 24's CI). LeakSanitizer is off anyway (ASAN_OPTIONS above).
LIBFUZZER_FLAGS = ("-detect_leaks=0",)
# Variables that would change what a fuzz pool is (kp_create reads them).
CLEARED = ("KPOOL_CONF", "KPOOL_LOG")
REPO_ROOT = Path(__file__).resolve().parents[2]


def runtime_path() -> Path:
    """atheris's ASan runtime with libFuzzer linked in."""
    try:
        import atheris
    except ImportError as exc:
        raise KpoolError("atheris is not installed (pip install atheris)") from exc
    path = Path(atheris.path()) / RUNTIME
    if not path.is_file():
        raise KpoolError(f"atheris ships no {RUNTIME} at {path}; reinstall atheris from its wheel")
    return path


def preloaded(env: Mapping[str, str]) -> bool:
    return RUNTIME in env.get("LD_PRELOAD", "")


def target_env(library: Path | None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment to run a target in: library is the fuzz build (None for pure-Python targets)."""
    env = dict(os.environ if base is None else base)
    for name in CLEARED:
        env.pop(name, None)
    if library is not None:
        env["KPOOL_LIB"] = str(library)
        if not preloaded(env):
            env["LD_PRELOAD"] = " ".join(filter(None, (str(runtime_path()), env.get("LD_PRELOAD", ""))))
    env["ASAN_OPTIONS"] = ":".join(filter(None, (ASAN_OPTIONS, env.get("ASAN_OPTIONS", ""))))
    env["UBSAN_OPTIONS"] = ":".join(filter(None, (UBSAN_OPTIONS, env.get("UBSAN_OPTIONS", ""))))
    paths = env.get("PYTHONPATH", "").split(os.pathsep)
    if str(REPO_ROOT) not in paths:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(REPO_ROOT), *paths)))
    return env


def refuse_seed_output(argv: list[str]) -> None:
    """Exit 2 with one line when the first corpus folder of a libFuzzer command line (argv, the program
    first) is inside the committed seed corpora: libFuzzer writes every new input into that folder (with
    -merge=1 it is the merge's output), and the seeds, corpora/<target>/seeds/, are only ever read. A
    target run by hand as `api_sequence.py corpora/api_sequence` filled the seed corpus with hundreds of
    top-level inputs per run (session 33). Seeds named after a folder of the user's own are read as usual."""
    from harness import paths

    seeds = paths.corpora().resolve()
    first = next((a for a in argv[1:] if not a.startswith("-") and Path(a).is_dir()), None)
    if first is None:
        return
    where = Path(first).resolve()
    if where == seeds or seeds in where.parents:
        sys.stderr.write(
            f"kpool: error: {first}: is the committed seed corpus ({seeds}), which is only read; libFuzzer "
            "writes new inputs into its first corpus folder: give a folder of your own first and the seeds "
            f"after it (e.g. `{Path(argv[0]).name} my-corpus {seeds / 'TARGET' / 'seeds'}`)\n"
        )
        sys.exit(2)


def libfuzzer_argv(argv: list[str]) -> list[str]:
    """argv (libFuzzer's command line, the program first) with LIBFUZZER_FLAGS that it does not set."""
    given = {a.split("=", 1)[0] for a in argv[1:] if a.startswith("-")}
    extra = [f for f in LIBFUZZER_FLAGS if f.split("=", 1)[0] not in given]
    return [*argv[:1], *extra, *argv[1:]]
