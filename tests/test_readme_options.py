"""README's pool options table is `kpool options`' output, row for row: the table is documentation of
conf.c's option table, and a row edited in conf.c alone drifted (high_wm's "never under low_wm")."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import cli

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_options_table_is_kpool_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["options"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| `")]
    assert len(rows) > 10, "kpool options printed no table"
    readme = set(README.read_text().splitlines())
    stale = [row.split(" | ")[0] for row in rows if row not in readme]
    assert not stale, f"README's options rows differ from `kpool options` (regenerate them): {stale}"
