"""Crash signatures: the crash kind plus the top frames, normalised, hashed.

Two crashes with the same signature are the same bug as far as triage can tell. The signature must not
change with addresses, line numbers, build offsets or the path the harness took to reach the C code, so
frames are cleaned (patterns.CLEANUPS) and uninformative ones skipped (patterns.SKIP_RULES) before the top
`depth` are kept. A crash with no frames (a broken SLO, a timeout of a whole worker) is told apart by its
source (the workload or fuzz target) instead. An oracle's verdict that names the kind of violation and the
call it applies to (the fuzz driver's "VIOLATION overlap in kp_alloc") is signed with that call alone: the
stack under it shows which path of the interpreter reached the check, not which bug it caught. Frames of
the op drivers (allocator/driver/) are skipped like the harness's, unless nothing else is left.

A huge output (a leak report listing a million objects, a fuzzing log of hours with its report at the
end) is read only in part: its first HEAD_CHARS and its last TAIL_CHARS (`readable`), so that signing takes
about the same time whatever the size, and the signature is the one the report's own lines give. A file
(`kpool triage signature FILE`, a replay report, a fuzzing log) is read the same way, by `read_output`,
its middle never read.

The kind is chosen in this order: a strong text rule (a sanitizer bug type, an assertion, an exception...),
the producer's own guess, the signal in the return code, a weak text rule (SLO, generic timeout, benign
kpool events), a non-zero exit code, and last "unknown".
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from harness.triage import patterns as P
from harness.triage import threads
from harness.triage.crash import Crash

DEFAULT_DEPTH = 3  # three frames: enough to tell call sites apart, few enough to survive refactors
_DETAIL_MAX = 60  # characters of detail kept (an assertion's expression can be long)
_HASH_CHARS = 16  # 64 bits of sha256: no collision among the signatures one project will ever see
# A terminal's colour codes (ASAN_OPTIONS=color=always): "\x1b[1m\x1b[31m==1==ERROR: ..." and
# "    #0 0x4f1 in \x1b[1mkp_free\x1b[0m /k/src/alloc.c:700:3". Taken out before anything is read, with
# the other control characters (a newline and a tab aside), which no signature should carry.
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|[\x00-\x08\x0b-\x1f\x7f]")
# What is read of a crash output. A sanitizer report, a backtrace or a traceback is kilobytes; the largest
# real ones (a hang report with every thread's stack: 100 threads of 30 frames are about 400 KB) fit in
# the first MiB, read from the start. The last 256 KiB (what the crash database keeps of a text,
# db.TEXT_MAX) hold the report at the end of a fuzzing log. Reading every line of 50 MB took about 10 s.
HEAD_CHARS = 1 << 20
TAIL_CHARS = 256 << 10


@dataclass(frozen=True)
class Frame:
    func: str
    file: str = ""
    module: str = ""
    line: int = 0  # 0: unknown (never part of a signature: lines move with every edit)

    def name(self) -> str:
        """The stable name: a cleaned function, `stem.func` for Python, `<module>` when unsymbolized."""
        if not self.func:
            return f"<{PurePosixPath(self.module).name}>" if self.module else "?"
        if self.file.endswith(".py"):
            return f"{PurePosixPath(self.file).stem}.{self.func}"
        return clean_function(self.func)


@dataclass(frozen=True)
class Signature:
    kind: str
    detail: str
    frames: tuple[str, ...]
    where: str  # the source, for a signature without frames; "" otherwise

    @property
    def key(self) -> str:
        return "\n".join([self.kind, self.detail, *(self.frames or (f"@{self.where}",))])

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.key.encode()).hexdigest()[:_HASH_CHARS]

    @property
    def title(self) -> str:
        label = f"{self.kind} ({self.detail})" if self.detail else self.kind
        return f"{label} in {' < '.join(self.frames) or self.where or '?'}"


def clean_function(func: str) -> str:
    out = func.strip()
    for rule in P.CLEANUPS:
        if rule is P.TEMPLATE_CLEANUP:
            continue
        out = rule.regex.sub(rule.replacement, out)
    while True:  # nested templates, innermost first
        shorter = P.TEMPLATE_CLEANUP.regex.sub("", out)
        if shorter == out:
            break
        out = shorter
    return out.strip()


def normalise_detail(text: str) -> str:
    out = text.strip()
    for rule in P.DETAIL_NOISE:
        out = rule.regex.sub(rule.replacement, out)
    return out[:_DETAIL_MAX]


# ---- kinds -------------------------------------------------------------------------------------------


def canonical_kind(kind: str) -> str:
    """One name per signal whoever reported it; ASan's prose aliases to its dashed names."""
    if kind in P.SANITIZER_SIGNALS:
        return P.SANITIZER_SIGNALS[kind]
    if kind in P.SIGNAL_WORDS:
        return P.SIGNAL_WORDS[kind]
    if kind.startswith("signal ") and kind[7:].isdigit():
        return signal_name(int(kind[7:]))
    return P.ASAN_ALIASES.get(kind) or P.TSAN_ALIASES.get(kind, kind)


