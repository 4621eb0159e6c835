"""The peak of a running program's anonymous memory (RssAnon), and its own peak RSS, sampled beside GNU
time's peak RSS.

A small program's peak RSS (VmHWM) swings by about 10% from run to run with ASLR: its file pages (the C
library's text and data, the allocator's own library) come in 64 KiB fault-around windows, and where those
windows fall changes from run to run. The memory an allocator itself takes for blocks and metadata is
anonymous: /proc/PID/status's RssAnon. The kernel keeps no high-water mark of it, so a thread reads it every
SAMPLE_S while the program runs and keeps the highest (`kpool bench --programs`' "anon ÷" columns). A peak
held for less than SAMPLE_S may be missed: the figure is a lower bound of the true peak, close to it for a
program whose memory grows and shrinks over more than a few samples.

GNU time's peak RSS (%M: the rusage maximum, which Linux keeps across exec) is at least that of what exec'd
the program: env(1)'s 1.56-1.68 MiB here (it loads the locale), more than a small program's own. kpool
run execs with a static kpool-exec instead (harness/run.py), whose floor (~0.5 MiB) is under any
program's: GNU time's figure is then the program's own peak, its exit included. Without it, the same
thread reads the program's own high-water mark (VmHWM, its address space's, from its exec on): a figure
no launcher inflates but short of the program's last SAMPLE_S, where a small program's checksum printf
and exit bring in new C library pages (bench-small-objects on glibc: sampled 1.25 MiB, with its exit
1.48-1.67; s36), and counted apart from the rusage maximum (`sleep`'s VmHWM read 1.84 MiB where GNU
time said 1.67).

GNU time's figure moves in steps (s39, Linux 6.18, 2 CPUs): the rusage maximum is taken from the RSS
counters' approximate read (per-CPU counters folded in batches of 32 pages), while /proc/PID/status sums
them exactly. A static program touching N anonymous pages then exiting: %M 956 KiB for N = 0-8, 1,084 for
16-40, 1,212 for 48-72; its RssAnon 96, 128, 160, 260, 288 KiB for N = 0, 8, 16, 40, 48. So a cut of
20 KiB can show as 0 or 128 KiB in %M (bench-small-objects with backup:0, 20 KiB less anonymous memory
at its exit by /proc: %M 1,748 KiB either way, ASLR off), and a small program's RSS ratio carries a step
of ~128 KiB (7-8% of 1.7 MiB) either way.
"""

from __future__ import annotations

import threading
from pathlib import Path

# 5 ms: bench-prodcons (about 0.5 s) gives ~100 samples, and a read of /proc/PID/status takes ~20 us, so
# the sampler takes under 1% of a CPU from the program it measures.
SAMPLE_S = 0.005


def status_kib(pid: int, key: str) -> int | None:
    """A KiB figure of /proc/PID/status (RssAnon, VmHWM); None once the process has ended (or is a zombie:
    no such line)."""
    try:
        # its Name: line is the program's file name, in whatever bytes the file system holds ($'\xff'prog)
        text = Path(f"/proc/{pid}/status").read_bytes().decode(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def rss_anon_kib(pid: int) -> int | None:
    """The process's RssAnon in KiB (None: ended)."""
    return status_kib(pid, "RssAnon")


def first_child(pid: int) -> int | None:
    """pid's first child (the program GNU time started), None while it has none."""
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    return int(kids[0]) if kids else None


class AnonPeak:
    """Samples a process's RssAnon until stop(): the program's own, or with `child` the first child of pid
    (the launcher's: GNU time forks the program, whose env execs it, so that the pid stays the program's)."""

    def __init__(self, pid: int, child: bool) -> None:
        self._pid, self._child = pid, child
        self._done = threading.Event()
        self.peak_kib: int | None = None
        self.own_hwm_kib: int | None = None  # the program's VmHWM when last seen
        self._thread = threading.Thread(target=self._run, name="kpool-anon", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        target = None if self._child else self._pid
        while not self._done.is_set():
            if target is None:
                target = first_child(self._pid)
            if target is not None:
                kib, hwm = rss_anon_kib(target), status_kib(target, "VmHWM")
                if kib is not None and (self.peak_kib is None or kib > self.peak_kib):
                    self.peak_kib = kib
                if hwm is not None and (self.own_hwm_kib is None or hwm > self.own_hwm_kib):
                    self.own_hwm_kib = hwm
            self._done.wait(SAMPLE_S)

    def stop(self) -> int | None:
        """Stop sampling: the highest RssAnon seen, KiB (None: the program ended before the first sample)."""
        self._done.set()
        self._thread.join()
        return self.peak_kib
