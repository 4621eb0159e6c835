"""Session 22's second review: the sweep for crash inputs killed runs left took any file named like one
(conf-crash-x, api_sequence-crash-1) in any <reports>/*/crashes/ or <reports>/*/*/crashes/ folder, even
one that never held a kpool run (a user's own folder, an unpacked archive), for a lost crash: it was
replayed, recorded as a new crash and made `kpool fuzz` exit 1. Only kpool run folders are swept now: a
folder a run held has its run.lock (harness/runlock.py: written before the run fuzzes, kept when it is
killed), and a campaign's job folder has its own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_fuzz_recovery import _occurrences, _orphan, fake  # noqa: F401 (fake: the fixture)

from harness import runlock
from harness.fuzz import runner


def _junk(folder: Path, name: str = "api_sequence-crash-x") -> Path:
    (folder / "crashes").mkdir(parents=True)
    path = folder / "crashes" / name
    path.write_bytes(b"not a crash\n")
    return path


@pytest.mark.parametrize("where", ["mine", "mine/sub"])
def test_a_folder_no_run_held_is_not_swept(
    fake: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    where: str,
) -> None:
    reports = fake / "reports"
    _junk(reports / where)
    capsys.readouterr()
    run = runner.run("api_sequence", 1, run_dir=reports / "fuzz-next", reports=reports)
    err = capsys.readouterr().err
    assert _occurrences(reports) == [], "a file in a folder no run held was recorded as a crash"
    assert not run.crashed and "never recorded" not in err, err
    summary = json.loads((reports / "fuzz-next" / "fuzz.json").read_text())
    assert not summary.get("recovered")


def test_a_killed_run_is_still_swept_beside_junk(
    fake: Path,  # noqa: F811
) -> None:
    reports = fake / "reports"
    _junk(reports / "mine")
    crash = _orphan(reports / "fuzz-killed")
    assert (reports / "fuzz-killed" / runlock.NAME).is_file()  # what a killed run leaves
    run = runner.run("api_sequence", 1, run_dir=reports / "fuzz-next", reports=reports)
    assert [p for p, _, _ in _occurrences(reports)] == [str(crash)] and run.crashed
