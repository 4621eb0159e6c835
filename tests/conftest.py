"""Shared fixtures: pools that are always closed, and a clean KPOOL_CONF."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.binding import Pool


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
