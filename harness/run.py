"""`kpool run`: one program on kpool (libkpool-preload.so) or on a peer allocator, with its figures.

    kpool run [--allocator kpool|glibc|jemalloc|mimalloc|tcmalloc] [--conf OPTIONS] -- CMD ARGS...

The program runs with the allocator loaded by LD_PRELOAD (glibc: none), its stdin and stdout the terminal's,
its stderr passed on as it comes and kept (its tail) for triage. At exit: its status, wall and CPU time
(os.wait4's rusage: the program and the children it waited for), peak RSS, and, on kpool, the pool's own
figures: the preload writes them per process to the folder named by KPOOL_STATS_OUT (kpool-<pid>.json: stats,
integrity events, settings; allocator/preload/preload.c). A crash (killed by a signal; an integrity error
aborts with SIGABRT) becomes a record in the crash database with a signature and a reproducer (the command
line, the environment kpool run set, the conf), which `kpool triage replay ID` reruns. So does a process the
program started that a fault signal killed (the preload's record: harness/child_faults.py), named with its
command in the summary; its reproducer is the program's command, which starts it again.

The interface for other runners (program workloads): `run_program(argv, ...)` returns a `RunResult` and
prints nothing but the program's own stderr; `record_crash(result, reports)` records it; `summary(result)`
is the text `kpool run` prints.
"""

from __future__ import annotations

import contextlib
import functools
import os
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from harness import anon, atomic, binding, build, child_faults, output, peers
from harness.child_faults import ChildSignal
from harness.errors import AllocError, ArgumentError, ConfError, UsageError
from harness.spec import poolcheck
from harness.triage import patterns, record, signature
from harness.triage.crash import Crash, Reproducer
from harness.triage.db import Recorded

ALLOCATORS = ("kpool", "glibc", "jemalloc", "mimalloc", "tcmalloc", "scudo")
ON_ERROR = ("abort", "log")
# What the preload reads (allocator/preload/preload.c).
STATS_ENV = "KPOOL_STATS_OUT"
PRELOAD_ENV = "KPOOL_PRELOAD"
CONF_ENV = "KPOOL_CONF"
# Variables of the caller's environment that change how a program allocates: a reproducer keeps them.
KEPT_ENV = ("KPOOL_CONF", "KPOOL_PRELOAD", "KPOOL_LOG", "PYTHONMALLOC", "LD_LIBRARY_PATH", "MALLOC_ARENA_MAX")
# The tail of the program's stderr kept for the crash text: a sanitizer report or a backtrace fits.
STDERR_KEPT = 256 * 1024
# A process the program started and left running (`server &`, a daemon that kept its stderr) holds the pipe
# open past the program's end: kpool read it to its end, and waited as long as that process lived. What
# comes this long after the program ended is passed on (a writer that is gone is the pipe's end at once,
# so a program that leaves nothing behind costs nothing); then kpool stops reading and says so.
RELAY_GRACE_S = 1.0
# How often the relay looks whether it was told to stop (a select timeout: no cost while output flows).
RELAY_POLL_S = 0.1
# How often a run with a time limit looks at its program where no pidfd tells when it ends (before Linux
# 5.3), and after the limit while the killed program is reaped: a limit is honoured within this.
POLL_S = 0.05
# Peak RSS: a process forked from Python starts with Python's resident set as its high-water mark, and Linux
# keeps that mark across exec, so os.wait4 would report at least the harness's own size (14 to 24 MiB here,
# where `ls` needs 2). GNU time (Debian package `time`), a small process, forks the program and reports the
# program's own peak (%M, KiB); without it, wait4's figure is shown and marked as an upper bound. GNU time
# itself must not run on the allocator under test: kpool-exec (build.exec_helper), started by it, sets
# LD_PRELOAD and execs the program (which keeps its pid, a child of GNU time's). The mark of what exec'd
# the program is the figure's floor: kpool-exec is static, ~0.5 MiB, so %M is the program's own peak, its
# exit included (own_hwm_kib). Without it env(1) execs, whose 1.6 MiB is more than a small program's own:
# then the own peak is sampled (harness/anon.py), its last moments missed.
# What the terminal or a user sends to stop a program (^C, a hangup, kill): never a fault of the program.
STOP_SIGNALS = (signal.SIGINT, signal.SIGHUP, signal.SIGTERM)
GNU_TIME = Path("/usr/bin/time")
ENV = Path("/usr/bin/env")


