"""Every thread's stack of a stress worker killed at its time limit, in the format of the fuzz library's
hang dump (allocator/driver/fuzz_stacks.c), so that triage signs the hang with the thread that hangs
(harness/triage/threads.py) the same way for both.

Two sources, the first that gives anything (worker.py runs them, before its SIGKILL):
- gdb (`gdb -batch -p PID -ex 'thread apply all bt'`): each thread's user-space stack. A thread is
  "running the workload" when its stack is kpdrive's op thread (driver.c `thread_main`, `run_loop`),
  "idle" for the pool's daemon and kpdrive's monitor, "interfering" for interference threads, "waiting for
  the workload's threads" for the main thread (it joins the others). A program that is no kpdrive (no op
  thread found): every thread but the main one, the daemon and the monitor is running it.
- /proc/PID/task/*/{comm,wchan,syscall,stack} when gdb is missing or cannot attach: where each thread
  sleeps in the kernel; no user frames, so no thread is named as stuck ("state unknown").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from harness.triage import patterns as P

# 'Thread 3 (Thread 0x7f1c2d3fe6c0 (LWP 12346) "kpdrive"):' (gdb 13; older ones leave out the name).
GDB_THREAD_RE = re.compile(
    r'^Thread \d+ \(Thread 0x[0-9a-f]+ \(LWP (?P<tid>\d+)\)(?: "(?P<name>[^"]*)")?\):$'
)
GDB_THREAD_EXAMPLE = 'Thread 3 (Thread 0x7f1c2d3fe6c0 (LWP 12346) "kpdrive"):'
assert GDB_THREAD_RE.match(GDB_THREAD_EXAMPLE)
# A gdb frame line: "#2  0x0000 in run_loop (t=0x1) at driver/driver.c:600", "#0  kp_alloc (p=1) at a.c:3",
# "#0  0x7f in clock_nanosleep () from /lib/libc.so.6".
GDB_FRAME_RE = re.compile(
    r"^#(?P<n>\d+)\s+(?:(?P<addr>0x[0-9a-f]+) in )?(?P<func>[\w:~<>.]+) \(.*\)"
    r"(?: at (?P<file>\S+:\d+)| from (?P<module>\S+))?$"
)
GDB_FRAME_EXAMPLE = "#2  0x0000555555551000 in run_loop (t=0x1) at allocator/driver/driver.c:600"
assert GDB_FRAME_RE.match(GDB_FRAME_EXAMPLE)
# kpdrive's op threads (driver.c), and the threads that serve rather than run the workload.
OP_THREAD = ("run_loop", ("thread_main", "driver.c"))
IDLE_FUNCS = frozenset({"daemon_main", "monitor_main"})
INTERFERE_FILE = "interfere.c"
RUNNING, WAITING, IDLE, INTERFERING, UNKNOWN = (
    P.THREAD_RUNNING_WORKLOAD,
    "waiting for the workload's threads",
    "idle",
    "interfering",
    "state unknown (no user stack: gdb missing or refused)",
)
# The dump's first and last lines, as the fuzz library writes them.
END = "==kpfuzz== end of stacks"
# The text kept in the crash record (a worker has a few threads; gdb prints a few lines each).
MAX_CHARS = 64 * 1024


@dataclass(frozen=True)
class Thread:
    tid: int
    name: str
    lines: tuple[str, ...]  # its stack, as the source printed it

    def frames(self) -> list[tuple[str, str]]:
        """(function, file name) of each gdb frame line, innermost first."""
        out = []
        for line in self.lines:
            m = GDB_FRAME_RE.match(line)
            if m:
                out.append((m["func"], (m["file"] or "").rsplit(":", 1)[0].rsplit("/", 1)[-1]))
        return out

    def sanitizer_lines(self) -> list[str]:
        """The stack as a sanitizer prints one ("    #1 0x.. in kp_alloc allocator/src/alloc.c:40"), the
        form triage reads in a fuzz hang's dump; a line that is no frame is kept as it is."""
        out = []
        for line in self.lines:
            m = GDB_FRAME_RE.match(line)
            if not m:
                out.append(line)
                continue
            where = m["file"] or (f"({m['module']}+0x0)" if m["module"] else "")
            out.append(f"    #{m['n']} {m['addr'] or '0x0'} in {m['func']} {where}".rstrip())
        return out


def parse_gdb(text: str) -> list[Thread]:
    """The threads of `thread apply all bt` output, in its order ([] when there are none)."""
    threads: list[Thread] = []
    current: tuple[int, str] | None = None
    lines: list[str] = []
    for line in text.splitlines():
        m = GDB_THREAD_RE.match(line.strip())
        if m:
            if current:
                threads.append(Thread(current[0], current[1], tuple(lines)))
            current, lines = (int(m["tid"]), m["name"] or ""), []
        elif current and line.startswith("#"):
            lines.append(line.rstrip())
    if current:
        threads.append(Thread(current[0], current[1], tuple(lines)))
    return threads


def _is_op_thread(t: Thread) -> bool:
    return any(
        func == "run_loop" or (func == "thread_main" and where == "driver.c") for func, where in t.frames()
    )


def states(threads: list[Thread], pid: int) -> dict[int, str]:
    """What each thread was doing for the workload (see the module's opening comment)."""
    ops = {t.tid for t in threads if _is_op_thread(t)}
    out = {}
    for t in threads:
        frames = t.frames()
        if t.tid == pid:
            out[t.tid] = WAITING
        elif any(func in IDLE_FUNCS for func, _ in frames):
            out[t.tid] = IDLE
        elif ops:
            running = t.tid in ops
            out[t.tid] = (
                RUNNING if running else INTERFERING if any(w == INTERFERE_FILE for _, w in frames) else IDLE
            )
        else:  # no kpdrive: every other thread runs the program
            out[t.tid] = RUNNING
    return out


def _header(tid: int, name: str, state: str) -> str:
    return f'==kpfuzz== thread {tid} "{name}" {state}'


def dump(pid: int, why: str, threads: list[Thread]) -> str:
    """The dump of gdb's threads: a header per thread with its state, its stack, a blank line."""
    found = states(threads, pid)
    out = [f"==kpfuzz== STACKS: worker {pid} {why}: every thread's stack (gdb)"]
    for t in threads:
        out += [_header(t.tid, t.name, found[t.tid]), *t.sanitizer_lines(), ""]
    out.append(END)
    return _cap("\n".join(out) + "\n")


def dump_proc(pid: int, why: str, tasks: Mapping[int, Mapping[str, str]]) -> str:
    """The dump from /proc: per thread (tid: {"comm", "wchan", "syscall", "stack"}) where it sleeps in the
    kernel, with no state (the user stack is unknown)."""
    out = [f"==kpfuzz== STACKS: worker {pid} {why}: every thread's kernel side (/proc; no gdb)"]
    for tid, files in sorted(tasks.items()):
        out.append(_header(tid, files.get("comm", "").strip(), UNKNOWN))
        out.append(f"wchan: {files.get('wchan', '').strip() or '?'}")
        out.append(f"syscall: {files.get('syscall', '').strip() or '?'}")
        out += [f"kernel: {ln.strip()}" for ln in files.get("stack", "").splitlines() if ln.strip()]
        out.append("")
    out.append(END)
    return _cap("\n".join(out) + "\n")


def _cap(text: str) -> str:
    if len(text) <= MAX_CHARS:
        return text
    return text[: MAX_CHARS - len(END) - 40] + f"\n... (cut at {MAX_CHARS} characters)\n{END}\n"
