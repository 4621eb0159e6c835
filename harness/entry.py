"""The `kpool` command's entry point (pyproject.toml's [project.scripts]): harness.cli, and through it
most of kpool, is imported in here, so that Ctrl-C while Python loads them (a second or more on a loaded
machine) ends the command as an interrupt does, one line and exit 130, not with an import traceback. Only
the standard library's `sys` is imported before."""

from __future__ import annotations

import sys

INTERRUPTED = 130  # the exit status of every kpool command stopped by Ctrl-C (harness.cli)


def main() -> int:
    try:
        from harness import cli

        return cli.main()
    except KeyboardInterrupt:  # while loading, or in cli.main before its own handling of one
        sys.stderr.write("kpool: error: interrupted\n")
        return INTERRUPTED
