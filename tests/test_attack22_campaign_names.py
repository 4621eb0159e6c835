"""Session 22's outside review: a workload file whose name is no plain name (`my workload.yaml`, a byte
that is not UTF-8). `kpool stress` runs it; `kpool campaign --workloads 'my workload.yaml'` loaded it,
built, then ran its job as `kpool stress --run-id 'stress-my workload'`, which refused the run id: the job
ended "no result (exit 2)" and the campaign "PROBLEMS", its slot of the budget spent on nothing (21fec7b).
The job's folder is named after the file, so the campaign now refuses such a file before it starts,
naming it (exit 2)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness import cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["my workload.yaml", "w+x.yaml", "w\u00e9.yaml"])
def test_campaign_refuses_a_workload_whose_name_cannot_name_its_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    wl = tmp_path / name
    shutil.copy(ROOT / "workloads" / "steady-small.yaml", wl)
    reports = tmp_path / "reports"
    argv = ["campaign", "--budget", "20", "--targets", "", "--workloads", str(wl), "--reports", str(reports)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert str(wl) in err and "rename" in err, err
    assert not reports.exists() or not any(reports.iterdir()), "a campaign started"
