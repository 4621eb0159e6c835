"""The only module that writes to the terminal.

Results (what a command produces) go to stdout; progress, warnings and errors go to stderr, so that a
command's output can be piped. Verbosity: 0 quiet, 1 normal, 2 verbose.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence

_verbosity = 1


def set_verbosity(level: int) -> None:
    global _verbosity
    _verbosity = level


def _text(text: str) -> str:
    """text that any stream takes: bytes of an argument or a path that are not UTF-8 (surrogate escapes)
    written as \\udcXX, not an error of the stream (stdout is strict under a UTF-8 locale)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def result(text: str) -> None:
    """The product of a command, on stdout."""
    print(_text(text), flush=True)


def progress(message: str) -> None:
    """A step under way; hidden when quiet."""
    if _verbosity >= 1:
        print(f"kpool: {_text(message)}", file=sys.stderr, flush=True)


def detail(message: str) -> None:
    """Verbose-only detail."""
    if _verbosity >= 2:
        print(f"kpool: {_text(message)}", file=sys.stderr, flush=True)


def relay(data: bytes) -> None:
    """Bytes a child process wrote to its stderr, passed on as they come (`kpool run` keeps a copy)."""
    sys.stderr.flush()
    sys.stderr.buffer.write(data)
    sys.stderr.buffer.flush()


def warn(message: str) -> None:
    print(f"kpool: warning: {_text(message)}", file=sys.stderr, flush=True)


def error(message: str) -> None:
    print(f"kpool: error: {_text(message)}", file=sys.stderr, flush=True)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table; `|` inside a cell is escaped."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    body = [line(headers), line(["---"] * len(headers))]
    body += [line(row) for row in rows]
    return "\n".join(body)
