"""The out-of-line-metadata prototype (allocator/proto/, issue 14's redesign study) keeps working.

Its integrity test must pass against the prototype with every check on (both canary flavours), and fail
against each build with one check compiled out (`make test-off`): so the prototype's figures in its README
stay the figures of an allocator whose checks catch what they claim to.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

PROTO = Path(__file__).resolve().parent.parent / "allocator" / "proto"


@pytest.mark.skipif(shutil.which("make") is None or shutil.which("cc") is None, reason="no make or cc")
def test_prototype_checks_catch_and_each_one_switched_off_fails(tmp_path: Path) -> None:
    build = tmp_path / "build"
    done = subprocess.run(
        ["make", "-s", "-C", str(PROTO), f"B={build}", "test", "test-off"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert out.count("ok: 0 failure(s)") == 2, out[-3000:]
    for check in ("nodfree", "nocanary", "noptr"):
        assert f"test_{check} fails as it should" in out, out[-3000:]
