"""Crash inputs a killed run left on disk unrecorded. libFuzzer writes a crash input into the run's crashes/
folder the moment it finds it; `kpool fuzz` replays and records it only once libFuzzer has ended. A kpool
killed in between (kill -9, the machine going down) left the input there, never recorded, triaged or
reported, and no later run noticed it. The next `kpool fuzz` or `kpool campaign` over the same reports
folder finds such inputs, replays, signs and records them, and says so; a run still alive keeps its own."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.fuzz import runner
from harness.triage import signature as S
from harness.triage.db import CrashDB, MissingCrashDB

ROOT = Path(__file__).resolve().parents[1]
REPORT = (Path(__file__).parent / "data" / "traces" / "asan_heap_use_after_free.txt").read_text()

# A stand-in for a target script. Given an input file it replays it: the sanitizer report, exit 1.
# Fuzzing: "fine" ends well at once (so does "noise", printing bytes that are not UTF-8); "crash" writes
# a crash input and ends as libFuzzer does then; "crash_then_hang" writes a crash input where libFuzzer
# would, says so in a file, and hangs, so that the test can kill kpool between the input and its recording.
FAKE_TARGET = r"""
import os, sys, time
from pathlib import Path
args = sys.argv[1:]
if any(not a.startswith("-") and Path(a).is_file() for a in args):
    sys.stderr.write(Path(os.environ["KPOOL_FAKE_REPORT"]).read_text())
    sys.exit(1)
prefix = next(a.split("=", 1)[1] for a in args if a.startswith("-artifact_prefix="))
print("INFO: Seed: 1", flush=True)
if os.environ.get("KPOOL_FAKE") == "noise":  # bytes that are not UTF-8, as a target's own output may be
    sys.stdout.buffer.write(b"INFO: \xff\xfe not text\n")
    sys.stdout.flush()
if os.environ.get("KPOOL_FAKE") == "crash":
    Path(prefix + "crash-0badc0de").write_bytes(b"\x01\x02\x03")
    print("==1==ERROR: AddressSanitizer: heap-use-after-free", flush=True)
    sys.exit(1)
if os.environ.get("KPOOL_FAKE") == "crash_then_hang":
    Path(prefix + "crash-0badc0de").write_bytes(b"\x01\x02\x03")
    Path(os.environ["KPOOL_FAKE_READY"]).touch()
    time.sleep(120)
    sys.exit(1)
print("#2\tINITED cov: 5 ft: 5 corp: 1/1b exec/s: 0 rss: 30Mb", flush=True)
print("Done 100 runs in 1 second(s)", flush=True)
print("stat::average_exec_per_sec:     100", flush=True)
"""

# `kpool` with the stand-in target, for a run in a process of its own (to be killed).
KPOOL_WITH_FAKE = """
import os, sys
from pathlib import Path
from harness import cli
from harness.fuzz import runner
script = Path(os.environ["KPOOL_FAKE_SCRIPT"])
runner.script = lambda target: script
runner.target_env = lambda target, plant=0: dict(os.environ)
runner.seeds_dir = lambda target: script.parent / "no-seeds"
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    script = tmp_path / "fake_target.py"
    script.write_text(FAKE_TARGET)
    report = tmp_path / "report.txt"
    report.write_text(REPORT)
    monkeypatch.setattr(runner, "script", lambda target: script)
    monkeypatch.setattr(runner, "target_env", lambda target, plant=0: dict(os.environ))
    monkeypatch.setattr(runner, "seeds_dir", lambda target: tmp_path / "no-seeds")
    monkeypatch.setenv("KPOOL_FAKE_REPORT", str(report))
    monkeypatch.setenv("KPOOL_FAKE", "fine")
    monkeypatch.delenv("KPOOL_CRASH_DB", raising=False)
    monkeypatch.delenv("KPOOL_CRASH_RUN", raising=False)
    return tmp_path