@dataclass(frozen=True)
class RunResult:
    """One program run. `returncode` as subprocess gives it (negative: killed by that signal); `figures` the
    pool's figures of the program's own process (None: not on kpool, or it never allocated, or it ended
    without exit(): _exit, a signal), `children` those of the processes it started."""

    argv: tuple[str, ...]
    allocator: str
    conf: str | None
    env: dict[str, str]  # what kpool run added to the environment (the reproducer's)
    cwd: str
    returncode: int
    timed_out: bool
    wall_s: float
    user_s: float
    sys_s: float
    peak_rss_kib: int
    rss_exact: bool  # False: wait4's figure, which includes the harness's resident set (no GNU time)
    stderr_tail: str
    # a process the program started still held its stderr RELAY_GRACE_S after it ended: no longer read
    stderr_held: bool = False
    # its program file has no dynamic loader (statically linked): LD_PRELOAD loaded no allocator into it
    static: bool = False
    figures: dict[str, Any] | None = None
    children: list[dict[str, Any]] = field(default_factory=list)
    oom_kills: int = 0  # the kernel's OOM kills (/proc/vmstat oom_kill) while it ran, on the whole machine
    # the program's own anonymous memory at its highest, KiB, sampled (harness/anon.py: no ASLR noise of
    # file pages); None where no sample was taken
    peak_anon_kib: int | None = None
    # the program's own peak RSS, its exit included: GNU time's, where kpool-exec exec'd it; else its
    # VmHWM sampled (harness/anon.py), short of its last moments (peak_rss_kib is then at least env(1)'s)
    own_hwm_kib: int | None = None
    # processes the program started that a fault signal killed (the preload's records: child_faults.py)
    child_signals: list[ChildSignal] = field(default_factory=list)

    @property
    def signal_name(self) -> str | None:
        if self.returncode >= 0:
            return None
        return patterns.SIGNALS.get(-self.returncode) or f"signal {-self.returncode}"

    @property
    def exit_status(self) -> int:
        """What `kpool run` exits with: the program's status; 128 + N when signal N killed it (as a shell)."""
        return self.returncode if self.returncode >= 0 else 128 - self.returncode

    @property
    def integrity_events(self) -> int:
        return sum(int(f.get("integrity_total", 0)) for f in self.all_figures)

    @property
    def all_figures(self) -> list[dict[str, Any]]:
        return ([self.figures] if self.figures else []) + self.children

    @property
    def crashed(self) -> bool:
        """Killed by a signal (an integrity abort included), or stopped at its time limit."""
        return self.returncode < 0 or self.timed_out

    @property
    def killed_from_outside(self) -> bool:
        """Killed by a SIGKILL kpool did not send (its time limit sends one): the OOM killer, a kill -9, a
        container stopping; or by ^C, a hangup or a SIGTERM (the terminal, a kill). No allocator crash:
        the allocator's checks abort (SIGABRT), and no fault in the program raises these; it makes no
        crash record (^C made one, a new signature for each program the user stopped)."""
        return not self.timed_out and -self.returncode in (*STOP_SIGNALS, signal.SIGKILL)

    @property
    def reader_gone(self) -> bool:
        """Killed by SIGPIPE: it wrote to a pipe whose reader had gone (`kpool run -- yes | head -1`), as
        every writer of a pipeline ends; no crash (it was recorded as one, 'signal-13 in program:yes')."""
        return not self.timed_out and -self.returncode == signal.SIGPIPE

    @property
    def damaged(self) -> bool:
        """Integrity errors that kpool counted and let the program go on after (on_error:log): no crash, but
        a record all the same (its event lines are in the stderr, and a replay prints them again)."""
        return not self.crashed and self.integrity_events > 0

    @property
    def child_crashed(self) -> bool:
        """A process the program started died of a fault signal (the program itself may have gone on)."""
        return bool(self.child_signals)

    @property
    def recordable(self) -> bool:
        return (
            (self.crashed and not self.killed_from_outside and not self.reader_gone)
            or self.damaged
            or self.child_crashed
        )


def library(allocator: str) -> Path | None:
    """The library LD_PRELOAD loads for allocator (glibc: None); a missing one is an error naming the fix."""
    if allocator not in ALLOCATORS:
        raise UsageError(f"--allocator {allocator!r}: expected one of {', '.join(ALLOCATORS)}")
    if allocator == "kpool":
        return build.preload_library()
    return peers.preload_path(allocator)


