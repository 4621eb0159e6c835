"""What the fuzz runner (harness/fuzz/runner.py) does for a campaign: it writes only under the reports
folder it is given, makes its run folders atomically, reports a libFuzzer that failed without a crash
input as an error, and counts per-file coverage in libkpool's own sources only."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from harness.errors import KpoolError
from harness.fuzz import runner

# A stand-in for a target script: libFuzzer's behaviour is chosen by the test (KPOOL_FAKE).
FAKE_FUZZER = r"""
import os, sys
how = os.environ["KPOOL_FAKE"]
print("INFO: Seed: 1", flush=True)
print("INFO: Loaded 1 modules   (100 inline 8-bit counters): 100 [0x1, 0x2),", flush=True)
if how == "bad_alloc":
    print("terminate called after throwing an instance of 'std::bad_alloc'", flush=True)
    print("  what():  std::bad_alloc", flush=True)
    sys.stdout.flush()
    os.abort()
if how == "silent":
    sys.exit(0)
if how == "fine":
    print("#2\tINITED cov: 5 ft: 5 corp: 1/1b exec/s: 0 rss: 30Mb", flush=True)
    print("Done 100 runs in 1 second(s)", flush=True)
    print("stat::number_of_executed_units: 100", flush=True)
    print("stat::average_exec_per_sec:     100", flush=True)
    sys.exit(0)
"""


@pytest.fixture
def fake_fuzzer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    script = tmp_path / "fake_target.py"
    script.write_text(FAKE_FUZZER)
    monkeypatch.setattr(runner, "script", lambda target: script)
    monkeypatch.setattr(runner, "target_env", lambda target, plant=0: dict(os.environ))
    monkeypatch.setattr(runner, "seeds_dir", lambda target: tmp_path / "no-seeds")
    return tmp_path


@pytest.mark.parametrize(
    ("how", "said"),
    [("bad_alloc", "killed by SIGABRT"), ("silent", "no final statistics")],
)
def test_a_libfuzzer_that_fails_without_a_crash_input_is_an_error(
    fake_fuzzer: Path, monkeypatch: pytest.MonkeyPatch, how: str, said: str
) -> None:
    """`kpool fuzz api_sequence --max-len -3` died in libFuzzer (std::bad_alloc) and exited 0: a
    libFuzzer that ends abnormally without a crash input is an error with the tail of its log."""
    monkeypatch.setenv("KPOOL_FAKE", how)
    reports = fake_fuzzer / "reports"
    with pytest.raises(KpoolError) as err:
        runner.run("api_sequence", 1, run_dir=reports / "run", reports=reports)
    text = str(err.value)
    assert "api_sequence" in text and said in text, text
    if how == "bad_alloc":
        assert "std::bad_alloc" in text, text  # the tail of the log
    [result] = json.loads((reports / "run" / "fuzz.json").read_text())["results"]
    assert said in result["error"], result


def test_a_libfuzzer_that_ends_well_is_no_error(fake_fuzzer: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KPOOL_FAKE", "fine")
    reports = fake_fuzzer / "reports"
    run = runner.run("api_sequence", 1, run_dir=reports / "run", reports=reports)
    [result] = run.results
    assert result.returncode == 0 and result.error == "" and result.exec_per_s == 100


def test_the_working_corpus_goes_under_the_reports_given(
    fake_fuzzer: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KPOOL_FAKE", "fine")
    reports = fake_fuzzer / "reports"
    runner.run("api_sequence", 1, run_dir=reports / "run", reports=reports)
    assert (reports / "corpus" / "api_sequence").is_dir()


def test_run_folders_of_the_same_second_are_distinct_and_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two `kpool fuzz` runs started in the same second: each gets a folder of its own, made when its
    name is chosen (mkdir that fails if it exists), so neither writes into the other's."""
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20250101-000000")
    first = runner.new_run_dir(tmp_path)
    second = runner.new_run_dir(tmp_path)
    assert first != second
    assert first.is_dir() and second.is_dir()
    # a folder another process made between the check and the creation is not taken over
    (tmp_path / "fuzz-20250101-000000-3").mkdir()
    third = runner.new_run_dir(tmp_path)
    assert third.is_dir() and third.name not in {first.name, second.name, "fuzz-20250101-000000-3"}


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("clang") is None, reason="the coverage build needs clang")
def test_per_file_coverage_counts_only_libkpools_sources(tmp_path: Path) -> None:
    """The per-file table listed /usr/include/stdlib.h (atoi inlined into conf.c): an edge is counted
    in the libkpool source that holds it (the innermost of its inlined frames that is libkpool's), so
    the table names only allocator/ files and still adds up to every edge."""
    pytest.importorskip("atheris")
    report = runner.coverage("conf", tmp_path, write=False)
    files = [f.file for f in report.files]
    assert files and all(not f.startswith("/") and f != "?" for f in files), files
    assert "src/conf.c" in files
    assert sum(f.edges for f in report.files) == report.edges
    assert sum(f.covered for f in report.files) == report.union


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("clang") is None, reason="the fuzz build needs clang")
def test_a_real_libfuzzer_refusing_its_arguments_is_an_error(tmp_path: Path) -> None:
    """The real case: -max_len=-3 makes libFuzzer throw std::bad_alloc before it fuzzes anything."""
    pytest.importorskip("atheris")
    with pytest.raises(KpoolError) as err:
        runner.run("api_sequence", 2, max_len=-3, run_dir=tmp_path / "run", reports=tmp_path)
    assert "api_sequence" in str(err.value), str(err.value)
    assert sys.platform != "linux" or "bad_alloc" in str(err.value), str(err.value)