def signal_name(number: int) -> str:
    return P.SIGNALS.get(number, f"signal-{number}")


def signal_of(returncode: int | None) -> str | None:
    """The signal a return code reports: negative from subprocess, 128+N from a shell."""
    if returncode is None or returncode == 0:
        return None
    if returncode < 0:
        return signal_name(-returncode)
    if returncode > 128 and returncode - 128 in P.SIGNALS:
        return signal_name(returncode - 128)
    return None


def _text_kind(text: str, weak: bool) -> tuple[str, str, str] | None:
    """(kind, detail, frame) of the first rule of this strength that matches; frame "" but for a
    verdict that names where it applies."""
    for rule in P.KIND_RULES:
        if rule.weak != weak:
            continue
        found = list(rule.regex.finditer(text)) if rule.last else [m for m in [rule.regex.search(text)] if m]
        if not found:
            continue
        groups = {k: v or "" for k, v in found[-1].groupdict().items()}
        detail = normalise_detail(rule.detail.format(**groups)) if rule.detail else ""
        frame = rule.frame.format(**groups) if rule.frame else ""
        return canonical_kind(rule.kind.format(**groups)), detail, frame
    return None


def _classify(text: str, returncode: int | None, guess: str | None) -> tuple[str, str, str]:
    strong = _text_kind(text, weak=False)
    if strong:
        return strong
    if guess:
        return guess, "", ""
    sig = signal_of(returncode)
    if sig:
        return sig, "", ""
    weak = _text_kind(text, weak=True)
    if weak:
        return weak
    if returncode:
        return "exit-code", str(returncode), ""
    return "unknown", "", ""


def readable(text: str) -> str:
    """The part of a crash output that signing reads: all of it up to HEAD_CHARS + TAIL_CHARS; past that,
    its first HEAD_CHARS and last TAIL_CHARS cut at line ends, a blank line between them (which ends any
    stack the cut went through)."""
    if len(text) <= HEAD_CHARS + TAIL_CHARS:
        return text
    return readable_parts(text[:HEAD_CHARS], text[-TAIL_CHARS:])


# A stream (a pipe) is read on to its end in pieces of this size, the last TAIL_CHARS bytes kept.
_CHUNK = 1 << 20


# A pipe (or FIFO) is read to its end, up to this many bytes: a crash report, even a night's fuzzing log
# in fork mode (hundreds of MB), is less; a writer that never stops (`yes |`) is an error past it, not a
# read that never ends.
PIPE_MAX = 1 << 30


# How long a FIFO no one has opened for writing is waited for (`mkfifo f; prog 2>f &` opens it a moment
# after kpool may): long enough for a program to start, short enough that a FIFO with no writer is an
# error, not a hang.
FIFO_WAIT_S = 5.0


def _first_byte(fd: int) -> bytes:
    """The first byte of a pipe opened without blocking, once a writer is there (b"" when its writer
    closed it empty); OSError when no writer came within FIFO_WAIT_S."""
    deadline = time.monotonic() + FIFO_WAIT_S
    while True:
        try:
            first = os.read(fd, 1)
        except BlockingIOError:  # a writer, no byte yet: the blocking reads wait for it
            return b""
        if first:
            return first
        # end of file: no writer (yet), or it wrote nothing and closed
        if time.monotonic() >= deadline:
            raise OSError(errno.ENODATA, f"nothing to read (no writer opened the pipe in {FIFO_WAIT_S:g} s)")
        time.sleep(0.05)


