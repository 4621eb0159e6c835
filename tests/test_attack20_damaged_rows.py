"""Session 20's outside review: one damaged row of the crash database (edited with `sqlite3`, or a disk's
damage SQLite does not see). On main (e193d3a) a signature whose frames were not JSON (or nested too deep
for the parser), whose count was not a number, or whose minimised reproducer did not parse stopped every
triage command (list, show, sarif, replay) with a traceback, hiding every other signature. Now such a
field reads as empty (no frames, count 0, the latest occurrence's reproducer in place of the minimised
one), and an occurrence's reproducer that does not parse is an error naming the signature."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from harness import cli
from harness.triage import db as D
from harness.triage.crash import Crash

ASAN = "==1==ERROR: AddressSanitizer: heap-use-after-free on address 0x1\n    #0 0x1 in {} a.c:1\n"


def _db(tmp_path: Path, column: str, value: str) -> Path:
    path = tmp_path / "crashes.sqlite"
    for frame in ("f0", "f1", "f2"):
        D.CrashDB(path).record(Crash(text=ASAN.format(frame), run_id="r1", source="api"))
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute(f"UPDATE signatures SET {column} = ? WHERE id = 2", (value,))
    return path


DAMAGE = [
    ("frames", "not json"),
    ("frames", "[" * 5000 + "]" * 5000),
    ("frames", '{"a": 1}'),
    ("count", "many"),
    ("min_reproducer", "garbage"),
    ("min_reproducer", '{"kind": 5}'),
]


@pytest.mark.parametrize(("column", "value"), DAMAGE, ids=[f"{c}-{i}" for i, (c, _) in enumerate(DAMAGE)])
@pytest.mark.parametrize("args", [["list"], ["show", "2"], ["show", "1"], ["sarif"]], ids=lambda a: a[0])
def test_a_damaged_field_does_not_hide_the_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], column: str, value: str, args: list[str]
) -> None:
    path = _db(tmp_path, column, value)
    assert cli.main(["triage", "--db", str(path), *args]) == 0
    out = capsys.readouterr()
    assert "Traceback" not in out.err, out.err
    if args == ["list"]:
        assert all(f"heap-use-after-free in f{i}" in out.out for i in range(3)), out.out


def test_a_damaged_occurrence_reproducer_is_named_at_replay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "crashes.sqlite"
    D.CrashDB(path).record(Crash(text=ASAN.format("f0"), run_id="r1", source="api"))
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE occurrences SET reproducer = 'garbage'")
    assert cli.main(["triage", "--db", str(path), "replay", "1"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "signature 1's reproducer is damaged" in err, err


def test_recheck_goes_on_past_a_damaged_reproducer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One signature's reproducer that does not parse stopped `kpool triage recheck` for every other."""
    path = tmp_path / "crashes.sqlite"
    for frame in ("f0", "f1"):
        D.CrashDB(path).record(Crash(text=ASAN.format(frame), run_id="r1", source="api"))
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE occurrences SET reproducer = 'garbage' WHERE signature_id = 1")
    cli.main(["triage", "--db", str(path), "recheck"])
    out = capsys.readouterr()
    assert "Traceback" not in out.err and "signature 1's reproducer is damaged" in out.err, out.err
    assert "rechecked 2 signatures" in out.err, out.err
    assert len(out.out.splitlines()) == 2 and "   1  new    damaged" in out.out, out.out
