"""Session 22's second review: `kpool campaign --resume`.
- Of a finished campaign (every job ended, its report written) it made the report again, the coverage of
  the fuzz corpora counted from the corpora as they are today (2,205 -> 2,196 -> 2,187 libkpool edges on
  successive resumes of one campaign): the campaign's figures changed after the fact. It now says the
  campaign is finished, leaves its report as it was, and exits as the campaign did.
- The jobs it runs again were not checked as a new campaign's are: a working corpus that cannot be
  written in (libFuzzer keeps nothing, in silence) or a KPOOL_LOG no pool can open (every stress job
  fails) were found by the jobs, after the budget started. Both are usage errors (exit 2) before any job.
The jobs and builds are stubbed (they mark jobs done, or fail the test when they start)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from harness import cli
from harness.campaign import budget, command
from harness.campaign import run as campaign_run

ROOT = Path(__file__).resolve().parents[1]
WORKLOAD = ROOT / "workloads" / "steady-small.yaml"


@pytest.fixture
def stubbed(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Builds do nothing; jobs end 'done' at once (no result files); each coverage count finds 9 edges
    fewer than the one before, as a corpus merged and pruned by later runs does."""
    calls = {"jobs": 0, "coverage": 0}

    def run_jobs(c: budget.Campaign, run_dir: Path, *args: object, **kwargs: object) -> bool:
        calls["jobs"] += 1
        for j in c.jobs:
            j.state = "done"
        c.save(run_dir)
        return True

    def coverage(c: budget.Campaign, run_dir: Path, timeout_s: float | None = None) -> dict[str, Any]:
        calls["coverage"] += 1
        union = 2205 - 9 * (calls["coverage"] - 1)
        target = {"target": "api_sequence", "inputs": 10, "covered": union}
        return {"targets": [target], "union": union, "edges": 5000, "missed": [], "functions": 100}

    monkeypatch.setattr(command, "run_jobs", run_jobs)
    monkeypatch.setattr(command, "build_variants", lambda *a, **k: None)
    monkeypatch.setattr(campaign_run, "fuzz_coverage", coverage)
    monkeypatch.delenv("KPOOL_LOG", raising=False)
    return calls


def _files(run_dir: Path) -> dict[str, tuple[bytes, int]]:
    return {
        p.name: (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(run_dir.iterdir())
        if p.is_file() and p.name not in ("run.lock",)
    }


def test_resuming_a_finished_campaign_leaves_its_report_as_it_was(
    tmp_path: Path, stubbed: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    reports = tmp_path / "reports"
    argv = ["campaign", "--budget", "20s", "--targets", "api_sequence", "--workloads", str(WORKLOAD)]
    first = cli.main([*argv, "--reports", str(reports)])
    [run_dir] = [p.parent for p in reports.glob("*/campaign.json")]
    assert json.loads((run_dir / "summary.json").read_text())["fuzz_coverage"]["union"] == 2205
    before = _files(run_dir)
    capsys.readouterr()
    for _ in range(2):
        code = cli.main(["campaign", "--resume", run_dir.name, "--reports", str(reports)])
        out = capsys.readouterr()
        assert code == first, out.err
        assert "finished" in out.err + out.out, out
        assert _files(run_dir) == before, "the report of a finished campaign was written again"
    assert stubbed["jobs"] == 1 and stubbed["coverage"] == 1


def test_a_finished_campaign_of_an_older_kpool_is_left_as_it_was(
    tmp_path: Path, stubbed: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    """A record written before the `reported` field (session 22) has none: with every job ended and its
    summary.json there, the campaign was finished and reported. Before (session 23) --resume wrote its
    report again, the coverage counted from today's corpora."""
    reports = tmp_path / "reports"
    argv = ["campaign", "--budget", "20s", "--targets", "api_sequence", "--workloads", str(WORKLOAD)]
    first = cli.main([*argv, "--reports", str(reports)])
    [run_dir] = [p.parent for p in reports.glob("*/campaign.json")]
    record = json.loads((run_dir / "campaign.json").read_text())
    del record["reported"]  # as an older kpool wrote it
    (run_dir / "campaign.json").write_text(json.dumps(record, indent=1) + "\n")
    before = _files(run_dir)
    capsys.readouterr()
    code = cli.main(["campaign", "--resume", run_dir.name, "--reports", str(reports)])
    out = capsys.readouterr()
    assert code == first, out.err
    assert "finished" in out.err + out.out, out
    assert _files(run_dir) == before, "the report of a finished campaign was written again"
    assert stubbed["coverage"] == 1


def test_a_campaign_whose_report_was_never_written_is_still_reported_by_resume(
    tmp_path: Path, stubbed: dict[str, int]
) -> None:
    """Killed after its jobs ended, before its report: --resume still writes it (nothing to leave)."""
    reports = tmp_path / "reports"
    run_dir = reports / "campaign-1"
    run_dir.mkdir(parents=True)
    c = budget.plan("campaign-1", run_dir, 20.0, 1, 0, [], [WORKLOAD])
    for j in c.jobs:
        j.state = "done"
    c.save(run_dir)
    cli.main(["campaign", "--resume", "campaign-1", "--reports", str(reports)])
    assert (run_dir / "summary.json").is_file()


def _pending(reports: Path, targets: list[str], workloads: list[Path]) -> Path:
    run_dir = reports / "campaign-1"
    run_dir.mkdir(parents=True)
    budget.plan("campaign-1", run_dir, 20.0, 1, 0, targets, workloads).save(run_dir)
    return run_dir


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in read-only folders (the next test stands in)")
def test_resume_checks_the_working_corpus_of_the_fuzz_jobs_it_runs(
    tmp_path: Path, stubbed: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    reports = tmp_path / "reports"
    _pending(reports, ["api_sequence"], [])
    corpus = reports / "corpus"
    corpus.mkdir()
    corpus.chmod(0o555)
    assert cli.main(["campaign", "--resume", "campaign-1", "--reports", str(reports)]) == 2
    assert str(corpus) in capsys.readouterr().err
    assert stubbed["jobs"] == 0


def test_resume_checks_the_working_corpus_on_a_read_only_file_system(
    tmp_path: Path,
    stubbed: dict[str, int],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """As root (no read-only folder stops root), a corpus folder os.access says is not writable."""
    reports = tmp_path / "reports"
    _pending(reports, ["api_sequence"], [])
    corpus = reports / "corpus" / "api_sequence"
    corpus.mkdir(parents=True)
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if Path(p) == corpus else real(p, mode, **k))
    assert cli.main(["campaign", "--resume", "campaign-1", "--reports", str(reports)]) == 2
    assert str(corpus) in capsys.readouterr().err
    assert stubbed["jobs"] == 0


def test_resume_checks_kpool_log_for_the_stress_jobs_it_runs(
    tmp_path: Path,
    stubbed: dict[str, int],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    reports = tmp_path / "reports"
    _pending(reports, [], [WORKLOAD])
    bad = tmp_path / "no such folder" / "kpool.log"
    monkeypatch.setenv("KPOOL_LOG", str(bad))
    assert cli.main(["campaign", "--resume", "campaign-1", "--reports", str(reports)]) == 2
    assert "KPOOL_LOG" in capsys.readouterr().err
    assert stubbed["jobs"] == 0
