"""Session 22's second review: `kpool triage replay --runs 10^23` was accepted (and recheck's too): a count
no replay can finish, and past SQLite's 64-bit INTEGER for the stored repro_runs. It is now a usage error
(exit 2) naming --runs, before the database is opened."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import cli
from harness.triage import commands


@pytest.mark.parametrize("action", [["replay", "abcd"], ["recheck"]])
@pytest.mark.parametrize("runs", [str(10**23), str(2**63), "100001"])
def test_huge_runs_is_a_usage_error_naming_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], action: list[str], runs: str
) -> None:
    db = tmp_path / "crashes.db"
    try:
        code = cli.main(["triage", "--db", str(db), *action, "--runs", runs])
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert "--runs" in err and runs in err, err


def test_the_bound_itself_is_accepted() -> None:
    assert commands.run_count("100000") == 100000
