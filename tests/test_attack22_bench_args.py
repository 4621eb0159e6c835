"""Session 22's outside review: kpool bench's arguments. On main (21fec7b):
- `--runs 99999999999999999999` was blamed on the seed: "--seed 1: expected 0 to -81553255926290448383";
- `--workload x.yaml --workloads b` ran x.yaml alone and said nothing of --workloads b (kpbench's a-f do
  not run with --workload).
Both are now usage errors naming the option given."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import cli

ROOT = Path(__file__).resolve().parents[1]


def test_runs_past_64_bits_names_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", "--workloads", "a", "--runs", str(2**64), "--allocators", "glibc"]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert "--runs 18446744073709551616" in err and "--seed" not in err, err


def test_workload_and_workloads_together_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wl = str(ROOT / "workloads" / "steady-small.yaml")
    argv = [
        "bench",
        "--workload",
        wl,
        "--workloads",
        "b",
        "--allocators",
        "glibc",
        "--reports",
        str(tmp_path),
    ]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "--workloads" in err and "--workload" in err, err
    assert not any(tmp_path.iterdir()), "a run started"
