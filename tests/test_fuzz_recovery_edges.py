"""Crash-input recovery (harness/fuzz/orphans.py, harness/runlock.py) from a user's side: a lock file
that cannot be opened, and Ctrl-C while the next run sweeps what a killed run left."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from test_fuzz_recovery import _occurrences, _orphan, fake  # noqa: F401 (fake: the fixture)

from harness import runlock
from harness.errors import KpoolError, UsageError
from harness.fuzz import runner


def test_a_lock_file_that_cannot_be_opened_is_said_not_taken_for_a_live_run(
    fake: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    """run.lock a folder (or unreadable, or on a read-only file system): the sweep said nothing and left
    the crash inputs unrecorded for good, as though a run still held them; `kpool fuzz --run-dir` into
    such a folder said "the folder of a run still going (process ?)"."""
    reports = fake / "reports"
    old = reports / "fuzz-old"
    _orphan(old)
    (old / runlock.NAME).unlink()  # the run.lock the killed run left, made a folder
    (old / runlock.NAME).mkdir()
    capsys.readouterr()
    run = runner.run("api_sequence", 1, run_dir=reports / "fuzz-next", reports=reports)
    err = capsys.readouterr().err
    assert str(old / runlock.NAME) in err and "cannot be opened" in err, err
    assert _occurrences(reports) == [] and not run.crashed  # left alone, but not in silence

    with pytest.raises(KpoolError) as exc:
        runner.run("api_sequence", 1, run_dir=old, reports=reports)
    assert "still going" not in str(exc.value) and "cannot be opened" in str(exc.value), exc.value


def test_ctrl_c_during_the_sweep_says_what_is_left_and_loses_nothing(
    fake: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Ctrl-C while the crash inputs of a killed run are replayed: the user is told that what is not
    recorded yet the next run records (it said only "interrupted"), and the next run does."""
    reports = fake / "reports"
    crash = _orphan(reports / "fuzz-killed")
    keep = runner._keep_reports

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "_keep_reports", interrupted)
    capsys.readouterr()
    with pytest.raises(KeyboardInterrupt):
        runner.run("api_sequence", 1, run_dir=reports / "fuzz-stopped", reports=reports)
    err = capsys.readouterr().err
    assert "interrupted" in err and "not recorded yet" in err and str(reports) in err, err
    assert _occurrences(reports) == []

    monkeypatch.setattr(runner, "_keep_reports", keep)
    run = runner.run("api_sequence", 1, run_dir=reports / "fuzz-next", reports=reports)
    assert [p for p, _, _ in _occurrences(reports)] == [str(crash)] and run.crashed


def test_a_moved_reports_folder_does_not_turn_recorded_crashes_into_lost_ones(
    fake: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The crash database holds each input by the absolute path it had when recorded. A reports folder
    moved, or restored from a CI cache into another workspace, made every recorded input look like one a
    killed run left: replayed, recorded a second time, "never recorded" said of it, and exit 1."""
    reports = fake / "reports"
    crash = _orphan(reports / "fuzz-killed")
    campaign_crash = _orphan(reports / "campaign-killed" / "fuzz-api_sequence")
    assert runner.run("api_sequence", 1, run_dir=reports / "fuzz-next", reports=reports).crashed
    assert sorted(p for p, _, _ in _occurrences(reports)) == sorted([str(crash), str(campaign_crash)])
    moved = reports.rename(fake / "restored")
    capsys.readouterr()
    run = runner.run("api_sequence", 1, run_dir=moved / "fuzz-after", reports=moved)
    assert "never recorded" not in capsys.readouterr().err
    assert not run.crashed and len(_occurrences(moved)) == 2


def test_ctrl_c_during_a_campaigns_sweep_keeps_its_own_report(
    fake: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A campaign that ended sweeps what killed runs left as it triages. Ctrl-C during that sweep (it
    replays every such input, minutes for many) ended the campaign with no report and its own jobs'
    crashes untriaged; now the sweep stops and the campaign's own crashes are triaged and reported."""
    import json

    from harness import campaign
    from harness.campaign import Campaign, Job

    reports = fake / "reports"
    _orphan(reports / "fuzz-killed")
    run_dir = reports / "campaign-now"
    own = _orphan(run_dir / "fuzz-api_sequence", "api_sequence-crash-9")
    own.with_name(own.name + ".txt").write_text((fake / "report.txt").read_text())
    result = {"target": "api_sequence", "crashes": [str(own)], "replays": {}, "log": ""}
    result |= {"seconds": 1.0, "execs": 10, "exec_per_s": 10, "cov": 1, "corpus": 1}
    (run_dir / "fuzz-api_sequence" / "fuzz.json").write_text(json.dumps({"plant": 0, "results": [result]}))
    job = Job("fuzz:api_sequence", "fuzz", [], 10.0, "fuzz-api_sequence/fuzz.json", state="done")

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "_keep_reports", interrupted)
    capsys.readouterr()
    c = Campaign("campaign-now", 60.0, 1, jobs=[job])
    try:
        report = campaign.collect(c, run_dir, coverage=False, recover=True)
    except KeyboardInterrupt:
        pytest.fail("the campaign's collect ended on the sweep's Ctrl-C: no report, its crashes untriaged")
    err = capsys.readouterr().err
    assert "interrupted" in err and "not recorded yet" in err, err
    assert [(p, run) for p, _, run in _occurrences(reports)] == [(str(own), "campaign-now")]
    assert len(report.crashes) == 1


