"""A workload crash from a real stress run, through the campaign's hand-over to triage: its reproducer in
summary.json replays it, the database keeps the workload's size in the reproducer, and minimisation cuts
that size down to the crashing operation."""

from __future__ import annotations

import html
import json
import shlex
import signal
import subprocess
from pathlib import Path

import pytest

from harness import campaign, cli, spec
from harness.campaign import Campaign, Job
from harness.report import writers
from harness.stress import runner
from harness.triage.db import CrashDB

CRASH_AT = 5000  # the planted crash: worker thread 0 dies with SIGSEGV at this op
WORKLOAD = f"""\
name: planted
processes: 2
ops: 20000
mix: {{alloc: 2, free: 1}}
sizes: {{dist: loguniform, min: 16, max: 1k}}
working_set: 200
planted: {{crash_at: {CRASH_AT}}}
"""


@pytest.fixture(scope="module")
def crashed_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A stress run whose two workers crash, collected and written as a campaign would: (reports, run_dir)."""
    tmp = tmp_path_factory.mktemp("ingest")
    path = tmp / "planted.yaml"
    path.write_text(WORKLOAD)
    reports = tmp / "reports"
    runner.run([spec.load(path)], runner.Options(reports_dir=reports, run_id="r", progress_s=3600))
    run_dir = reports / "r"
    c = Campaign("r", 60.0, 1, jobs=[Job("stress:planted", "stress", [], 10.0, "stress.json", state="done")])
    report = campaign.collect(c, run_dir, coverage=False)
    writers.write_run(report, reports)
    return reports, run_dir


def test_a_workload_crash_has_its_replay_command_in_the_summary(crashed_run: tuple[Path, Path]) -> None:
    _, run_dir = crashed_run
    [crash] = json.loads((run_dir / "summary.json").read_text())["crashes"]
    assert crash["source"] == "workload:planted"
    assert crash["reproducer"], crash
    replay = subprocess.run(shlex.split(crash["reproducer"]), capture_output=True, check=False, timeout=60)
    assert replay.returncode == -signal.SIGSEGV
    page = (run_dir / "index.html").read_text()
    assert f"<code>{html.escape(crash['reproducer'])}</code>" in page  # the command, in the HTML table


def test_the_stored_workload_reproducer_carries_its_size(crashed_run: tuple[Path, Path]) -> None:
    reports, _ = crashed_run
    db = CrashDB(reports / "crashes.sqlite")
    [sig] = db.signatures()
    repro = db.reproducer(sig.id)
    assert repro is not None and repro.kind == "workload"
    # ops per thread and threads as the worker ran them; the command replays one worker: one process
    assert (repro.ops, repro.threads, repro.processes) == (20000, 1, 1)
    assert repro.meta["op_index"] == CRASH_AT and repro.meta["workload_processes"] == 2
    argv, _ = repro.command()
    assert "count=20000" in argv and "threads=1" in argv


def test_minimize_cuts_a_workload_crash_to_its_operation(
    crashed_run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    reports, _ = crashed_run
    path = reports / "crashes.sqlite"
    [sig] = CrashDB(path).signatures()
    assert cli.main(["triage", "--db", str(path), "minimize", str(sig.id)]) == 0
    out = capsys.readouterr().out
    assert f"ops 20000 -> {CRASH_AT}" in out, out
    smaller = CrashDB(path).get(sig.id).min_reproducer
    assert smaller is not None and smaller.ops == CRASH_AT
    argv, _ = smaller.command()
    replay = subprocess.run(argv, capture_output=True, check=False, timeout=60)
    assert replay.returncode == -signal.SIGSEGV