def _refused(conf: str) -> str | None:
    """kp_create's reason to refuse conf read alone (KPOOL_CONF unset meanwhile: kp_create reads it
    itself), without where-it-came-from prefix; None when it takes it. A small pool: no daemon, nothing
    pre-faulted, no log."""
    saved = os.environ.pop(CONF_ENV, None)
    try:
        with poolcheck.no_log():  # KPOOL_LOG is judged on its own (check_log): not blamed on the conf
            binding.Pool(f"{conf},{poolcheck.CHEAP}" if conf else poolcheck.CHEAP).close()
    except ConfError as exc:
        text = exc.text or str(exc)
        m = poolcheck.ORIGIN_RE.match(text)
        return text[m.end() :] if m else text
    except ArgumentError as exc:  # not text C can take (bytes that are not UTF-8, a NUL)
        return str(exc)
    except AllocError:  # the OS refused the memory: not a setting; the run will say so
        return None
    finally:
        if saved is not None:
            os.environ[CONF_ENV] = saved
    return None


def check_conf(env_conf: str | None, conf: str | None) -> None:
    """The options the preload's kp_create will read, checked before the program runs: KPOOL_CONF (the
    environment's) first, then --conf after it. A refused one is a usage error (exit 2) that names where it
    came from, the option and the value; the program is never started (session 20's attack: a bad
    KPOOL_CONF started it, and its preload gave up with exit 127 once it had)."""
    if env_conf and (why := _refused(env_conf)):
        raise UsageError(f"{CONF_ENV}={env_conf!r} (in the environment): {why}")
    if conf is not None and (why := _refused(f"{env_conf},{conf}" if env_conf else conf)):
        raise UsageError(f"--conf {conf!r}: {why}")


def _preload_refused(item: str) -> str | None:
    """Why the preload would refuse one KPOOL_PRELOAD item (allocator/preload/preload.c, settings_load), or
    None: the same keys and values, in the same words."""
    key, colon, value = item.partition(":")
    if not colon:
        return "expected key:value"
    if key == "on_error":
        return None if value in ON_ERROR else f"on_error takes {' or '.join(ON_ERROR)}"
    if key in ("daemon_after", "bootstrap"):
        # number(): 1 to 12 decimal digits
        ok = 0 < len(value) <= 12 and all("0" <= c <= "9" for c in value)
        return None if ok else f"{key} takes a count of allocations"
    return f"unknown key {key!r} (keys: on_error, daemon_after, bootstrap)"


def check_preload(env_preload: str | None) -> None:
    """KPOOL_PRELOAD (the environment's), checked before the program runs, as KPOOL_CONF is (check_conf): a
    bad item made the preload give up with its own exit code once the program had started."""
    for item in (env_preload or "").split(","):
        if item and (why := _preload_refused(item)):
            raise UsageError(f"{PRELOAD_ENV}={env_preload!r} (in the environment): {item!r}: {why}")


def environment(
    allocator: str, conf: str | None, on_error: str | None, base: Mapping[str, str] = os.environ
) -> dict[str, str]:
    """The variables kpool run sets for the program (LD_PRELOAD, KPOOL_CONF, KPOOL_PRELOAD), plus those of
    `base` that change how it allocates (KEPT_ENV): what a reproducer needs besides the command line."""
    if allocator != "kpool" and (conf is not None or on_error is not None):
        raise UsageError(f"--conf and --on-error configure kpool; --allocator {allocator} takes neither")
    if on_error is not None and on_error not in ON_ERROR:
        raise UsageError(f"--on-error {on_error!r}: expected one of {', '.join(ON_ERROR)}")
    env = {k: base[k] for k in KEPT_ENV if k in base}
    if allocator != "kpool":
        for k in (CONF_ENV, PRELOAD_ENV):
            env.pop(k, None)
    lib = library(allocator)
    if lib is not None:
        env["LD_PRELOAD"] = str(lib)
    if allocator == "kpool":
        check_conf(env.get(CONF_ENV), conf)
        check_preload(env.get(PRELOAD_ENV))
        poolcheck.check_log()  # the preload's pool opens it: one it cannot is exit 127 once started
    if conf is not None:
        env[CONF_ENV] = f"{env[CONF_ENV]},{conf}" if env.get(CONF_ENV) else conf
    if on_error is not None:
        env[PRELOAD_ENV] = (
            f"{env[PRELOAD_ENV]},on_error:{on_error}" if env.get(PRELOAD_ENV) else f"on_error:{on_error}"
        )
    return env