def test_a_folder_held_by_a_sweep_does_not_name_its_dead_run_as_going(tmp_path: Path) -> None:
    """`kpool campaign --resume` (or `kpool fuzz --run-dir`) of a killed run's folder while another kpool
    sweeps it: the lock file still names the killed process, and hold() said "the folder of a run still
    going (process <the dead one>)"."""
    import subprocess
    import sys

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    folder = tmp_path / "campaign-killed"
    folder.mkdir()
    (folder / runlock.NAME).write_text(f'{{"pid": {int(dead.stdout)}, "started": 1.0}}\n')
    sweep = runlock.take(folder)  # what orphans.left holds while it replays and records
    assert sweep is not None
    with sweep, pytest.raises(KpoolError) as exc:
        runlock.hold(folder, kind="campaign")
    text = str(exc.value)
    assert f"process {int(dead.stdout)})" not in text and "recovering" in text, text


def test_a_run_dir_holding_an_earlier_run_is_refused_and_kept(fake: Path) -> None:  # noqa: F811
    """`kpool fuzz --run-dir nightly` twice: the second wrote its fuzz.json over the first's (its targets
    and crashes gone from it) and took the first run's crash inputs for its own (replayed again and
    recorded as a second occurrence each)."""
    reports = fake / "reports"
    folder = reports / "nightly"
    runner.run("api_sequence", 1, run_dir=folder, reports=reports)
    before = (folder / "fuzz.json").read_bytes()
    with pytest.raises(UsageError) as exc:
        runner.run("conf", 1, run_dir=folder, reports=reports)
    assert str(folder / "fuzz.json") in str(exc.value) and "--run-dir" in str(exc.value), exc.value
    assert (folder / "fuzz.json").read_bytes() == before
    assert not (folder / "logs" / "conf.log").exists()


def test_a_run_dir_a_killed_run_left_is_refused_and_its_crash_inputs_recorded_later(
    fake: Path,  # noqa: F811
) -> None:
    reports = fake / "reports"
    killed = reports / "fuzz-killed"
    crash = _orphan(killed)
    with pytest.raises(UsageError) as exc:
        runner.run("api_sequence", 1, run_dir=killed, reports=reports)
    assert "crash input" in str(exc.value) and "--run-dir" in str(exc.value), exc.value
    assert _occurrences(reports) == []
    runner.run("api_sequence", 1, run_dir=reports / "fuzz-next", reports=reports)
    assert [o[0] for o in _occurrences(reports)] == [str(crash)]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (every write: ENOSPC)")
