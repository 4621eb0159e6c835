"""The campaign's own logic: budgets, the plan, resumable state, interruption, and turning the runners'
JSON into the report model (a runner that wrote nothing still shows, with its error)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from harness import campaign
from harness.campaign import Campaign, Job, parse_budget, plan, run_jobs
from harness.errors import KpoolError
from harness.jobs import task
from harness.report import ingest

DATA = Path(__file__).resolve().parent / "data"


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("2m", 120), ("1h30m", 5400), ("8h", 28800), ("45", 45)]
)
def test_budget(text: str, seconds: int) -> None:
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "2x", "5s", "-3m", "600000h", "99999999999999999999s"])
def test_bad_budget_names_the_value(text: str) -> None:
    with pytest.raises(KpoolError, match="--budget"):
        parse_budget(text)


def test_plan_splits_the_budget(tmp_path: Path) -> None:
    workloads = [Path(f"workloads/w{i}.yaml") for i in range(4)]
    c = plan("r", tmp_path, 600.0, 2, 0, ["api_sequence", "conf", "faults"], workloads)
    fuzz = [j for j in c.jobs if j.kind == "fuzz"]
    stress = [j for j in c.jobs if j.kind == "stress"]
    assert [j.name for j in fuzz] == ["fuzz:api_sequence", "fuzz:conf", "fuzz:faults"]
    assert len(stress) == 4
    # 3 targets on 2 lanes = 2 waves of the fuzz share (60% of 600 s); 4 workloads = 2 waves of 40%
    assert all(j.slot_s == 180 for j in fuzz)
    assert all(j.slot_s == 120 for j in stress)
    # each fuzzes for its slot less the start-up of a `kpool fuzz` job
    time_at = fuzz[0].argv.index("--time") + 1
    assert fuzz[0].argv[time_at] == str(180 - campaign.fuzz_start_s("api_sequence"))


def test_state_round_trips(tmp_path: Path) -> None:
    c = plan("r", tmp_path, 120.0, 2, 3, ["conf"], [Path("workloads/a.yaml")])
    c.jobs[0].state = "done"
    c.save(tmp_path)
    again = Campaign.load(tmp_path)
    assert again == c
    assert "--plant" in again.jobs[0].argv


def _job(name: str, kind: str, argv: list[str], out: str) -> Job:
    return Job(name, kind, argv, 30.0, out)


def test_jobs_run_in_parallel_and_record_their_outcome(tmp_path: Path) -> None:
    write = "import pathlib,sys,time; time.sleep(0.5); pathlib.Path(sys.argv[1]).write_text('{}')"
    c = Campaign("r", 60.0, 2)
    c.jobs = [
        _job("fuzz:a", "fuzz", [sys.executable, "-c", write, str(tmp_path / "a.json")], "a.json"),
        _job("fuzz:b", "fuzz", [sys.executable, "-c", write, str(tmp_path / "b.json")], "b.json"),
        _job("stress:c", "stress", [sys.executable, "-c", "raise SystemExit(3)"], "c.json"),
    ]
    assert run_jobs(c, tmp_path)
    assert [j.state for j in c.jobs] == ["done", "done", "failed"]
    assert c.jobs[2].returncode == 3
    saved = json.loads((tmp_path / "campaign.json").read_text())
    assert [j["state"] for j in saved["jobs"]] == ["done", "done", "failed"]


def test_a_job_past_its_slot_is_killed_and_recorded_as_a_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It was recorded as 'failed', like a job that wrote no result: it is a timeout, and says so."""
    monkeypatch.setattr(task, "GRACE_S", 0)
    c = Campaign("r", 60.0, 1)
    c.jobs = [Job("fuzz:slow", "fuzz", [sys.executable, "-c", "import time; time.sleep(60)"], 1.0, "x.json")]
    assert run_jobs(c, tmp_path)
    assert c.jobs[0].state == "timeout" and c.jobs[0].seconds < 10
    [f] = campaign.collect(c, tmp_path, coverage=False).fuzz
    assert not f.ok and f.error.startswith("timeout: killed after"), f.error


def test_ingest_stress_sample() -> None:
    doc = json.loads((DATA / "stress-sample.json").read_text())
    job = Job("stress:steady-small", "stress", [], 10.0, "x")
    [w] = ingest.workload_results(doc, job, Path())
    assert w.name == "steady-small" and w.ok
    assert {lat.op for lat in w.latency} == {"alloc", "free"}
    assert w.latency[0].count > 0
    assert any(s.name == "latency_ns.alloc.p99" for s in w.slos)
    assert w.timeline and w.timeline[0].capacity_bytes > 0
    assert w.outliers and w.outliers[0].latency_ns > 0


def test_a_runner_that_wrote_nothing_shows_its_error(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "x.log").write_text("Traceback ...\nValueError: bad workload\n")
    job = Job("stress:x", "stress", [], 10.0, "x.json", state="failed", returncode=1, log="logs/x.log")
    [w] = ingest.workload_results(None, job, tmp_path)
    assert not w.ok and "ValueError: bad workload" in w.error
    job = Job("fuzz:conf", "fuzz", [], 10.0, "y.json", state="failed", returncode=2, log="logs/x.log")
    [f] = ingest.fuzz_results(None, job, tmp_path)
    assert not f.ok and "exit 2" in f.error


def test_progress_is_a_line_per_change_not_per_poll(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A job running for 4 s is polled 8 times; the log gets a line when it starts and one when it
    ends (a night of polling every half second would be 57,600 lines)."""
    c = Campaign("r", 60.0, 1)
    sleep = "import pathlib,sys,time; time.sleep(4); pathlib.Path(sys.argv[1]).write_text('{}')"
    c.jobs = [_job("fuzz:a", "fuzz", [sys.executable, "-c", sleep, str(tmp_path / "a.json")], "a.json")]
    assert run_jobs(c, tmp_path)
    lines = [line for line in capsys.readouterr().err.splitlines() if "jobs done" in line]
    assert len(lines) == 2, lines
    assert "0/1 jobs done, running fuzz:a" in lines[0] and "1/1 jobs done, running none" in lines[1]


def test_coverage_that_fails_any_way_costs_only_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Counting the fuzz corpora's coverage fails (any exception): a warning, and the report is made."""
    from harness.fuzz import runner

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("-40 is not a valid Signals")

    monkeypatch.setattr(runner, "coverage", broken)
    c = Campaign("r", 60.0, 1)
    c.jobs = [Job("fuzz:api_sequence", "fuzz", ["true"], 1.0, "fuzz-api_sequence/fuzz.json", state="done")]
    assert campaign.fuzz_coverage(c, tmp_path) == {}
    err = capsys.readouterr().err
    assert "warning: libkpool coverage of the fuzz corpora: -40 is not a valid Signals" in err
    # and after an interrupt it is not attempted at all
    report = campaign.collect(c, tmp_path, coverage=False)
    assert report.fuzz_coverage == {}
