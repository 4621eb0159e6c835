"""One worker process: kpdrive running one program with its own seed, watched with psutil; and the
helper processes of a program workload (its setup, driver and check commands), spawned and killed here
too, so that this module stays the one place of the stress runner that starts and stops processes. The
program itself runs through `harness.run.run_program` (kpool run's launcher: GNU time, the preload, its
figures), which the program launcher (harness/stress/program.py) calls.

The worker's stdout (the JSON result) and stderr (progress lines, a crash line, a sanitizer report) go
straight to files in the run's directory, so a finished worker's result is on disk the moment it exits,
whatever happens to the parent afterwards. The parent samples the process (RSS, CPU, context switches,
page faults), kills it at its time limit, and on exit classifies what happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

from harness.stress import stacks

# The line kpdrive's fatal-signal handler writes (allocator/driver/driver.c, on_fatal).
FATAL_RE = re.compile(r"kpdrive: fatal signal (\d+)(?: thread (\d+) op (\d+))?")
PROGRESS_RE = re.compile(r"kpdrive: progress ops=(\d+)")
# Where a sanitizer's report starts: "==42==ERROR: AddressSanitizer: ..." (ASan, LSan, TSan's own errors),
# "WARNING: ThreadSanitizer: data race (pid=42)" (after a "==================" line), "f.c:3:5: runtime
# error: ..." (UBSan).
SANITIZER_RE = re.compile(
    r"^=+\d+=+ ?ERROR: (AddressSanitizer|LeakSanitizer|ThreadSanitizer|UndefinedBehavior)"
    r"|^WARNING: ThreadSanitizer: "
)
UBSAN_RE = re.compile(r"runtime error: ")
# Lines of a report kept: a TSan race with its two stacks, the mutexes and the threads' creation fits.
REPORT_LINES = 200
STDERR_TAIL_LINES = 40
# kpdrive's exit statuses (kpdrive.c): 2 the program is refused before anything runs; 3 the run could not
# be set up (a JSON document with "error"): a configuration error when kp_create or kp_fault_inject
# refused the settings (driver.c setup_pool), not when the OS refused memory.
USAGE_STATUS = 2
SETUP_STATUS = 3
BAD_PROGRAM_RE = re.compile(r"kpdrive: bad program: (.*)")
CONF_REFUSED_RE = re.compile(r'^(kp_create\(".*"\): (KPOOL_CONF|conf): |kp_fault_inject\(".*"\): )')
# A backtrace_symbols_fd line: "/path/to/obj(+0x3c9a)[0x55ed5706ec9a]" or "obj(func+0x1a)[0x...]".
FRAME_RE = re.compile(r"^(?P<obj>[^\s(]+)\((?P<sym>[^+)]*)\+(?P<off>0x[0-9a-f]+)\)\[0x[0-9a-f]+\]$")
MAX_FRAMES = 32


@dataclass
class ProcSample:
    rss_peak: int = 0
    cpu_user_s: float = 0.0
    cpu_system_s: float = 0.0
    ctx_voluntary: int = 0
    ctx_involuntary: int = 0
    minflt: int = 0
    majflt: int = 0

    def update(self, proc: psutil.Process) -> None:
        """One sample; the process may vanish between calls (then the last sample stands)."""
        try:
            with proc.oneshot():
                self.rss_peak = max(self.rss_peak, proc.memory_info().rss)
                cpu = proc.cpu_times()
                self.cpu_user_s, self.cpu_system_s = cpu.user, cpu.system
                ctx = proc.num_ctx_switches()
                self.ctx_voluntary, self.ctx_involuntary = ctx.voluntary, ctx.involuntary
            self.minflt, self.majflt = _faults(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            pass


def _faults(pid: int) -> tuple[int, int]:
    """Minor and major page faults from /proc/<pid>/stat (psutil does not expose them)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[7]), int(fields[9])  # fields 10 and 12 of stat(5), after pid and comm