def _relay(pipe: IO[bytes], kept: bytearray, echo: bool, stop: threading.Event) -> None:
    """Pass the program's stderr on and keep its tail, to its end or until stop is set."""
    fd = pipe.fileno()
    while not stop.is_set():
        if not select.select([fd], [], [], RELAY_POLL_S)[0]:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            return
        if echo:
            output.relay(chunk)
        kept += chunk
        if len(kept) > 2 * STDERR_KEPT:
            del kept[: len(kept) - STDERR_KEPT]


# ELF: the header's fields that find the program headers, and the program header types read
_ELF_MAGIC = b"\x7fELF"
_ET_DYN, _PT_DYNAMIC, _PT_INTERP = 3, 2, 3


def statically_linked(program: str, path: str | None = None) -> bool:
    """Whether the program file (found on path as the kernel's execvp would) is an ELF executable that no
    dynamic loader starts, so that LD_PRELOAD loads nothing into it: no PT_INTERP. A file without
    PT_INTERP that has PT_DYNAMIC and is ET_DYN is a loader itself (ld.so, which honours LD_PRELOAD for the
    program it is given) or a static PIE, which is rare: not called static. A script, a file that cannot
    be read or is no ELF: False (nothing known)."""
    import struct

    found = program if "/" in program else shutil.which(program, path=path)
    if found is None or not Path(found).is_file():  # a FIFO's open would wait for a writer
        return False
    try:
        with Path(found).open("rb") as f:
            head = f.read(64)
            if len(head) < 64 or head[:4] != _ELF_MAGIC or head[4] not in (1, 2) or head[5] not in (1, 2):
                return False
            wide, order = head[4] == 2, "<" if head[5] == 1 else ">"
            e_type = struct.unpack_from(order + "H", head, 16)[0]
            if wide:
                phoff = struct.unpack_from(order + "Q", head, 32)[0]
                phentsize, phnum = struct.unpack_from(order + "HH", head, 54)
            else:
                phoff = struct.unpack_from(order + "I", head, 28)[0]
                phentsize, phnum = struct.unpack_from(order + "HH", head, 42)
            if phentsize < 4 or not 0 < phnum < 0xFFFF:
                return False
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except (OSError, ValueError, struct.error):
        return False
    types = {struct.unpack_from(order + "I", table, i)[0] for i in range(0, len(table) - 3, phentsize)}
    return _PT_INTERP not in types and not (e_type == _ET_DYN and _PT_DYNAMIC in types)