def read_output(path: Path) -> str:
    """The part of a crash output file that signing reads (`readable`), without reading the rest: its first
    HEAD_CHARS and last TAIL_CHARS bytes (a seek to the end of a file; a pipe read through, its last bytes
    kept), decoded with errors replaced. The memory it takes is bounded whatever the file's size; a file of
    50 MB read whole was a string of 200 MB (each byte that is not UTF-8 one replacement character).

    OSError (its strerror saying why) for what is neither a regular file nor a pipe: a device such as
    /dev/zero never ends (it was read forever), a folder; for a FIFO with nothing to read (no writer:
    opened without waiting for one, where open() waited forever; one is waited for FIFO_WAIT_S); and for
    a pipe past PIPE_MAX bytes."""
    limit = HEAD_CHARS + TAIL_CHARS
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO's open waits for no writer
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        regular, stream = stat.S_ISREG(st.st_mode), stat.S_ISFIFO(st.st_mode) or stat.S_ISSOCK(st.st_mode)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        if not regular and not stream:
            raise OSError(
                errno.EINVAL, "not a regular file or a pipe (a device such as /dev/zero never ends)"
            )
        first = b"" if regular else _first_byte(fd)
        os.set_blocking(fd, True)  # a writer is there: wait for its bytes
        head = first + f.read(limit + 1 - len(first))
        if len(head) <= limit:  # all of it
            return head.decode(errors="replace")
        head, kept = head[:HEAD_CHARS], bytearray(head[HEAD_CHARS:])
        if regular and st.st_size > limit:
            f.seek(st.st_size - TAIL_CHARS)
            tail = f.read(TAIL_CHARS)
        else:  # a pipe, or a file that grew: no size to seek by
            total = len(head) + len(kept)
            while chunk := f.read(_CHUNK):
                total += len(chunk)
                if not regular and total > PIPE_MAX:
                    raise OSError(
                        errno.EFBIG, f"more than {PIPE_MAX >> 20} MiB from a pipe: save it to a file"
                    )
                kept += chunk
                del kept[:-TAIL_CHARS]
            tail = bytes(kept)
    return readable_parts(head.decode(errors="replace"), tail.decode(errors="replace"))


def readable_parts(head: str, tail: str) -> str:
    """A head and a tail of a text too long to read whole, cut at line ends (a line cut in two would be
    read as another), a blank line between them (which ends any stack the cut went through)."""
    head = head[: head.rfind("\n") + 1] or head
    tail = tail[tail.find("\n") + 1 :]
    return f"{head}\n{tail}"


def classify(text: str, returncode: int | None = None, guess: str | None = None) -> tuple[str, str]:
    """(kind, detail) of a crash; see the module docstring for the order."""
    kind, detail, _ = _classify(readable(text), returncode, guess)
    return kind, detail


# ---- frames ------------------------------------------------------------------------------------------


def _stacks(text: str) -> list[tuple[str, list[Frame]]]:
    """Every stack in the text, each innermost frame first, with the name of the rule that read it.

    A stack ends at a blank line, at a frame numbered #0, at a traceback header, or where the frame
    format changes; other lines (a traceback's source lines) do not end it.
    """
    stacks: list[tuple[str, list[Frame]]] = []
    current: list[Frame] = []
    current_rule: P.FrameRule | None = None

    def close() -> None:
        nonlocal current, current_rule
        if current and current_rule:
            frames = current[::-1] if current_rule.order == "outermost-first" else current
            stacks.append((current_rule.name, frames))
        current, current_rule = [], None

    for line in text.splitlines():
        if not line.strip() or line.startswith(
            ("Traceback (most recent call last)", "Current thread", "Thread 0x")
        ):
            close()
            continue
        for rule in P.FRAME_RULES:
            m = rule.regex.match(line)
            if m:
                groups = m.groupdict()
                if current_rule is not rule or groups.get("n") == "0":
                    close()
                current_rule = rule
                line_no = int(groups.get("line") or 0)
                current.append(
                    Frame(
                        groups.get("func") or "",
                        groups.get("file") or "",
                        groups.get("module") or "",
                        line_no,
                    )
                )
                break
    close()
    return stacks


def _skipped(frame: Frame, soft: bool) -> bool:
    if soft and not frame.func:
        return True
    for rule in P.SKIP_RULES:
        if rule.soft == soft:
            # Function rules see the stable name: cleaned C++, or `stem.func` for Python (so that a
            # Python method called `free` is not taken for the libc one).
            value = frame.name() if rule.field == "func" and frame.func else getattr(frame, rule.field)
            if value and rule.regex.search(value):
                return True
    return False


