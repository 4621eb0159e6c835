"""`kpool fuzz --coverage`: the libkpool edges each target's corpus reaches, their union across the
targets, and the functions no corpus enters, counted in the coverage build (the fuzz build with the
entry points not instrumented, so every counter is libkpool's)."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("clang") is None, reason="the coverage build needs clang"),
]

ROW = re.compile(r"^\| (\w+) \| (\d+) \| (\d+) \| (\d+) \| (\d+)% \|$", re.M)
MISSED = re.compile(r"^libkpool functions no target's corpus enters: (\d+) of (\d+)$", re.M)


def _kpool(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    cmd = [*prefix, sys.executable, "-m", "harness.cli", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)


def _no_aslr() -> tuple[str, ...]:
    """A command prefix that turns address-space randomisation off for the process and its children.

    kp__os_map asks for a segment with one plain mmap and keeps it when the kernel happened to place
    it 4 MiB-aligned, else maps more and trims: which path runs depends on where earlier mappings
    landed, so two processes replaying the same inputs could differ by those few edges (594 or 599
    for api_sequence's seeds, once a pool maps a second segment). Without ASLR each process places
    its mappings the same way every time."""
    setarch = shutil.which("setarch")
    if setarch is None:
        pytest.skip("setarch is missing: edge counts of two processes can differ with ASLR on")
    return (setarch, platform.machine(), "-R")


def test_coverage_counts_libkpool_edges_per_target_and_together(tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    proc = _kpool("fuzz", "all", "--coverage", "--reports", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {m[1]: tuple(int(x) for x in m.groups()[1:]) for m in ROW.finditer(proc.stdout)}
    # workload_yaml is pure Python: no libkpool edges to count
    assert set(rows) == {"api_sequence", "conf", "faults", "concurrent", "all"}, proc.stdout
    edges = {r[2] for r in rows.values()}
    assert len(edges) == 1, f"one library, one edge count: {rows}"
    targets = {t: r for t, r in rows.items() if t != "all"}
    for target, (inputs, covered, total, share) in rows.items():
        assert inputs > 0, f"{target}: no seeds replayed"
        assert 0 < covered < total, f"{target}: {covered} of {total}"
        assert share == round(100 * covered / total), rows
    # the operation sequences reach more of the allocator than the option parser does
    assert rows["api_sequence"][1] > rows["conf"][1], rows
    # the union: at least the best target, more than it (the parser and the misuse paths are
    # other targets' share), at most the sum
    union = rows["all"][1]
    assert max(r[1] for r in targets.values()) < union <= sum(r[1] for r in targets.values()), rows
    assert rows["all"][0] == sum(r[0] for r in targets.values())

    missed_m = MISSED.search(proc.stdout)
    assert missed_m, proc.stdout
    n_missed, n_functions = int(missed_m[1]), int(missed_m[2])
    assert n_functions > 100 and 0 < n_missed < n_functions
    listed = re.findall(r"^  (\w+) \((src/[\w.]+:\d+)\)$", proc.stdout, re.M)
    assert len(listed) == n_missed, proc.stdout
    names = {name for name, _ in listed}
    # no fuzz target forks: the fork handlers are never entered; every target allocates
    assert {"fork_prepare", "fork_child"} <= names, names
    assert not {"kp_alloc", "kp_free", "kp_create"} & names, names

    saved = json.loads((tmp_path / "coverage.json").read_text())
    # source by source: every edge in one file, the reached ones adding up to the union
    files = {f["file"]: f for f in saved["files"]}
    assert sum(f["edges"] for f in files.values()) == rows["all"][2]
    assert sum(f["covered"] for f in files.values()) == union
    assert {"src/alloc.c", "src/primary.c", "src/backup.c", "src/conf.c"} <= set(files), files
    assert all(0 <= f["covered"] <= f["edges"] for f in files.values())
    assert files["src/alloc.c"]["covered"] > 0 and files["src/conf.c"]["covered"] > 0
    printed = re.findall(r"^\| (src/[\w.]+) \| (\d+) \| (\d+) \| \d+% \|$", proc.stdout, re.M)
    assert {f: (int(c), int(e)) for f, c, e in printed} == {
        f: (d["covered"], d["edges"]) for f, d in files.items() if f.startswith("src/")
    }
    assert saved["union"] == union and saved["edges"] == rows["all"][2]
    assert {t["target"]: t["covered"] for t in saved["targets"]} == {t: r[1] for t, r in targets.items()}
    assert sorted(saved["missed"]) == sorted(f"{n} ({loc})" for n, loc in listed)


def test_a_target_count_equals_libfuzzers_own(tmp_path: Path) -> None:
    """The counters are read right: api_sequence's seeds (no thread; its pools' clock is their steps',
    step_clock) reach as many edges by our count as libFuzzer reports replaying them (-runs=0), within
    1%: some of libkpool's branches differ between processes (most likely those that follow where the
    kernel places a mapping: kp__os_map takes one mmap when it happens to be aligned, three when not).
    A fresh clone's venv python read 663 where our in-process replay read 668, every time; the same
    tree under the plain python read 668. A misread counter array is off by far more (2,897 edges)."""
    pytest.importorskip("atheris")
    from harness import build
    from harness.fuzz import env as fuzz_env
    from harness.fuzz import runner

    no_aslr = _no_aslr()
    proc = _kpool("fuzz", "api_sequence", "--coverage", "--reports", str(tmp_path), prefix=no_aslr)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ours = {m[1]: int(m[3]) for m in ROW.finditer(proc.stdout)}["api_sequence"]

    library = build.build("coverage")
    (tmp_path / "empty").mkdir()
    cmd = [
        *no_aslr,
        sys.executable,
        str(runner.script("api_sequence")),
        "-runs=0",
        f"-max_len={runner.DEFAULT_MAX_LEN['api_sequence']}",
        str(tmp_path / "empty"),
        str(runner.seeds_dir("api_sequence")),
    ]
    lf = subprocess.run(
        cmd, env=fuzz_env.target_env(library), capture_output=True, text=True, timeout=300, check=False
    )
    inited = re.search(r"INITED cov: (\d+)", lf.stderr)
    assert lf.returncode == 0 and inited, lf.stderr[-2000:]
    assert abs(ours - int(inited[1])) <= 0.01 * ours, f"our count {ours}, libFuzzer's {inited[1]}"


FAKE_TARGET = r"""
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
static uint8_t counters[4];
static uintptr_t pcs[8];
size_t kp_fuzz_counters(uint8_t **c, const uintptr_t **p)
{
	for (int i = 0; i < 4; i++)
		pcs[2 * i] = (uintptr_t)&kp_fuzz_counters + i, pcs[2 * i + 1] = i == 0;
	*c = counters;
	*p = pcs;
	return 4;
}
int kp_fuzz_api_sequence(const uint8_t *d, size_t n)
{
	counters[0]++;
	if (n && d[0] == 'h')
		for (;;) /* a hang */
			;
	if (n && d[0] == 'c')
		abort();
	counters[1 + (n & 1)]++;
	return 0;
}
"""


@pytest.fixture
def fake_corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """api_sequence's working corpus under tmp_path/reports, replayed through FAKE_TARGET (built here)
    instead of the coverage build; no seeds, a 1 s input timeout."""
    from harness import build
    from harness.fuzz import env as fuzz_env
    from harness.fuzz import runner

    cc = shutil.which("cc") or shutil.which("clang")
    assert cc, "a C compiler"
    src, lib = tmp_path / "fake.c", tmp_path / "libfake.so"
    src.write_text(FAKE_TARGET)
    subprocess.run([cc, "-shared", "-fPIC", "-O0", "-o", str(lib), str(src)], check=True)
    monkeypatch.setattr(build, "build", lambda variant, plant=0: lib)
    monkeypatch.setattr(fuzz_env, "target_env", lambda library, base=None: dict(os.environ))
    monkeypatch.setattr(runner, "INPUT_TIMEOUT_S", 1)
    monkeypatch.setattr(runner, "seeds_dir", lambda target: tmp_path / "no-seeds")
    corpus = tmp_path / "reports" / "corpus" / "api_sequence"
    corpus.mkdir(parents=True)
    return corpus


@pytest.mark.parametrize(
    ("kind", "message"), [("h", "ran for over 1 s (a hang)"), ("c", "(killed by SIGABRT)")]
)
def test_a_corpus_input_that_hangs_or_crashes_is_named(fake_corpus: Path, kind: str, message: str) -> None:
    """The replay cannot hang for ever or fail without saying which input: a target that loops on
    one input ends after the input timeout, and the error names that input."""
    from harness.errors import KpoolError
    from harness.fuzz import runner

    (fake_corpus / "good").write_bytes(b"ab")
    (fake_corpus / "bad").write_bytes(kind.encode() + b"xyz")
    with pytest.raises(KpoolError) as err:
        runner.coverage("api_sequence", fake_corpus.parents[1])
    assert message in str(err.value) and str(fake_corpus / "bad") in str(err.value), str(err.value)


def test_the_fake_target_counts_when_all_goes_well(fake_corpus: Path) -> None:
    """The same fake library with good inputs only: the counts come from its counters."""
    from harness.fuzz import runner

    (fake_corpus / "even").write_bytes(b"ab")  # counters 0 and 1
    report = runner.coverage("api_sequence", fake_corpus.parents[1])
    assert (report.edges, report.union) == (4, 2)
    (fake_corpus / "odd").write_bytes(b"abc")  # and counter 2
    assert runner.coverage("api_sequence", fake_corpus.parents[1]).union == 3
