"""The processes of a `kpool run` program killed by a fault signal, as the preload records them.

A program's own death is what wait4 tells kpool run; a process the program started is the program's to wait
for, and its death by a signal was unseen (`sh -c 'crasher; true'` exited 0, and its child's SIGSEGV made no
line and no crash record). Under kpool run the preload (allocator/preload/preload.c, fault_record) writes
KPOOL_STATS_OUT/kpool-<pid>.signal as a fault signal (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGSYS) kills
a process: a line `kpool-signal 1 SIG PID PPID`, then the process's command line, NUL-separated. Only the
signals of faults: a process stopped on purpose (SIGTERM, SIGKILL, SIGPIPE, ^C) is no fault and writes none.
On a peer allocator (no preload) nothing is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness import output
from harness.triage import patterns

HEAD = "kpool-signal"
VERSION = "1"


@dataclass(frozen=True)
class ChildSignal:
    """One process that a fault signal killed: its pid, its parent's, the signal and its command line."""

    pid: int
    ppid: int
    signal: int
    argv: tuple[str, ...]

    @property
    def signal_name(self) -> str:
        return patterns.SIGNALS.get(self.signal) or f"signal {self.signal}"

    @property
    def command(self) -> str:
        return output.shell_join(self.argv) if self.argv else f"pid {self.pid}"

    def line(self) -> str:
        """How kpool run names it (the summary, and the crash text)."""
        return f"a child process died: {self.command} (pid {self.pid}) killed by {self.signal_name}"


def parse(data: bytes) -> ChildSignal | None:
    """One record's bytes, or None when they are not one (cut short, another version)."""
    head, nl, rest = data.partition(b"\n")
    fields = head.decode("ascii", "replace").split()
    if not nl or len(fields) != 5 or fields[0] != HEAD or fields[1] != VERSION:
        return None
    try:
        sig, pid, ppid = (int(f) for f in fields[2:])
    except ValueError:
        return None
    # a name in another encoding than UTF-8: surrogate escapes, as the OS hands argv to Python
    argv = tuple(a.decode("utf-8", "surrogateescape") for a in rest.split(b"\0") if a)
    return ChildSignal(pid=pid, ppid=ppid, signal=sig, argv=argv)


def read(folder: Path, *, pid: int | None = None, parent: int | None = None) -> list[ChildSignal]:
    """The records in folder (KPOOL_STATS_OUT), by pid, less the program's own, which its runner sees itself:
    the record of `pid`, or of a process whose parent is `parent` (GNU time, or the replay, started it)."""
    found = []
    for path in sorted(folder.glob("kpool-*.signal")):
        try:
            rec = parse(path.read_bytes())
        except OSError:
            continue
        if rec is None or rec.pid == pid or rec.ppid == parent:
            continue
        found.append(rec)
    return sorted(found, key=lambda r: r.pid)


def lines(children: list[ChildSignal]) -> str:
    """What a crash's text says of them (kpool run's record, and its replay: the same signature)."""
    return "".join(f"\nkpool: {child.line()}\n" for child in children)
