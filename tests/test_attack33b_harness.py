"""Session 33's second harness attack (s33-atth): a newcomer's and a fuzzing user's first hours with kpool.

Each test failed before its fix; its docstring says how."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("target", ["api_sequence", "workload_yaml"])
def test_a_fuzz_target_refuses_to_write_new_inputs_into_the_seed_corpus(target: str) -> None:
    """libFuzzer writes every new input into the FIRST corpus folder on its command line. Two tests of
    test_attack33_harness.py ran `api_sequence.py -runs=N corpora/api_sequence`, as a libFuzzer user runs
    a target by hand, and each run left some hundred inputs as top-level files of the committed seed corpus
    (a `commit -a` then committed 2,530 of them: ac38171 took them out). Before: the script fuzzed into the
    seed corpus (here, with no library, a ctypes traceback, exit 1). Now: one line naming the folder, exit 2,
    nothing run and nothing written."""
    from harness import paths
    from harness.fuzz import runner

    seeds_root = paths.corpora() / target
    before = _files(seeds_root)
    env = {**os.environ, "KPOOL_LIB": "/nonexistent/libkpool.so"}  # nothing may get as far as loading it
    proc = subprocess.run(
        [sys.executable, str(runner.script(target)), "-runs=10", str(seeds_root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("kpool: error:")]
    assert len(lines) == 1 and str(seeds_root) in lines[0] and "seed" in lines[0], proc.stderr
    assert _files(seeds_root) == before


def test_a_fuzz_target_reads_the_seeds_after_a_corpus_of_its_own(tmp_path: Path) -> None:
    """The guard above refuses only the first corpus folder: the seeds named after a writable one are
    read, as `kpool fuzz` passes them (working corpus first, seeds second)."""
    from harness.fuzz import env as fuzz_env
    from harness.fuzz import runner

    argv = ["x.py", "-runs=10", str(tmp_path), str(runner.seeds_dir("api_sequence"))]
    fuzz_env.refuse_seed_output(argv)  # no SystemExit
    with pytest.raises(SystemExit) as exc:
        fuzz_env.refuse_seed_output(
            ["x.py", "-merge=1", str(runner.seeds_dir("api_sequence")), str(tmp_path)]
        )
    assert exc.value.code == 2


def _kpool(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    "action",
    [["list"], ["show", "1"], ["sarif"], ["recheck"], ["replay", "1"], ["minimize", "1"]],
)
def test_triage_takes_db_after_its_action_too(tmp_path: Path, action: list[str]) -> None:
    """`kpool triage show 3 --db FILE` (the order of git, sqlite3 and every other kpool command's
    options, which follow the command) was refused with the top-level usage line and 'unrecognized
    arguments: --db FILE', exit 2, not naming where --db goes. Now --db is taken on either side of the
    action, and the one after it wins (here: a missing database, which each action names)."""
    missing = tmp_path / "elsewhere.sqlite"
    proc = _kpool("triage", *action, "--db", str(missing), env={"KPOOL_REPORTS": str(tmp_path / "r")})
    assert "unrecognized arguments" not in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    if action[0] in ("list", "recheck", "sarif"):
        assert proc.returncode == 0, proc.stderr  # no database: no crashes recorded
    else:
        assert proc.returncode == 2 and str(missing) in proc.stderr, proc.stderr
    both = _kpool("triage", "--db", str(tmp_path / "first.sqlite"), *action, "--db", str(missing))
    assert "first.sqlite" not in both.stderr and "unrecognized" not in both.stderr, both.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["stress", "workloads/steady-small.yaml"],
        ["fuzz", "conf", "--time", "1"],
        ["campaign", "--budget", "30", "--targets", "", "--workloads", "workloads/steady-small.yaml"],
        ["run", "--", "/bin/true"],
    ],
)
@pytest.mark.parametrize("how", ["option", "environment"])
def test_a_reports_folder_that_cannot_be_one_is_a_usage_error(
    tmp_path: Path, command: list[str], how: str
) -> None:
    """A reports folder kpool cannot make (a file in its way: KPOOL_REPORTS=/etc/passwd, or a path under a
    file) is the user's configuration, and nothing runs: exit 2, as `kpool report` already said for it.
    Before: stress, fuzz, campaign and run said '<path>: a file, where a folder is expected' or 'Not a
    directory' with exit 1 (a failure of the work), stress and fuzz only after their builds. Now exit 2, the
    line naming the option or variable that gave the folder."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    folder = blocker / "reports"
    env: dict[str, str] = {}
    if how == "option":
        where = command.index("--") if "--" in command else len(command)
        args = [*command[:where], "--reports", str(folder), *command[where:]]
        label = "--reports"
    else:
        args, env, label = command, {"KPOOL_REPORTS": str(folder)}, "KPOOL_REPORTS"
    proc = _kpool(*args, cwd=ROOT, env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("kpool: error:")]
    assert len(errors) == 1 and label in errors[0] and str(folder) in errors[0], proc.stderr
    assert blocker.read_text() == "not a folder\n"


