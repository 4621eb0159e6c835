"""Session 36's attacks from outside on the records kpool reads back (summary.json, campaign.json, a job's
JSON): one that is far larger than any kpool writes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from harness import atomic
from harness.report import writers


def test_a_record_far_larger_than_kpool_writes_is_refused_unread(tmp_path: Path) -> None:
    """A summary.json of 2 GB (a damaged disk, `truncate`, a file dropped there by mistake) was read whole
    by `kpool report`: 14.5 s and 4.2 GB of memory before it said "is not JSON", where a smaller machine
    kills it and no index is written. The largest records kpool writes are under 1 MB (a campaign's
    summary.json: 0.5 MB); now one past atomic.RECORD_MAX is refused by its size, unread."""
    path = tmp_path / "summary.json"
    with path.open("wb") as f:  # sparse: no disk, and reading it is what costs
        f.truncate(300 << 20)
    start = time.monotonic()
    with pytest.raises(writers.UnreadableSummary, match="300 MiB"):
        writers.read_summary(path)
    assert time.monotonic() - start < 0.5
    with pytest.raises(OSError, match="more than any record kpool writes"):
        atomic.read_bytes(path)


def test_report_lists_a_run_whose_record_is_too_large_beside_the_others(tmp_path: Path) -> None:
    from harness import cli

    (tmp_path / "campaign-a").mkdir()
    with (tmp_path / "campaign-a" / "summary.json").open("wb") as f:
        f.truncate(atomic.RECORD_MAX + 1)
    assert cli.main(["report", "--reports", str(tmp_path)]) == 0
    page = (tmp_path / "index.html").read_text()
    assert "campaign-a" in page and "more than any record kpool writes" in page
