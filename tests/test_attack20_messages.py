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
    assert errors == ["kpool: error: /dev/null: not a folder"], err
