"""Session 36's attacks from outside on builds: two kpool commands building the same variant at once."""

from __future__ import annotations

import threading
from pathlib import Path

from harness import build


def test_two_builds_on_one_machine_run_one_at_a_time(tmp_path: Path) -> None:
    """Two `kpool fuzz conf` started together on a fresh install both ran make on the cache's fuzz build
    folder at once: one found libkpool.so there while the other was still writing it, and its fuzzer
    stopped on "OSError: .../build/fuzz/libkpool.so: invalid ELF header" (a Python traceback in the
    fuzzer's log, exit 1). The campaign's jobs took a lock around their builds; the commands did not.
    Now every make kpool runs takes the build folder's lock: here two stand-in makes that fail if they
    overlap."""
    probe = tmp_path / "busy"
    cmd = ["sh", "-c", f"mkdir {probe} || exit 1; sleep 0.5; rmdir {probe}"]
    errors: list[BaseException] = []

    def one() -> None:
        try:
            build.run_make(cmd)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
