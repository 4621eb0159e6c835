"""Session 20's outside review: records a user (or a damaged disk) left in a reports folder. A summary.json
or campaign.json nested deeper than the JSON parser recurses (`[[[[...]]]]`, 100,000 deep) stopped
`kpool report` and `kpool campaign --resume` with a RecursionError traceback (the index of every other
run was not written); a campaign.json whose fields have the wrong types (`"jobs_n": "two"`) went past
the loader and crashed the resumed campaign with a TypeError. Each is now one line naming the file and
what is wrong, exit 2 for a resume, and a row of the index saying why for a report; the other runs stay
indexed. Each test failed on main (e193d3a)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness import cli
from harness.campaign import command
from harness.report.model import Latency, RunReport, WorkloadResult
from harness.report.writers import write_run

ROOT = Path(__file__).resolve().parents[1]
DEEP_ARRAY = "[" * 100_000 + "]" * 100_000
DEEP_OBJECT = '{"a": ' * 50_000 + "1" + "}" * 50_000


@pytest.fixture
def no_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Builds are skipped, and a job that starts fails the test."""

    def started(*args: object, **kwargs: object) -> bool:
        raise AssertionError("a job started")

    monkeypatch.setattr(command, "run_jobs", started)
    monkeypatch.setattr(command.build, "build", lambda *a, **k: Path("/nonexistent"))


def _reports(tmp_path: Path) -> Path:
    reports = tmp_path / "reports"
    reports.mkdir()
    for night in (1, 2, 3):
        report = RunReport(
            run_id=f"night{night}",
            started=1_760_000_000.0 + night * 86400.0,
            workloads=[WorkloadResult("steady", latency=[Latency("alloc", [(100, 10)])])],
        )
        write_run(report, reports)
    return reports


@pytest.mark.parametrize("content", [DEEP_ARRAY, DEEP_OBJECT], ids=["array", "object"])
def test_a_summary_nested_too_deep_is_a_row_of_the_index_not_a_traceback(
    tmp_path: Path, content: str
) -> None:
    reports = _reports(tmp_path)
    (reports / "night2" / "summary.json").write_text(content)
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "report", "--reports", str(reports)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    index = (reports / "index.html").read_text(encoding="utf-8")
    assert "night1/index.html" in index and "night3/index.html" in index
    assert "nested too deep" in index, "the index does not say what is wrong with night2's summary.json"


def _resume(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> str:
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "campaign.json").write_text(text)
    assert cli.main(["campaign", "--resume", "r", "--reports", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("kpool: error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert str(tmp_path / "r" / "campaign.json") in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize("content", [DEEP_ARRAY, DEEP_OBJECT], ids=["array", "object"])
def test_a_campaign_record_nested_too_deep_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_jobs: None, content: str
) -> None:
    assert "nested too deep" in _resume(tmp_path, content, capsys)


def _record(**changes: object) -> str:
    job = {
        "name": "stress:steady-small",
        "kind": "stress",
        "argv": ["true"],
        "slot_s": 8.0,
        "out": "stress-steady-small/stress.json",
        "state": "pending",
    }
    doc: dict[str, object] = {"run_id": "r", "budget_s": 20.0, "jobs_n": 2, "plant": 0, "jobs": [job]}
    for key, value in changes.items():
        if key.startswith("job_"):
            job[key[4:]] = value
        else:
            doc[key] = value
    return json.dumps(doc)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"jobs_n": "two"}, "jobs_n"),
        ({"budget_s": "20s"}, "budget_s"),
        ({"plant": None}, "plant"),
        ({"run_id": 7}, "run_id"),
        ({"jobs": "all"}, "jobs"),
        ({"job_argv": "true"}, "jobs[0].argv"),
        ({"job_slot_s": [8]}, "jobs[0].slot_s"),
        ({"job_state": 3}, "jobs[0].state"),
        ({"job_returncode": "0"}, "jobs[0].returncode"),
    ],
)
def test_a_campaign_record_with_a_field_of_the_wrong_type_names_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_jobs: None, changes: dict[str, object], field: str
) -> None:
    line = _resume(tmp_path, _record(**changes), capsys)
    assert field in line, line


def test_a_sound_record_still_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks refuse only what is wrong: the record `_record()` writes loads as it is."""
    from harness.campaign.budget import Campaign

    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "campaign.json").write_text(_record(job_returncode=0))
    c = Campaign.load(tmp_path / "r")
    assert c.jobs_n == 2 and c.jobs[0].argv == ["true"] and c.jobs[0].returncode == 0
