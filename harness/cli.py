"""The `kpool` command: parse, dispatch, print. No logic of its own."""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from harness import binding, build, output, paths
from harness import fuzz as fuzz_targets
from harness.errors import KpoolError, UsageError
from harness.triage import commands, db, replay

# The longest input `kpool fuzz --max-len` accepts. libFuzzer keeps buffers of max_len bytes per worker
# (a value near SIZE_MAX dies in std::bad_alloc); a mebibyte is far above any input a target reads (the
# committed seeds and dictionaries are under 4 KiB).
MAX_LEN_CEILING = 1 << 20


def _integer(text: str, low: int, high: int | None = None) -> int:
    """An argparse `type=`: a bad value becomes a usage error (exit 2) that names it and the range."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < low or (high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise argparse.ArgumentTypeError(f"{text!r}: expected an integer {span}")
    return value


def positive(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _integer(text, 1)


def non_negative(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _integer(text, 0)


def _max_len(text: str) -> int:
    return _integer(text, 1, MAX_LEN_CEILING)


def _fuzz_seconds(text: str) -> int:
    return _integer(text, 1, fuzz_targets.MAX_SECONDS)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kpool", description="Fuzz, stress and benchmark libkpool.")
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_const",
        const=0,
        dest="verbosity",
        default=1,
        help="print results and errors only, no progress",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_const", const=2, dest="verbosity", help="print details too"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    what = "build a variant of libkpool and print the library's path"
    p = sub.add_parser("build", help=what, description=what[0].upper() + what[1:] + ".")
    p.add_argument(
        "--variant",
        choices=build.VARIANTS,
        default="release",
        help="release (-O2), debug, asan (ASan+UBSan), tsan, fuzz (clang, libFuzzer hooks) or coverage "
        "(default: %(default)s)",
    )
    p.set_defaults(run=_build)

    p = sub.add_parser("bench", add_help=False, help="the allocator benchmark (arguments are its own)")
    p.set_defaults(run=_bench)

    p = sub.add_parser(
        "campaign", add_help=False, help="the nightly job: build, fuzz, stress, triage, report"
    )
    p.set_defaults(run=_campaign)

    what = "rewrite <reports>/index.html, the index of the runs under the reports folder"
    p = sub.add_parser("report", help=what, description=what[0].upper() + what[1:] + ".")
    p.add_argument(
        "--reports",
        type=paths.given,
        default=None,
        metavar="DIR",
        help="the reports folder whose runs to index (default: $KPOOL_REPORTS, else reports/ in the "
        "current directory)",
    )
    p.set_defaults(run=_report)

    p = sub.add_parser("stress", add_help=False, help="run YAML workloads with worker processes (see --help)")
    p.set_defaults(run=_stress)

    what = "print the pool configuration options as a Markdown table"
    p = sub.add_parser("options", help=what, description=what[0].upper() + what[1:] + ".")
    p.set_defaults(run=_options)

    what = "check every capability kpool uses: what a missing one disables and the package that brings it"
    p = sub.add_parser("doctor", help=what, description=what[0].upper() + what[1:] + ".")
    p.set_defaults(run=_doctor)

    what = "fuzz libkpool with atheris/libFuzzer (ASan+UBSan inside the C code)"
    p = sub.add_parser(
        "fuzz",
        help=what,
        description=what[0].upper() + what[1:] + ". Exit status: 0 no crash, 1 a crash or a fuzzer "
        "failure, 2 a usage error, 130 interrupted.",
    )
    p.add_argument(
        "target",
        nargs="?",
        default="all",
        choices=(*fuzz_targets.TARGETS, "all"),
        metavar="TARGET",
        help=f"{', '.join(fuzz_targets.TARGETS)} or all (default: all, one after the other)",
    )
    p.add_argument(
        "--time",
        type=_fuzz_seconds,
        default=60,
        metavar="S",
        help=f"seconds per target, 1 to {fuzz_targets.MAX_SECONDS} (default: %(default)s)",
    )
    p.add_argument(
        "--jobs",
        type=positive,
        default=1,
        metavar="N",
        help="libFuzzer -fork=N worker processes, at most the CPUs kpool may use (more are run as that many, "
        "with a warning; default: %(default)s, no fork)",
    )
    instead = p.add_mutually_exclusive_group()
    instead.add_argument(
        "--merge", action="store_true", help="shrink the working corpus with -merge=1 instead"
    )
    instead.add_argument(
        "--coverage",
        action="store_true",
        help="instead: the share of libkpool's edges the working corpus and seeds reach",
    )
    p.add_argument(
        "--plant",
        type=non_negative,
        default=0,
        metavar="N",
        help="fuzz a build with planted bug N (default: %(default)s, none)",
    )
    p.add_argument(
        "--max-len",
        type=_max_len,
        default=None,
        metavar="B",
        help=f"longest input in bytes, 1 to {MAX_LEN_CEILING} (default: libFuzzer's default)",
    )
    p.add_argument(
        "--layout",
        default=None,
        metavar="L",
        help="the pools an input's first byte picks among: inline, outline or any (default: "
        "$KPOOL_FUZZ_LAYOUT, else any); a crash's reproducer keeps it",
    )
    p.add_argument("--keep-going", action="store_true", help="with --jobs: go on after a crash")
    p.add_argument(
        "--no-seeds",
        action="store_true",
        help="start from nothing: neither the committed seeds nor the working corpus (what the fuzzer finds "
        "by itself; its corpus stays in the run folder)",
    )
    p.add_argument(
        "--run-dir",
        type=paths.given,
        default=None,
        metavar="DIR",
        help="where this run writes; the folder of an earlier run, or of a run still going, is refused "
        "(default: <reports>/fuzz-<date and time>)",
    )
    p.add_argument(
        "--reports",
        type=paths.given,
        default=None,
        metavar="DIR",
        help="reports folder: runs and working corpora (default: $KPOOL_REPORTS, else reports/ in the "
        "current directory)",
    )
    p.set_defaults(run=_fuzz)

    _run_parser(sub)
    _triage_parser(sub)
    # room for more commands here (kpool doctor)
    return parser


def _run_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from harness import run

    what = "run a program on kpool (its preload library) or a peer allocator and print its figures"
    p = sub.add_parser(
        "run",
        help=what,
        usage="kpool run [--allocator NAME] [--conf OPTIONS] [--on-error abort|log] [--reports DIR]"
        " -- CMD ...",
        description=what[0].upper() + what[1:] + ": status, wall and CPU time, peak RSS and, on kpool, the "
        "pool's stats, integrity events, system calls by caller and daemon activity (on stderr, after the "
        "program's own output). A crash (a signal; an integrity error aborts) is recorded in the crash "
        "database with a reproducer for `kpool triage replay`. Exit status: the program's, 128+N when "
        "signal N killed it, 2 for a usage error.",
    )
    p.add_argument(
        "--allocator",
        choices=run.ALLOCATORS,
        default="kpool",
        help="kpool (libkpool-preload.so), glibc (no preload), or a peer loaded by LD_PRELOAD "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--conf",
        default=None,
        metavar="OPTIONS",
        help="kpool's pool options, key:value,... (`kpool options`), added after $KPOOL_CONF "
        "(default: none, the pool's defaults)",
    )
    p.add_argument(
        "--on-error",
        choices=run.ON_ERROR,
        default=None,
        help="on an integrity error: abort the program, or log and go on "
        "(default: $KPOOL_PRELOAD's on_error, else abort)",
    )
    p.add_argument(
        "--reports",
        type=paths.given,
        default=None,
        metavar="DIR",
        help="a crash is recorded in DIR/crashes.sqlite (default: $KPOOL_CRASH_DB, else $KPOOL_REPORTS, "
        "else reports/ in the current directory)",
    )
    p.add_argument(
        "program", nargs=argparse.REMAINDER, metavar="CMD", help="the command and its arguments, after --"
    )
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace, rest: list[str]) -> int:
    from harness import run

    program = list(args.program)
    if program[:1] == ["--"]:
        program = program[1:]
    if not program:
        raise UsageError("kpool run needs a command: kpool run [options] -- CMD ARGS...")
    paths.check_reports(args.reports or paths.reports(), args.reports is not None, create=False)
    return run.main(program, args.allocator, args.conf, args.on_error, args.reports or paths.reports())


def _triage_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "triage",
        help="crash signatures: list, show, replay, minimize, recheck, sarif",
        epilog=commands.EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--db",
        type=paths.given,
        default=db.DEFAULT_PATH,
        help="crash database; read only, never created here (default: %(default)s)",
    )
    tsub = p.add_subparsers(dest="triage_command", required=True, metavar="ACTION")

    def action(name: str, text: str) -> argparse.ArgumentParser:
        t = tsub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        if name != "signature":  # `kpool triage show 3 --db FILE` too, as options follow every other command
            t.add_argument(
                "--db",
                type=paths.given,
                default=argparse.SUPPRESS,  # absent here: the one before the action, else the default
                help="crash database, given after the action (default: triage's --db)",
            )
        return t

    def add_runs(t: argparse.ArgumentParser) -> None:
        t.add_argument(
            "-n",
            "--runs",
            type=commands.run_count,
            default=replay.DEFAULT_RUNS,
            metavar="N",
            help="replays per signature (default: %(default)s)",
        )

    t = action("list", "signatures, new ones first (no database: no crashes recorded)")
    t.set_defaults(run=lambda a, r: commands.list_signatures(a.db))
    t = action("show", "one signature with its occurrences and reproducers")
    t.add_argument("id", help="signature id or hash prefix (at least 4 characters)")
    t.set_defaults(run=lambda a, r: commands.show(a.db, a.id))
    t = action("replay", "rerun the reproducer N times and store the reproduction rate")
    t.add_argument("id", help="signature id or hash prefix (at least 4 characters)")
    add_runs(t)
    t.set_defaults(run=lambda a, r: commands.replay(a.db, a.id, a.runs))
    t = action("minimize", "shrink the reproducer while the same signature reproduces")
    t.add_argument("id", help="signature id or hash prefix (at least 4 characters)")
    t.set_defaults(run=lambda a, r: commands.minimize(a.db, a.id))
    t = action("recheck", "replay every open signature: fixed, still crashing or flaky")
    add_runs(t)
    t.set_defaults(run=lambda a, r: commands.recheck(a.db, a.runs))
    t = action("sarif", "every signature as SARIF 2.1.0 for code scanning (no database: an empty run)")
    t.add_argument(
        "--out",
        type=paths.given,
        default=None,
        metavar="FILE",
        help="write it here (default: standard output)",
    )
    t.set_defaults(run=lambda a, r: commands.sarif(a.db, a.out))
    t = action("signature", "print the signature (hash and title) of a crash text; reads no database")
    t.add_argument(
        "file",
        type=paths.given,
        help="a file holding the crash text: sanitizer report, backtrace, traceback, stderr",
    )
    t.add_argument(
        "--source",
        default="",
        help="fuzz target or workload the crash came from, named in the title of a crash without frames"
        " (default: none)",
    )
    t.add_argument(
        "--returncode",
        type=int,
        default=None,
        help="the crashed process's exit code (negative: killed by that signal), for a text that names"
        " no kind (default: none)",
    )
    t.set_defaults(run=lambda a, r: commands.signature_of_file(a.file, a.source, a.returncode))


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


def _campaign(args: argparse.Namespace, rest: list[str]) -> int:
    from harness import campaign

    return campaign.main(rest)


def _report(args: argparse.Namespace, rest: list[str]) -> int:
    from harness.report.writers import write_index

    reports: Path = args.reports or paths.reports()
    if not reports.exists():
        raise UsageError(f"no reports folder {reports} (give the folder of the runs with --reports DIR)")
    if not reports.is_dir():
        raise UsageError(f"--reports {reports} is not a folder")
    warnings: list[str] = []
    index = write_index(reports, warnings)
    for warning in warnings:
        output.warn(warning)
    output.result(str(index))
    return 0


def _stress(args: argparse.Namespace, rest: list[str]) -> int:
    from harness.stress import command

    code: int = command.main(rest)
    return code


def _options(args: argparse.Namespace, rest: list[str]) -> int:
    rows = [(f"`{o['name']}`", o["kind"], f"`{o['default']}`", o["help"]) for o in binding.options()]
    output.result(output.markdown_table(("option", "kind", "default", "meaning"), rows))
    return 0


def _doctor(args: argparse.Namespace, rest: list[str]) -> int:
    from harness import doctor

    return doctor.main()


def _fuzz(args: argparse.Namespace, rest: list[str]) -> int:
    from harness.fuzz import runner  # imported here: the other commands must work without atheris

    if args.merge and args.reports is not None:
        runner.check_utf8_path(args.reports.absolute(), "--reports")  # the fuzzer's own limit, said first
    if (args.coverage or args.merge) and args.reports is not None and not args.reports.is_dir():
        # both read the working corpora under it: a mistyped folder was made, and the seeds alone measured
        # (or merged into a corpus there), exit 0
        what = "--coverage measures" if args.coverage else "--merge shrinks"
        raise UsageError(f"--reports {args.reports}: no such folder; {what} the working corpora under it")
    if args.coverage:
        reports = args.reports or paths.reports()
        cov = runner.coverage(args.target, reports)

        def share(n: int) -> str:
            return f"{100 * n / cov.edges:.0f}%"

        cov_rows = [
            (c.target, str(c.inputs), str(c.covered), str(c.edges), share(c.covered)) for c in cov.targets
        ]
        if len(cov.targets) > 1:
            total = sum(c.inputs for c in cov.targets)
            cov_rows.append(("all", str(total), str(cov.union), str(cov.edges), share(cov.union)))
        output.result(
            output.markdown_table(("target", "inputs", "libkpool edges reached", "of", "share"), cov_rows)
        )
        file_rows = [
            (f.file, str(f.covered), str(f.edges), f"{100 * f.covered / f.edges:.0f}%") for f in cov.files
        ]
        output.result(output.markdown_table(("source", "edges reached", "of", "share"), file_rows))
        who = "no target's corpus" if len(cov.targets) > 1 else f"the {cov.targets[0].target} corpus never"
        output.result(
            f"libkpool functions {who} enters: {len(cov.missed)} of {cov.functions}"
            + "".join(f"\n  {f}" for f in cov.missed)
        )
        output.detail(f"written to {reports / 'coverage.json'}")
        return 0
    if args.merge:
        reports = args.reports or paths.reports()
        merged = [(t, str(a), str(b)) for t, a, b in runner.merge(args.target, reports)]
        output.result(output.markdown_table(("target", "inputs before", "inputs after"), merged))
        return 0
    paths.check_reports(args.reports or paths.reports(), args.reports is not None)
    run = runner.run(
        args.target,
        args.time,
        args.jobs,
        plant=args.plant,
        max_len=args.max_len,
        keep_going=args.keep_going,
        seeds=not args.no_seeds,
        run_dir=args.run_dir,
        reports=args.reports or paths.reports(),
        layout=args.layout,
    )
    rows = [
        (r.target, f"{r.seconds:.0f}", str(r.exec_per_s), str(r.cov), str(r.corpus), str(len(r.crashes)))
        for r in run.results
    ]
    output.result(output.markdown_table(("target", "s", "exec/s", "cov", "corpus", "crashes"), rows))
    for r in run.recovered:
        output.result(f"recovered {r['input']} (its run was killed): {r['signature']} [{r['status']}]")
    output.result(f"reports: {run.run_dir}")
    if run.unwritten:
        output.error(
            f"{run.unwritten}: the run's report could not be written; the table above is what it found"
        )
        return 1
    return 1 if run.crashed else 0


def _path_in_traceback(exc: BaseException) -> Path | None:
    """The path whose method raised exc, innermost first: a write that fails half-way (ENOSPC in
    Path.write_text) raises an OSError without a file name."""
    found, tb = None, exc.__traceback__
    while tb is not None:
        obj = tb.tb_frame.f_locals.get("self")
        found = obj if isinstance(obj, Path) else found
        tb = tb.tb_next
    return found


def _on_term(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _term_as_interrupt() -> Iterator[None]:
    """SIGTERM (`timeout`, a CI runner, systemd) and SIGHUP (the terminal or ssh session closed) end a
    command as Ctrl-C does: its children stopped and what finished kept, not the process gone at once
    with its children left running. A SIGHUP ignored (nohup) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {signal.SIGTERM: signal.signal(signal.SIGTERM, _on_term)}
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        old[signal.SIGHUP] = signal.signal(signal.SIGHUP, _on_term)
    try:
        yield
    finally:
        for signum, handler in old.items():
            signal.signal(signum, handler)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        Path.cwd()
    except FileNotFoundError:  # every default path (./reports) is relative to it
        output.error("the current folder no longer exists (deleted or moved away): cd to one that does")
        return 2
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command not in ("bench", "campaign", "stress"):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    output.set_verbosity(args.verbosity)
    try:
        with _term_as_interrupt():
            code: int = args.run(args, rest)
    except KpoolError as exc:
        output.error(str(exc))
        return exc.exit_code
    except BrokenPipeError:  # `kpool ... | head`: the reader has what it wanted; nothing failed
        with contextlib.suppress(OSError):  # no second error when Python flushes stdout at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except OSError as exc:  # the machine's refusal (a permission, a full disk), not a bug: one line
        filename = exc.filename or _path_in_traceback(exc)
        where = f"{filename}: " if filename else ""
        why = exc.strerror or str(exc)
        if isinstance(exc, FileExistsError) and filename and not Path(filename).is_dir():
            # mkdir of a folder given as --reports, --run-dir: a file, or /dev/null ("File exists")
            why = "a file, where a folder is expected" if Path(filename).is_file() else "not a folder"
        output.error(f"{where}{why}")
        # a name the file system cannot hold is one the user gave (--reports, --run-id, --db, a workload
        # path): a usage error, nothing ran (it was exit 1, a failure of the work)
        return 2 if exc.errno == errno.ENAMETOOLONG else 1
    except KeyboardInterrupt:
        output.error("interrupted")
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
