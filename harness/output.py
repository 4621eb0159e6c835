"""The only module that writes to the terminal.

Results (what a command produces) go to stdout; progress, warnings and errors go to stderr, so that a
command's output can be piped. Verbosity: 0 quiet, 1 normal, 2 verbose.
"""

from __future__ import annotations

import contextlib
import errno
import os
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
    except OSError as exc:
        if exc.errno != errno.EIO:
            raise
        _hung_up(stream)


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
