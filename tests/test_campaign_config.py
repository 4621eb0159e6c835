"""A campaign refuses what it cannot run before it starts anything: an unknown run to resume, a
corrupt campaign record, a workload glob that matches nothing, an unknown fuzz target, a workload that
does not load. Each is one line naming the bad value, exit 2 (a usage error), and no job ever starts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness import cli
from harness.campaign import command

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Builds are skipped, and a job that starts fails the test."""

    def started(*args: object, **kwargs: object) -> bool:
        raise AssertionError("a job started")

    monkeypatch.setattr(command, "run_jobs", started)
    monkeypatch.setattr(command.build, "build", lambda *a, **k: Path("/nonexistent"))


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("kpool: error:")]
    assert len(errors) == 1, err
    assert "Traceback" not in err, err
    return errors[0]


def test_resume_of_an_unknown_run_names_it_and_where_it_looked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_jobs: None
) -> None:
    assert cli.main(["campaign", "--resume", "nosuchrun", "--reports", str(tmp_path)]) == 2
    line = _error(capsys)
    assert "nosuchrun" in line and str(tmp_path) in line, line


def test_resume_with_no_campaign_at_all(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_jobs: None
) -> None:
    assert cli.main(["campaign", "--resume", "--reports", str(tmp_path)]) == 2
    assert str(tmp_path) in _error(capsys)


@pytest.mark.parametrize(
    "text",
    ["{not json", '{"run_id": "r"}', '{"run_id": "r", "budget_s": 20, "jobs_n": 1, "jobs": [{}]}', "[]"],
)
def test_resume_of_a_corrupt_record_names_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_jobs: None, text: str
) -> None:
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "campaign.json").write_text(text)
    assert cli.main(["campaign", "--resume", "r", "--reports", str(tmp_path)]) == 2
    line = _error(capsys)
    assert str(tmp_path / "r" / "campaign.json") in line, line


def test_a_run_id_to_resume_is_a_name_not_a_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_jobs: None
) -> None:
    assert cli.main(["campaign", "--resume", "../x", "--reports", str(tmp_path / "r")]) == 2
    assert "../x" in _error(capsys)


def test_a_workload_glob_that_matches_nothing_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_jobs: None
) -> None:
    glob = str(tmp_path / "no-such-*.yaml")
    code = cli.main(["campaign", "--targets", "", "--workloads", glob, "--reports", str(tmp_path / "r")])
    assert code == 2
    assert glob in _error(capsys)
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_an_unknown_fuzz_target_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_jobs: None
) -> None:
    code = cli.main(["campaign", "--targets", "conf,bogus", "--reports", str(tmp_path / "r")])
    assert code == 2
    line = _error(capsys)
    assert "bogus" in line and "api_sequence" in line, line


def test_a_workload_that_does_not_load_is_a_configuration_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_jobs: None
) -> None:
    """Every workload is loaded before any job starts: one that does not load is a configuration error
    naming the file, never a job failure or a crash signature."""
    good = tmp_path / "w" / "good.yaml"
    good.parent.mkdir()
    shutil.copy(ROOT / "workloads" / "steady-small.yaml", good)
    bad = tmp_path / "w" / "bad.yaml"
    bad.write_text(good.read_text().replace("ops: 1000000", "ops: 1000000\nbogus_field: 1"))
    reports = tmp_path / "r"
    code = cli.main(
        [
            "campaign",
            "--targets",
            "",
            "--workloads",
            str(tmp_path / "w" / "*.yaml"),
            "--reports",
            str(reports),
        ]
    )
    assert code == 2
    line = _error(capsys)
    assert str(bad) in line and "bogus_field" in line, line
    assert not list(reports.glob("*/campaign.json"))


def test_a_campaign_resumed_from_a_moved_reports_folder_runs_its_jobs_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A reports folder renamed, or restored from a CI cache into another workspace, and resumed: the
    jobs' commands still named the old folder, so they ran there (creating it again), the campaign found
    no result in its own folder ("no result (exit 0)", FAIL) and the working corpora grew in the old one."""
    from harness.campaign import budget

    old, new = tmp_path / "old reports", tmp_path / "new reports"
    run_dir = old / "campaign-1"
    run_dir.mkdir(parents=True)
    c = budget.plan("campaign-1", run_dir, 60.0, 1, 0, ["conf"], [ROOT / "workloads" / "steady-small.yaml"])
    c.save(run_dir)
    old.rename(new)
    ran: list[list[str]] = []

    def run_jobs(c: budget.Campaign, run_dir: Path, *args: object, **kwargs: object) -> bool:
        ran.extend(j.argv for j in c.jobs)
        return False  # as though interrupted: no report to make

    monkeypatch.setattr(command, "run_jobs", run_jobs)
    monkeypatch.setattr(command.build, "build", lambda *a, **k: Path("/nonexistent"))
    assert cli.main(["campaign", "--resume", "campaign-1", "--reports", str(new)]) == 130
    assert len(ran) == 2
    for argv in ran:
        assert not any(str(old) in a for a in argv), argv
    fuzz, stress = ran
    assert fuzz[fuzz.index("--run-dir") + 1] == str(new / "campaign-1" / "fuzz-conf")
    assert fuzz[fuzz.index("--reports") + 1] == str(new)
    assert stress[stress.index("--reports") + 1] == str(new / "campaign-1")
    assert not old.exists()


@pytest.mark.parametrize("resume", [False, True])
def test_an_empty_budget_is_a_usage_error_not_the_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_jobs: None, resume: bool
) -> None:
    """`--budget ''` (an unset variable in a CI script: --budget "$BUDGET") ran the default budget, or
    with --resume the campaign's own, as though no --budget had been given."""
    if resume:
        (tmp_path / "r").mkdir()
        (tmp_path / "r" / "campaign.json").write_text(
            '{"run_id": "r", "budget_s": 60, "jobs_n": 1, "jobs": []}'
        )
    argv = ["campaign", "--budget", "", "--reports", str(tmp_path), *(["--resume", "r"] if resume else [])]
    assert cli.main(argv) == 2
    assert "--budget ''" in _error(capsys)