def _wait_for(path: Path, proc: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    end = time.monotonic() + timeout_s
    while not path.exists():
        assert proc.poll() is None, f"kpool ended (exit {proc.returncode}) before the crash input"
        assert time.monotonic() < end, f"no {path} after {timeout_s} s"
        time.sleep(0.1)


def _occurrences(reports: Path) -> list[tuple[str, str, str]]:
    """(input path, signature hash, run) of every recorded occurrence."""
    try:
        db = CrashDB.open(reports / "crashes.sqlite")
    except MissingCrashDB:
        return []
    return [
        (str(o.reproducer.input_path if o.reproducer else ""), sig.hash, o.run_id)
        for sig in db.signatures()
        for o in db.occurrences(sig.id)
    ]


def test_a_crash_input_left_by_a_killed_kpool_fuzz_is_recorded_by_the_next_run(
    fake: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reports = fake / "reports"
    ready = fake / "ready"
    env = {
        **os.environ,
        "KPOOL_FAKE": "crash_then_hang",
        "KPOOL_FAKE_READY": str(ready),
        "KPOOL_FAKE_SCRIPT": str(runner.script("api_sequence")),
        "PYTHONPATH": str(ROOT),
    }
    killed = reports / "fuzz-killed"
    argv = ["-q", "fuzz", "api_sequence", "--time", "100", "--reports", str(reports)]
    argv += ["--run-dir", str(killed)]
    proc = subprocess.Popen([sys.executable, "-c", KPOOL_WITH_FAKE, *argv], env=env)
    try:
        _wait_for(ready, proc)
        [crash] = list((killed / "crashes").glob("api_sequence-crash-*"))
        # while its run lives, the input is that run's to record: another run leaves it alone
        runner.run("api_sequence", 1, run_dir=reports / "fuzz-beside", reports=reports)
        assert _occurrences(reports) == []
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (killed / "fuzz.json").exists() and _occurrences(reports) == []
    capsys.readouterr()

    run = runner.run("api_sequence", 1, run_dir=reports / "fuzz-next", reports=reports)
    err = capsys.readouterr().err
    expected = S.compute(REPORT)
    assert _occurrences(reports) == [(str(crash), expected.hash, "fuzz-next")]
    [sig] = CrashDB.open(reports / "crashes.sqlite").signatures()
    assert sig.kind == "heap-use-after-free" and sig.status == "new"
    assert str(killed) in err and "never recorded" in err, err
    assert run.crashed  # `kpool fuzz` exits 1: a crash no run had reported
    summary = json.loads((reports / "fuzz-next" / "fuzz.json").read_text())
    assert [r["input"] for r in summary["recovered"]] == [str(crash)]
    assert summary["recovered"][0]["signature"] == expected.hash

    # recorded once: the run after that finds nothing left to recover
    again = runner.run("api_sequence", 1, run_dir=reports / "fuzz-after", reports=reports)
    assert len(_occurrences(reports)) == 1 and not again.crashed
    assert "never recorded" not in capsys.readouterr().err


def _orphan(folder: Path, name: str = "api_sequence-crash-1") -> Path:
    """A crash input in a run folder's crashes/, as a run killed before recording it leaves it: with the
    run.lock the run wrote when it started (the sweep looks in run folders only, not in any crashes/)."""
    from harness import runlock

    runlock.hold(folder, kind="fuzz", plant=0).release()  # what kpool fuzz writes, and kill -9 leaves
    crashes = folder / "crashes"
    crashes.mkdir(parents=True)
    crash = crashes / name
    crash.write_bytes(b"\x07\x07")
    return crash


def test_a_campaign_records_what_a_killed_campaign_left(
    fake: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A campaign killed with kill -9: its fuzz job wrote fuzz.json into its scratch database, and the
    campaign died before recording anything in its own. The next campaign over the reports folder does."""
    from harness import campaign
    from harness.campaign import Campaign

    reports = fake / "reports"
    job = reports / "campaign-killed" / "fuzz-api_sequence"
    crash = _orphan(job)
    result = {"target": "api_sequence", "crashes": [str(crash)], "replays": {}, "log": "", "seconds": 1.0}
    (job / "fuzz.json").write_text(
        json.dumps({"run_dir": str(job), "plant": 0, "results": [result], "crash_db": "/tmp/gone.sqlite"})
    )
    run_dir = reports / "campaign-next"
    run_dir.mkdir()
    capsys.readouterr()
    report = campaign.collect(Campaign("campaign-next", 60.0, 1), run_dir, coverage=False, recover=True)
    err = capsys.readouterr().err
    expected = S.compute(REPORT)
    assert _occurrences(reports) == [(str(crash), expected.hash, "campaign-next")]
    [entry] = report.crashes
    assert entry.signature == expected.hash and entry.status == "new" and not report.ok
    assert str(job) in err and "never recorded" in err, err


def test_a_live_campaigns_crashes_are_its_own(fake: Path) -> None:
    """A campaign alive holds its folder: the crash inputs its jobs left for it to record are not taken
    by another run (they would be recorded twice), even when the job that found them has ended."""
    from harness import runlock

    reports = fake / "reports"
    live = reports / "campaign-live"
    live.mkdir(parents=True)
    _orphan(live / "fuzz-api_sequence")
    with runlock.hold(live, kind="campaign"):
        runner.run("api_sequence", 1, run_dir=reports / "fuzz-beside", reports=reports)
        assert _occurrences(reports) == []
    runner.run("api_sequence", 1, run_dir=reports / "fuzz-later", reports=reports)
    assert len(_occurrences(reports)) == 1


def test_a_crash_recorded_before_the_kill_is_not_recorded_again(fake: Path) -> None:
    """Killed while recording: the inputs it recorded stay recorded once; the others are recovered."""
    from harness.fuzz.target import write_history
    from harness.triage import record

    reports = fake / "reports"
    killed = reports / "fuzz-killed"
    first = _orphan(killed)
    second = first.with_name("api_sequence-crash-2")
    second.write_bytes(b"\x08")
    (killed / "crashes" / "api_sequence-crash-1.txt").write_text(f"# kpool fuzz replay: exit 1\n{REPORT}")
    write_history(killed / "crashes" / "api_sequence-crash-2.history", [b"\x01", b"\x08"])
    result = {"target": "api_sequence", "crashes": [str(first)], "replays": {}, "log": ""}
    record.record_fuzz({"results": [result]}, reports, "fuzz-killed", 0)
    runner.run("api_sequence", 1, run_dir=reports / "fuzz-next", reports=reports)
    got = sorted((path, run) for path, _, run in _occurrences(reports))
    assert got == [(str(first), "fuzz-killed"), (str(second), "fuzz-next")]
    # its report and history files are no crash inputs of their own
    assert not any(p.endswith((".txt", ".history")) for p, _ in got)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("clang") is None, reason="the fuzz build needs clang")
def test_a_real_kill_9_between_the_crash_input_and_its_record(tmp_path: Path) -> None:
    """`kpool fuzz --plant 1` killed with SIGKILL as soon as libFuzzer has written the crash input: the
    next `kpool fuzz` over the same reports replays it on the planted build (its run's) and records it."""
    pytest.importorskip("atheris")
    reports = tmp_path / "reports"
    killed = reports / "fuzz-killed"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KPOOL_CRASH_")}
    env["PYTHONPATH"] = str(ROOT)
    base = [sys.executable, "-m", "harness.cli", "-q", "fuzz", "api_sequence", "--no-seeds"]
    proc = subprocess.Popen(
        [*base, "--plant", "1", "--time", "120", "--reports", str(reports), "--run-dir", str(killed)], env=env
    )
    try:
        end = time.monotonic() + 300
        while not list((killed / "crashes").glob("api_sequence-*")):
            assert proc.poll() is None, f"kpool fuzz ended (exit {proc.returncode}) before a crash input"
            assert time.monotonic() < end, "the planted bug was not found in 300 s"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    found = [p for p in (killed / "crashes").glob("api_sequence-*") if "." not in p.name]
    assert found and _occurrences(reports) == []
    after = subprocess.run(
        [*base, "--time", "2", "--reports", str(reports), "--run-dir", str(reports / "fuzz-next")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert after.returncode == 1, after.stderr
    assert "never recorded" in after.stderr, after.stderr
    recorded = _occurrences(reports)
    assert sorted(p for p, _, _ in recorded) == sorted(map(str, found))
    db = CrashDB.open(reports / "crashes.sqlite")
    assert all(s.kind not in ("unknown", "exit-code") for s in db.signatures()), [
        s.title for s in db.signatures()
    ]


def test_a_resumed_campaign_does_not_record_a_recovered_crash_again(fake: Path) -> None:
    """A killed campaign's crash, recovered by the next `kpool fuzz`; then `kpool campaign --resume` of
    the killed campaign triages its job's fuzz.json, which lists the same input: recorded once."""
    from harness import campaign
    from harness.campaign import Campaign, Job

    reports = fake / "reports"
    run_dir = reports / "campaign-killed"
    crash = _orphan(run_dir / "fuzz-api_sequence")
    result = {"target": "api_sequence", "crashes": [str(crash)], "replays": {}, "log": ""}
    result |= {"seconds": 1.0, "execs": 10, "exec_per_s": 10, "cov": 1, "corpus": 1}
    (run_dir / "fuzz-api_sequence" / "fuzz.json").write_text(json.dumps({"plant": 0, "results": [result]}))
    runner.run("api_sequence", 1, run_dir=reports / "fuzz-next", reports=reports)
    assert [run for _, _, run in _occurrences(reports)] == ["fuzz-next"]
    job = Job("fuzz:api_sequence", "fuzz", [], 10.0, "fuzz-api_sequence/fuzz.json", state="done")
    report = campaign.collect(Campaign("campaign-killed", 60.0, 1, jobs=[job]), run_dir, coverage=False)
    assert [run for _, _, run in _occurrences(reports)] == ["fuzz-next"]
    [entry] = report.crashes
    assert entry.signature == S.compute(REPORT).hash