def _figures(folder: Path, pid: int) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The program's figures (its pid is `pid`, or its parent is `pid`: GNU time's child) and the others."""
    mine, others = None, []
    for path in sorted(folder.glob("kpool-*.json")):
        try:
            doc = atomic.loads(path.read_text())
        except (OSError, ValueError) as exc:  # cut short (the disk, a kill mid-write): say so, go on
            output.warn(f"figures of {path.name} unreadable: {exc}")
            continue
        if mine is None and pid in (doc.get("pid"), doc.get("ppid")):
            mine = doc
        else:
            others.append(doc)
    return mine, others


def _oom_kills() -> int:
    """The kernel's count of processes the OOM killer killed since boot (0 where it does not say)."""
    try:
        for line in Path("/proc/vmstat").read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def run_program(
    argv: Sequence[str],
    allocator: str = "kpool",
    conf: str | None = None,
    on_error: str | None = None,
    *,
    cwd: str | os.PathLike[str] | None = None,
    timeout_s: float | None = None,
    stdin: int | IO[Any] | None = None,
    stdout: int | IO[Any] | None = None,
    echo_stderr: bool = True,
) -> RunResult:
    """Run argv on the allocator and wait for it. stdin/stdout: as subprocess takes them (None: inherited);
    stderr is passed on (echo_stderr) and its tail kept. With timeout_s the program runs in a process group
    of its own and the whole group is killed at the limit (timed_out). Without one it stays in kpool's
    group, so that ^C reaches it, and kpool waits for it to end."""
    if not argv:
        raise UsageError("kpool run needs a command: kpool run [options] -- CMD ARGS...")
    env = environment(allocator, conf, on_error)
    folder = Path(tempfile.mkdtemp(prefix="kpool-run-"))
    where = str(Path(cwd or Path.cwd()).absolute())
    # GNU time's figures in a folder of kpool's own: in the program's (KPOOL_STATS_OUT, which it sees), a
    # program that removed that folder was read as having exited with status 128+N, not killed by signal N
    mine_only = Path(tempfile.mkdtemp(prefix="kpool-time-"))
    measured = mine_only / "time.txt"
    child_env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    child_env.update({k: v for k, v in env.items() if k != "LD_PRELOAD"}, **{STATS_ENV: str(folder)})
    launcher: list[str] = []
    # GNU time ignores ^C and SIGQUIT (the program's to handle) but dies of a hangup, which a program
    # that ignores SIGHUP outlives: kpool then saw 'killed by signal 1' and recorded a crash. In kpool's
    # group (no time limit), GNU time starts with SIGHUP ignored and kpool-exec (or env) gives the program
    # back its default.
    execs = build.exec_helper() if GNU_TIME.is_file() else None
    hup_to_program = timeout_s is None and _hup_default() and (execs is not None or _env_default_signal())
    if GNU_TIME.is_file() and (execs is not None or ENV.is_file()) and "=" not in argv[0]:
        preload = [f"LD_PRELOAD={env['LD_PRELOAD']}"] if "LD_PRELOAD" in env else []
        restore = ["--default-signal=HUP"] if hup_to_program else []
        time_it = [str(GNU_TIME), "-f", "%M", "-o", str(measured), "--"]
        # "--": the launcher's options end there; a command named "--version" or "-i" is the command
        launcher = [*time_it, str(execs or ENV), *restore, "--", *preload]
    elif "LD_PRELOAD" in env:
        child_env["LD_PRELOAD"] = env["LD_PRELOAD"]
    oom_before = _oom_kills()
    try:
        start = time.monotonic()
        try:
            with _hup_ignored(bool(launcher) and hup_to_program):
                proc = subprocess.Popen(
                    [*launcher, *argv],
                    cwd=where,
                    env=child_env,
                    stdin=stdin,
                    stdout=stdout,
                    stderr=subprocess.PIPE,
                    start_new_session=timeout_s is not None,
                )
        except OSError as exc:
            raise UsageError(f"cannot run {argv[0]!r}: {exc.strerror or exc}") from exc
        kept = bytearray()
        assert proc.stderr is not None
        stop_relay = threading.Event()
        relay = threading.Thread(
            target=_relay, args=(proc.stderr, kept, echo_stderr, stop_relay), daemon=True
        )
        relay.start()
        sampler = anon.AnonPeak(proc.pid, child=bool(launcher))
        try:
            status, usage, timed_out = _wait(proc, start, timeout_s)
            wall = time.monotonic() - start  # before the sampler's end: its last sleep is no program's time
        finally:
            peak_anon = sampler.stop()
            own_hwm = sampler.own_hwm_kib  # sampled: short of the program's last moments
        if timeout_s is not None:
            # its session is the program's: a process it left behind (`server &`) ran on after kpool, a
            # server holding its port for the next allocator's run. Stopped, as at the time limit
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        relay.join(RELAY_GRACE_S)
        stderr_held = relay.is_alive()
        stop_relay.set()
        relay.join()
        proc.stderr.close()
        returncode = os.waitstatus_to_exitcode(status)
        proc.returncode = returncode
        peak_kib, signum = _measured(measured) if launcher else (None, None)
        if signum is not None and returncode == 128 + signum:
            returncode = -signum  # GNU time exits 128+N for a program killed by signal N
        if peak_kib is not None and execs is not None and launcher:
            own_hwm = peak_kib  # kpool-exec's floor is under the program's own: its exit included
        mine, others = _figures(folder, proc.pid)
        faults = child_faults.read(folder, pid=proc.pid, parent=proc.pid if launcher else None)
    finally:
        # the program knows the folder (KPOOL_STATS_OUT): one that removed it, or made a folder in it,
        # stopped kpool here with an OSError, its status and its crash lost
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(mine_only, ignore_errors=True)
    return RunResult(
        argv=tuple(argv),
        allocator=allocator,
        conf=conf,
        env=env,
        cwd=where,
        returncode=returncode,
        timed_out=timed_out,
        wall_s=wall,
        user_s=usage.ru_utime,
        sys_s=usage.ru_stime,
        peak_rss_kib=peak_kib if peak_kib is not None else int(usage.ru_maxrss),
        rss_exact=peak_kib is not None,
        stderr_tail=kept[-STDERR_KEPT:].decode(errors="replace"),
        stderr_held=stderr_held,
        static=statically_linked(argv[0], child_env.get("PATH")),
        figures=mine,
        children=others,
        oom_kills=max(0, _oom_kills() - oom_before),
        peak_anon_kib=peak_anon,
        own_hwm_kib=own_hwm,
        child_signals=faults,
    )


