"""`kpool bench` reports the cost of kpool's integrity checks (issue 14): kpool with checks:off beside
kpool in the same runs of workloads a-c, and a "cost of checks" line per workload, in the tables and in
the --json file. Until 81482b7 a checks-off pool ran 40% slower than the default and `kpool bench` had
no row that could show it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_bench_tables import _run
from test_c_suite import release_kpbench

from harness import bench


def test_bench_runs_kpool_with_checks_off_beside_kpool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real kpbench, a tiny --ops: a row for kpool-checks-off in a, b and c, a cost line each, the
    conf passed to kpbench (its JSON echoes it) and the costs in the --json file."""
    monkeypatch.setattr(bench, "build_kpbench", release_kpbench)
    out = tmp_path / "bench.json"
    argv = ["--workloads", "a,b,c", "--allocators", "kpool,kpool-checks-off", "--runs", "1", "--ops", "2000"]
    assert bench.main([*argv, "--json", str(out)]) == 0
    text = capsys.readouterr().out
    for workload in "abc":
        table = text.split(f"({workload}) ")[1].split("\n(")[0]
        assert "| kpool-checks-off |" in table, table
        assert "cost of checks: " in table and "% (ops/s on vs off, medians" in table, table
    doc = json.loads(out.read_text())
    assert sorted(doc["cost_of_checks"]) == ["a", "b", "c"]
    for workload in "abc":
        assert doc["raw"][workload]["kpool"][0]["conf"] == ""
        assert doc["raw"][workload]["kpool-checks-off"][0]["conf"] == "checks:off"
        assert doc["summary"][workload]["kpool-checks-off"]["runs"] == 1
    assert "pct_cpu" in doc["cost_of_checks"]["a"]  # one timed thread: a CPU figure too
    assert "kpool ÷ kpool-checks-off" in text or "| workload | kpool-checks-off |" in text


