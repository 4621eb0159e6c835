"""`kpool fuzz --jobs N`: libFuzzer's fork mode with N workers, as many as the CPUs this process may use at
most (a huge N started that many processes)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness.fuzz import runner

# A stand-in fuzz target: writes the arguments libFuzzer would get, then ends as a clean run does.
RECORD_ARGS = r"""
import json, os, sys
with open(os.environ["KPOOL_FAKE_ARGS"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\n")
print("#2\tINITED cov: 5 ft: 5 corp: 1/1b exec/s: 0 rss: 30Mb", flush=True)
print("Done 100 runs in 1 second(s)", flush=True)
print("stat::average_exec_per_sec:     100", flush=True)
"""


@pytest.fixture
def recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The file the stand-in target writes its arguments to, one JSON list a line."""
    script = tmp_path / "record_args.py"
    script.write_text(RECORD_ARGS)
    args = tmp_path / "args.jsonl"
    monkeypatch.setattr(runner, "script", lambda target: script)
    monkeypatch.setattr(runner, "target_env", lambda target, plant=0: dict(os.environ))
    monkeypatch.setattr(runner, "seeds_dir", lambda target: tmp_path / "no-seeds")
    monkeypatch.setenv("KPOOL_FAKE_ARGS", str(args))
    monkeypatch.delenv("KPOOL_CRASH_DB", raising=False)
    monkeypatch.delenv("KPOOL_CRASH_RUN", raising=False)
    return args


def _fork_flags(args: Path) -> list[str]:
    [argv] = [json.loads(line) for line in args.read_text().splitlines()]
    return [a for a in argv if a.startswith("-fork=")]


def test_jobs_beyond_the_cpus_run_as_many_workers_as_cpus_and_say_so(
    recorded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--jobs 100000 handed libFuzzer -fork=100000: 100,000 threads each starting a process."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    run = runner.run("api_sequence", 1, 100000, run_dir=tmp_path / "run", reports=tmp_path / "reports")
    assert run.results[0].error == ""
    assert _fork_flags(recorded) == ["-fork=3"]
    err = capsys.readouterr().err
    assert "--jobs 100000" in err and "3 CPUs" in err, err
    assert "3 jobs" in err, err  # the progress line says what runs, not what was asked


@pytest.mark.parametrize(("jobs", "fork"), [(1, []), (2, ["-fork=2"]), (3, ["-fork=3"])])
def test_jobs_within_the_cpus_are_run_as_asked_without_a_word(
    jobs: int,
    fork: list[str],
    recorded: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    runner.run("api_sequence", 1, jobs, run_dir=tmp_path / "run", reports=tmp_path / "reports")
    assert _fork_flags(recorded) == fork
    assert "--jobs" not in capsys.readouterr().err


def test_jobs_on_one_cpu_keep_fork_mode_and_keep_going(
    recorded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--jobs 4 --keep-going on one CPU: one worker, still in fork mode, so that a crash does not end it."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    runner.run("api_sequence", 1, 4, keep_going=True, run_dir=tmp_path / "run", reports=tmp_path / "reports")
    [argv] = [json.loads(line) for line in recorded.read_text().splitlines()]
    assert "-fork=1" in argv and "-ignore_crashes=1" in argv


def test_campaign_jobs_beyond_the_cpus_run_as_many_at_a_time_and_say_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`kpool campaign --jobs 64` on a 3-CPU machine planned 64 lanes: every fuzz target and every workload
    at once, the workloads' latency measured on CPUs shared by 15 busy processes (broken SLOs that say
    nothing about kpool)."""
    from harness import campaign

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    assert campaign.parse_args(["--jobs", "64"]).jobs == 3
    err = capsys.readouterr().err
    assert "--jobs 64" in err and "3 CPUs" in err, err
    assert campaign.parse_args(["--jobs", "2"]).jobs == 2
    assert "--jobs" not in capsys.readouterr().err


# libFuzzer's last progress line, then its final statistics with the same figures (as fork mode ends)
LAST_LINE_TWICE = r"""
print("#5944\tDONE   cov: 780 ft: 900 corp: 8/80b lim: 4 exec/s: 2972 rss: 45Mb", flush=True)
print("Done 5944 runs in 2 second(s)", flush=True)
print("stat::average_exec_per_sec:     2972", flush=True)
"""


def test_the_last_progress_line_is_not_said_twice(
    recorded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`kpool fuzz --jobs 2` printed "conf: 5944 runs, 2972 exec/s, ..." twice at its end: the streamed
    progress line, then the final one with the same figures."""
    (tmp_path / "record_args.py").write_text(LAST_LINE_TWICE)
    monkeypatch.setattr(runner, "PROGRESS_EVERY_S", 0.0)  # every progress line shown as it comes
    runner.run("api_sequence", 1, run_dir=tmp_path / "run", reports=tmp_path / "reports")
    err = capsys.readouterr().err
    assert err.count("api_sequence: 5944 runs, 2972 exec/s") == 1, err
