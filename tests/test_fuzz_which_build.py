"""Which build a command uses is said (issue 15, points 5 and 7): `kpool stress` names its variant and warns
that the release build catches no race or canary damage; `kpool fuzz` names the library it builds and loads,
and warns when the current directory is another kpool checkout than the one it builds from."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import cli, paths
from harness.fuzz import runner


def _checkout(root: Path) -> Path:
    (root / "allocator").mkdir(parents=True)
    (root / "allocator" / "Makefile").write_text("all:\n")
    (root / "pyproject.toml").write_text('[project]\nname = "kpool"\n')
    return root


def test_another_checkout_is_named(tmp_path: Path) -> None:
    other = _checkout(tmp_path / "other")
    (other / "harness").mkdir()
    assert runner.other_checkout(other / "harness") == other
    assert runner.other_checkout(tmp_path) is None  # not a checkout
    own = paths.checkout()
    if own is not None:
        assert runner.other_checkout(own / "allocator") is None  # the one it builds from


def test_stress_names_its_variant(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wl = tmp_path / "tiny.yaml"
    sizes = "sizes: {dist: list, sizes: [{size: 32, weight: 1}]}\n"
    wl.write_text("name: tiny\nprocesses: 1\nops: 1000\nmix: {alloc: 1, free: 1}\n" + sizes)
    assert cli.main(["stress", str(wl), "--reports", str(tmp_path / "r"), "--run-id", "t"]) == 0
    err = capsys.readouterr().err
    assert "variant release" in err and "--variant asan" in err and "--variant tsan" in err
