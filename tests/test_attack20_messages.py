"""Session 20's outside review: messages that named the wrong thing. `--reports /dev/null` (a device,
not a folder) said "/dev/null: File exists" on main (e193d3a), from the mkdir of the run's folder; now
it says it is not a folder, as a regular file there does."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "argv",
    [
        ["stress", "--reports", "/dev/null", str(ROOT / "workloads" / "steady-small.yaml")],
        ["fuzz", "conf", "--time", "1", "--reports", "/dev/null"],
        ["fuzz", "conf", "--time", "1", "--run-dir", "/dev/null"],
    ],
    ids=["stress", "fuzz-reports", "fuzz-run-dir"],
)
def test_a_device_given_as_a_folder_is_named_as_not_a_folder(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) != 0
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("kpool: error:")]
    # since session 33 (s33-atth) a reports folder's line names the option that gave it, and exits 2
    said = "--reports /dev/null" if "--reports" in argv else "/dev/null"
    assert errors == [f"kpool: error: {said}: not a folder"], err


@pytest.mark.parametrize("limit", ["nan", "inf", "0", "-1"])
def test_bench_programs_refuses_a_time_limit_that_is_no_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], limit: str
) -> None:
    """`kpool bench --programs --time-limit nan` (or inf, 0) ran each program with no limit at all, and
    -1 killed it at once and reported the program broken; `kpool stress --time-limit` refuses them."""
    argv = ["bench", "--programs", str(ROOT / "workloads/programs/*.yaml"), "--time-limit", limit]
    assert cli.main([*argv, "--reports", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--time-limit" in err and "positive number of seconds" in err, err
    assert not any(tmp_path.iterdir()), "a run started"
