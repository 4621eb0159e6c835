"""Two stress runs never share a run folder, even when their ids collide."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import runlock
from harness.stress import runner


def test_colliding_ids_get_their_own_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ids: Iterator[str] = iter(["same", "same", "other"])
    monkeypatch.setattr(runner, "new_run_id", lambda: next(ids))
    first = runner.new_run_dir(tmp_path)
    second = runner.new_run_dir(tmp_path)
    assert first == ("same", tmp_path / "same")
    assert second == ("other", tmp_path / "other")
    assert first[1].is_dir() and second[1].is_dir()


SMALL = """\
name: {name}
processes: 1
ops: 2000
mix: {{alloc: 2, free: 1}}
sizes: {{dist: uniform, min: 16, max: 256}}
working_set: 100
"""


def _workload(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(SMALL.format(name=name))
    return path


def _stress(tmp_path: Path, name: str, run_id: str) -> int:
    from harness import cli

    return cli.main(
        ["stress", str(_workload(tmp_path, name)), "--reports", str(tmp_path / "r"), "--run-id", run_id]
    )


def _names(report: Path) -> list[str]:
    return [w["name"] for w in json.loads(report.read_text())["workloads"]]


def test_a_run_id_that_already_holds_a_report_is_refused_and_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `--run-id nightly` twice used to write the second run's stress.json over the first's
    assert _stress(tmp_path, "first", "nightly") == 0
    report = tmp_path / "r" / "nightly" / "stress.json"
    capsys.readouterr()
    assert _stress(tmp_path, "second", "nightly") == 2
    err = capsys.readouterr().err
    assert "--run-id nightly" in err and str(report) in err, err
    assert _names(report) == ["first"]
    assert not (tmp_path / "r" / "nightly" / "second").exists()


def test_a_run_id_held_by_a_run_still_going_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # two `kpool stress --run-id x` at once used to share the folder, the last to finish keeping its
    # workloads in stress.json and the other's lost
    folder = tmp_path / "r" / "busy"
    with runlock.hold(folder):
        assert _stress(tmp_path, "second", "busy") == 1
    err = capsys.readouterr().err
    assert "still going" in err and str(os.getpid()) in err, err
    assert not (folder / "stress.json").exists()
    assert not (folder / "second").exists()


def test_a_campaigns_stress_job_run_again_in_its_folder_is_not_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`kpool campaign --resume` runs a stress job its interruption stopped again, under the same
    --run-id: the stopped attempt's stress.json is its own, not another run's."""
    from harness.triage import record

    assert _stress(tmp_path, "first", "stress-first") == 0
    monkeypatch.setenv(record.RUN_ENV, "campaign-1")
    monkeypatch.setenv(record.DB_ENV, str(tmp_path / "scratch.sqlite"))
    assert _stress(tmp_path, "first", "stress-first") == 0
