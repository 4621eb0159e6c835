"""Session 22's outside review, a newcomer's first hour: kpool installed with a plain `pip install` (no
checkout), run from another folder. The README's command table says `kpool stress workloads/x.yaml`, and
the wheel ships the workloads (harness/_src/workloads/); `kpool campaign --workloads` and `kpool bench
--programs` look there for a relative path the current folder does not hold, but on main (21fec7b)
`kpool stress workloads/steady-small.yaml` (and `'workloads/*.yaml'`, `workloads/programs/git.yaml`, as
the README's Real programs part says) was "no such workload file", exit 2. Now stress looks there too,
the current folder first, and an error says where it looked."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import paths
from harness.errors import UsageError
from harness.stress.command import workload_paths


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_shipped_workload_is_found_from_another_folder(elsewhere: Path) -> None:
    shipped = paths.workloads()
    assert workload_paths(["workloads/steady-small.yaml"]) == [shipped / "steady-small.yaml"]
    assert workload_paths(["workloads/programs/git.yaml"]) == [shipped / "programs" / "git.yaml"]
    found = workload_paths(["workloads/*.yaml"])
    assert shipped / "steady-small.yaml" in found and len(found) >= 5
    assert workload_paths(["workloads"]) == sorted(shipped.glob("*.yaml"))


def test_the_current_folder_comes_first(elsewhere: Path) -> None:
    own = elsewhere / "workloads" / "steady-small.yaml"
    own.parent.mkdir()
    own.write_text("name: mine\n")
    assert workload_paths(["workloads/steady-small.yaml"]) == [Path("workloads/steady-small.yaml")]


def test_a_name_found_nowhere_says_where_it_looked(elsewhere: Path) -> None:
    with pytest.raises(UsageError) as e:
        workload_paths(["workloads/no-such.yaml"])
    assert "no such workload file" in str(e.value) and str(paths.workloads().parent) in str(e.value)


def test_bench_runs_a_shipped_workload_from_another_folder(
    elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`kpool bench --workload workloads/x.yaml` from another folder said 'cannot read: No such file'."""
    from harness import cli

    argv = ["bench", "--workload", "workloads/steady-small.yaml", "--allocators", "glibc"]
    assert cli.main([*argv, "--reports", str(elsewhere / "reports")]) == 0, capsys.readouterr().err
    assert "steady-small" in capsys.readouterr().out