def _measured(path: Path) -> tuple[int | None, int | None]:
    """GNU time's file: the peak RSS in KiB (its last line), and the signal that killed the program
    ("Command terminated by signal N"); None for what it does not say (it was killed itself)."""
    try:
        lines = path.read_text().split("\n")
    except OSError:
        return None, None
    lines = [line.strip() for line in lines if line.strip()]
    peak = int(lines[-1]) if lines and lines[-1].isdigit() else None
    signum = None
    for line in lines:
        if line.startswith("Command terminated by signal ") and line.split()[-1].isdigit():
            signum = int(line.split()[-1])
    return peak, signum


def _hup_default() -> bool:
    """SIGHUP is not ignored (nohup): a program started now would die of a hangup."""
    return signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN


@functools.cache
def _env_default_signal() -> bool:
    """This env takes --default-signal (GNU coreutils 8.31 and later)."""
    if not ENV.is_file():
        return False
    done = subprocess.run([str(ENV), "--default-signal=HUP", "true"], capture_output=True, check=False)
    return done.returncode == 0


@contextlib.contextmanager
def _hup_ignored(ignore: bool) -> Iterator[None]:
    """SIGHUP ignored while the launcher is started (it inherits that), in the main thread only."""
    if not ignore or threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, old)


def _wait(proc: subprocess.Popen[bytes], start: float, timeout_s: float | None) -> tuple[int, Any, bool]:
    """wait4 the program: its status and rusage, and whether it was killed at the time limit. Without a
    time limit the program shares kpool's process group: ^C, a terminal's SIGQUIT and its hangup (SIGHUP)
    are the program's to handle while kpool waits (as `time` does ^C; a program that ignores SIGHUP ran
    on and was stopped by kpool, which took the hangup for an interrupt). With one, the program has a
    session of its own that a terminal's ^C never reaches: ^C is kpool's, which stops it.

    kpool interrupted while it waits (KeyboardInterrupt: ^C with a time limit, SIGTERM either way) stops
    the program and reaps it before it raises: no program is left running after kpool (SIGTERM ended
    kpool and left the program an orphan; ^C with a time limit was ignored to the program's end)."""
    own_group = timeout_s is not None
    old_int = signal.getsignal(signal.SIGINT)
    old_hup = signal.getsignal(signal.SIGHUP)
    if not own_group:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    old_quit = signal.signal(signal.SIGQUIT, signal.SIG_IGN)
    timed_out = False
    ended = _end_watch(proc.pid) if timeout_s is not None else None
    try:
        while True:
            pid, status, usage = os.wait4(proc.pid, 0 if timeout_s is None else os.WNOHANG)
            if pid:
                return status, usage, timed_out
            left = start + (timeout_s or 0) - time.monotonic()
            if not timed_out and left < 0:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)
            if ended is None:
                time.sleep(POLL_S)
            else:  # woken the moment it ends (its wall time is read to the millisecond), or at the limit
                select.select([ended], [], [], max(left, 0.0) if not timed_out else POLL_S)
    except KeyboardInterrupt:
        _stop(proc, own_group)
        raise
    finally:
        if ended is not None:
            os.close(ended)
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGHUP, old_hup)
        signal.signal(signal.SIGQUIT, old_quit)


# An interrupted program gets this long to end after SIGTERM (its own handlers, its atexit work) before
# SIGKILL: a second or two is plenty for a program, short enough not to look like a hang.
STOP_WAIT_S = 3.0


def _end_watch(pid: int) -> int | None:
    """A descriptor that becomes readable the moment the process pid ends (pidfd, Linux 5.3), or None
    where there is none: the caller then looks every POLL_S."""
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return int(opener(pid))
    except OSError:
        return None


