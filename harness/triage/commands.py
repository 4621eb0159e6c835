"""`kpool triage ...`: the subcommands behind the CLI. Output goes through harness.output only.

Every command takes the database's path and opens it for reading (CrashDB.open): none creates a database.
list, show and sarif read a database they cannot write (a read-only mount); replay, minimize and recheck
store results in it and refuse one.
A missing (or empty) database means that no crash was recorded there: `list` and `recheck` say so and
succeed; `show`, `replay` and `minimize` name a signature, so for them it is a usage error.

Exit codes (also in `kpool triage --help`):
  0  success: list/show/signature printed; replay or minimize reproduced the crash; recheck found every
     open signature fixed (or there was none)
  1  failure: the signature has no reproducer, a reproducer cannot run, a file cannot be read
  2  usage error: a bad argument, no such signature, or --db is not a crash database this kpool reads
     (missing, for show/replay/minimize; not SQLite; other tables; a newer schema)
  3  the crash did not reproduce (replay, minimize), or recheck found signatures still crashing or flaky
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from harness import atomic, output
from harness.errors import KpoolError, UsageError
from harness.triage import minimize as M
from harness.triage import replay as R
from harness.triage import signature as S
from harness.triage.db import FIXED, CrashDB, CrashDBError, MissingCrashDB, SignatureRow

EXIT_OK, EXIT_ERROR, EXIT_NOT_REPRODUCED = 0, 1, 3
EXIT_CODES_HELP = """A missing --db means no crashes recorded: list and recheck say so (exit 0); show, replay
and minimize stop (exit 2). No triage command creates a database; the campaign does.

exit codes:
  0  success (replay/minimize: the crash reproduced; recheck: every open signature is fixed)
  1  failure (no reproducer, a reproducer that cannot run, an unreadable file)
  2  usage error (bad arguments, no such signature, --db missing or not a crash database this kpool reads)
  3  replay/minimize: the crash did not reproduce; recheck: some signatures still crash or are flaky"""


# The most replays one signature gets: each is a process run to its end (up to its time-out), and the count
# is stored in a 64-bit INTEGER column; 10^23 was taken and would never have finished.
MAX_RUNS = 100_000


def run_count(text: str) -> int:
    """argparse type of -n/--runs: a whole number, 1 to MAX_RUNS (a bad one is a usage error, exit 2)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_RUNS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of runs (expected a whole number from 1 to {MAX_RUNS})"
        )
    return value


def _rate(row: SignatureRow) -> str:
    """How the signature replayed: '-' never replayed; 'non-reproducible (0 of 3)', 'flaky (40% of 5)',
    'reproducible (100% of 5)'."""
    if row.repro_rate is None:
        return "-"
    if row.repro_rate == 0:
        return f"non-reproducible (0 of {row.repro_runs})"
    word = "reproducible" if row.repro_rate == 1 else "flaky"
    return f"{word} ({row.repro_rate:.0%} of {row.repro_runs})"


def list_signatures(path: Path) -> int:
    try:
        db = CrashDB.open(path, write=False)
    except MissingCrashDB as exc:
        output.progress(str(exc))
        return EXIT_OK
    rows = db.signatures()
    if not rows:
        output.progress(f"no crashes in {db.path}")
        return EXIT_OK
    table = [
        (str(r.id), r.status, str(r.count), r.kind, r.title, _rate(r), r.last_seen[:19].replace("T", " "))
        for r in rows
    ]
    headers = ("id", "status", "count", "kind", "title", "replays", "last seen")
    output.result(output.markdown_table(headers, table))
    return EXIT_OK


def show(path: Path, ref: str) -> int:
    db = CrashDB.open(path, write=False)
    row = db.get(ref)
    lines = [
        f"signature {row.id}  {row.hash}",
        f"title      {row.title}",
        f"kind       {row.kind}" + (f" ({row.detail})" if row.detail else ""),
        f"frames     {' < '.join(row.frames) or '-'}",
        f"status     {row.status}" + (f" (new in run {row.new_run})" if row.status == "new" else ""),
        f"seen       {row.count} times in {row.runs} runs, first {row.first_seen}, last {row.last_seen}",
        f"replayed   {_rate(row)}" + (f" at {row.checked_at}" if row.checked_at else ""),
    ]
    if row.min_reproducer:
        lines.append(f"minimised  {row.min_reproducer.to_json()}")
    for occ in db.occurrences(row.id):
        lines.append("")
        lines.append(
            f"occurrence {occ.id}: run {occ.run_id}, {occ.time}, source {occ.source}, rc {occ.returncode}"
        )
        if occ.reproducer:
            argv, env = occ.reproducer.command()
            lines.append(f"  reproducer {occ.reproducer.to_json()}")
            lines.append(f"  command    {' '.join(argv)}" + (f"  env {json.dumps(env)}" if env else ""))
        if occ.text_path:
            lines.append(f"  text       {occ.text_path}")
    last = db.occurrences(row.id)[-1:]
    if last:
        lines += ["", "latest text:", last[0].text.rstrip()]
    output.result("\n".join(lines))
    return EXIT_OK


