"""Program workloads (`program:`): the schema's second kind, its errors, the launcher's verdicts, crash
records, and the pytest plugin's collection. The shipped programs themselves run as workload items
(workloads/programs/*.yaml), collected by the plugin."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness import spec
from harness.errors import ConfigError
from harness.spec import ProgramWorkload, SpecError
from harness.stress import runner
from harness.triage import CrashDB, record

ROOT = Path(__file__).resolve().parents[1]
PROGRAMS = ROOT / "workloads" / "programs"
both = pytest.mark.parametrize("use_jsonschema", [True, False], ids=["jsonschema", "fallback"])

GOOD = """\
name: echo
program:
  command: [/bin/echo, hello]
slo:
  exit_status: glibc
"""


def load(text: str, tmp_path: Path, use_jsonschema: bool = True) -> spec.AnyWorkload:
    path = tmp_path / "w.yaml"
    path.write_text(text)
    return spec.load(path, use_jsonschema=use_jsonschema)


def errors(text: str, tmp_path: Path, use_jsonschema: bool) -> list[str]:
    with pytest.raises(SpecError) as exc:
        load(text, tmp_path, use_jsonschema)
    return [str(i) for i in exc.value.issues]


def run(wl: spec.AnyWorkload, tmp_path: Path, **kw: object) -> dict[str, object]:
    opts = runner.Options(reports_dir=tmp_path / "reports", run_id="r", progress_s=3600.0, **kw)  # type: ignore[arg-type]
    result: dict[str, object] = runner.run([wl], opts)["workloads"][0]
    return result


# ---- the schema's second kind -----------------------------------------------------------------------------


@both
def test_program_kind_loads(tmp_path: Path, use_jsonschema: bool) -> None:
    wl = load(GOOD, tmp_path, use_jsonschema)
    assert isinstance(wl, ProgramWorkload)
    assert wl.kind == "program" and wl.command == ["/bin/echo", "hello"]


@both
def test_bad_program_field_names_line_and_field(tmp_path: Path, use_jsonschema: bool) -> None:
    got = errors(GOOD.replace("[/bin/echo, hello]", "/bin/echo hello"), tmp_path, use_jsonschema)
    assert got == [
        f'{tmp_path / "w.yaml"}:3:12: program.command: expected array, got string "/bin/echo hello"'
    ]


@both
def test_unknown_program_key(tmp_path: Path, use_jsonschema: bool) -> None:
    got = errors(GOOD.replace("  command:", "  comand:"), tmp_path, use_jsonschema)
    assert any(":3:3: program.comand: unknown key 'comand'" in g for g in got), got
    assert any("program.command: missing required field 'command'" in g for g in got), got


@both
def test_bad_exit_status(tmp_path: Path, use_jsonschema: bool) -> None:
    got = errors(GOOD.replace("exit_status: glibc", "exit_status: zero"), tmp_path, use_jsonschema)
    assert got == [
        f'{tmp_path / "w.yaml"}:5:16: slo.exit_status: expected "glibc" or an exit status 0-255, got "zero"'
    ]


def test_unknown_placeholder_and_bad_regex(tmp_path: Path) -> None:
    text = GOOD.replace("hello]", "'{wrok}/x']") + "  output: {same_as_glibc: '(unclosed'}\n"
    got = errors(text, tmp_path, True)
    assert any(":3:24: program.command[1]: unknown placeholder {wrok}" in g for g in got), got
    assert any("slo.output.same_as_glibc: not a regular expression" in g for g in got), got


def test_opstream_workloads_still_load_and_name_their_fields(tmp_path: Path) -> None:
    # an op-stream document is checked as its own kind: its errors are not "matches neither kind"
    got = errors("name: x\nmix: {alloc: 1}\nsizes: {dist: fixed, size: 8}\nthreads: two\n", tmp_path, True)
    assert got == [f'{tmp_path / "w.yaml"}:4:10: threads: expected integer, got string "two"']


def test_shipped_program_workloads_load() -> None:
    names = {spec.load(p).name for p in PROGRAMS.glob("*.yaml")}
    want = {"cpython-tests", "sqlite3", "git", "redis", "gcc-libkpool"}
    want |= {f"bench-{b}" for b in ("larson", "prodcons", "thread-churn", "false-sharing", "small-objects")}
    assert want <= names


def test_cpython_list_has_at_least_30_modules() -> None:
    wl = spec.load(PROGRAMS / "cpython-tests.yaml")
    assert isinstance(wl, ProgramWorkload)
    assert len([a for a in wl.command if a.startswith("test_")]) >= 30
    assert wl.env.get("PYTHONMALLOC") == "malloc"


# ---- the launcher's verdicts ------------------------------------------------------------------------------

# A program whose output and status differ on the preload: LD_PRELOAD is set only there.
DIFFERS = """\
name: differs
program:
  command: [/bin/sh, -c, 'if [ -n "$LD_PRELOAD" ]; then echo kpool; exit 3; else echo glibc; fi']
