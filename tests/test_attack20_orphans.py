"""Session 20's outside review: what `kpool fuzz` and `kpool campaign` take for crash inputs a killed run
left (<run>/crashes/<target>-crash-*) and replay before they fuzz. On main (e193d3a) a FIFO, a folder or a
link to /dev/zero of such a name was replayed: libFuzzer waited on the FIFO's writer, or read /dev/zero
for ever, and `kpool fuzz` never started. Only regular files are crash inputs now."""

from __future__ import annotations

import os
from pathlib import Path

from harness.fuzz import runner


def test_only_regular_files_are_crash_inputs(tmp_path: Path) -> None:
    crashes = tmp_path / "crashes"
    crashes.mkdir()
    real = crashes / "conf-crash-0a1b"
    real.write_bytes(b"\x00\x01")
    os.mkfifo(crashes / "conf-crash-fifo")
    (crashes / "conf-crash-dir").mkdir()
    (crashes / "conf-crash-zero").symlink_to("/dev/zero")
    (crashes / "conf-crash-link").symlink_to(real)  # a link to a regular file is one
    assert runner._artifacts(crashes, "conf") == [crashes / "conf-crash-0a1b", crashes / "conf-crash-link"]