def _stop(proc: subprocess.Popen[bytes], own_group: bool) -> None:
    """Stop the program kpool was waiting for and reap it: SIGTERM, SIGKILL after STOP_WAIT_S. In a group
    of its own, the whole group; in kpool's, its process tree (GNU time, env, the program: GNU time dies
    of a SIGTERM and would leave the program running). Further ^C and SIGTERM wait until it is done."""
    import psutil

    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        except psutil.Error:
            tree = []

        def send(sig: signal.Signals) -> None:
            if own_group:
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, sig)
            for p in tree:
                with contextlib.suppress(psutil.Error):
                    p.send_signal(sig)

        send(signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT_S
        while time.monotonic() < deadline and any(_running(p) for p in tree):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(proc.pid, os.WNOHANG)
            time.sleep(POLL_S)
        send(signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(proc.pid, 0)
        proc.returncode = proc.returncode if proc.returncode is not None else -signal.SIGKILL
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def _running(p: Any) -> bool:
    import psutil

    try:
        return bool(p.is_running() and p.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


# ---- the crash record ----------------------------------------------------------------------------------


def source(argv: Sequence[str]) -> str:
    """The crash's source in the database: the program's name."""
    # a name in another encoding than UTF-8 ($'\xff'prog: surrogate escapes), which SQLite refuses: escaped
    name = os.fsencode(Path(argv[0]).name).decode("utf-8", "backslashreplace")
    return f"program:{name}"


def crash_of(result: RunResult, run: str) -> Crash:
    """The crash of a run (result.crashed), with a reproducer that reruns the command with the same
    environment additions in the same folder. The text is the program's stderr tail (an integrity error's
    line there is in kpool's event-log format, which triage reads), and the signal."""
    text = signature.with_pool_events(result.stderr_tail, result.all_figures)
    if result.signal_name:
        text += f"\nkpool: program killed by {result.signal_name}\n"
    text += child_faults.lines(result.child_signals)
    # the program's own end where it crashed; else the first child's that did (the source, the signal)
    first = None if result.crashed or not result.child_signals else result.child_signals[0]
    meta: dict[str, Any] = {"allocator": result.allocator, "conf": result.conf or ""}
    if result.figures and result.figures.get("integrity"):
        meta["integrity"] = result.figures["integrity"]
    return Crash(
        text=text,
        run_id=run,
        source=source(first.argv if first and first.argv else result.argv),
        reproducer=Reproducer(
            argv=result.argv, kind="command", env=dict(result.env), cwd=result.cwd, meta=meta
        ),
        returncode=-first.signal if first else result.returncode,
        kind="timeout" if result.timed_out else None,
    )


def record_crash(result: RunResult, reports: Path, own_run: str | None = None) -> Recorded | None:
    """Record a crashed run, or one with integrity errors it went on after (result.damaged), in the crash
    database of the reports folder ($KPOOL_CRASH_DB wins, and $KPOOL_CRASH_RUN names the run, as for every
    runner); None when there was nothing to record or it was not recorded."""
    if not result.recordable:
        return None
    run = record.run_id(own_run or f"run-{datetime.now(UTC):%Y%m%d-%H%M%S}")
    recorded = record.record([crash_of(result, run)], record.db_path(reports))
    return recorded[0] if recorded else None


# ---- what kpool run prints -------------------------------------------------------------------------------


def _mib(n: float) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def _pool_lines(doc: Mapping[str, Any]) -> list[str]:
    stats = doc.get("stats", {})
    prim, back, dmn = stats.get("primary", {}), stats.get("backup", {}), stats.get("daemon", {})
    sysc = stats.get("syscalls", {})
    peak, capacity = _mib(prim.get("peak_in_use_bytes", 0)), _mib(prim.get("capacity_bytes", 0))
    lines = [
        f"pool: {prim.get('allocs', 0):,} allocations, {prim.get('frees', 0):,} frees,"
        f" {prim.get('failures', 0):,} failed; peak in use {peak}, capacity {capacity}"
        f" ({prim.get('grows', 0)} grows, {prim.get('shrinks', 0)} shrinks); backup: {back.get('allocs', 0)}"
        f" allocations, {back.get('refusals', 0)} refused",
    ]
    integ = stats.get("integrity", {})
    found = {k: v for k, v in integ.items() if v and k != "bad_sizes"}
    events = doc.get("integrity", [])
    text = ", ".join(f"{k} {v}" for k, v in found.items()) or "none"
    lines.append(f"integrity: {text}")
    lines += [f"  {e.get('kind')} in {e.get('call')}: {e.get('text')}" for e in events[:5]]

    def calls(who: str) -> str:
        kinds = sysc.get(who, {})
        total = sum(int(v) for v in kinds.values())
        parts = ", ".join(f"{k} {v}" for k, v in kinds.items() if v)
        return f"{who} {total}" + (f" ({parts})" if parts else "")

    lines.append("system calls: " + "; ".join(calls(w) for w in ("alloc", "daemon", "setup") if w in sysc))
    started = "started" if doc.get("daemon_started") else "never started"
    lines.append(
        f"daemon: {started}, {dmn.get('state', '?')}; {dmn.get('wakeups', 0)} wake-ups and"
        f" {dmn.get('timer_wakeups', 0)} by its timer, {dmn.get('grows', 0)} grows,"
        f" {dmn.get('shrinks', 0)} shrinks"
    )
    return lines


# The children killed by a fault signal named one a line in the summary; the rest counted (a test suite whose
# every test process crashed would bury the figures under hundreds of lines).
CHILDREN_SHOWN = 5


def summary(result: RunResult, recorded: Recorded | None = None, db: Path | None = None) -> list[str]:
    """The lines `kpool run` prints when the program has ended."""
    cmd = output.shell_join(result.argv)
    how = f"killed by {result.signal_name}" if result.signal_name else f"exit status {result.returncode}"
    if result.timed_out:
        how = "stopped at its time limit (" + how + ")"
    elif result.killed_from_outside and -result.returncode != signal.SIGKILL:
        stop = "^C, a hangup or a kill"
        how = f"killed by {result.signal_name} ({stop}): not an allocator crash, no crash recorded"
    elif result.reader_gone:
        how = "killed by SIGPIPE (the reader of its output went away, as `| head` does): no crash recorded"
    elif result.killed_from_outside:
        oom = (
            f"the OOM killer killed {result.oom_kills} process(es) while it ran"
            if result.oom_kills
            else "the OOM killer (see dmesg), a kill -9 or a container stopping"
        )
        how = (
            f"killed by signal {signal.SIGKILL} (SIGKILL) from outside kpool: {oom}; not an allocator crash,"
            " no crash recorded"
        )
    lines = [
        f"{cmd}: {how}",
        *(
            [
                "a process it started still holds its stderr: kpool stopped reading it"
                f" {RELAY_GRACE_S:g} s after the program ended (what it writes from now on is not shown)"
            ]
            if result.stderr_held
            else []
        ),
        *[child.line() for child in result.child_signals[:CHILDREN_SHOWN]],
        *(
            [f"and {len(result.child_signals) - CHILDREN_SHOWN} more child processes a fault signal killed"]
            if len(result.child_signals) > CHILDREN_SHOWN
            else []
        ),
        f"allocator {result.allocator}" + (f", conf {result.conf}" if result.conf else ""),
        f"wall {result.wall_s:.2f} s, cpu {result.user_s:.2f} s user + {result.sys_s:.2f} s system,"
        f" peak RSS {_mib(result.peak_rss_kib * 1024)}"
        + ("" if result.rss_exact else " (an upper bound: it includes kpool's own; install GNU time)"),
    ]
    if result.allocator == "kpool":
        if result.figures:
            lines += _pool_lines(result.figures)
        elif result.static:
            lines.append(
                f"pool: none: {result.argv[0]} is statically linked (no dynamic loader), so LD_PRELOAD"
                " loaded no kpool into it: it ran on its own malloc"
            )
        else:
            lines.append(
                "pool: no figures (the program never allocated, or ended without exit(): _exit, a signal)"
            )
        if result.children:
            n = result.integrity_events - int((result.figures or {}).get("integrity_total", 0))
            lines.append(f"child processes with figures: {len(result.children)}, their integrity events: {n}")
    if recorded is not None:
        state = "new" if recorded.new else recorded.status
        # each hint names the database: run as printed, from any folder, it finds the crash
        triage = ["kpool", "triage", *(["--db", str(db)] if db is not None else [])]
        show, replay = (output.shell_join([*triage, action, recorded.hash]) for action in ("show", "replay"))
        lines.append(f"crash recorded: signature {recorded.hash} ({state}); {show}, {replay}")
    return lines


def main(argv: Sequence[str], allocator: str, conf: str | None, on_error: str | None, reports: Path) -> int:
    """`kpool run`: run, print the figures (on stderr, after the program's own output), record a crash;
    the program's exit status (128 + N for signal N)."""
    result = run_program(argv, allocator, conf, on_error)
    recorded = record_crash(result, reports)
    for line in summary(result, recorded, record.db_path(reports)):
        output.progress(line)
    return result.exit_status