def interesting_frames(frames: list[Frame]) -> list[Frame]:
    """Frames without the runtime, libc, libFuzzer, interpreter and, unless nothing else is left, harness."""
    kept = [f for f in frames if not _skipped(f, soft=False)]
    return [f for f in kept if not _skipped(f, soft=True)] or kept


def crash_frames(text: str, kind: str) -> list[Frame]:
    """The stack that shows the crash: the last traceback for a Python exception, else the first stack."""
    stacks = _stacks(text)
    if kind == "python-exception":
        stacks = [s for s in stacks if s[0] == "python"] or stacks
        return stacks[-1][1] if stacks else []
    for _, frames in stacks:  # the first stack with something left after skipping
        if interesting_frames(frames):
            return frames
    return stacks[0][1] if stacks else []


def race_frames(text: str) -> tuple[str, ...]:
    """A race's two accesses: the innermost interesting frame of each of the report's first two stacks,
    sorted, so that a race reported with its accesses either way round has one signature."""
    firsts: list[str] = []
    for _, frames in _stacks(text):
        kept = interesting_frames(frames)
        if kept:
            firsts.append(kept[0].name())
        if len(firsts) == 2:
            break
    return tuple(sorted(set(firsts)))


def hang_frames(text: str, depth: int = DEFAULT_DEPTH) -> tuple[str, ...]:
    """A hang's frames, from the threads that were running the input (threads.py): one such thread, its
    top frames; several (a deadlock between them), the innermost interesting frame of each, sorted, so that
    the order in which the threads were listed does not matter. () when the report lists no such thread."""
    stacks = [interesting_frames(crash_frames(t.text, "timeout")) for t in threads.stuck(text)]
    stacks = [s for s in stacks if s]
    if len(stacks) == 1:
        return _top_names(stacks[0], depth)
    return tuple(sorted({s[0].name() for s in stacks}))


def _top_names(frames: list[Frame], depth: int) -> tuple[str, ...]:
    names: list[str] = []
    for f in frames:
        name = f.name()
        if name and (not names or names[-1] != name):  # recursion collapses to one frame
            names.append(name)
        if len(names) == depth:
            break
    return tuple(names)


def compute(
    text: str,
    *,
    returncode: int | None = None,
    guess: str | None = None,
    source: str = "",
    depth: int = DEFAULT_DEPTH,
) -> Signature:
    text = _CONTROL.sub("", readable(text))
    kind, detail, frame = _classify(text, returncode, guess)
    if frame:  # a verdict that names where it applies: the same bug whatever path reached the check
        return Signature(kind, detail, (frame,), "")
    if kind in P.RACE_KINDS:
        pair = race_frames(text)
        if pair:
            return Signature(kind, detail, pair, "")
    if kind in P.HANG_KINDS:
        stuck = hang_frames(text, depth)
        if stuck:
            return Signature(kind, detail, stuck, "")
    names = _top_names(interesting_frames(crash_frames(text, kind)), depth)
    return Signature(kind, detail, names, "" if names else source)


def with_pool_events(text: str, figures: Iterable[Mapping[str, Any]]) -> str:
    """A preloaded program's output with its pool's integrity events (the figures the preload writes at
    exit and before an integrity abort: KPOOL_STATS_OUT's kpool-<pid>.json) put first as the preload's own
    lines, when the output holds none: a program that closed its stderr (a daemon), or sent it elsewhere,
    or wrote more than is kept after the line, would be filed as a bare SIGABRT, or "unknown" when it went
    on (on_error:log), beside every other crash of that program. The text as it is otherwise."""
    if P.KPOOL_VIOLATION_LINE.search(text):
        return text
    lines = []
    for doc in figures:
        events = doc.get("integrity")
        for ev in events if isinstance(events, list) else []:
            if not isinstance(ev, Mapping):
                continue
            kind, what, call = (ev.get(key) for key in ("kind", "text", "call"))
            if isinstance(kind, str) and isinstance(what, str):
                where = f" in {call}" if isinstance(call, str) and call else ""
                lines.append(f"kpool 0.000 {kind} {what}{where}\n")
    return "".join(lines) + text


def of_crash(crash: Crash, depth: int = DEFAULT_DEPTH) -> Signature:
    return compute(
        crash.text, returncode=crash.returncode, guess=crash.kind, source=crash.source, depth=depth
    )
