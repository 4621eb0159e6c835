"""Session 22's outside review: a working corpus that cannot be written in (a read-only bind mount of
reports/corpus, a CI cache restored read-only, another user's folder).

libFuzzer writes every input that adds coverage into the first corpus folder it is given and says nothing
when it cannot. On main (21fec7b) `kpool fuzz conf --time 5` over a read-only reports/corpus fuzzed, its
log said `new_units_added: 74`, none of them reached the disk, and kpool said nothing and exited 0: a
night's new coverage lost without a word. `kpool campaign` did the same in each fuzz job. Now both refuse
before fuzzing (exit 2) naming the folder; --no-seeds (a corpus of the run's own, in its folder) and
--coverage (which only reads the corpus) still run."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import cli

pytestmark = pytest.mark.skipif(shutil.which("clang") is None, reason="the fuzz build needs clang")


@pytest.fixture
def reports(tmp_path: Path) -> Iterator[Path]:
    """A reports folder whose corpus/ is a read-only bind mount (root: file modes do not stop it)."""
    folder = tmp_path / "reports"
    corpus = folder / "corpus"
    (corpus / "conf").mkdir(parents=True)
    (corpus / "conf" / "an-input").write_bytes(b"seed:1")
    binds = [["mount", "--bind", str(corpus), str(corpus)], ["mount", "-o", "remount,ro,bind", str(corpus)]]
    for cmd in binds:
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            subprocess.run(["umount", str(corpus)], capture_output=True)
            pytest.skip("no read-only bind mount here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(corpus)], capture_output=True)


def test_fuzz_refuses_a_working_corpus_it_cannot_add_to(
    reports: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["fuzz", "conf", "--time", "3", "--reports", str(reports)]) == 2
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if ln.startswith("kpool: error:")]
    assert len(errors) == 1 and f"{reports / 'corpus' / 'conf'}: cannot be written in" in errors[0], err
    assert "fuzzing conf" not in err, "it fuzzed"
    assert sorted(p.name for p in reports.iterdir()) == ["corpus"], "a run folder was made"


def test_campaign_refuses_it_before_any_job(reports: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["campaign", "--budget", "20", "--targets", "conf", "--workloads", "", "--reports", str(reports)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"{reports / 'corpus' / 'conf'}: cannot be written in" in err, err
    assert sorted(p.name for p in reports.iterdir()) == ["corpus"], "a run folder was made"


def test_a_run_of_its_own_corpus_still_fuzzes(reports: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["fuzz", "conf", "--time", "1", "--no-seeds", "--reports", str(reports)]) == 0
    assert "kpool: error:" not in capsys.readouterr().err