@dataclass
class Worker:
    index: int
    seed: int
    program_path: Path
    out_path: Path
    err_path: Path
    cmd: list[str]
    env: dict[str, str]
    time_limit_s: float
    proc: subprocess.Popen[bytes] | None = None
    ps: psutil.Process | None = None
    spawned_ns: int = 0
    ended_ns: int = 0
    sample: ProcSample = field(default_factory=ProcSample)
    timed_out: bool = False
    interrupted: bool = False
    final_ops: int | None = None  # the result's op count once exited (-1: no result)
    thread_stacks: str = ""  # every thread's stack, taken before the kill at the time limit (stacks.py)
    _files: list[IO[bytes]] = field(default_factory=list)

    def start(self) -> None:
        out = self.out_path.open("wb")
        err = self.err_path.open("wb")
        self._files = [out, err]
        self.spawned_ns = time.monotonic_ns()
        # A session of its own: Ctrl-C reaches the runner only, which stops the workers itself and keeps
        # what finished. A worker outliving its runner exits (KPDRIVE_WATCH_PARENT, monitor.c).
        self.proc = subprocess.Popen(
            self.cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=self.env, start_new_session=True
        )
        try:
            self.ps = psutil.Process(self.proc.pid)
        except psutil.NoSuchProcess:
            self.ps = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def poll(self) -> bool:
        """Sample, enforce the time limit; True once the process has exited (and been reaped)."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            self._finish()
            return True
        if self.ps is not None:
            self.sample.update(self.ps)
        if (time.monotonic_ns() - self.spawned_ns) / 1e9 > self.time_limit_s:
            self.timed_out = True
            self.thread_stacks = capture_stacks(
                self.proc.pid, f"killed at its time limit ({self.time_limit_s:g} s)"
            )
            self.kill()
        return False

    def kill(self, interrupted: bool = False) -> None:
        """SIGKILL the worker and every interference child it forked."""
        if self.proc is None or self.proc.returncode is not None:
            return
        self.interrupted = interrupted
        children = []
        if self.ps is not None:
            try:
                children = self.ps.children(recursive=True)
            except psutil.Error:
                children = []
        for p in [self.ps, *children]:
            try:
                if p is not None:
                    p.send_signal(signal.SIGKILL)
            except psutil.Error:
                pass
        self.proc.wait()
        self._finish()

    def _finish(self) -> None:
        if not self.ended_ns:
            self.ended_ns = time.monotonic_ns()
        for f in self._files:
            f.close()
        self._files = []

    def ops_so_far(self) -> int:
        """Operations done: the final count of a worker that finished with a result, else the last
        progress figure it printed (0 before its first). Both count ops as the report does."""
        if self.final_ops is None and self.proc is not None and self.proc.returncode is not None:
            ops = ((_last_json(self.out_path) or {}).get("counters") or {}).get("ops")
            self.final_ops = ops if isinstance(ops, int) else -1  # read the result once
        if self.final_ops is not None and self.final_ops >= 0:
            return self.final_ops
        try:
            with self.err_path.open("rb") as f:
                f.seek(max(0, self.err_path.stat().st_size - 512))
                tail = f.read().decode(errors="replace")
        except OSError:
            return 0
        found = PROGRESS_RE.findall(tail)
        return int(found[-1]) if found else 0

    # ---- the outcome --------------------------------------------------------------------------------

    def result(self) -> dict[str, Any]:
        """What the worker produced: its JSON (or None), and a crash record when it did not finish."""
        assert self.proc is not None
        rc = self.proc.returncode
        doc = _last_json(self.out_path)
        stderr = self.err_path.read_text(errors="replace") if self.err_path.exists() else ""
        out: dict[str, Any] = {
            "worker": self.index,
            "seed": self.seed,
            "pid": self.proc.pid,
            "cmd": self.cmd,
            "time_limit_s": self.time_limit_s,
            "returncode": rc,
            "wall_s": round((self.ended_ns - self.spawned_ns) / 1e9, 3),
            "spawned_mono_ns": self.spawned_ns,
            "process": self.sample.__dict__.copy(),
            "result": doc,
            "crash": None,
        }
        crash = self._crash(rc, doc, stderr)
        if crash is not None:
            out["crash"] = crash
        return out

    def _crash(self, rc: int | None, doc: dict[str, Any] | None, stderr: str) -> dict[str, Any] | None:
        lines = [ln for ln in stderr.splitlines() if not PROGRESS_RE.match(ln)]
        tail = "\n".join(lines[-STDERR_TAIL_LINES:])
        report = _sanitizer_report(lines)
        if self.timed_out:
            kind, sig = "timeout", signal.SIGKILL.value
        elif self.interrupted:
            kind, sig = "interrupted", signal.SIGKILL.value
        elif rc is not None and rc < 0:
            kind, sig = "signal", -rc
        elif report:
            kind, sig = "sanitizer", 0
        elif rc == USAGE_STATUS or (rc == SETUP_STATUS and _conf_refused(doc)):
            kind, sig = "config", 0
        elif rc == SETUP_STATUS and doc is not None:
            kind, sig = "setup", 0
        elif rc == 0 and doc is None and (full := _no_space(self.out_path)):
            # kpdrive ended well and its result never reached the file: a full disk, not a crash
            return {"kind": NO_SPACE, "signal": 0, "signal_name": None, "returncode": rc, "message": full}
        elif rc != 0 or doc is None:
            kind, sig = "exit", 0
        else:
            return None
        fatal = FATAL_RE.search(stderr)
        crash: dict[str, Any] = {"kind": kind, "signal": sig, "signal_name": _signame(sig), "returncode": rc}
        if kind == "timeout":
            crash["message"] = f"killed after {self.time_limit_s:g} s (time limit)"
            crash["thread_stacks"] = self.thread_stacks
        elif kind == "interrupted":
            crash["message"] = "stopped: the run was interrupted"
        elif kind == "config":
            refusal = BAD_PROGRAM_RE.search(stderr)
            crash["message"] = refusal.group(1) if refusal else str((doc or {}).get("error", "")) or tail
        elif kind == "setup" and doc is not None:
            crash["message"] = str(doc.get("error", ""))
        elif sig:
            crash["message"] = f"killed by {_signame(sig)}"
        else:
            crash["message"] = f"exit status {rc}" + ("" if doc is not None else ", no result")
        if fatal and fatal.group(2) is not None:
            crash["thread"], crash["op_index"] = int(fatal.group(2)), int(fatal.group(3))
        crash["stderr_tail"] = tail
        crash["sanitizer_report"] = report
        crash["backtrace"] = symbolize(lines)
        crash["ops_before"] = self.ops_so_far()
        return crash


# gdb attaches and reads the debug information of kpdrive, libkpool and libc in 1-3 s; one that takes
# 30 s is stuck itself, and the worker is killed without its stacks from gdb.
GDB_TIMEOUT_S = 30


def capture_stacks(pid: int, why: str) -> str:
    """Every thread's stack of a live process, as stacks.dump formats it: from gdb when it is installed
    and can attach, else the kernel side from /proc (stacks.dump_proc); "" when the process is gone."""
    gdb = shutil.which("gdb")
    if gdb:
        cmd = [gdb, "-batch", "-nx", "-iex", "set debuginfod enabled off", "-p", str(pid)]
        cmd += ["-ex", "set pagination off", "-ex", "thread apply all bt"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("DEBUGINFOD")}
        try:
            proc = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=GDB_TIMEOUT_S,
                stdin=subprocess.DEVNULL,
                env=env,
                check=False,
                errors="replace",
            )
            threads = stacks.parse_gdb(proc.stdout)
            if threads:
                return stacks.dump(pid, why, threads)
        except (OSError, subprocess.TimeoutExpired):
            pass
    tasks = _proc_tasks(pid)
    return stacks.dump_proc(pid, why, tasks) if tasks else ""


def _proc_tasks(pid: int) -> dict[int, dict[str, str]]:
    """/proc/PID/task/*/{comm,wchan,syscall,stack} per thread (a file that cannot be read is left out)."""
    out: dict[int, dict[str, str]] = {}
    try:
        tids = [int(p.name) for p in Path(f"/proc/{pid}/task").iterdir() if p.name.isdigit()]
    except OSError:
        return out
    for tid in tids:
        files = {}
        for name in ("comm", "wchan", "syscall", "stack"):
            with contextlib.suppress(OSError):
                files[name] = Path(f"/proc/{pid}/task/{tid}/{name}").read_text(errors="replace")
        out[tid] = files
    return out


# A worker's result file holds tens of KB: a file system with less than this free when a worker that exited
# 0 left no readable result is why (kpdrive's writes to a full disk fail and it still exits 0).
NO_SPACE_BYTES = 256 << 10
NO_SPACE = "no-space"  # the crash kind of such a worker: no crash of the allocator, no crash record


def _no_space(out_path: Path) -> str:
    """Why a worker's result is missing when its file system is (nearly) full: "" when it is not."""
    try:
        st = os.statvfs(out_path.parent)
    except OSError:
        return ""
    free = st.f_bavail * st.f_frsize
    if free >= NO_SPACE_BYTES:
        return ""
    return f"its result could not be written to {out_path}: the file system is full ({free >> 10} KiB free)"


def _conf_refused(doc: dict[str, Any] | None) -> bool:
    return doc is not None and bool(CONF_REFUSED_RE.match(str(doc.get("error", ""))))


def symbolize(lines: list[str]) -> list[str]:
    """The frames of kpdrive's crash backtrace as "function file:line", resolved with addr2line (the
    driver is built with -g; its static functions have no dynamic symbol to print). A frame that cannot
    be resolved keeps its raw text."""
    frames = [m for m in (FRAME_RE.match(ln.strip()) for ln in lines) if m][:MAX_FRAMES]
    addr2line = shutil.which("addr2line")
    out = []
    for m in frames:
        raw = f"{m['obj']}({m['sym']}+{m['off']})"
        if not addr2line or m["sym"] or not Path(m["obj"]).is_file():
            out.append(raw)
            continue
        proc = subprocess.run(
            [addr2line, "-f", "-C", "-e", m["obj"], m["off"]],
            capture_output=True,
            text=True,
            errors="replace",
            check=False,
        )
        func, _, where = proc.stdout.partition("\n")
        resolved = proc.returncode == 0 and func.strip() not in ("", "??")
        out.append(f"{func.strip()} {where.strip()}" if resolved else raw)
    return out


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name if sig else ""
    except ValueError:
        return f"signal {sig}"


def _sanitizer_report(lines: list[str]) -> str:
    """The first sanitizer report in a worker's stderr (progress lines left out), "" when there is none."""
    lines = [ln for ln in lines if not PROGRESS_RE.match(ln)]
    for i, line in enumerate(lines):
        if SANITIZER_RE.match(line) or UBSAN_RE.search(line):
            return "\n".join(lines[i : i + REPORT_LINES])
    return ""


def _last_json(path: Path) -> dict[str, Any] | None:
    """The last JSON object line of a file, or None (a killed worker wrote nothing)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                doc: dict[str, Any] = json.loads(line)
            except json.JSONDecodeError:
                return None
            return doc
    return None


def child_env(preload: str | None) -> dict[str, str]:
    """This process's environment with LD_PRELOAD set to the peer (or removed for kpool)."""
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    env["KPDRIVE_WATCH_PARENT"] = "1"
    if preload:
        env["LD_PRELOAD"] = preload
    return env


# ---- a program workload's helpers (setup, driver, check): commands on glibc, with a time limit ------------


@dataclass(frozen=True)
class HelperResult:
    argv: list[str]
    returncode: int  # negative: killed by that signal; -9 at the time limit
    timed_out: bool
    output_tail: str  # the last lines of its stdout and stderr together

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def describe(self) -> str:
        how = "stopped at its time limit" if self.timed_out else f"exit status {self.returncode}"
        tail = self.output_tail.strip().splitlines()[-3:]
        return f"{' '.join(self.argv)}: {how}" + (f" ({' | '.join(tail)})" if tail else "")


def run_helper(argv: list[str], cwd: Path, env: dict[str, str], time_limit_s: float) -> HelperResult:
    """Run a helper command to its end (its whole process group killed at the time limit)."""
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        return HelperResult(argv, 127, False, f"cannot run {argv[0]}: {exc.strerror or exc}")
    timed_out = False
    try:
        out, _ = proc.communicate(timeout=time_limit_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc.pid)
        out, _ = proc.communicate()
    except BaseException:  # ^C: no helper outlives the run
        _kill_group(proc.pid)
        proc.wait()
        raise
    return HelperResult(argv, proc.returncode, timed_out, out[-4096:].decode(errors="replace"))


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def stop_descendants(argv0: str, sig: signal.Signals = signal.SIGTERM) -> int:
    """Signal this process's descendants whose program is argv0 (by its file name): how a program
    workload's server is stopped when its driver failed (the program runs under kpool run's launcher,
    which keeps its pid to itself). The number signalled."""
    name = Path(argv0).name
    count = 0
    try:
        found = psutil.Process().children(recursive=True)
    except psutil.Error:
        return 0
    for p in found:
        try:
            cmd = p.cmdline()
            if cmd and Path(cmd[0]).name == name:
                p.send_signal(sig)
                count += 1
        except psutil.Error:
            continue
    return count
