"""`kpool triage` on databases that are missing, not databases, or of another schema; reading never
creates anything; the help states every default and documents every action."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from harness import cli
from harness.errors import KpoolError, UsageError
from harness.triage import db as D
from harness.triage import replay as R
from harness.triage.crash import Crash

ASAN = "==1==ERROR: AddressSanitizer: heap-use-after-free on address 0x1\n    #0 0x1 in kp_free a.c:1\n"
READERS = (["list"], ["show", "1"], ["replay", "1"], ["minimize", "1"], ["recheck"])


def triage(path: Path, *args: str) -> int:
    return cli.main(["triage", "--db", str(path), *args])


# ---- not a crash database (issue 11, point 8) ----------------------------------------------------------


def _not_sqlite(tmp_path: Path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text("these are my notes, not a database\n" * 20)
    return path


def _other_sqlite(tmp_path: Path) -> Path:
    path = tmp_path / "other.sqlite"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE songs (title TEXT)")
    return path


def _newer_schema(tmp_path: Path) -> Path:
    path = tmp_path / "newer.sqlite"
    D.CrashDB(path).record(Crash(text=ASAN, run_id="r1", source="api"))
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(f"PRAGMA user_version = {D.SCHEMA_VERSION + 1}")
    return path


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (_not_sqlite, "is not a kpool crash database"),
        (_other_sqlite, "is not a kpool crash database"),
        (_newer_schema, f"schema version {D.SCHEMA_VERSION + 1}"),
    ],
)
@pytest.mark.parametrize("args", READERS, ids=lambda a: a[0])
def test_a_file_that_is_no_crash_database_is_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: object, words: str, args: list[str]
) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    before = path.read_bytes()
    assert triage(path, *args) == 2
    err = capsys.readouterr().err
    assert str(path) in err and words in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert path.read_bytes() == before  # not repaired, not converted


def test_a_writer_refuses_a_file_that_is_no_crash_database(tmp_path: Path) -> None:
    for path in (_not_sqlite(tmp_path), _other_sqlite(tmp_path), _newer_schema(tmp_path)):
        before = path.read_bytes()
        with pytest.raises(D.CrashDBError, match=str(path)) as info:
            D.CrashDB(path).record(Crash(text=ASAN, run_id="r2", source="api"))
        assert isinstance(info.value, UsageError) and info.value.exit_code == 2
        assert path.read_bytes() == before


def test_the_command_line_exits_2_without_a_traceback(tmp_path: Path) -> None:
    path = _not_sqlite(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "triage", "--db", str(path), "list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "not a kpool crash database" in proc.stderr


def test_a_database_from_before_the_version_field_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    D.CrashDB(path).record(Crash(text=ASAN, run_id="r1", source="api"))
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA user_version = 0")
    assert [r.title for r in D.CrashDB.open(path).signatures()] == ["heap-use-after-free in kp_free"]
    D.CrashDB(path)  # a writer stamps it
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == D.SCHEMA_VERSION


# ---- reading creates nothing (issue 11, point 17) ------------------------------------------------------


def test_list_on_a_missing_database_says_so_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "nonexistent" / "dir" / "x.sqlite"
    assert triage(path, "list") == 0
    assert f"no crash database at {path} yet: no crashes recorded" in capsys.readouterr().err
    assert triage(path, "recheck") == 0
    assert not (tmp_path / "nonexistent").exists()


@pytest.mark.parametrize("args", READERS[1:4], ids=lambda a: a[0])
def test_show_replay_minimize_on_a_missing_database_are_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    path = tmp_path / "x.sqlite"
    assert triage(path, *args) == 2
    assert f"no crash database at {path}" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_open_does_not_create_but_the_writer_does(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "crashes.sqlite"
    with pytest.raises(D.MissingCrashDB):
        D.CrashDB.open(path)
    assert not (tmp_path / "a").exists()
    D.CrashDB(path).record(Crash(text=ASAN, run_id="r1", source="api"))  # the campaign's ingest
    assert len(D.CrashDB.open(path).signatures()) == 1


def test_an_empty_file_reads_as_no_crashes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "x.sqlite"
    path.touch()  # what `triage show` used to leave behind
    assert triage(path, "list") == 0
    assert "no crashes recorded" in capsys.readouterr().err
    assert path.read_bytes() == b""


def test_an_unknown_signature_and_a_bad_run_count_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "x.sqlite"
    D.CrashDB(path).record(Crash(text=ASAN, run_id="r1", source="api"))
    assert triage(path, "show", "999") == 2
    assert "no signature '999'" in capsys.readouterr().err
    for bad in ("0", "-3", "x"):
        with pytest.raises(SystemExit) as info:
            triage(path, "replay", "1", "-n", bad)
        assert info.value.code == 2
        assert f"'{bad}'" in capsys.readouterr().err


def test_a_signature_without_a_reproducer_is_a_failure_not_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite"
    D.CrashDB(path).record(Crash(text=ASAN, run_id="r1", source="api"))
    assert triage(path, "replay", "1") == 1
    with pytest.raises(KpoolError) as info:
        R.replay_signature(D.CrashDB.open(path), D.CrashDB.open(path).get(1), 1, update_status=False)
    assert info.value.exit_code == 1


# ---- help (issue 11, point 18) -------------------------------------------------------------------------


def _help(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    with pytest.raises(SystemExit) as info:
        cli.main(["triage", *args, "--help"])
    assert info.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines: compare words


def test_help_states_every_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert f"(default: {D.DEFAULT_PATH})" in _help(capsys)
    for action in ("replay", "recheck"):
        assert f"(default: {R.DEFAULT_RUNS})" in _help(capsys, action)
    text = _help(capsys, "signature")
    assert "(default: none)" in text and "(default: '')" not in text


def test_every_action_and_argument_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    top = _help(capsys)
    for action in ("list", "show", "replay", "minimize", "recheck", "signature"):
        assert action in top
        text = _help(capsys, action)
        assert "==SUPPRESS==" not in text
    signature = _help(capsys, "signature")
    assert "crash text" in signature and "exit code" in signature  # FILE and --returncode explained
    assert "no crashes recorded" in top  # the missing-database rule is documented
