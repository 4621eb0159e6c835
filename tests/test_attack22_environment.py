"""Session 22's outside review: the environment libkpool reads, checked before anything runs.

On main (21fec7b):
- `KPOOL_LOG=/no/such/dir/log kpool run -- prog` started the program, whose preload gave up making its
  pool ("cannot make the pool: KPOOL_LOG: ...") and exited 127, kpool with it; with --conf or KPOOL_CONF
  set, the same KPOOL_LOG was blamed on them ("--conf 'seed:1': KPOOL_LOG: cannot open ...").
  `kpool stress` blamed it on the workload file ("invalid workload / x.yaml:2:1: KPOOL_LOG: ...").
- `kpool bench` with a KPOOL_CONF kp_create refuses, a KPOOL_LOG it cannot open or (for kpool-preload) a
  KPOOL_PRELOAD the preload refuses ran every round of every peer, then ended "3 run(s) failed: (a) kpool:
  exit 1; ... kpool-preload: exit 127", exit 1: neither what was wrong nor the usage error it is.
Now each is a usage error (exit 2) naming the variable, its value and why, before any program or run
starts; the check pool a workload's settings are judged with no longer opens KPOOL_LOG."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness import cli
from harness.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
BENCH = ["bench", "--workloads", "a", "--runs", "1", "--ops", "1000"]


def _errors(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("kpool: error:")]


@pytest.fixture
def bad_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    value = str(tmp_path / "no-such-folder" / "kpool.log")
    monkeypatch.setenv("KPOOL_LOG", value)
    return value


@pytest.mark.parametrize("conf", [None, "--conf", "KPOOL_CONF"])
def test_run_refuses_a_log_it_cannot_open_before_the_program_starts(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    bad_log: str,
    conf: str | None,
) -> None:
    marker = tmp_path / "started"
    argv = ["run", "--reports", str(tmp_path / "reports")]
    if conf == "--conf":
        argv += ["--conf", "seed:1"]
    elif conf == "KPOOL_CONF":
        monkeypatch.setenv("KPOOL_CONF", "seed:1")
    assert cli.main([*argv, "--", "sh", "-c", f"touch {marker}"]) == 2
    errors = _errors(capsys.readouterr().err)
    assert len(errors) == 1 and errors[0].startswith(f"kpool: error: KPOOL_LOG={bad_log!r}"), errors
    assert "No such file or directory" in errors[0], errors
    assert not marker.exists(), "the program ran"


@pytest.mark.parametrize("value", ["stderr", "2", "LOGFILE"])
def test_run_takes_a_log_it_can_open(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    log = tmp_path / "kpool.log"
    monkeypatch.setenv("KPOOL_LOG", str(log) if value == "LOGFILE" else value)
    assert cli.main(["run", "--reports", str(tmp_path / "reports"), "--", "true"]) == 0
    assert not _errors(capsys.readouterr().err)


@pytest.mark.parametrize(
    ("variable", "value", "allocators", "named"),
    [
        ("KPOOL_CONF", "bogus:1", "kpool,glibc", "unknown option 'bogus'"),
        ("KPOOL_CONF", "seed:x", "kpool-checks-off", "bad value 'x' for option 'seed'"),
        ("KPOOL_CONF", "bogus:1", "kpool-preload,glibc", "unknown option 'bogus'"),
        ("KPOOL_LOG", "LOG", "kpool,glibc", "No such file or directory"),
        ("KPOOL_PRELOAD", "on_error:maybe", "kpool-preload,glibc", "on_error takes abort or log"),
    ],
    ids=["conf-kpool", "conf-checks-off", "conf-preload", "log", "preload"],
)
def test_bench_refuses_what_kpool_would_refuse_before_the_runs(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    allocators: str,
    named: str,
) -> None:
    if value == "LOG":
        value = str(tmp_path / "no-such-folder" / "kpool.log")
    monkeypatch.setenv(variable, value)
    assert cli.main([*BENCH, "--allocators", allocators]) == 2
    err = capsys.readouterr().err
    errors = _errors(err)
    assert len(errors) == 1 and errors[0].startswith(f"kpool: error: {variable}={value!r}"), err
    assert named in errors[0], errors
    assert "run 1/1" not in err and "kpbench" not in err, "a run started"


def test_bench_of_peers_alone_ignores_kpools_variables(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KPOOL_CONF", "bogus:1")
    monkeypatch.setenv("KPOOL_PRELOAD", "bogus")
    assert cli.main([*BENCH, "--allocators", "glibc"]) == 0, capsys.readouterr().err


def test_stress_names_the_log_not_the_workload(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad_log: str
) -> None:
    workload = ROOT / "workloads" / "steady-small.yaml"
    assert cli.main(["stress", "--reports", str(tmp_path), str(workload)]) == 2
    err = capsys.readouterr().err
    errors = _errors(err)
    assert len(errors) == 1 and errors[0].startswith(f"kpool: error: KPOOL_LOG={bad_log!r}"), err
    assert "invalid workload" not in err and "steady-small.yaml" not in err, err
    assert not any(tmp_path.iterdir()), "a run started"


def test_the_check_pool_does_not_open_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Judging a workload's pool settings makes a pool in kpool's own process: it opened (and created)
    KPOOL_LOG, so a log meant for the workers' pools got the check pool's lines too."""
    from harness.spec import poolcheck

    log = tmp_path / "kpool.log"
    monkeypatch.setenv("KPOOL_LOG", str(log))
    assert poolcheck.problem("seed:1") is None
    assert poolcheck.problem("bogus:1") is not None
    assert not log.exists()
    assert os.environ["KPOOL_LOG"] == str(log)


def test_judging_the_log_leaves_no_trace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check creates nothing, and leaves a log that is there as it was: a check that made the file
    and removed it again could remove it under another run's pool that had just opened it."""
    from harness.spec import poolcheck

    new = tmp_path / "new.log"
    monkeypatch.setenv("KPOOL_LOG", str(new))
    poolcheck.check_log()
    assert not new.exists()
    old = tmp_path / "old.log"
    old.write_text("kept\n")
    monkeypatch.setenv("KPOOL_LOG", str(old))
    poolcheck.check_log()
    assert old.read_text() == "kept\n"
    monkeypatch.setenv("KPOOL_LOG", str(tmp_path))
    with pytest.raises(UsageError, match="Is a directory"):
        poolcheck.check_log()
