"""Crash triage: signatures, the crash database, replay, recheck and minimisation.

For producers (fuzz runner, stress runner, campaign):

    from harness.triage import Crash, CrashDB, Reproducer
    repro = Reproducer(argv=(python, target, "${input_path}"), kind="fuzz", input_path=path, target=name)
    rec = CrashDB(reports / "crashes.sqlite").record(
        Crash(text=report, run_id=run, source=name, returncode=rc, reproducer=repro, text_path=report_path))
    rec.new  # True when this signature is new in this run (the campaign exits 1 on any)
    CrashDB(path).new_in_run(run)  # the new signatures of a run, for the report

CrashDB(path) creates the database (a writer); readers use CrashDB.open(path), which creates nothing.

`kpool fuzz` and `kpool stress` record their own crashes (record.py); the campaign tells its jobs its
database and run (KPOOL_CRASH_DB, KPOOL_CRASH_RUN) and records only what no job recorded.

Modules: patterns.py (data: regexes with examples), signature.py (kind + normalised top frames),
threads.py (a timeout's thread stacks and the stuck ones), crash.py (Crash, Reproducer), db.py (SQLite),
record.py (a runner's crashes into the database), replay.py (replay, recheck), minimize.py, commands.py
(`kpool triage`).
"""

from harness.triage.crash import Crash, Reproducer
from harness.triage.db import CrashDB, Recorded
from harness.triage.signature import Signature

__all__ = ["Crash", "CrashDB", "Recorded", "Reproducer", "Signature"]
