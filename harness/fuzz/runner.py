"""Run the fuzz targets with libFuzzer's own modes: plain, fork (--jobs), merge.

For each target: build the fuzz variant (once), start the target script with the sanitizer runtime
preloaded, stream libFuzzer's output into reports/<run>/logs/<target>.log while its progress lines
(executions per second, coverage, corpus size) are shown, and afterwards keep every crash input under
reports/<run>/crashes/ with its sanitizer report beside it (<input>.txt, from a replay of the input
alone: a native target's inputs by one process that forks a child per input, replay_alone).

Corpora: the seeds in corpora/<target>/seeds/ are read, never written; what a run discovers goes to a
working corpus, reports/corpus/<target>/, that persists between runs (a nightly campaign builds on
the last one). `merge` shrinks the working corpus with -merge=1.

A run holds its folder's lock (harness/runlock.py) from start to end, and before it fuzzes records the
crash inputs that runs killed before recording them left under the reports folder (orphans.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from harness import atomic, build, output, paths, runlock
from harness.errors import KpoolError, UsageError
from harness.fuzz import NATIVE, TARGETS, orphans
from harness.fuzz import env as fuzz_env
from harness.fuzz.target import (
    HISTORY_ENV,
    HISTORY_FLAG,
    REPLAY_EACH_FLAG,
    REPLAYED,
    read_history,
    write_history,
)
from harness.triage import record

FUZZ_DIR = Path(__file__).resolve().parent
CORPORA = paths.corpora()
REPORTS = paths.reports()

# One input runs in well under a millisecond: one that takes 10 s is a hang (a lock never released,
# a loop that never ends) and is kept as a timeout crash.
INPUT_TIMEOUT_S = 10
# Inputs of the native targets: 64 bytes are 10-20 operations, enough to reach every path of the
# allocator; longer inputs mostly cost time (exec/s falls as they grow).
DEFAULT_MAX_LEN = {"api_sequence": 64, "faults": 96, "concurrent": 128, "conf": 256, "workload_yaml": 1024}
# Progress is shown at most this often; libFuzzer prints a line at every new feature.
PROGRESS_EVERY_S = 5.0
_PR_SET_PDEATHSIG = 1  # prctl(2)
# An interrupted libFuzzer gets this long to end after SIGINT (it writes nothing more) before SIGKILL.
STOP_WAIT_S = 5.0
# Sanitizer reports are kept for this many crash inputs per target (a crashing replay costs about a
# second, mostly the sanitizer symbolizing its stack, even with the inputs of a target replayed by one
# process: replay_alone); the rest keep the input only.
MAX_REPLAYS = 10
# A crash input that does not crash alone is replayed with the inputs before it this many times at most
# (each replay restarts Python with the sanitizer runtime, a second or two).
HISTORY_REPLAYS = 2
# Beyond the fuzzing time: building, start-up, and the final pass over the corpus.
GRACE_S = 120
ARTIFACT_KINDS = ("crash", "timeout", "oom", "leak", "slow-unit")

# "#1234	NEW    cov: 56 ft: 78 corp: 9/100b lim: 4 exec/s: 123 rss: 45Mb"   (plain)
# "#1234: cov: 56 ft: 78 corp: 9 exec/s 123 oom/timeout/crash: 0/0/1 time: 5s job: 3"   (fork)
PROGRESS_RE = re.compile(
    r"^#(?P<execs>\d+):?\s+\w*\s*cov: (?P<cov>\d+) ft: \d+ corp: (?P<corp>\d+)"
    r".*?exec/s:? (?P<eps>\d+)(?:.*?oom/timeout/crash: (?P<oom>\d+)/(?P<to>\d+)/(?P<crash>\d+))?"
)
# "INFO: Loaded 1 modules   (2716 inline 8-bit counters): ..."
COUNTERS_RE = re.compile(r"Loaded \d+ modules\s+\((?P<n>\d+) inline 8-bit counters\)")
# "stat::average_exec_per_sec:     5849"
STAT_RE = re.compile(r"^stat::(?P<key>\w+):\s+(?P<value>\d+)")
# libFuzzer's last words when it ends as planned: "stat::..." (-print_final_stats=1), "Done 1234 runs
# in 3 second(s)" (plain), "INFO: exiting: 0 time: 3s" (fork). None of them: it never got to fuzz.
FINAL_RE = re.compile(r"^(?:stat::\w+:|Done \d+ runs in |INFO: exiting: )")
# Lines of a failed libFuzzer's log shown with its error.
ERROR_TAIL_LINES = 10


# The pool layouts a native target's first input byte may be narrowed to (fuzz_targets.c, pick_pool):
# $KPOOL_FUZZ_LAYOUT in the target's environment; "" picks among every pool of the target.
LAYOUT_ENV = "KPOOL_FUZZ_LAYOUT"
LAYOUTS = ("inline", "outline")


def resolve_layout(given: str | None, env: dict[str, str] | None = None) -> str:
    """The layout a run narrows its pools to: --layout (given; "any" or "" for none), else
    $KPOOL_FUZZ_LAYOUT, else "" (any). UsageError naming a value that is no layout, before anything is
    built."""
    if given is not None:
        if given in ("any", ""):
            return ""
        if given not in LAYOUTS:
            raise UsageError(f"--layout {given!r}: one of {', '.join(LAYOUTS)} or any")
        return given
    value = (os.environ if env is None else env).get(LAYOUT_ENV, "")
    if value and value not in LAYOUTS:
        raise UsageError(f"${LAYOUT_ENV}={value!r}: one of {', '.join(LAYOUTS)}, or unset for any")
    return value


@dataclass
class TargetResult:
    target: str
    seconds: float = 0.0
    returncode: int = 0
    execs: int = 0
    exec_per_s: int = 0
    cov: int = 0
    counters: int = 0  # the library's edges (inline 8-bit counters), for the share covered
    corpus: int = 0
    crashes: list[str] = field(default_factory=list)
    # per crash input: how it replays (_keep_reports), for the crash database
    replays: dict[str, dict[str, Any]] = field(default_factory=dict)
    first_crash_s: float | None = None  # seconds from the start to the first crash input
    log: str = ""
    error: str = ""  # libFuzzer ended abnormally without a crash input ("" when it ended well)
    interrupted: bool = False  # kpool was interrupted (SIGINT, SIGTERM) and stopped libFuzzer early
    # the pools the first input byte picked among ($KPOOL_FUZZ_LAYOUT): "" all, else inline or outline;
    # the crash database's reproducers run with it (triage/record.py)
    layout: str = ""


@dataclass
class FuzzRun:
    run_dir: Path
    results: list[TargetResult]
    # crash inputs killed runs had left unrecorded, recorded by this one: {"input", "signature", ...}
    recovered: list[dict[str, Any]] = field(default_factory=list)
    # why fuzz.json could not be written (a full disk), "" when it was: the caller says it after the table
    unwritten: str = ""

    @property
    def crashed(self) -> bool:
        """A crash found, or one that no run had recorded until this one."""
        return any(r.crashes for r in self.results) or bool(self.recovered)


def script(target: str) -> Path:
    return FUZZ_DIR / f"{target}.py"


def resolve_targets(name: str) -> list[str]:
    if name == "all":
        return list(TARGETS)
    if name not in TARGETS:
        raise KpoolError(f"unknown fuzz target {name!r}; choose one of {', '.join(TARGETS)} or all")
    return [name]


def new_run_dir(base: Path = REPORTS) -> Path:
    """A new folder base/fuzz-<time>[-<n>], created here: mkdir fails when another run (of this
    second, in another process) made it first, and the next suffix is tried."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        path = base / (f"fuzz-{stamp}" if n == 1 else f"fuzz-{stamp}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            n += 1
            continue
        return path


