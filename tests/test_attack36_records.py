"""Session 36's attacks from outside on the records kpool reads back (summary.json, campaign.json, a job's
JSON): one that is far larger than any kpool writes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import atomic
from harness.report import writers

ROOT = Path(__file__).parents[1]


def test_a_record_far_larger_than_kpool_writes_is_refused_unread(tmp_path: Path) -> None:
    """A summary.json of 2 GB (a damaged disk, `truncate`, a file dropped there by mistake) was read whole
    by `kpool report`: 14.5 s and 4.2 GB of memory before it said "is not JSON", where a smaller machine
    kills it and no index is written. The largest records kpool writes are under 1 MB (a campaign's
    summary.json: 0.5 MB); now one past atomic.RECORD_MAX is refused by its size, unread."""
    path = tmp_path / "summary.json"
    with path.open("wb") as f:  # sparse: no disk, and reading it is what costs
        f.truncate(300 << 20)
    start = time.monotonic()
    with pytest.raises(writers.UnreadableSummary, match="300 MiB"):
        writers.read_summary(path)
    assert time.monotonic() - start < 0.5
    with pytest.raises(OSError, match="more than any record kpool writes"):
        atomic.read_bytes(path)


def test_report_lists_a_run_whose_record_is_too_large_beside_the_others(tmp_path: Path) -> None:
    from harness import cli

    (tmp_path / "campaign-a").mkdir()
    with (tmp_path / "campaign-a" / "summary.json").open("wb") as f:
        f.truncate(atomic.RECORD_MAX + 1)
    assert cli.main(["report", "--reports", str(tmp_path)]) == 0
    page = (tmp_path / "index.html").read_text()
    assert "campaign-a" in page and "more than any record kpool writes" in page


# ---- a crash database this user cannot write -------------------------------------------------------------


@pytest.fixture
def as_nobody(tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    """(a folder in /tmp that anyone reads, the argv prefix of kpool as user nobody): root drops to nobody
    with setpriv; the harness copied where nobody reads it, run by the system's Python."""
    python = Path("/usr/bin/python3")
    if os.geteuid() != 0 or not shutil.which("setpriv") or not python.exists():
        pytest.skip("needs root, setpriv and /usr/bin/python3 (to write as another user)")
    top = Path(tempfile.mkdtemp(prefix="kpool-att36-"))
    try:
        shutil.copytree(ROOT / "harness", top / "harness", ignore=shutil.ignore_patterns("__pycache__"))
        for p in [top, *top.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "env", f"PYTHONPATH={top}"]
        argv += ["HOME=/tmp", "LANG=C.UTF-8", str(python), "-m", "harness.cli"]
        probe = subprocess.run([*argv, "--help"], capture_output=True, check=False)
        if probe.returncode != 0:
            pytest.skip(f"kpool does not run as nobody here: {probe.stderr[-300:]!r}")
        yield top, argv
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.parametrize("existing", [True, False])
def test_a_crash_kpool_run_cannot_record_in_another_users_database_says_why(
    as_nobody: tuple[Path, list[str]], existing: bool
) -> None:
    """`kpool run --reports <the nightly's folder> -- prog` by another user, prog crashing: "the crashes
    were not recorded in .../crashes.sqlite: ... is not a kpool crash database (attempt to write a readonly
    database)" (it is one: this user cannot write it), or, with no database there yet, "cannot open the
    crash database ...: unable to open database file". Now it says the database cannot be written."""
    from harness.triage.crash import Crash
    from harness.triage.db import CrashDB

    top, kpool = as_nobody
    folder = top / "nightly"
    folder.mkdir()
    path = folder / "crashes.sqlite"
    if existing:
        CrashDB(path).record(Crash(text="==1==ERROR: x\n", run_id="r1", source="api", returncode=1))
        path.chmod(0o644)
    folder.chmod(0o755)
    proc = subprocess.run(
        [*kpool, "run", "--allocator", "glibc", "--reports", str(folder), "--", "sh", "-c", "kill -SEGV $$"],
        cwd=top,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 128 + signal.SIGSEGV, proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if "not recorded" in x]
    assert "cannot be written" in line and "not a kpool crash database" not in line, line
    assert "unable to open" not in line, line


# ---- a stress run's stress.json, read to say whether the run ended -----------------------------------------


@pytest.mark.parametrize("what", ["nested", "fifo"])
def test_report_reads_a_stress_json_that_is_no_record_without_stopping(tmp_path: Path, what: str) -> None:
    """`kpool report` reads a stress run's stress.json (no summary.json) to say whether the run is
    unfinished. That read was json.loads(path.read_bytes()), not the records' reader: a stress.json
    nested 200,000 deep stopped the report with a RecursionError traceback (no index written), and a FIFO
    named stress.json hung it for good in open(). Now both are a row like any run without a record."""
    run = tmp_path / "20261207-000000-dead"
    run.mkdir()
    path = run / "stress.json"
    if what == "fifo":
        os.mkfifo(path)
    else:
        path.write_text("[" * 200_000 + "]" * 200_000)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "harness.cli", "report", "--reports", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "LANG": "C"},
        )
    except subprocess.TimeoutExpired:
        pytest.fail("kpool report waited on stress.json")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert run.name in (tmp_path / "index.html").read_text()


def test_a_crash_kpool_run_records_behind_another_writer_says_it_waits(tmp_path: Path) -> None:
    """`kpool run` of a crashing program, while another process holds the crash database's write lock (a
    campaign's ingest, `sqlite3` left open in a transaction): kpool waited up to SQLite's 30 s busy
    timeout with nothing on the terminal after the program's last line. It now says it waits, and for
    which file, then records the crash once the lock is gone."""
    import sqlite3

    from harness.triage.crash import Crash
    from harness.triage.db import CrashDB

    path = tmp_path / "crashes.sqlite"
    CrashDB(path).record(Crash(text="==1==ERROR: x\n", run_id="r1", source="api", returncode=1))
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    crash = ["--", "sh", "-c", "kill -SEGV $$"]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "run",
            "--allocator",
            "glibc",
            "--reports",
            str(tmp_path),
            *crash,
        ],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    time.sleep(4.0)  # the program has crashed; kpool is blocked on the lock
    holder.execute("ROLLBACK")
    holder.close()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGSEGV, err
    waits = [x for x in err.splitlines() if "waiting" in x]
    assert len(waits) == 1 and str(path) in waits[0], err
    assert "crash recorded" in err, err
