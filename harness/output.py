"""The only module that writes to the terminal.

Results (what a command produces) go to stdout; progress, warnings and errors go to stderr, so that a
command's output can be piped. Verbosity: 0 quiet, 1 normal, 2 verbose.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shlex
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import TextIO

_verbosity = 1


def set_verbosity(level: int) -> None:
    global _verbosity
    _verbosity = level


def _text(text: str) -> str:
    """text that any stream takes: bytes of an argument or a path that are not UTF-8 (surrogate escapes)
    written as \\udcXX, not an error of the stream (stdout is strict under a UTF-8 locale)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def shell_quote(word: str) -> str:
    """word as a shell word that gives its bytes back when pasted into bash (or zsh, ksh): shlex.quote's,
    or, where it holds bytes that are not UTF-8 (surrogate escapes: a folder named in another encoding)
    or characters a terminal does not show (a tab, a newline), ANSI-C quoting, $'...\\xfe...'. Before,
    a hint printed from such a folder showed `\\udcfe` (_text), which no shell turns back into the byte:
    pasted, it named another folder (s37-robust)."""
    if word.isprintable():  # a surrogate is not printable
        return shlex.quote(word)
    out = []
    for ch in word:
        if "\udc80" <= ch <= "\udcff":
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif ch in "\\'":
            out.append("\\" + ch)
        elif not ch.isprintable():
            out.extend(f"\\x{b:02x}" for b in ch.encode("utf-8", "surrogatepass"))
        else:
            out.append(ch)
    return "$'" + "".join(out) + "'"


def shell_join(argv: Iterable[str]) -> str:
    """A command to paste (a hint), each word shell_quote'd: shlex.join where every word is plain text."""
    return " ".join(shell_quote(w) for w in argv)


def _hung_up(stream: TextIO) -> None:
    """The stream's terminal is gone (the ssh session or the terminal window closed: every write fails
    with EIO, and SIGHUP is on its way): what it would say has no reader. Its descriptor goes to
    /dev/null, so that the command ends as an interrupt does (its report written, exit 130), not on a
    traceback of its last words."""
    with contextlib.suppress(OSError, ValueError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, stream.fileno())
        os.close(null)


@contextlib.contextmanager
def _terminal(stream: TextIO) -> Iterator[None]:
    try:
        yield
    except BrokenPipeError:  # `kpool ... | head`: the CLI ends quietly
        raise
    except OSError as exc:
        _hung_up(stream)
        if exc.errno == errno.EIO:
            return
        # a full disk under `kpool ... > file` (ENOSPC carries no file name): the error names the stream,
        # once (the descriptor now on /dev/null, the exit's flush of what is buffered does not fail again)
        if exc.filename is None:
            exc.filename = "standard output" if stream is sys.stdout else "standard error"
        raise


def _say(text: str, stream: TextIO) -> None:
    with _terminal(stream):
        print(text, file=stream, flush=True)


def result(text: str) -> None:
    """The product of a command, on stdout."""
    _say(_text(text), sys.stdout)


def progress(message: str) -> None:
    """A step under way; hidden when quiet."""
    if _verbosity >= 1:
        _say(f"kpool: {_text(message)}", sys.stderr)


def detail(message: str) -> None:
    """Verbose-only detail."""
    if _verbosity >= 2:
        _say(f"kpool: {_text(message)}", sys.stderr)


def relay(data: bytes) -> None:
    """Bytes a child process wrote to its stderr, passed on as they come (`kpool run` keeps a copy)."""
    with _terminal(sys.stderr):
        sys.stderr.flush()
        sys.stderr.buffer.write(data)
        sys.stderr.buffer.flush()


# The longest a long run's progress lines are apart: a CI log or a terminal still sees it alive every
# minute, and an hour-long run says so in about 70 lines, not thousands.
PACE_MAX_S = 60.0


class Pace:
    """When a run's next progress line is due: every `every_s` at first, then ever further apart (a tenth
    of the time elapsed, so that each line is about 10% further on) up to PACE_MAX_S; a caller's longer
    every_s (a silent run's hour) stands."""

    def __init__(self, every_s: float, t0: float) -> None:
        self.every_s, self.t0, self.last = every_s, t0, t0

    def due(self, now: float) -> bool:
        gap = max(self.every_s, min(PACE_MAX_S, (now - self.t0) / 10))
        if now - self.last < gap:
            return False
        self.last = now
        return True


def warn(message: str) -> None:
    _say(f"kpool: warning: {_text(message)}", sys.stderr)


def error(message: str) -> None:
    _say(f"kpool: error: {_text(message)}", sys.stderr)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table; `|` inside a cell is escaped."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    body = [line(headers), line(["---"] * len(headers))]
    body += [line(row) for row in rows]
    return "\n".join(body)
