#!/usr/bin/env python3
"""Where a program's resident pages are as it exits (its peak, for the small benchmark programs): every
anonymous page named by the mmap that made it, every file page by its library.

    python3 scripts/peak_pages.py [--preload LIB] [--env NAME=VALUE]... -- PROG [ARG]...

PROG runs twice under strace with address randomisation off (setarch -R), held at exit_group's entry
for 3 s (strace's delay injection) while /proc/PID/smaps and /proc/PID/pagemap are read: once with -k,
whose stack of each mmap names the anonymous mappings (kpool's: segment_map's 8 MiB data reservation
and 4.1 MiB metadata, map_guarded's heap arena, the 16 GiB slice map, the backup's region and
granules, the pool structure; glibc's arenas and thread stacks), and once without, for the file pages
(-k's unwinding reads the libraries' pages and faults them in; anonymous pages it does not add). Pages
the kernel mapped from the zero page count as present here (smaps leaves them out): a few KiB.

Session 39 (s39-foot) measured with it where kpool's peak RSS over glibc's goes in the program
benchmarks (README's session 39 notes). Needs strace with -k and root (pagemap)."""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PAGE = 4096
HOLD = "3s"  # exit_group's entry held this long: the reads take well under a second
VDSO = ("[vvar]", "[vdso]", "[vsyscall]", "[vvar_vclock]")


