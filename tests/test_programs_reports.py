"""The table of real programs: `kpool bench --programs`, the campaign's program jobs (side by side with
the peers) and the Real programs section of its HTML report, and the README's table."""

from __future__ import annotations

import re
from pathlib import Path

from harness import bench, campaign
from harness.report import html
from harness.report.model import ProgramResult, RunReport, WorkloadResult

ROOT = Path(__file__).resolve().parents[1]

TINY = """\
name: tiny
program:
  command: [/bin/sh, -c, 'echo hello']
slo:
  output: {same_as_glibc: "."}
"""


def test_bench_programs_prints_ratios_to_each_allocator(tmp_path: Path, capsys: object) -> None:
    (tmp_path / "tiny.yaml").write_text(TINY)
    argv = ["--programs", str(tmp_path / "tiny.yaml"), "--runs", "2", "--allocators", "kpool,glibc"]
    code = bench.main([*argv, "--reports", str(tmp_path / "r")])
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert code == 0, out
    assert "medians of 2" in out and "kpool bench --programs" in out
    row = next(line for line in out.splitlines() if line.startswith("| tiny |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # program, kpool s, kpool MiB, time ÷ glibc, RSS ÷ glibc, anon ÷ glibc, runs, verdict
    assert re.fullmatch(r"\d+\.\d\d", cells[3]) and re.fullmatch(r"\d+\.\d\d", cells[4]), cells
    assert "anon ÷ glibc" in out and re.fullmatch(r"\d+\.\d\d|-", cells[5]), cells
    assert cells[-2:] == ["2", "ok"]
    assert list((tmp_path / "r").glob("*/bench-programs.json"))


def test_campaign_runs_programs_beside_the_peers(tmp_path: Path) -> None:
    wl = tmp_path / "steady.yaml"
    prog = tmp_path / "tiny.yaml"
    prog.write_text(TINY)
    c = campaign.plan("r", tmp_path / "r", 600.0, 2, 0, [], [wl], [prog])
    argv = {j.name: j.argv for j in c.jobs}
    assert argv["stress:tiny"][-2:] == ["--peers", "all"]
    assert "--peers" not in argv["stress:steady"]


def test_campaign_default_programs_only_with_a_long_budget() -> None:
    assert campaign.parse_args([]).programs is None  # decided by the budget in main()
    assert campaign.parse_budget(campaign.DEFAULT_BUDGET) < campaign.PROGRAMS_MIN_BUDGET_S


def test_html_report_has_the_real_programs_table() -> None:
    figures = {
        "kpool": {"runs": 3, "wall_s": 2.0, "cpu_s": 2.0, "peak_rss_kib": 4096.0},
        "glibc": {"runs": 3, "wall_s": 1.0, "cpu_s": 1.0, "peak_rss_kib": 2048.0},
    }
    ratios = {"glibc": {"time": 2.0, "rss": 2.0}}
    r = RunReport("run1", workloads=[WorkloadResult("sqlite3")])
    r.programs = [ProgramResult("sqlite3", "kpool", figures, ratios, True)]
    page = html.run_page(r)
    assert "<h2>Real programs</h2>" in page
    table = page[page.index('id="programs"') :]
    assert "<td>sqlite3</td><td>2.00</td><td>4.0</td><td>2.00</td>" in table
    assert RunReport.from_dict(r.to_dict()).programs == r.programs


def test_readme_has_the_table_and_its_command() -> None:
    text = (ROOT / "README.md").read_text()
    i = text.index("kpool bench --programs")
    table = text[i:]
    for name in ("cpython-tests", "sqlite3", "git", "redis", "gcc-libkpool", "bench-larson"):
        assert f"| {name} |" in table, name
    assert "time ÷ jemalloc" in table and "RSS ÷ tcmalloc" in table