def test_checks_off_runs_only_on_a_to_c(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """d measures growth and f realloc: kpool-checks-off is not run on them."""
    ran: list[tuple[str, str]] = []

    def fake_run(self: bench.Runner, alloc: Any, workload: str, seed: int) -> dict[str, Any]:
        ran.append((workload, alloc.name))
        rounds = [{"alloc_s": 0.5, "thread_minflt": 10, "pages": 1000}] if workload == "d" else []
        return {"desc": "fake", **_run(1e6, 2e6, 4000), **({"rounds": rounds} if rounds else {})}

    monkeypatch.setattr(bench, "build_kpbench", lambda: tmp_path / "kpbench")
    monkeypatch.setattr(bench.Runner, "run", fake_run)
    out = tmp_path / "bench.json"
    argv = [
        "--workloads",
        "a,d,f",
        "--allocators",
        "kpool,kpool-checks-off",
        "--runs",
        "2",
        "--json",
        str(out),
    ]
    assert bench.main(argv) == 0
    assert sorted(set(ran)) == [("a", "kpool"), ("a", "kpool-checks-off"), ("d", "kpool"), ("f", "kpool")]
    doc = json.loads(out.read_text())
    assert sorted(doc["raw"]["d"]) == ["kpool"]
    assert sorted(doc["cost_of_checks"]) == ["a"]


def test_cost_of_checks_is_the_extra_time_per_operation_with_checks_on() -> None:
    # on 40M ops/s, off 44M: an operation takes 10% longer with checks on; by CPU 50M against 50M: 0%.
    sums = {
        "kpool": bench.summarize([_run(40e6, 50e6, 4000)]),
        "kpool-checks-off": bench.summarize([_run(44e6, 50e6, 4000)]),
    }
    cost = bench.cost_of_checks(sums)
    assert cost is not None
    assert cost["pct"] == pytest.approx(10.0) and cost["pct_cpu"] == pytest.approx(0.0)
    line = bench.cost_line(cost)
    assert line.startswith("cost of checks: +10.0% (ops/s on vs off, medians: 40.0M against 44.0M)")
    assert "by ops per CPU second +0.0%" in line
    assert "cost of checks: +10.0%" in bench.workload_table("a", "desc", sums)
    # checked faster than unchecked: a negative cost, said as such
    sums["kpool-checks-off"] = bench.summarize([_run(30e6, None, 4000)])
    cost = bench.cost_of_checks(sums)
    assert cost is not None and cost["pct"] == pytest.approx(-25.0) and "pct_cpu" not in cost
    # no checks-off runs (every one failed): no line
    sums["kpool-checks-off"] = bench.summarize([], ["exit 1"])
    assert bench.cost_of_checks(sums) is None
    assert "cost of checks" not in bench.workload_table("a", "desc", sums)


@pytest.mark.parametrize("workloads", ["d,f", "a,d"])
def test_a_workload_with_nothing_to_run_is_a_usage_error(
    workloads: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--allocators kpool-checks-off alone on d or f: nothing runs there (checks:off is on a-c only). It
    printed an empty table per workload, "(~nan ns)", and exited 0 as though it had measured something."""
    ran: list[str] = []
    monkeypatch.setattr(bench, "build_kpbench", lambda: Path("/nonexistent/kpbench"))
    monkeypatch.setattr(bench.Runner, "run", lambda self, alloc, w, seed: ran.append(w))
    assert bench.main(["--allocators", "kpool-checks-off", "--workloads", workloads, "--runs", "1"]) == 2
    err = capsys.readouterr().err
    assert "--allocators" in err and "kpool-checks-off" in err and "a,b,c" in err, err
    assert ran == []


# One `kpool bench --workloads b --runs 5 --allocators kpool,kpool-checks-off` on a shared 2-core machine
# (session 18): (ops/s, ops per CPU second) of each round, kpool and kpool-checks-off run back to back
# with the round's seed. Throughput drifted 1.7x from round to round with the machine's load, and the
# ratio of the two medians said checks cost +15.2% (+19.8% by CPU) while the rounds' own ratios were
# -0.9% and +4.8% at their medians.
B_ON = [(1153601, 4040397), (1211555, 3760698), (1411758, 3891674), (1980157, 6681876), (1748487, 5449400)]
B_OFF = [(1142977, 4665655), (1109155, 3942641), (1626643, 4839495), (1694836, 4977342), (1764803, 5691731)]


def _seeded(figures: list[tuple[int, int]], seeds: list[int]) -> list[dict[str, Any]]:
    return [{**_run(ops, cpu, 4000), "seed": seed} for (ops, cpu), seed in zip(figures, seeds, strict=True)]


def test_cost_of_checks_pairs_on_and_off_by_round() -> None:
    """The cost is the median of each round's off ÷ on (the two runs of a round share its seed and its
    minute of the machine's load), not the ratio of two medians taken over different minutes."""
    seeds = [1, 2, 3, 4, 5]
    sums = {
        "kpool": bench.summarize(_seeded(B_ON, seeds)),
        "kpool-checks-off": bench.summarize(_seeded(B_OFF, seeds)),
    }
    cost = bench.cost_of_checks(sums)
    assert cost is not None
    assert cost["pct"] == pytest.approx(100 * (1142977 / 1153601 - 1))  # round 1's ratio is the median
    assert cost["pct_cpu"] == pytest.approx(100 * (3942641 / 3760698 - 1))  # round 2's
    assert cost["rounds"] == 5
    line = bench.cost_line(cost)
    assert line.startswith("cost of checks: -0.9% (ops/s on vs off, medians of 5 rounds' ratios;"), line
    assert "by ops per CPU second +4.8%" in line
    # A round whose checks-off run failed has no pair: the other rounds decide.
    sums["kpool-checks-off"] = bench.summarize(_seeded(B_OFF[1:], seeds[1:]))
    cost = bench.cost_of_checks(sums)
    assert cost is not None and cost["rounds"] == 4
    ratios = sorted(off[0] / on[0] for on, off in zip(B_ON[1:], B_OFF[1:], strict=True))
    assert cost["pct"] == pytest.approx(100 * (ratios[1] + ratios[2]) / 2 - 100)