def trace_events(path: Path) -> list[list]:
    """mmap, munmap and mremap in order: ["map", start, end, anon, stack], ["unmap", start, end],
    ["remap", old, old_end, new, new_end, stack]."""
    events: list[list] = []
    pending: dict[str, str] = {}
    cur: list | None = None
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(" > "):
            if cur is not None:
                cur[-1].append(line[3:])
            continue
        cur = None
        m = re.match(r"^(\d+)\s+(.*)$", line)
        if not m:
            continue
        pid, rest = m.groups()
        if rest.endswith("<unfinished ...>"):
            pending[pid] = rest[: -len("<unfinished ...>")]
            continue
        resumed = re.match(r"^<\.\.\. (\w+) resumed>(.*)$", rest)
        if resumed:
            rest = pending.pop(pid, resumed[1] + "(") + resumed[2]
        call = re.match(r"^(\w+)\((.*)\)\s+=\s+(\S+)", rest)
        if not call:
            continue
        name, args, ret = call.groups()
        a = [x.strip() for x in args.split(",")]
        if name == "mmap" and ret.startswith("0x"):
            start = int(ret, 16)
            cur = ["map", start, start + -(-int(a[1]) // PAGE) * PAGE, "MAP_ANON" in args, []]
        elif name == "munmap" and ret == "0":
            start = int(a[0], 16)
            events.append(["unmap", start, start + -(-int(a[1]) // PAGE) * PAGE])
        elif name == "mremap" and ret.startswith("0x"):
            old, new = int(a[0], 16), int(ret, 16)
            cur = ["remap", old, old + int(a[1]), new, new + int(a[2]), []]
        if cur is not None:
            events.append(cur)
    return events


def label_of(stack: list[str], size: int) -> str:
    """The first three frames above the mmap wrappers, and the mapping's size."""
    skip = {"", "mmap", "mmap64", "__mmap", "kp__os_map", "kp__os_reserve", "syscall"}
    frames = []
    for f in stack:
        m = re.match(r"^(\S+)\(([^+)]*)", f)
        if m and m[2] not in skip:
            lib = Path(m[1]).name
            frames.append(m[2] if "kpool" in lib else f"{lib}:{m[2]}")
        if len(frames) == 3:
            break
    return f"{' < '.join(frames) or '?'} [{size >> 10}K]"


def live_mappings(events: list[list]) -> list[list]:
    """[start, end, label] of the anonymous mappings left at the end."""
    live: list[list] = []

    def cut(s: int, e: int) -> None:
        out = []
        for iv in live:
            if iv[1] <= s or iv[0] >= e:
                out.append(iv)
                continue
            if iv[0] < s:
                out.append([iv[0], s, iv[2]])
            if iv[1] > e:
                out.append([e, iv[1], iv[2]])
        live[:] = out

    for ev in events:
        if ev[0] == "map":
            cut(ev[1], ev[2])
            if ev[3]:
                live.append([ev[1], ev[2], label_of(ev[4], ev[2] - ev[1])])
        elif ev[0] == "unmap":
            cut(ev[1], ev[2])
        else:
            lab = next((iv[2] for iv in live if iv[0] <= ev[1] < iv[1]), label_of(ev[5], ev[4] - ev[3]))
            cut(ev[1], ev[2])
            cut(ev[3], ev[4])
            live.append([ev[3], ev[4], lab])
    return sorted(live)


def smaps(pid: int) -> list[dict]:
    vmas: list[dict] = []
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \d+\s*(.*)$", line)
        if m:
            vmas.append({"start": int(m[1], 16), "end": int(m[2], 16), "perm": m[3], "name": m[4].strip()})
            continue
        k = re.match(r"^(\w+):\s+(\d+) kB", line)
        if k and vmas:
            vmas[-1][k[1]] = int(k[2])
    return vmas


def present(pagemap, start: int, end: int) -> list[int]:
    """Addresses of the pages of [start, end) present (pagemap's bit 63)."""
    out = []
    a = start
    while a < end:
        n = min(1 << 18, (end - a) // PAGE)
        pagemap.seek(a // PAGE * 8)
        high = pagemap.read(n * 8)[7::8]
        if any(high):
            out += [a + j * PAGE for j, b in enumerate(high) if b & 0x80]
        a += n * PAGE
    return out


def run(opts: argparse.Namespace, folder: Path, stacks: bool) -> tuple[str, list[dict], dict, list[list]]:
    """One run held at its exit: /proc/PID/status, smaps, the present pages of each anonymous VMA, the
    trace's events."""
    log = folder / ("trace-k" if stacks else "trace")
    cmd = [
        "setarch",
        "-R",
        "strace",
        "-f",
        "-qq",
        "-o",
        str(log),
        "-e",
        "trace=mmap,munmap,mremap,exit_group",
    ]
    cmd += ["-e", f"inject=exit_group:delay_enter={HOLD}"] + (["-k"] if stacks else [])
    for e in ([f"LD_PRELOAD={opts.preload}"] if opts.preload else []) + opts.env:
        cmd += ["-E", e]
    proc = subprocess.Popen(cmd + opts.cmd, stdout=subprocess.DEVNULL)
    pid = None
    while pid is None and proc.poll() is None:
        time.sleep(0.02)
        found = (
            re.search(r"^(\d+)\s+exit_group\(", log.read_text(errors="replace"), re.M)
            if log.exists()
            else None
        )
        pid = int(found[1]) if found else None
    if pid is None:
        sys.exit(f"{opts.cmd[0]} ended before it was seen at exit_group")
    status = Path(f"/proc/{pid}/status").read_text()
    vmas = smaps(pid)
    with Path(f"/proc/{pid}/pagemap").open("rb") as pm:
        pages = {
            v["start"]: present(pm, v["start"], v["end"])
            for v in vmas
            if v.get("Rss") and not v["name"].startswith("/") and v["name"] not in VDSO
        }
    proc.wait()
    return status, vmas, pages, trace_events(log)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preload", default="", help="a library for LD_PRELOAD")
    ap.add_argument("--env", action="append", default=[], help="NAME=VALUE for the program")
    ap.add_argument("--pages", default="", help="list the present pages of mappings whose label has this")
    ap.add_argument(
        "--sizes",
        action="store_true",
        help="one run, without -k: anonymous mappings named by their size alone (-k's ptrace stops slow a "
        "threaded program's threads and change how many heaps take segments at once: bench-thread-churn "
        "kept 1.3 MiB anonymous under -k, 0.5-0.9 without)",
    )
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    opts = ap.parse_args()
    opts.cmd = opts.cmd[1:] if opts.cmd[:1] == ["--"] else opts.cmd
    folder = Path(tempfile.mkdtemp(prefix="peak-pages-"))
    status, vmas, plain_pages, plain_events = run(opts, folder, False)
    kstatus, kvmas, pages, events = (
        (status, vmas, plain_pages, plain_events) if opts.sizes else run(opts, folder, True)
    )
    live = live_mappings(events)
    table: collections.Counter[str] = collections.Counter()
    for v in vmas:  # file pages: the run without -k
        if v["name"].startswith("/"):
            kind = {"r-xp": "text", "r--p": "read-only", "rw-p": "data"}.get(v["perm"], v["perm"])
            table[f"file {Path(v['name']).name} {kind}"] += v.get("Rss", 0)
    prev = None
    for v in kvmas:  # anonymous pages: the labelled run
        if v["name"] in ("[heap]", "[stack]"):
            table[v["name"]] += v.get("Rss", 0)
        elif v["start"] in pages:
            for a in pages[v["start"]]:
                lab = next((iv[2] for iv in live if iv[0] <= a < iv[1]), None)
                if lab is None and prev and prev["name"].startswith("/") and prev["end"] == v["start"]:
                    lab = f"bss of {Path(prev['name']).name}"
                table[f"anon {lab or '?'}"] += PAGE >> 10
        prev = v
    if opts.pages:
        for iv in live:
            if opts.pages in iv[2]:
                got = [hex(a - iv[0]) for v in kvmas for a in pages.get(v["start"], []) if iv[0] <= a < iv[1]]
                print(f"# pages of {iv[2]} at {iv[0]:#x}: {' '.join(got)}")

    def fig(text: str, key: str) -> str:
        found = re.search(rf"^{key}:\s+(\d+)", text, re.M)
        return found[1] if found else "?"

    print(
        f"# at exit_group: VmHWM {fig(status, 'VmHWM')} KiB, RssAnon {fig(status, 'RssAnon')} KiB; ", end=""
    )
    print(f"labelled run RssAnon {fig(kstatus, 'RssAnon')} KiB (its rows below)")
    for k, n in sorted(table.items(), key=lambda kv: (-kv[1], kv[0])):
        if n:
            print(f"{n:8d}  {k}")


if __name__ == "__main__":
    main()
