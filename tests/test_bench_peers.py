"""kpool bench's allocators: Scudo (the hardened peer) beside issue 14's four, found in clang's resource
directory, never counted as the best peer; a missing library is a skip, a crashed run a table row."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
from test_bench_tables import _run as bench_run

from harness import bench, bench_programs, peers, run
from harness.stress import program

SCUDO_SO = "libclang_rt.scudo_standalone-x86_64.so"


@pytest.fixture
def fake_scudo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Scudo library in a fake clang resource directory: the lookup is clang's, not the lib dirs'."""
    lib = tmp_path / "lib" / "linux" / SCUDO_SO
    lib.parent.mkdir(parents=True)
    lib.write_bytes(b"")

    def resource_file(relative: str) -> Path | None:
        path = tmp_path / relative
        return path if path.is_file() else None

    monkeypatch.setattr(peers, "clang_resource_file", resource_file)
    return lib


def test_scudo_is_an_allocator_found_in_clangs_resource_dir(fake_scudo: Path) -> None:
    assert "scudo" in peers.NAMES
    chosen, preload = peers.available_allocators(["kpool", "scudo"])
    assert [a.name for a in chosen] == ["kpool", "scudo"]
    assert preload["scudo"] == str(fake_scudo)
    assert peers.preload_path("scudo") == fake_scudo
    assert run.library("scudo") == fake_scudo  # kpool run --allocator, the program launcher


def test_scudo_is_in_the_default_allocators_of_every_bench() -> None:
    assert "scudo" in bench.parse_args([]).allocators
    assert "scudo" in bench_programs.parse_args([]).allocators
    assert bench_programs.parse_args(["--allocators", "kpool,scudo"]).allocators == ["kpool", "scudo"]


def test_missing_scudo_is_skipped_with_the_package(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(peers, "clang_resource_file", lambda relative: None)
    chosen, preload = peers.available_allocators(["kpool", "scudo"])
    assert [a.name for a in chosen] == ["kpool"]
    assert "scudo" not in preload
    err = capsys.readouterr().err
    assert f"scudo skipped: {SCUDO_SO} not found; install it with `apt-get install libclang-rt-14-dev`" in err


def test_the_best_peer_is_one_of_issue_14s_four() -> None:
    assert peers.TARGETS == ("glibc", "jemalloc", "mimalloc", "tcmalloc")
    assert program.TABLE_PEERS == peers.TARGETS


def _run(ops_s: float, hwm: int) -> dict[str, Any]:
    """One kpbench run's JSON: test_bench_tables' without a CPU time."""
    return bench_run(ops_s, None, hwm)


def test_ratio_table_reports_scudo_beside_but_never_as_best() -> None:
    # Scudo is slower than kpool but smaller than everyone: its column says kpool ÷ scudo, while the best
    # peer (ops/s and peak RSS) is mimalloc, the best of issue 14's four.
    summary = {
        "a": {
            "kpool": bench.summarize([_run(40e6, 4000)]),
            "glibc": bench.summarize([_run(20e6, 8000)]),
            "mimalloc": bench.summarize([_run(80e6, 5000)]),
            "scudo": bench.summarize([_run(10e6, 2000)]),
        }
    }
    text = bench.ratio_table(summary, ["glibc", "mimalloc", "scudo"])
    speed, rss = text.split("peak RSS")[0], text.split("peak RSS")[1]
    assert "| workload | glibc | mimalloc | scudo | kpool ÷ best peer |" in speed
    assert "| a | 2.00x | 0.50x | 4.00x | 0.50x (mimalloc) |" in speed
    assert "| a | 3.9 | 7.8 | 4.9 | 2.0 | 0.80x (mimalloc) |" in rss


def test_a_crashed_peer_is_a_table_row(tmp_path: Path) -> None:
    # A peer that aborts (Scudo's defaults may) is reported in its row with the signal and the first line
    # of its stderr, and marked failed in the ratio table: no traceback, no silent gap.
    fake = tmp_path / "kpbench"
    fake.write_text("#!/bin/sh\necho 'Scudo ERROR: invalid chunk state' >&2\necho more >&2\nkill -ABRT $$\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    runner = bench.Runner(fake, {"scudo": ""}, None)
    scudo = peers.by_name("scudo")
    assert runner.run(scudo, "d", 1) is None
    kp = bench.summarize([_run(40e6, 4000)])
    sums = {"kpool": kp, "scudo": bench.summarize([], runner.failed.get(("d", "scudo"), []))}
    table = bench.workload_table("a", "desc", sums)
    row = next(ln for ln in table.splitlines() if ln.startswith("| scudo"))
    assert "failed: signal 6 (SIGABRT): " in row and "Scudo ERROR: invalid chunk state" in row
    assert "more" not in row
    ratios = bench.ratio_table({"a": sums}, ["scudo"])
    assert "| a | failed |" in ratios


def test_a_crashed_peer_is_named_in_the_programs_table() -> None:
    result = {
        "name": "sqlite3",
        "allocator": "kpool",
        "figures": {
            "kpool": {"runs": 3, "wall_s": 1.0, "peak_rss_kib": 2048.0},
            "scudo": {"runs": 0, "wall_s": None, "peak_rss_kib": None, "failed": "signal 6 (SIGABRT): x"},
        },
        "ratios": {"scudo": {"time": None, "rss": None}},
        "passed": True,
    }
    headers, rows = program.table([result], ["scudo"])
    cells = dict(zip(headers, rows[0], strict=True))
    assert cells["time ÷ scudo"] == "failed: signal 6 (SIGABRT): x"
