"""Session 22's outside review: a crash-database field of the wrong *type*. SQLite keeps what it is given
whatever the column says: a BLOB in a TEXT column (`UPDATE signatures SET last_seen = X'ff00'`, or a disk's
damage SQLite does not see), text in a REAL or INTEGER one (`repro_rate = 'abc'`). Session 20 made a field
that does not *parse* read as empty; one of the wrong type still stopped `kpool triage list`, `show`,
`sarif` and `kpool report` (whose index was then not written) with a TypeError or ValueError traceback,
hiding every other signature (21fec7b: 30 of the cases below failed). Now such a field reads as text with
its bad bytes replaced, or as no number."""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from harness import cli
from harness.triage import db as D
from harness.triage.crash import Crash

ASAN = "==1==ERROR: AddressSanitizer: heap-use-after-free on address 0x1\n    #0 0x1 in {} a.c:1\n"
BLOB = b"\xff\x00\xfe"

# (table, column, value): every column a row can hold the wrong type in (an INTEGER PRIMARY KEY cannot)
DAMAGE = [
    *[
        ("signatures", c, BLOB)
        for c in (
            "hash",
            "title",
            "kind",
            "detail",
            "frames",
            "first_seen",
            "last_seen",
            "status",
            "new_run",
            "checked_at",
            "min_reproducer",
        )
    ],
    *[("signatures", c, v) for c in ("count", "runs", "repro_rate", "repro_runs") for v in ("abc", BLOB)],
    *[("occurrences", c, BLOB) for c in ("run_id", "time", "source", "reproducer", "text", "text_path")],
    *[("occurrences", c, v) for c in ("returncode", "signature_id") for v in ("abc", BLOB)],
]
IDS = [f"{t[:3]}.{c}-{'blob' if isinstance(v, bytes) else v}" for t, c, v in DAMAGE]


def _db(tmp_path: Path, table: str, column: str, value: object) -> Path:
    path = tmp_path / "crashes.sqlite"
    for frame in ("f0", "f1", "f2"):
        D.CrashDB(path).record(Crash(text=ASAN.format(frame), run_id="r1", source="api"))
    D.CrashDB(path).set_replay(2, 0.5, 4, update_status=True)  # the rate's fields hold numbers
    key = "id" if table == "signatures" else "signature_id"
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute(f"UPDATE {table} SET {column} = ? WHERE {key} = 2", (value,))
    return path


@pytest.mark.parametrize(("table", "column", "value"), DAMAGE, ids=IDS)
@pytest.mark.parametrize("args", [["list"], ["show", "2"], ["show", "1"], ["sarif"]], ids=lambda a: a[0])
def test_a_field_of_the_wrong_type_does_not_hide_the_database(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    table: str,
    column: str,
    value: object,
    args: list[str],
) -> None:
    path = _db(tmp_path, table, column, value)
    assert cli.main(["triage", "--db", str(path), *args]) == 0
    out = capsys.readouterr()
    assert "Traceback" not in out.err, out.err
    if args == ["list"]:
        assert all(f"heap-use-after-free in f{i}" in out.out for i in (0, 2)), out.out
        assert len(re.findall(r"^\| \d+ \|", out.out, re.M)) == 3, out.out


@pytest.mark.parametrize(("table", "column", "value"), DAMAGE, ids=IDS)
def test_the_report_index_is_written_past_a_field_of_the_wrong_type(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], table: str, column: str, value: object
) -> None:
    _db(tmp_path, table, column, value)
    assert cli.main(["report", "--reports", str(tmp_path)]) == 0
    assert "heap-use-after-free in f0" in (tmp_path / "index.html").read_text()


def test_a_hash_that_is_a_path_writes_no_page_outside_the_reports_folder(tmp_path: Path) -> None:
    """The signature's hash names its page, <reports>/signatures/<hash>.html: a row whose hash was
    '../../escaped' made `kpool report` write tmp/escaped.html, outside the reports folder."""
    reports = tmp_path / "deep" / "reports"
    reports.mkdir(parents=True)
    _db(reports, "signatures", "hash", "../../escaped")
    assert cli.main(["report", "--reports", str(reports)]) == 0
    assert not (tmp_path / "deep" / "escaped.html").exists()
    assert sorted(p.name for p in (reports / "signatures").iterdir()) == [
        *sorted(f"{h}.html" for h in (r.hash for r in D.CrashDB(reports / "crashes.sqlite").signatures()))
    ]


@pytest.mark.parametrize("value", ["not a time", "2026-13-45T99:00:00Z"])
def test_an_occurrence_time_that_is_no_time_does_not_stop_the_report(tmp_path: Path, value: str) -> None:
    _db(tmp_path, "occurrences", "time", value)
    assert cli.main(["report", "--reports", str(tmp_path)]) == 0
    assert "heap-use-after-free in f1" in (tmp_path / "index.html").read_text()
