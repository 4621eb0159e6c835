"""Two stress runs never share a run folder, even when their ids collide."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.stress import runner


def test_colliding_ids_get_their_own_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ids: Iterator[str] = iter(["same", "same", "other"])
    monkeypatch.setattr(runner, "new_run_id", lambda: next(ids))
    first = runner.new_run_dir(tmp_path)
    second = runner.new_run_dir(tmp_path)
    assert first == ("same", tmp_path / "same")
    assert second == ("other", tmp_path / "other")
    assert first[1].is_dir() and second[1].is_dir()