slo:
  output: {same_as_glibc: ".", contains: [glibc]}
"""


def test_output_check_failure_is_a_failed_slo(tmp_path: Path) -> None:
    result = run(load(DIFFERS, tmp_path), tmp_path)
    assert result["passed"] is False
    broken = "\n".join(result["broken"])  # type: ignore[arg-type]
    assert "output contains 'glibc' (run 1): missing (bound == present)" in broken
    assert "output same as glibc (run 1): 'kpool' where glibc has 'glibc' (bound == equal)" in broken
    assert "exit_status (run 1): 3 (bound == 0)" in broken


def test_passing_program_and_given_exit_status(tmp_path: Path) -> None:
    wl = load(
        GOOD.replace("[/bin/echo, hello]", "[/bin/sh, -c, 'echo hi; exit 4']").replace("glibc", "4"), tmp_path
    )
    result = run(wl, tmp_path)
    assert result["passed"] is True, result["broken"]
    assert set(result["figures"]) == {"kpool", "glibc"}  # type: ignore[arg-type]
    assert "glibc" in result["ratios"]  # type: ignore[operator]


def test_setup_and_check_commands(tmp_path: Path) -> None:
    text = """\
name: steps
program:
  setup: [[/bin/sh, -c, 'echo 41 > in.txt']]
  command: [/bin/sh, -c, 'read x < in.txt; echo $((x + 1)) > out.txt']
  check: [[/bin/grep, -qx, '43', out.txt]]
"""
    result = run(load(text, tmp_path), tmp_path)
    assert result["passed"] is False
    assert any(
        b.startswith("check (run 1): /bin/grep -qx 43 out.txt: exit status 1") for b in result["broken"]
    )  # type: ignore[union-attr]


def test_program_crash_under_kpool_is_a_crash_record(tmp_path: Path) -> None:
    text = """\
name: crashes
program:
  command: [/bin/sh, -c, 'if [ -n "$LD_PRELOAD" ]; then kill -SEGV $$; fi; echo fine']
"""
    reports = tmp_path / "reports"
    result = run(load(text, tmp_path), tmp_path)
    assert result["passed"] is False
    crashes = result["crashes"]
    assert isinstance(crashes, list) and len(crashes) == 1
    crash = crashes[0]
    assert crash["signal_name"] == "SIGSEGV" and crash["signature"]
    rows = CrashDB(record.db_path(reports)).signatures()
    assert [r.hash for r in rows] == [crash["signature"]]
    doc = json.loads((reports / "r" / "stress.json").read_text())
    assert doc["crash_db"] == str(record.db_path(reports))


def test_missing_command_is_a_configuration_error(tmp_path: Path) -> None:
    text = GOOD.replace("program:\n", "program:\n  requires: {no-such-cmd-h13: some-package}\n")
    with pytest.raises(
        ConfigError, match="needs no-such-cmd-h13 on PATH: install with `apt-get install some-package`"
    ):
        run(load(text, tmp_path), tmp_path)


# ---- collection ------------------------------------------------------------------------------------------


def test_plugin_collects_program_workloads() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", str(PROGRAMS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "programs/sqlite3.yaml::sqlite3" in proc.stdout, proc.stdout + proc.stderr
    assert "programs/cpython-tests.yaml::cpython-tests" in proc.stdout


def test_work_placeholder_is_absolute_with_a_relative_reports_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pytest plugin's reports folder is relative (reports/): {work} must still name the work folder
    from inside it (failed before: sqlite3 and the benchmark programs exited 1 and 127 under pytest)."""
    monkeypatch.chdir(tmp_path)
    text = GOOD.replace("[/bin/echo, hello]", "[/bin/sh, -c, 'test -d \"$0\"', '{work}']").replace(
        "glibc", "0"
    )
    wl = load(text, tmp_path)
    opts = runner.Options(reports_dir=Path("reports"), run_id="r", progress_s=3600.0)
    result = runner.run([wl], opts)["workloads"][0]
    assert result["passed"], result["broken"]
