"""Shared fixtures: pools that are always closed, a clean KPOOL_CONF, a read-only folder."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.binding import Pool

# The C suites' shards (test_c_suite.py), the longest items, by the work of a shard: TSan's first.
_SHARD_ORDER = ("tsan", "asan", "release")
_SHARD_PREFIX = "tests/test_c_suite.py::test_c_suite["


@pytest.hookimpl(trylast=True)  # after -m's deselection: the shards that run are spread
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Spread the C suites' shards evenly through the run, the longest first: pytest-xdist's load
    scheduling hands out consecutive items, so shards next to each other went to one worker."""
    shards = [it for it in items if it.nodeid.startswith(_SHARD_PREFIX)]
    if len(shards) < 2:
        return
    shards.sort(key=lambda it: _SHARD_ORDER.index(it.nodeid[len(_SHARD_PREFIX) :].split("-")[0]))
    rest = [it for it in items if not it.nodeid.startswith(_SHARD_PREFIX)]
    step = max(1, len(rest) // len(shards))
    spread: list[pytest.Item] = []
    for i, item in enumerate(rest):
        if i % step == 0 and i // step < len(shards):
            spread.append(shards[i // step])
        spread.append(item)
    placed = len(spread) - len(rest)
    items[:] = spread + shards[placed:]


@pytest.fixture(autouse=True)
def _no_kpool_conf(monkeypatch: pytest.MonkeyPatch) -> None:
    """The caller's KPOOL_CONF must not change what a test sees."""
    monkeypatch.delenv("KPOOL_CONF", raising=False)


@pytest.fixture
def pool() -> Iterator[Pool]:
    """A pool with the default configuration (daemon on)."""
    with Pool() as p:
        yield p


@pytest.fixture
def quiet_pool() -> Iterator[Pool]:
    """A pool without the daemon, so that every event comes from the test itself (the events of
    kp_create, such as the initial grow, are drained here)."""
    with Pool("daemon:off") as p:
        p.events()
        yield p


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder nothing can be written in, as on a read-only file system: a read-only tmpfs for root (whom
    file modes do not stop), a folder without write permission for anyone else."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(0o755)
        return
    mount = ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)]
    if subprocess.run(mount, capture_output=True).returncode != 0:
        pytest.skip("no read-only folder: root, and mount refused")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)