@pytest.mark.parametrize("weight", [".nan", ".inf", "-.inf"])
def test_a_weight_that_is_no_number_is_said_once(tmp_path: Path, weight: str) -> None:
    """`mix: {alloc: .nan}` was said twice, the second line wrong: 'mix.alloc: nan is not a finite number'
    and 'mix: the weights add up to a number too large for the driver; scale them down' (a NaN is no large
    number, and scaling it down does nothing). Now only the first."""
    wl = tmp_path / "w.yaml"
    wl.write_text(
        f"name: w\nprocesses: 1\nops: 10\nmix: {{alloc: {weight}, free: 1}}\n"
        "sizes: {dist: uniform, min: 16, max: 256}\n"
    )
    proc = _kpool("stress", str(wl), "--reports", str(tmp_path / "r"))
    assert proc.returncode == 2, proc.stderr
    said = [ln.strip() for ln in proc.stderr.splitlines() if ln.startswith("  ")]
    assert len(said) == 1 and "mix.alloc" in said[0], proc.stderr  # -.inf: 'below the minimum 0'
    assert "too large" not in proc.stderr, proc.stderr


def test_pytest_workloads_runs_from_outside_a_checkout(tmp_path: Path) -> None:
    """README's `pytest workloads -n auto --junitxml=x.xml`, typed in a folder of one's own after a plain
    `pip install .` (the README: it "works from any directory"), found no `workloads` there: 'ERROR: file
    or directory not found: workloads', exit 4 (with -n: 'no tests ran'). Now the plugin reads a
    `workloads` argument that names nothing here as the shipped workloads, as `kpool stress
    workloads/x.yaml` already does. (Here the plugin is loaded with -p, as the installed entry point does.)"""
    from harness import paths

    pytest_cmd = [sys.executable, "-m", "pytest", "-p", "no:kpool", "-p", "harness.pytest_plugin"]

    def collected(arg: str) -> list[str]:
        proc = subprocess.run(
            [*pytest_cmd, "-p", "no:cacheprovider", "--collect-only", "-q", arg],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, (arg, proc.stdout + proc.stderr)
        return sorted(ln.rsplit("::", 1)[-1] for ln in proc.stdout.splitlines() if "::" in ln)

    every = collected(str(paths.workloads()))
    assert "steady-small" in every and len(every) > 9  # the op-stream workloads and programs/
    assert collected("workloads") == every
    assert collected("workloads/") == every
    assert collected("workloads/steady-small.yaml") == ["steady-small"]
    assert not (tmp_path / "workloads").exists()


def test_bench_names_the_allocators_it_knows() -> None:
    """`kpool bench --allocators nosuch` said "--allocators 'nosuch': unknown nosuch" and not which names
    it takes (--workloads says 'choose from a,b,c,d,f'). Now the known names follow."""
    from harness.bench import BENCH_ALLOCATORS

    proc = _kpool("bench", "--allocators", "nosuch")
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert "nosuch" in line and all(a.name in line for a in BENCH_ALLOCATORS), line