def seeds_dir(target: str) -> Path:
    return CORPORA / target / "seeds"


def dictionary(target: str) -> Path | None:
    path = CORPORA / target / "dict"
    return path if path.is_file() else None


def _fresh_corpus(run_dir: Path, target: str) -> Path:
    path = run_dir / "corpus" / target
    path.mkdir(parents=True, exist_ok=True)
    return path


def working_corpus(target: str, reports: Path = REPORTS) -> Path:
    path = reports / "corpus" / target
    old = path.with_name(path.name + ".premerge")
    if not path.exists() and old.is_dir():  # a merge stopped between its two renames: the corpus back
        old.rename(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def max_jobs() -> int:
    """The most fork-mode workers a run starts: the CPUs this process may use. A worker is a busy process
    (a fuzzer never waits), so more than that only take turns on the same CPUs, each with its own
    sanitizer shadow memory; libFuzzer's -jobs likewise runs its jobs on at most half the cores unless
    told -workers."""
    return max(1, len(os.sched_getaffinity(0)))


def _libfuzzer_args(
    target: str, seconds: int, jobs: int, crashes: Path, max_len: int | None, keep_going: bool
) -> list[str]:
    args = [
        f"-max_total_time={seconds}",
        f"-timeout={INPUT_TIMEOUT_S}",
        f"-artifact_prefix={crashes}/{target}-",
        f"-max_len={max_len or DEFAULT_MAX_LEN[target]}",
        "-print_final_stats=1",
    ]
    d = dictionary(target)
    if d:
        args.append(f"-dict={d}")
    if jobs > 1:  # fork mode, also when the CPUs cap the workers at one: --keep-going needs it
        args.append(f"-fork={min(jobs, max_jobs())}")
        if keep_going:
            args += ["-ignore_crashes=1", "-ignore_timeouts=1", "-ignore_ooms=1"]
    return args


class _Log:
    """libFuzzer's output copied to a file, as long as the file takes it: a log that cannot be written (the
    disk full) is said once, and libFuzzer goes on, its crash inputs kept and recorded; stopping kpool there
    would leave them unrecorded."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._out: IO[str] | None = None
        try:
            self._out = path.open("w")
        except OSError as exc:
            self._lost(exc)

    def _lost(self, exc: OSError) -> None:
        output.warn(
            f"cannot write the log {self.path}: {exc.strerror or exc}; libFuzzer goes on, its output from "
            "here not kept"
        )

    def write(self, line: str) -> None:
        if self._out is None:
            return
        try:
            self._out.write(line)
        except OSError as exc:
            self.close(exc)

    def close(self, exc: OSError | None = None) -> None:
        out, self._out = self._out, None
        if out is None:
            return
        try:
            out.close()  # flushes: a full disk may say so only here
        except OSError as late:
            exc = exc or late
        if exc is not None:
            self._lost(exc)

    def __enter__(self) -> _Log:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _stream(proc: subprocess.Popen[str], log: Path, result: TargetResult, shown: list[str]) -> bool:
    """Copy the target's output to the log, keeping the newest progress figures (the progress lines said
    appended to shown); True when libFuzzer printed its final lines (it ended as planned, not in its
    start-up)."""
    pace = output.Pace(PROGRESS_EVERY_S, time.monotonic())
    finished = False
    assert proc.stdout is not None
    with _Log(log) as out:
        for line in proc.stdout:
            out.write(line)
            m = PROGRESS_RE.match(line)
            if m:
                result.execs = int(m["execs"])
                result.cov = int(m["cov"])
                result.corpus = int(m["corp"])
                result.exec_per_s = int(m["eps"])
            elif (c := COUNTERS_RE.search(line)) is not None:
                result.counters = max(result.counters, int(c["n"]))
            elif (s := STAT_RE.match(line)) is not None and s["key"] == "average_exec_per_sec":
                result.exec_per_s = int(s["value"])
            finished = finished or FINAL_RE.match(line) is not None
            if m and pace.due(time.monotonic()):
                shown.append(_progress_line(result))
                output.progress(shown[-1])
    return finished


def _stop_with_kpool() -> None:
    """In libFuzzer's process: SIGINT (its own clean stop) when kpool dies, by kill -9 too; it would run
    on, orphaned, to its --time's end. kpool starts it from its main thread."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGINT)