def replay(path: Path, ref: str, runs: int) -> int:
    db = CrashDB.open(path)
    row = db.get(ref)
    output.progress(f"replaying signature {row.id} ({row.title}) {runs} times")
    result, _ = R.replay_signature(db, row, runs, update_status=False)
    if (repro := db.reproducer(row.id)) and repro.meta.get("history"):
        output.progress(f"  with the inputs since the fuzz pools were made: {repro.meta['history']}")
    verdict = "non-reproducible: " if not result.reproduced else ""
    output.result(
        f"signature {row.id}: {verdict}reproduced {result.reproduced} of {result.runs} ({result.rate:.0%})"
    )
    for title, n in result.others.most_common():
        output.result(f"  otherwise {n}x: {title}")
    if result.interrupted:
        output.error(f"interrupted after {result.runs} of {runs} replays; their rate is stored")
        return 130
    return EXIT_OK if result.reproduced else EXIT_NOT_REPRODUCED


def minimize(path: Path, ref: str) -> int:
    db = CrashDB.open(path)
    row = db.get(ref)
    repro = db.reproducer(row.id)
    if repro is None:
        raise KpoolError(f"signature {row.id} has no reproducer")
    gone = repro.missing()
    if gone is not None:
        raise KpoolError(f"signature {row.id}: its reproducer's {gone} is gone (moved or deleted)")
    output.progress(f"minimising signature {row.id} ({row.title})")
    done = M.minimize(repro, row.hash, db.source(row.id), on_step=lambda s: output.progress(f"kept: {s}"))
    if not done.steps:
        first = R.run_once(repro, db.source(row.id))
        if first.signature.hash != row.hash:
            output.result(f"signature {row.id}: the reproducer does not reproduce ({first.signature.title})")
            return EXIT_NOT_REPRODUCED
        if not done.tried:
            output.result(
                f"signature {row.id}: nothing to try: the reproducer's command takes no size it could cut"
                " (ops, processes, threads through ${...} placeholders); it is kept as it is"
            )
        else:
            output.result(
                f"signature {row.id}: none of {done.tried} smaller candidates reproduces ({done.runs} runs);"
                " the reproducer is kept as it is"
            )
        return EXIT_OK
    db.set_minimized(row.id, done.reproducer)
    argv, _ = done.reproducer.command()
    output.result(
        f"signature {row.id}: minimised, {done.tried} candidates in {done.runs} runs"
        f" ({'; '.join(done.steps)})"
    )
    output.result(f"  command {' '.join(argv)}")
    if done.interrupted:
        output.error("interrupted; the smallest reproducer found so far is stored")
        return 130
    return EXIT_OK


def recheck(path: Path, runs: int) -> int:
    try:
        db = CrashDB.open(path)
    except MissingCrashDB as exc:
        output.progress(str(exc))
        return EXIT_OK

    def report(row: SignatureRow, result: R.ReplayResult | None, status: str) -> None:
        try:
            repro = db.reproducer(row.id) if result is None else None
            rate = "no reproducer" if repro is None else "input gone"
        except CrashDBError:  # said by the recheck
            rate = "damaged"
        rate = rate if result is None else f"{result.reproduced}/{result.runs}"
        output.result(f"{row.id:>4}  {status:<6} {rate:<14} {row.title}")

    statuses = R.recheck(db, runs, on_signature=report)
    still = [sid for sid, status in statuses.items() if status != FIXED]
    output.progress(
        f"rechecked {len(statuses)} signatures: {len(statuses) - len(still)} fixed, {len(still)} open"
    )
    return EXIT_NOT_REPRODUCED if still else EXIT_OK


def sarif(path: Path, out: Path | None) -> int:
    """The database as SARIF 2.1.0 (harness/report/sarif.py), to a file or standard output. A file in a
    folder that is not there is refused (exit 2), naming the folder, as `kpool report --reports DIR` refuses
    one: it was made silently, and a mistyped folder took the file where no one looked (s37-robust)."""
    from harness.report import sarif as SARIF

    if out is not None and not out.parent.is_dir():
        what = "is not a folder" if out.parent.exists() else "no such folder"
        raise UsageError(
            f"--out {out}: {out.parent}: {what} (make it first, or name a file in a folder there is)"
        )
    try:
        db: CrashDB | None = CrashDB.open(path, write=False)
    except MissingCrashDB as exc:
        output.progress(str(exc))
        db = None
    doc = SARIF.document(db)
    text = json.dumps(doc, indent=1)
    if out is None:
        output.result(text)
        return EXIT_OK
    try:
        atomic.write_text(out, text + "\n")
    except OSError as exc:
        raise KpoolError(f"cannot write {out}: {exc.strerror or exc}") from exc
    output.progress(f"{len(doc['runs'][0]['results'])} signature(s) written to {out}")
    return EXIT_OK


def signature_of_file(path: Path, source: str, returncode: int | None) -> int:
    try:
        text = S.read_output(path)  # the part signing reads: a 50 MB file is not read whole
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    sig = S.compute(text, returncode=returncode, source=source)
    output.result(f"{sig.hash}  {sig.title}")
    return EXIT_OK
