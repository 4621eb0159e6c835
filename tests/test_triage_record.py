"""Every command that finds a crash records it in the crash database (issue 15, point 1): `kpool fuzz` and
`kpool stress`, not only the campaign; `kpool triage list` then shows them, and the campaign does not record
them a second time."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness import cli
from harness.triage.db import CrashDB

WORKLOAD = """\
name: planted
processes: 1
ops: 20000
mix: {alloc: 2, free: 1}
sizes: {dist: loguniform, min: 16, max: 1k}
working_set: 200
planted: {crash_at: 5000}
"""
OUT = "stress-planted/stress.json"


def _list(db: Path, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert cli.main(["triage", "--db", str(db), "list"]) == 0
    return capsys.readouterr().out


def test_a_stress_crash_is_in_the_crash_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wl = tmp_path / "planted.yaml"
    wl.write_text(WORKLOAD)
    reports = tmp_path / "reports"
    assert cli.main(["-q", "stress", str(wl), "--reports", str(reports), "--run-id", "s1"]) == 1
    db = reports / "crashes.sqlite"
    [sig] = CrashDB.open(db).signatures()
    assert sig.kind == "SIGSEGV" and sig.status == "new" and sig.new_run == "s1"
    [occ] = CrashDB.open(db).occurrences(sig.id)
    assert occ.source == "workload:planted" and occ.reproducer is not None
    assert "SIGSEGV" in _list(db, capsys)
    # stress.json says where each crash went, so that a campaign does not record it again
    doc = json.loads((reports / "s1" / "stress.json").read_text())
    assert doc["crash_db"] == str(db.resolve())
    assert doc["workloads"][0]["crashes"][0]["signature"] == sig.hash


def test_a_campaign_does_not_record_a_recorded_crash_again(tmp_path: Path) -> None:
    from harness import campaign
    from harness.campaign import Campaign, Job

    wl = tmp_path / "planted.yaml"
    wl.write_text(WORKLOAD)
    reports = tmp_path / "reports"
    run_dir = reports / "c1"
    assert cli.main(["-q", "stress", str(wl), "--reports", str(run_dir), "--run-id", "stress-planted"]) == 1
    c = Campaign("c1", 60.0, 1, jobs=[Job("stress:planted", "stress", [], 10.0, OUT)])
    c.jobs[0].state = "done"
    # the stress job was not told the campaign's database: the campaign records it in its own
    report = campaign.collect(c, run_dir, coverage=False)
    [entry] = report.crashes
    db = CrashDB.open(reports / "crashes.sqlite")
    assert db.count_occurrences() == 1 and entry.status == "new"
    # told (as the campaign's jobs are): recorded once, by the job, under the campaign's run
    run2 = reports / "c2"
    env = {"KPOOL_CRASH_DB": str(reports / "crashes.sqlite"), "KPOOL_CRASH_RUN": "c2"}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        assert cli.main(["-q", "stress", str(wl), "--reports", str(run2), "--run-id", "stress-planted"]) == 1
    c2 = Campaign("c2", 60.0, 1, jobs=[Job("stress:planted", "stress", [], 10.0, OUT)])
    c2.jobs[0].state = "done"
    [entry2] = campaign.collect(c2, run2, coverage=False).crashes
    assert db.count_occurrences() == 2  # not 3
    assert entry2.status == "known" and entry2.signature == entry.signature


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("clang") is None, reason="the fuzz build needs clang")
def test_a_fuzz_crash_is_in_the_crash_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("atheris")
    reports = tmp_path / "reports"
    args = ["fuzz", "api_sequence", "--plant", "1", "--no-seeds", "--time", "20", "--reports", str(reports)]
    code = cli.main(["-q", *args])
    assert code == 1
    db = reports / "crashes.sqlite"
    sigs = CrashDB.open(db).signatures()
    assert sigs, "the fuzz crash was not recorded"
    [run] = list(reports.glob("fuzz-*"))
    occ = CrashDB.open(db).occurrences(sigs[0].id)[0]
    assert occ.run_id == run.name and occ.source == "fuzz:api_sequence"
    assert occ.reproducer is not None and occ.reproducer.input_path
    assert sigs[0].title in _list(db, capsys)