def _stop(proc: subprocess.Popen[str]) -> None:
    """End libFuzzer as Ctrl-C would (it prints its final figures); kill it if it does not end soon."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=STOP_WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _failure(returncode: int, finished: bool) -> str:
    """Why a libFuzzer run that left no crash input did not end well; "" when it did."""
    if returncode != 0:
        return f"libFuzzer ended with {_how_it_ended(returncode)} and left no crash input"
    if not finished:
        return "libFuzzer exited 0 but printed no final statistics (it never fuzzed)"
    return ""


def _log_tail(log: Path, lines: int = ERROR_TAIL_LINES) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _progress_line(r: TargetResult) -> str:
    # libFuzzer's cov counts every counter of the fuzz build: the fuzz driver's, and the sanitizers'
    # report blocks, which no clean run reaches (a share of them would mislead). `kpool fuzz
    # --coverage` counts libkpool's own edges.
    return (
        f"{r.target}: {r.execs} runs, {r.exec_per_s} exec/s, cov {r.cov} (libFuzzer's count), "
        f"corpus {r.corpus}"
    )


def _artifacts(crashes: Path, target: str) -> list[Path]:
    """The crash inputs of a target in a crashes folder: libFuzzer names them <target>-<kind>-<sha1>, with
    no dot; what kpool writes beside them has a suffix (.txt, .history, a .tmp on its way). Regular files
    only: a FIFO, a folder or a link to /dev/zero of that name hung the replay of what a killed run left."""
    found = [p for p in crashes.glob(f"{target}-*") if "." not in p.name and p.is_file()]
    return sorted(p for p in found if p.name[len(target) + 1 :].startswith(ARTIFACT_KINDS))


def replay(
    target: str, data: Path, env: dict[str, str], timeout_s: float = 120, history: bool = False
) -> tuple[int, str]:
    """Run one input through a target (or, with history, every input of a history file, in one process);
    its exit code and its output (the sanitizer report)."""
    if history:
        cmd = [sys.executable, str(script(target)), HISTORY_FLAG, str(data)]
    else:
        cmd = [sys.executable, str(script(target)), f"-timeout={INPUT_TIMEOUT_S}", str(data)]
    try:
        proc = subprocess.run(
            cmd, env=env, capture_output=True, text=True, errors="replace", timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as exc:
        text = exc.stderr if isinstance(exc.stderr, str) else ""
        return -1, text + f"\nkpool: replay timed out after {timeout_s}s\n"
    return proc.returncode, proc.stdout + proc.stderr


def _say_replayed(target: str, done: int, total: int, path: Path, code: int) -> None:
    alone = " (does not crash alone)" if code == 0 else ""
    output.progress(f"{target}: replayed {done}/{total} {path.name}: exit {code}{alone}")


def replay_alone(
    target: str, inputs: list[Path], env: dict[str, str], timeout_s: float = 120
) -> Generator[tuple[Path, int, str], None, None]:
    """Replay each input alone, as replay() does, yielding (input, exit code, output) as each ends, with
    progress per input; a native target's inputs in one process that starts Python and the sanitizer
    runtime once (target.py --kpool-replay-each forks a child per input, on fresh pools, with libFuzzer's
    own replay in it). An input the batch gave no verdict for (it died, or is not a native target's) is
    replayed by itself."""
    done: set[Path] = set()
    batch = _replay_batch(target, inputs, env, timeout_s) if target in NATIVE and len(inputs) > 1 else ()
    for path, code, text in batch:
        done.add(path)
        _say_replayed(target, len(done), len(inputs), path, code)
        yield path, code, text
    for path in inputs:
        if path not in done:
            code, text = replay(target, path, env, timeout_s)
            done.add(path)
            _say_replayed(target, len(done), len(inputs), path, code)
            yield path, code, text


def _replay_batch(
    target: str, inputs: list[Path], env: dict[str, str], timeout_s: float
) -> Generator[tuple[Path, int, str], None, None]:
    with tempfile.TemporaryDirectory(prefix="kpool-replay-") as scratch:
        cmd = [
            sys.executable,
            str(script(target)),
            REPLAY_EACH_FLAG,
            scratch,
            str(timeout_s),
            f"-timeout={INPUT_TIMEOUT_S}",
            *map(str, inputs),
        ]
        log = Path(scratch) / "batch.log"
        seen = 0
        with (
            log.open("wb") as err,
            subprocess.Popen(
                cmd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                errors="replace",
                preexec_fn=_stop_with_kpool,
            ) as proc,
        ):
            assert proc.stdout is not None
            try:
                for line in proc.stdout:
                    word, index, code = ([*line.split(), "", "", ""])[:3]
                    if word != REPLAYED or not index.isdigit() or int(index) >= len(inputs):
                        continue
                    text = (Path(scratch) / f"{index}.out").read_text(errors="replace")
                    seen += 1
                    yield inputs[int(index)], int(code), text
            finally:
                proc.kill()  # it has ended (its output closed), or kpool is being stopped
        if seen < len(inputs):
            why = log.read_text(errors="replace")[-2000:]
            output.detail(f"{target}: the batch replay ended early, the rest are replayed one by one: {why}")


def _histories(found: list[Path], folder: Path) -> None:
    """Give each crash input the history that ended with it (<input>.history): the inputs since the pools
    were made, kept by the crashing process (allocator/driver/fuzz_history.c). The processes' own files
    go."""
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("history-*")):
        try:
            inputs = read_history(path)
        except (OSError, ValueError):
            continue
        for crash in found:
            kept = crash.with_name(crash.name + ".history")
            if inputs and not kept.exists() and crash.read_bytes() == inputs[-1]:
                write_history(kept, inputs)  # compact: the process's file is a sparse 64 MiB
                break
    shutil.rmtree(folder, ignore_errors=True)


def _keep_reports(target: str, found: list[Path], env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Replay each crash input for its report (<input>.txt): alone first, and when it does not crash
    alone (it needed the state earlier inputs left in the pools) with its history, up to HISTORY_REPLAYS
    times. Returns per input how it replays: {"reproducer": "input" | "history" | "none", "history":
    path or None, "reproduced": n, "runs": n}."""
    out: dict[str, dict[str, Any]] = {}
    todo = [p for n, p in enumerate(found) if n < MAX_REPLAYS and not p.with_name(p.name + ".txt").exists()]
    # each report written as its replay ends: an interrupted sweep keeps those of the inputs replayed;
    # the replays closed at once when this stops (Ctrl-C), the batch process with them
    with contextlib.closing(replay_alone(target, todo, env)) as replays:
        for path, code, text in replays:
            report = path.with_name(path.name + ".txt")
            history = path.with_name(path.name + ".history")
            how: dict[str, Any] = {"reproducer": "input", "history": None, "reproduced": 1, "runs": 1}
            header = f"# kpool fuzz replay of {path.name}: exit {code}"
            if code == 0:
                how = {"reproducer": "none", "history": None, "reproduced": 0, "runs": 1}
                for _ in range(HISTORY_REPLAYS if history.is_file() else 0):
                    hcode, htext = replay(target, history, env, history=True)
                    how["runs"] += 1
                    if hcode != 0:
                        inputs = len(read_history(history))
                        how = {"reproducer": "history", "history": str(history), "reproduced": 1, "runs": 1}
                        header = (
                            f"# kpool fuzz replay of {path.name}: exit 0 alone; exit {hcode} after the"
                            f" {inputs - 1} inputs before it since the pools were made ({history.name})"
                        )
                        code, text = hcode, htext
                        break
            out[str(path)] = how
            # whole or not at all: a report cut short by a kill would be read as this input's for good
            atomic.write_text(report, f"{header}\n{text}")
    return out


def other_checkout(cwd: Path) -> Path | None:
    """The kpool checkout cwd is in, when it is not the one this kpool builds from (None otherwise)."""
    own = paths.checkout()
    for folder in (cwd, *cwd.parents):
        if (folder / "allocator" / "Makefile").is_file() and (folder / "pyproject.toml").is_file():
            if 'name = "kpool"' not in (folder / "pyproject.toml").read_text(errors="replace"):
                return None
            return None if own is not None and folder.resolve() == own.resolve() else folder
    return None


def target_env(target: str, plant: int = 0) -> dict[str, str]:
    library = build.build("fuzz", plant) if target in NATIVE else None
    return fuzz_env.target_env(library)


def _say_library(env: dict[str, str]) -> None:
    """Name the library a run loads, and warn when the current directory is another checkout's."""
    library = env.get("KPOOL_LIB")
    if library:
        output.progress(f"library: {library} (from {paths.allocator_sources()})")
    other = other_checkout(Path.cwd())
    if other is not None:
        output.warn(
            f"the current directory is in the kpool checkout {other}, but this kpool builds and fuzzes "
            f"{paths.allocator_sources()}: install kpool from {other} (pip install -e {other}) to fuzz it"
        )


def fuzz_target(
    target: str,
    seconds: int,
    jobs: int,
    run_dir: Path,
    *,
    plant: int = 0,
    max_len: int | None = None,
    keep_going: bool = False,
    seeds: bool = True,
    extra: Sequence[str] = (),
    reports: Path = REPORTS,
    layout: str | None = None,
) -> TargetResult:
    env = target_env(target, plant)
    layout = resolve_layout(layout, env)
    if layout:
        env[LAYOUT_ENV] = layout
    else:
        env.pop(LAYOUT_ENV, None)
    _say_library(env)
    crashes = run_dir / "crashes"
    logs = run_dir / "logs"
    crashes.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    # --no-seeds starts from nothing: an empty corpus of this run's own, not the working corpus that
    # earlier runs (which started from the seeds) filled
    corpus_dirs = [working_corpus(target, reports) if seeds else _fresh_corpus(run_dir, target)]
    if seeds and seeds_dir(target).is_dir():
        corpus_dirs.append(seeds_dir(target))
    history = run_dir / "history" / target
    history.mkdir(parents=True, exist_ok=True)
    env = {**env, HISTORY_ENV: str(history)}
    cmd = [
        sys.executable,
        str(script(target)),
        *map(str, corpus_dirs),
        *_libfuzzer_args(target, seconds, jobs, crashes, max_len, keep_going),
        *extra,
    ]
    result = TargetResult(target=target, log=str(logs / f"{target}.log"), layout=layout)
    workers = min(jobs, max_jobs())
    output.progress(f"fuzzing {target} for {seconds}s ({workers} job{'s' if workers > 1 else ''})")
    output.detail(" ".join(cmd))
    start, start_wall = time.monotonic(), time.time()
    finished = False
    shown: list[str] = []
    with subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        cwd=run_dir,
        preexec_fn=_stop_with_kpool,
    ) as proc:
        try:
            finished = _stream(proc, Path(result.log), result, shown)
            proc.wait(timeout=seconds + GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            output.warn(f"{target}: libFuzzer overran its time by {GRACE_S}s and was stopped")
        except KeyboardInterrupt:  # SIGINT or SIGTERM to kpool alone: libFuzzer would run on, orphaned
            _stop(proc)
            result.interrupted = True
    result.seconds = round(time.monotonic() - start, 1)
    result.returncode = proc.returncode
    found = _artifacts(crashes, target)
    _histories(found, history)
    replay_env = {k: v for k, v in env.items() if k != HISTORY_ENV}
    result.replays = _keep_reports(target, found, replay_env)
    result.crashes = [str(p) for p in found]
    if found:
        result.first_crash_s = round(min(p.stat().st_mtime for p in found) - start_wall, 1)
    if found:
        output.warn(f"{target}: {len(found)} crash input(s) kept in {crashes}")
    elif not result.interrupted:
        result.error = _failure(proc.returncode, finished)
    if shown[-1:] != [_progress_line(result)]:  # not again when the last line said has these figures
        output.progress(_progress_line(result))
    return result


def run(
    name: str,
    seconds: int,
    jobs: int = 1,
    *,
    plant: int = 0,
    max_len: int | None = None,
    keep_going: bool = False,
    seeds: bool = True,
    run_dir: Path | None = None,
    reports: Path = REPORTS,
    extra: Sequence[str] = (),
    layout: str | None = None,
) -> FuzzRun:
    """Fuzz one target, or all of them one after the other, each for `seconds`; layout: resolve_layout's
    (None: $KPOOL_FUZZ_LAYOUT)."""
    if seconds <= 0 or jobs <= 0:
        raise KpoolError(f"--time and --jobs must be positive (got {seconds} and {jobs})")
    layout = resolve_layout(layout)
    if jobs > max_jobs():
        output.warn(
            f"--jobs {jobs}: more than the {max_jobs()} CPUs this process may use; running {max_jobs()} "
            f"fuzz worker{'s' if max_jobs() > 1 else ''} (a fuzzing worker is busy all the time: more "
            "only take turns on the same CPUs)"
        )
    targets = resolve_targets(name)
    # absolute: libFuzzer runs in the run folder, where a relative corpus or crash path means nothing
    reports = reports.absolute()
    check_utf8_path(reports, "--reports")
    if run_dir is not None:
        check_utf8_path(run_dir.absolute(), "--run-dir")
        _check_run_dir(run_dir, reports)
    if seeds:  # --no-seeds fuzzes a corpus of the run's own, in its folder
        check_corpora_writable(targets, reports)
    build.check_plant(plant)  # before the run's folder: a usage error leaves nothing behind
    made = run_dir is None
    run_dir = (run_dir or new_run_dir(reports)).absolute()
    try:
        how = (plant, max_len, keep_going, seeds, extra, layout)
        return _run(targets, seconds, jobs, run_dir, reports, *how)
    except KpoolError:
        if made:  # stopped before it fuzzed (a build that failed): no run folder to list without a record
            _remove_if_unused(run_dir)
        raise


def _check_run_dir(run_dir: Path, reports: Path) -> None:
    """UsageError for a --run-dir that is the reports folder, a folder above it, or inside its working
    corpora: the run's crashes/, logs/ and history/ would sit among the runs (listed as runs without a
    record) or among a corpus's inputs."""
    mine, root = run_dir.resolve(), reports.resolve()
    corpora = root / "corpus"
    if mine in (root, corpora) or mine in root.parents or corpora in mine.parents:
        raise UsageError(
            f"--run-dir {run_dir}: the reports folder {reports}, a folder above it or one of its corpora; "
            f"a run's folder goes under it (give a new name, e.g. {reports / 'fuzz-mine'}, or none)"
        )


def _remove_if_unused(run_dir: Path) -> None:
    """Remove a run folder that holds nothing but its lock and empty folders."""
    with contextlib.suppress(OSError):
        if all(p.is_dir() or p.name == runlock.NAME for p in run_dir.rglob("*")):
            shutil.rmtree(run_dir)


def _run(
    targets: list[str],
    seconds: int,
    jobs: int,
    run_dir: Path,
    reports: Path,
    plant: int,
    max_len: int | None,
    keep_going: bool,
    seeds: bool,
    extra: Sequence[str],
    layout: str | None,
) -> FuzzRun:
    # held to the end, by kill -9 too: another run takes the crash inputs of this folder for lost only
    # once this process is gone (fuzz/orphans.py)
    with runlock.hold(run_dir, kind="fuzz", plant=plant, targets=targets, layout=layout):
        _refuse_earlier(run_dir)
        recovered = _recover(reports, run_dir)
        results: list[TargetResult] = []
        for t in targets:
            results.append(
                fuzz_target(
                    t,
                    seconds,
                    jobs,
                    run_dir,
                    plant=plant,
                    max_len=max_len,
                    keep_going=keep_going,
                    seeds=seeds,
                    extra=extra,
                    reports=reports,
                    layout=layout,
                )
            )
            if results[-1].interrupted:
                break  # the targets fuzzed so far, and their crashes, are kept below
        summary: dict[str, Any] = {
            "run_dir": str(run_dir),
            "plant": plant,
            "results": [asdict(r) for r in results],
            "recovered": recovered,
        }
        # every crash in the crash database (its reports folder's, or the campaign's), before fuzz.json
        # says where: `kpool triage list` shows them
        record.record_fuzz(summary, reports, run_dir.name, plant)
        # whole or not at all: an empty one (a full disk, a kill) was read by the campaign as damaged
        unwritten = ""
        try:
            atomic.write_text(run_dir / "fuzz.json", json.dumps(summary, indent=2) + "\n")
        except OSError as exc:  # a full disk: what was found is still printed (and recorded, above)
            unwritten = f"{run_dir / 'fuzz.json'}: {exc.strerror or exc}"
    failed = [r for r in results if r.error]
    if unwritten and (failed or results[-1].interrupted):  # said here: the caller prints no table then
        output.error(f"{unwritten}: the run's report could not be written")
    if results[-1].interrupted:
        output.warn(
            f"interrupted: what was fuzzed is in {run_dir / 'fuzz.json' if not unwritten else run_dir}"
        )
        raise KeyboardInterrupt
    if failed:
        # after fuzz.json is written: the campaign reads the error from it
        first = failed[0]
        more = (
            f" (and {len(failed) - 1} more target(s), see {run_dir / 'fuzz.json'})" if len(failed) > 1 else ""
        )
        raise KpoolError(
            f"{first.target}: {first.error}{more}; its log, {first.log}, ends", _log_tail(Path(first.log))
        )
    return FuzzRun(run_dir, results, recovered, unwritten)


def check_utf8_path(path: Path, option: str) -> None:
    """UsageError when path is not UTF-8 text: atheris.Setup takes its arguments (the corpus and crash
    folders, the inputs a replay runs) as UTF-8 strings and dies on any other byte in them."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(path).decode("ascii", "backslashreplace")
        raise UsageError(
            f"{option} {shown}: the path is not UTF-8 text, and the fuzzer (atheris) takes UTF-8 paths "
            "only; give a folder whose path is"
        ) from None


def check_corpora_writable(targets: Sequence[str], reports: Path) -> None:
    """UsageError when a target's working corpus (or the folder it would be made in) cannot be written in:
    libFuzzer writes each input that adds coverage into the first corpus folder and says nothing when it
    cannot, so a read-only reports/corpus (a bind mount, a CI cache restored read-only) fuzzed for the
    whole run and kept none of what it found (session 22: `new_units_added: 74` in the log, exit 0)."""
    for t in targets:
        folder = reports / "corpus" / t
        probe = next(p for p in (folder, *folder.parents) if p.exists())
        if not probe.is_dir():  # a file or a device where a folder goes: making the folder says so
            return
        if not os.access(probe, os.W_OK | os.X_OK):  # a read-only file system for root too
            raise UsageError(
                f"{folder}: cannot be written in ({probe}: a read-only file system, or no permission): the"
                " inputs the fuzzer adds to the working corpus would be lost; give --reports a folder that"
                " can be (or --no-seeds: a corpus of the run's own, in its folder)"
            )


def _refuse_earlier(run_dir: Path) -> None:
    """A --run-dir that an earlier run ended in (its fuzz.json) or was killed in (its crash inputs) is that
    run's: a second run there would write its fuzz.json over the first's and take the first's crash inputs
    for its own (replayed again, recorded again). Not a campaign's job: `kpool campaign --resume` runs a
    job it stopped again in the same folder, and the new attempt reports what the stopped one found."""
    if os.environ.get(record.RUN_ENV):  # a campaign's job, run again in its folder by --resume: its own
        return
    if (run_dir / "fuzz.json").exists():
        raise UsageError(
            f"--run-dir {run_dir}: {run_dir / 'fuzz.json'} is the report of an earlier run; give another "
            "folder (or none, for a new one)"
        )
    left = [p for t in TARGETS for p in _artifacts(run_dir / "crashes", t)]
    if left:
        raise UsageError(
            f"--run-dir {run_dir}: holds {len(left)} crash input(s) of an earlier run that was killed, such"
            f" as {left[0]}; give another folder (a kpool fuzz over the same reports folder records them)"
        )


def _recover(reports: Path, run_dir: Path) -> list[dict[str, Any]]:
    """Record the crash inputs that runs killed before recording them left under reports (fuzz/orphans.py),
    under this run. Not in a campaign's job: the campaign records what its runs left."""
    if os.environ.get(record.RUN_ENV):
        return []
    try:
        with orphans.left(reports, record.db_path(reports), skip=run_dir) as left:
            return record.record_left(left, reports, run_dir.name)
    except KeyboardInterrupt:  # their replays' reports are kept: the next run records them sooner
        output.warn(
            "interrupted while recovering the crash inputs killed runs left: those not recorded yet, the"
            f" next kpool fuzz or kpool campaign over {reports} replays and records"
        )
        raise


@contextlib.contextmanager
def corpus_lock(work: Path) -> Iterator[None]:
    """One merge into a working corpus at a time (<reports>/corpus/<target>.lock, held while merging):
    `kpool fuzz --merge` and a campaign's merge of what its jobs found share its .merging or .incoming
    folder. Waits for the merge under way to end."""
    with atomic.open_lock(work.with_name(work.name + ".lock")) as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def merge(name: str, reports: Path = REPORTS) -> list[tuple[str, int, int]]:
    """Shrink each target's working corpus with -merge=1: (target, inputs before, inputs after)."""
    check_utf8_path(reports.absolute(), "--reports")
    out = []
    for target in resolve_targets(name):
        work = working_corpus(target, reports.absolute())  # libFuzzer runs beside it, not here
        with corpus_lock(work):
            out.append(_merge(target, work))
    return out


def _merge(target: str, work: Path) -> tuple[str, int, int]:
    """The corpus shrunk where it is, never swapped: a `kpool fuzz` (or a campaign's merge) may be writing
    into it meanwhile, and what it writes after the merge read the corpus is no input of the merge, so it
    must stay. The merged inputs the corpus lacks (seeds, under libFuzzer's names) are moved in first, then
    the inputs the merge left out deleted: stopped anywhere, a whole corpus is left."""
    env = target_env(target)
    before = {p.name for p in work.iterdir() if p.is_file()}
    merged = work.with_name(work.name + ".merging")
    shutil.rmtree(merged, ignore_errors=True)  # a merge killed before this one (the lock is ours)
    merged.mkdir()
    try:
        sources = [work] + ([seeds_dir(target)] if seeds_dir(target).is_dir() else [])
        cmd = [sys.executable, str(script(target)), "-merge=1", str(merged), *map(str, sources)]
        output.progress(f"merging the {target} corpus ({len(before)} inputs)")
        proc = subprocess.run(
            cmd, env=env, capture_output=True, text=True, errors="replace", check=False, cwd=merged.parent
        )
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
            raise KpoolError(f"merging the {target} corpus failed (exit {proc.returncode})", tail)
        kept = {p.name for p in merged.iterdir() if p.is_file()}
        for name in sorted(kept - before):
            (merged / name).replace(work / name)  # one file system: a rename, whole or not at all
        for name in sorted(before - kept):
            (work / name).unlink(missing_ok=True)  # libFuzzer may have replaced it by a smaller one
    finally:
        shutil.rmtree(merged, ignore_errors=True)
    return target, len(before), sum(1 for p in work.iterdir() if p.is_file())


@dataclass
class Coverage:
    target: str
    inputs: int
    covered: int  # libkpool's edges reached by the corpus
    edges: int  # libkpool's edges in all


@dataclass
class FileCoverage:
    # relative to allocator/ (src/primary.c): the innermost of the edge's inlined frames that is one
    # of libkpool's sources (a system header's code inlined into conf.c counts in conf.c)
    file: str
    edges: int
    covered: int  # reached by at least one target's corpus


@dataclass
class CoverageReport:
    targets: list[Coverage]
    union: int  # libkpool's edges reached by at least one target's corpus
    edges: int
    functions: int  # libkpool's functions (edges that open one)
    missed: list[str]  # "name (file:line)" of every function no corpus enters
    files: list[FileCoverage] = field(default_factory=list)  # the union, source file by source file

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def _frames(text: str) -> list[list[tuple[str, str]]] | None:
    """addr2line -a -f -i output: per address, its (function, file:line) frames, innermost first.

    Each address opens with its own "0x..." line (a function name never starts with a digit).
    """
    blocks: list[list[tuple[str, str]]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("0x"):
            blocks.append([])
            i += 1
        elif blocks and i + 1 < len(lines):
            # "src/x.c:12 (discriminator 3)": the line is enough
            blocks[-1].append((lines[i], lines[i + 1].split(" (discriminator")[0]))
            i += 2
        else:
            return None
    return blocks if all(blocks) else None


def _locate(library: Path, offsets: Sequence[int]) -> list[tuple[str, str, str]]:
    """(function, file:line, source file) of each offset in library, by addr2line: the function and
    line of the innermost inlined frame, and the file of the innermost frame that is libkpool's own
    (relative to allocator/), so that a system header's code inlined into libkpool counts where it was
    inlined. ("?", "library+offset", "?") for all of them when addr2line is missing or fails."""
    unknown = [("?", f"{library.name}+{o:#x}", "?") for o in offsets]
    tool = shutil.which("addr2line")
    if not offsets:
        return unknown
    if tool is None:
        output.warn("addr2line is missing (Debian package binutils): no source files or function names")
        return unknown
    proc = subprocess.run(
        [tool, "-a", "-f", "-i", "-e", str(library)],
        input="".join(f"{o:#x}\n" for o in offsets),
        capture_output=True,
        text=True,
        errors="replace",
        check=False,
    )
    blocks = _frames(proc.stdout)
    if proc.returncode != 0 or blocks is None or len(blocks) != len(offsets):
        output.warn(f"addr2line could not read {library} (exit {proc.returncode}): no source files or names")
        return unknown
    root = str(paths.allocator_sources()) + "/"
    out = []
    for frames in blocks:
        where = [(fn, line.replace(root, "")) for fn, line in frames]
        files = [line.rsplit(":", 1)[0] for _, line in where]
        own = [f for f in files if not f.startswith(("/", "?"))]
        out.append((where[0][0], where[0][1], own[0] if own else files[-1]))
    return out


def _how_it_ended(rc: int) -> str:
    """'exit 1', 'killed by SIGABRT', 'killed by signal 40' for a child's return code."""
    if rc >= 0:
        return f"exit {rc}"
    try:
        return f"killed by {signal.Signals(-rc).name}"
    except ValueError:
        return f"killed by signal {-rc}"


def _count_target(
    library: Path,
    target: str,
    corpus_dirs: list[str],
    scratch: Path,
    counted: dict[str, Any],
    timeout_s: float | None = None,
) -> None:
    """Replay one target's corpus in a child process (harness/fuzz/edges.py) and add its counts."""
    job = {
        "library": str(library),
        "targets": {target: corpus_dirs},
        "max_len": DEFAULT_MAX_LEN,
        "timeout_s": INPUT_TIMEOUT_S,
    }
    spec, result = scratch / f"{target}.spec", scratch / f"{target}.json"
    spec.write_text(json.dumps(job))
    cmd = [sys.executable, "-m", "harness.fuzz.edges", str(spec), str(result)]
    try:
        proc = subprocess.run(
            cmd,
            env=fuzz_env.target_env(library),
            capture_output=True,
            text=True,
            errors="replace",
            check=False,
            cwd=scratch,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        raise KpoolError(
            f"replaying the {target} corpus did not finish in the {timeout_s:.0f} s it had"
        ) from None
    if proc.returncode != 0 or not result.is_file():
        # what followed the last input the child named: the sanitizer report or the stacks
        out = (proc.stdout + proc.stderr).splitlines()
        named = [i for i, line in enumerate(out) if line.startswith("input ")]
        tail = "\n".join(out[named[-1] + 1 :][:40] if named else out[-20:])
        what = f"replaying the {target} corpus through the coverage build failed"
        last = [line[6:] for line in proc.stderr.splitlines() if line.startswith("input ")][-1:]
        if "Timeout (" in proc.stderr:
            what += f": an input ran for over {job['timeout_s']} s (a hang)"
        if last:
            what += f"; the input: {last[0]}"
        raise KpoolError(f"{what} ({_how_it_ended(proc.returncode)})", tail)
    one = json.loads(result.read_text())
    counted.update(edges=one["edges"], pcs=one["pcs"], entries=one["entries"])
    counted["targets"].update(one["targets"])


def coverage(
    name: str | Sequence[str], reports: Path = REPORTS, write: bool = True, timeout_s: float | None = None
) -> CoverageReport:
    """The libkpool edges each native target's corpus (working corpus and seeds) reaches, their union
    across the targets, and the functions of libkpool that no corpus enters.

    One child process (harness/fuzz/edges.py, with the sanitizer runtime preloaded) sends every input
    through its target's entry point in the coverage variant (the fuzz build with its entry points not
    instrumented, so that every counter is an edge of libkpool) and reads the counters after each.
    workload_yaml (pure Python) is skipped. The result is also written to reports/coverage.json
    (unless write is False: the campaign writes it into its run). timeout_s bounds the replays.
    """
    targets: dict[str, list[str]] = {}
    names = resolve_targets(name) if isinstance(name, str) else list(name)
    reports = reports.absolute()  # the replays run in a scratch folder, where a relative path means nothing
    for target in names:
        resolve_targets(target)  # a known target, or KpoolError
        if target not in NATIVE:
            output.detail(f"{target}: pure Python, no libkpool edges to count")
            continue
        dirs = [working_corpus(target, reports)] + ([seeds_dir(target)] if seeds_dir(target).is_dir() else [])
        targets[target] = [str(d) for d in dirs]
    if not targets:
        raise KpoolError(f"{', '.join(names)}: no native target, so no libkpool edges to count")
    library = build.build("coverage")
    inputs = sum(1 for ds in targets.values() for d in ds for p in Path(d).iterdir() if p.is_file())
    output.progress(f"replaying {inputs} inputs of {', '.join(targets)} through the coverage build")
    reports.mkdir(parents=True, exist_ok=True)
    counted: dict[str, Any] = {"targets": {}}
    scratch = Path(tempfile.mkdtemp(prefix=".coverage-", dir=reports))
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        for target, corpus_dirs in targets.items():  # a process each: a target's pools outlive its inputs
            left = None if deadline is None else max(0.1, deadline - time.monotonic())
            _count_target(library, target, corpus_dirs, scratch, counted, left)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    edges: int = counted["edges"]
    rows, union = [], set()
    for target, got in counted["targets"].items():
        union.update(got["covered"])
        rows.append(Coverage(target, got["inputs"], len(got["covered"]), edges))
    where = _locate(library, counted["pcs"])
    # A static inline function has a copy in every file that calls it out of line: a function is
    # missed when none of its copies is entered.
    entered: dict[str, bool] = {}
    for index in counted["entries"]:
        fn = f"{where[index][0]} ({where[index][1]})"
        entered[fn] = entered.get(fn, False) or index in union
    missed = [fn for fn, hit in entered.items() if not hit]
    per_file: dict[str, list[int]] = {}
    for index, (_, _, source) in enumerate(where):
        got = per_file.setdefault(source, [0, 0])
        got[0] += 1
        got[1] += index in union
    files = [FileCoverage(f, e, c) for f, (e, c) in sorted(per_file.items())]
    report = CoverageReport(rows, len(union), edges, len(entered), missed, files)
    if write:
        atomic.write_text(reports / "coverage.json", json.dumps(report.to_json(), indent=2) + "\n")
    return report
