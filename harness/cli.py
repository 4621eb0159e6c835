"""The `kpool` command: parse, dispatch, print. No logic of its own."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from harness import binding, build, output
from harness.errors import KpoolError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kpool", description="Fuzz, stress and benchmark libkpool.")
    parser.add_argument("-q", "--quiet", action="store_const", const=0, dest="verbosity", default=1)
    parser.add_argument("-v", "--verbose", action="store_const", const=2, dest="verbosity")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("build", help="build a variant of libkpool and print the library's path")
    p.add_argument("--variant", choices=build.VARIANTS, default="release")
    p.set_defaults(run=_build)

    p = sub.add_parser("bench", add_help=False, help="the allocator benchmark (arguments are its own)")
    p.set_defaults(run=_bench)

    p = sub.add_parser("stress", add_help=False, help="run YAML workloads with worker processes (see --help)")
    p.set_defaults(run=_stress)

    p = sub.add_parser("options", help="print the pool configuration options as a Markdown table")
    p.set_defaults(run=_options)
    return parser


def _build(args: argparse.Namespace, rest: list[str]) -> int:
    output.result(str(build.build(args.variant)))
    return 0


def _bench(args: argparse.Namespace, rest: list[str]) -> int:
    try:  # imported here: the other commands must work without it
        bench = importlib.import_module("harness.bench")
    except ModuleNotFoundError as exc:
        if exc.name != "harness.bench":
            raise
        raise KpoolError("kpool bench is not available in this version") from exc
    code: int = bench.main(rest)
    return code


def _stress(args: argparse.Namespace, rest: list[str]) -> int:
    from harness.stress import command

    code: int = command.main(rest)
    return code


def _options(args: argparse.Namespace, rest: list[str]) -> int:
    rows = [(f"`{o['name']}`", o["kind"], f"`{o['default']}`", o["help"]) for o in binding.options()]
    output.result(output.markdown_table(("option", "kind", "default", "meaning"), rows))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command not in ("bench", "stress"):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    output.set_verbosity(args.verbosity)
    try:
        code: int = args.run(args, rest)
    except KpoolError as exc:
        output.error(str(exc))
        return 1
    except KeyboardInterrupt:
        output.error("interrupted")
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