def test_a_full_disk_under_the_fuzz_log_keeps_the_crash_and_names_the_log(
    fake: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The disk filled up while libFuzzer's output was copied to its log: kpool stopped at once with a
    bare "No space left on device", naming no file, and left the crash input libFuzzer had written
    unreplayed and unrecorded, with no fuzz.json."""
    monkeypatch.setenv("KPOOL_FAKE", "crash")
    reports = fake / "reports"
    folder = reports / "fuzz-full"
    (folder / "logs").mkdir(parents=True)
    log = folder / "logs" / "api_sequence.log"
    log.symlink_to("/dev/full")  # every write to the log: ENOSPC
    run = runner.run("api_sequence", 1, run_dir=folder, reports=reports)
    err = capsys.readouterr().err
    assert str(log) in err and "No space left on device" in err, err
    assert run.crashed and [Path(c).name for c in run.results[0].crashes] == ["api_sequence-crash-0badc0de"]
    assert (folder / "fuzz.json").is_file()
    assert [Path(o[0]).name for o in _occurrences(reports)] == ["api_sequence-crash-0badc0de"]


TINY = """\
name: tiny
processes: 1
ops: 2000
mix: {alloc: 2, free: 1}
sizes: {dist: uniform, min: 16, max: 256}
working_set: 100
"""


@pytest.mark.parametrize("phase", ["sweep", "coverage"])
def test_a_campaign_interrupted_after_its_jobs_writes_its_report_and_exits_130(
    phase: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C while the campaign swept what killed runs left: it wrote its report and exited by the report
    (0 when clean), as though nothing had been interrupted; while it measured the coverage of the corpora:
    no report at all (the KeyboardInterrupt went past it). Both now: the report, then 130."""
    import contextlib
    from collections.abc import Iterator

    from harness import campaign
    from harness.campaign import run as campaign_run
    from harness.fuzz import orphans

    @contextlib.contextmanager
    def interrupted_sweep(*args: object, **kwargs: object) -> Iterator[list[object]]:
        raise KeyboardInterrupt
        yield []

    def interrupted_coverage(*args: object, **kwargs: object) -> dict[str, object]:
        raise KeyboardInterrupt

    if phase == "sweep":
        monkeypatch.setattr(orphans, "left", interrupted_sweep)
    else:
        monkeypatch.setattr(campaign_run, "fuzz_coverage", interrupted_coverage)
    workload = tmp_path / "tiny.yaml"
    workload.write_text(TINY)
    reports = tmp_path / "reports"
    argv = ["--budget", "20s", "--targets", "", "--workloads", str(workload), "--programs", ""]
    try:
        code = campaign.main([*argv, "--reports", str(reports)])
    except KeyboardInterrupt:
        pytest.fail(f"Ctrl-C during the {phase} went past the campaign's report")
    assert code == 130
    [run_dir] = reports.glob("campaign-*")
    assert (run_dir / "summary.json").is_file() and (run_dir / "index.html").is_file()
    out, err = capsys.readouterr()
    assert "interrupted" in out and "interrupted" in err, (out, err)


# A stand-in for libFuzzer's -merge=1: keeps every other input of the working corpus (the first folder
# after the output one) in the output folder.
FAKE_MERGE = r"""
import shutil, sys
from pathlib import Path
args = [a for a in sys.argv[1:] if not a.startswith("-")]
out, work = Path(args[0]), Path(args[1])
for p in sorted(work.iterdir())[::2]:
    shutil.copy(p, out / p.name)
"""


def _fake_merge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inputs: int) -> Path:
    script = tmp_path / "fake_merge.py"
    script.write_text(FAKE_MERGE)
    monkeypatch.setattr(runner, "script", lambda target: script)
    monkeypatch.setattr(runner, "target_env", lambda target, plant=0: dict(os.environ))
    monkeypatch.setattr(runner, "seeds_dir", lambda target: tmp_path / "no-seeds")
    work = runner.working_corpus("conf", tmp_path / "reports")
    for i in range(inputs):
        (work / f"{i:040x}").write_bytes(bytes([i % 256]))
    return work


def test_an_input_a_running_fuzzer_adds_during_a_merge_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`kpool fuzz --merge` while a `kpool fuzz` (or a campaign's merge) wrote into the same working
    corpus: the merge renamed the corpus away and deleted it once its merged one was in place, and every
    input written meanwhile into the corpus was deleted with it."""
    work = _fake_merge(tmp_path, monkeypatch, 10)
    real_run = subprocess.run

    def merge_while_a_fuzzer_writes(*args: Any, **kwargs: Any) -> Any:
        done = real_run(*args, **kwargs)
        (work / "found-while-merging").write_bytes(b"new")  # after the merge read the corpus
        return done

    monkeypatch.setattr(runner.subprocess, "run", merge_while_a_fuzzer_writes)
    [(_, before, after)] = runner.merge("conf", tmp_path / "reports")
    names = sorted(p.name for p in work.iterdir())
    assert "found-while-merging" in names
    assert names == sorted([f"{i:040x}" for i in range(0, 10, 2)] + ["found-while-merging"])
    assert (before, after) == (10, 6)
    assert not list(work.parent.glob("conf.*m*"))  # no .merging or .premerge left


def test_two_merges_of_one_corpus_at_once_take_turns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two `kpool fuzz --merge` over one reports folder: the second deleted the first's .merging folder
    while the first's libFuzzer wrote into it, and the first then moved that half-written folder in as the
    working corpus."""
    work = _fake_merge(tmp_path, monkeypatch, 10)
    with runner.corpus_lock(work):  # another merge (a campaign's, or a kpool fuzz --merge) under way
        done: list[object] = []
        thread = threading.Thread(target=lambda: done.append(runner.merge("conf", tmp_path / "reports")))
        thread.start()
        thread.join(timeout=1.0)
        assert thread.is_alive() and not done  # it waits for the other to end
        assert len(list(work.iterdir())) == 10
    thread.join(timeout=30)
    assert done and len(list(work.iterdir())) == 5


def test_a_campaigns_job_run_again_in_its_folder_is_not_refused(
    fake: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`kpool campaign --resume` runs a job its interruption stopped again, in the same folder: that
    folder holds the stopped attempt's fuzz.json and crash inputs (the new attempt replays and reports
    them), and is no other run's."""
    from harness.triage import record

    reports = fake / "reports"
    folder = reports / "campaign-1" / "fuzz-api_sequence"
    runner.run("api_sequence", 1, run_dir=folder, reports=reports)  # the stopped attempt
    (folder / "crashes" / "api_sequence-crash-2").write_bytes(b"\x02")  # found before the stop
    monkeypatch.setenv(record.RUN_ENV, "campaign-1")  # as the campaign's jobs run
    monkeypatch.setenv(record.DB_ENV, str(fake / "scratch.sqlite"))
    run = runner.run("api_sequence", 1, run_dir=folder, reports=reports)
    assert [Path(c).name for c in run.results[0].crashes] == ["api_sequence-crash-2"]
