"""Configuration mistakes are configuration errors, found before any worker starts: values the driver or
kp_create would refuse, --set, KPOOL_CONF, paths that match nothing, run ids that are paths. Also the
stress command's help and its live progress figure."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness import cli, output, spec
from harness.stress import command, runner
from harness.stress.binary import ensure_kpdrive
from harness.stress.worker import PROGRESS_RE

SMALL = """\
name: cfg
processes: 2
ops: 2000
mix: {alloc: 2, free: 1}
sizes: {dist: uniform, min: 16, max: 256}
working_set: 100
"""


def write(tmp_path: Path, text: str, name: str = "w.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def issues(path: Path) -> list[str]:
    with pytest.raises(spec.SpecError) as info:
        spec.load(path)
    assert info.value.exit_code == 2
    return [str(i) for i in info.value.issues]


def stress(tmp_path: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli.main(["stress", *argv, "--reports", str(tmp_path / "reports")])
    return code, capsys.readouterr().err


def workers_started(tmp_path: Path) -> list[Path]:
    return list((tmp_path / "reports").rglob("*-worker-*"))


# ---- values the driver refuses are caught by the loader ----------------------------------------------------


def test_huge_ops_is_a_spec_error_at_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, SMALL.replace("ops: 2000", "ops: 99999999999999999999999999999"))
    got = issues(path)
    assert len(got) == 1 and got[0].startswith(f"{path}:3:6: ops: "), got
    assert "above the maximum" in got[0]


def test_huge_seed_is_a_spec_error(tmp_path: Path) -> None:
    path = write(tmp_path, SMALL + "seed: 99999999999999999999999999999\n")
    got = issues(path)
    assert len(got) == 1 and got[0].startswith(f"{path}:7:7: seed: "), got


def test_seed_plus_worker_index_must_fit(tmp_path: Path) -> None:
    # worker i runs with seed + i: the last worker's seed must still be one the driver accepts
    path = write(tmp_path, SMALL + f"seed: {2**64 - 1}\n")
    got = issues(path)
    assert len(got) == 1 and got[0].startswith(f"{path}:7:7: seed: "), got
    assert "worker" in got[0]
    spec.load(write(tmp_path, SMALL + f"seed: {2**64 - 2}\n"))  # the last worker gets 2**64 - 1


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ("duration_ms: 99999999999\n", "duration_ms"),
        ("sample: 99999999999\n", "sample"),
        ("rate: .inf\n", "rate"),
        ("planted: {crash_at: 99999999999999999999999}\n", "planted.crash_at"),
        ("interference: [{kind: mmap, size: 99999999999999999999999}]\n", "interference[0].size"),
        ("interference: [{kind: mmap, rate: .nan}]\n", "interference[0].rate"),
        (f"name: {'n' * 200}\n", "name"),
    ],
)
def test_values_outside_the_drivers_ranges(tmp_path: Path, extra: str, field: str) -> None:
    text = SMALL.replace("ops: 2000\n", "") if extra.startswith("duration_ms") else SMALL
    if extra.startswith("name:"):
        text = text.replace("name: cfg\n", "")
    got = issues(write(tmp_path, text + extra))
    assert any(f": {field}: " in g for g in got), got


def test_bad_pool_value_names_the_option(tmp_path: Path) -> None:
    path = write(tmp_path, SMALL + "pool: {daemon: false, primary_max: lots}\n")
    got = issues(path)
    assert len(got) == 1, got
    assert got[0].startswith(f"{path}:7:36: pool.primary_max: "), got
    assert "'lots'" in got[0] and "primary_max" in got[0]


def test_inconsistent_pool_is_a_spec_error(tmp_path: Path) -> None:
    path = write(tmp_path, SMALL + "pool: {primary_initial: 64m, primary_max: 32m}\n")
    got = issues(path)
    assert len(got) == 1 and ": pool.primary_initial: " in got[0], got
    assert "exceeds primary_max" in got[0]


def test_bad_faults_spec_is_a_spec_error(tmp_path: Path) -> None:
    path = write(tmp_path, SMALL + "faults: mmap@sometimes\n")
    got = issues(path)
    assert len(got) == 1 and got[0].startswith(f"{path}:7:9: faults: "), got


def test_bad_kpool_conf_in_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KPOOL_CONF", "bogus:1")
    got = issues(write(tmp_path, SMALL))
    assert len(got) == 1, got
    assert "KPOOL_CONF=bogus:1" in got[0] and "unknown option 'bogus'" in got[0]


def test_shipped_workloads_pass_the_driver_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    workloads = sorted((Path(__file__).resolve().parent.parent / "workloads").glob("*.yaml"))
    for path in workloads:
        wl = spec.load(path)
        runner.preflight([wl], runner.Options())  # raises on anything kpdrive would refuse


# ---- the stress command: configuration errors exit 2 and start nothing -------------------------------------


def test_stress_set_unknown_key_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = stress(tmp_path, capsys, str(write(tmp_path, SMALL)), "--set", "bogus=1", "--run-id", "r")
    assert code == 2, err
    assert "--set bogus=1" in err and "unknown key" in err
    assert not workers_started(tmp_path)


def test_stress_set_bad_value_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = stress(tmp_path, capsys, str(write(tmp_path, SMALL)), "--set", "count=lots")
    assert code == 2, err
    assert "--set count=lots" in err
    assert not workers_started(tmp_path)


def test_stress_bad_kpool_conf_is_not_a_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, SMALL)
    monkeypatch.setenv("KPOOL_CONF", "primary_max:1")
    code, err = stress(tmp_path, capsys, str(path))
    assert code == 2, err
    assert "KPOOL_CONF=primary_max:1" in err and "crash" not in err
    assert not workers_started(tmp_path)


def test_stress_set_conf_is_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = stress(tmp_path, capsys, str(write(tmp_path, SMALL)), "--set", "conf=nope:1")
    assert code == 2, err
    assert "--set conf=nope:1" in err and "unknown option 'nope'" in err
    assert not workers_started(tmp_path)


FAKE_KPDRIVE = """\
#!{python}
import sys
if sys.argv[1:2] == ["--check"]:
    sys.exit(0)
sys.stderr.write("kpdrive: bad program: line 9: count: 'x' is not a size\\n")
sys.exit(2)
"""


def test_a_worker_exiting_with_the_usage_status_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "kpdrive"
    fake.write_text(FAKE_KPDRIVE.format(python=sys.executable))
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("KPOOL_KPDRIVE", str(fake))
    code, err = stress(tmp_path, capsys, str(write(tmp_path, SMALL)), "--run-id", "r")
    assert code == 2, err
    assert "configuration error" in err and "'x' is not a size" in err
    assert "crash" not in err.lower().replace("crashes", "")
    report = (tmp_path / "reports" / "r" / "stress.json").read_text()
    assert '"crashes": []' in report


# ---- paths and run ids -------------------------------------------------------------------------------------


def test_stress_glob_matching_nothing_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pattern = str(tmp_path / "nosuch" / "*.yaml")
    code, err = stress(tmp_path, capsys, pattern)
    assert code == 2
    assert pattern in err and "matches no" in err


def test_stress_missing_file_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "nosuch.yaml")
    code, err = stress(tmp_path, capsys, missing)
    assert code == 2
    assert missing in err


def test_stress_glob_expands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, SMALL.replace("cfg", "a").replace("processes: 2", "processes: 1"), "a.yaml")
    write(tmp_path, SMALL.replace("cfg", "b").replace("processes: 2", "processes: 1"), "b.yaml")
    code, _ = stress(tmp_path, capsys, str(tmp_path / "*.yaml"), "--run-id", "g", "--no-baseline")
    assert code == 0
    assert {p.name for p in (tmp_path / "reports" / "g").iterdir() if p.is_dir()} == {"a", "b"}


@pytest.mark.parametrize("run_id", ["../../escape", "a/b", ".hidden", "", "x y", "/abs"])
def test_run_id_must_be_a_plain_name(tmp_path: Path, capsys: pytest.CaptureFixture[str], run_id: str) -> None:
    code, err = stress(tmp_path, capsys, str(write(tmp_path, SMALL)), "--run-id", run_id)
    assert code == 2
    assert "--run-id" in err
    assert not (tmp_path / "escape").exists() and not list(tmp_path.rglob("stress.json"))


def test_runner_refuses_a_path_as_run_id(tmp_path: Path) -> None:
    wl = spec.load(write(tmp_path, SMALL))
    with pytest.raises(Exception) as info:
        runner.run([wl], runner.Options(reports_dir=tmp_path / "reports", run_id="../escape"))
    assert getattr(info.value, "exit_code", None) == 2
    assert not (tmp_path / "escape").exists()


# ---- help and usage ----------------------------------------------------------------------------------------


def test_help_states_every_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        command.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--jobs", "--time-limit", "--variant", "--reports", "--allocator", "--run-id"):
        block = text.split(flag, 2)[-1][:300]
        assert "default" in block, (flag, block)
    assert "--reports DIR" in text


def test_reports_default_follows_kpool_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KPOOL_REPORTS", str(tmp_path / "elsewhere"))
    assert command.parse_args(["w.yaml"]).reports == tmp_path / "elsewhere"


@pytest.mark.parametrize("argv", [["--jobs", "0", "w.yaml"], ["--bogus", "w.yaml"], []])
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    assert command.main(argv) == 2


# ---- the live op count -------------------------------------------------------------------------------------


def test_live_op_count_agrees_with_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    lines: list[str] = []
    monkeypatch.setattr(output, "progress", lines.append)
    # working_set 50 with an alloc-only mix: every step past the 50th frees a victim too (2 ops a step)
    text = SMALL.replace("ops: 2000", "duration_ms: 600").replace("working_set: 100", "working_set: 50")
    text = text.replace("{alloc: 2, free: 1}", "{alloc: 1}")
    wl = spec.load(write(tmp_path, text))
    opts = runner.Options(reports_dir=tmp_path / "reports", run_id="p", progress_s=0.2, baseline=False)
    report: dict[str, Any] = runner.run([wl], opts)
    live = [m for m in lines if "(main)" in m and " ops," in m]
    assert live, lines
    last = re.search(r"([0-9.]+)M ops", live[-1])
    assert last is not None
    table = command.summary_table(report)
    row = next(r for r in table.splitlines() if r.startswith("| cfg |"))
    assert f"| {last.group(1)}M |" in row, (live[-1], row)


def test_driver_progress_counts_ops_not_loop_steps() -> None:
    # alloc-only into a full working set of 50: each step is an alloc and a victim's free
    args = ["duration_ms=400", "progress_ms=10", "working_set=50", "ops=alloc:1", "size=fixed:64"]
    proc = subprocess.run(
        [str(ensure_kpdrive()), *args], capture_output=True, text=True, timeout=60, check=True
    )
    counters = json.loads(proc.stdout)["counters"]
    live = [int(n) for n in PROGRESS_RE.findall(proc.stderr)]
    assert live and counters["ops"] > 1.9 * counters["steps"]
    assert counters["steps"] < live[-1] <= counters["ops"]


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ("slo: {latency_ns: {alloc: {p99: .nan}}}\n", "slo.latency_ns.alloc.p99"),
        ("slo: {min_ops_per_s: .inf}\n", "slo.min_ops_per_s"),
        ("slo: {latency_ns: {free: {p50: .inf}}}\n", "slo.latency_ns.free.p50"),
    ],
)
def test_a_non_finite_slo_bound_is_a_spec_error(tmp_path: Path, extra: str, field: str) -> None:
    # a NaN bound fails every verdict and an infinite one holds every verdict, and either is written
    # into stress.json as NaN or Infinity, which strict JSON readers (jq, browsers) refuse
    got = issues(write(tmp_path, SMALL + extra))
    assert any(f": {field}: " in g and "not a finite number" in g for g in got), got


def test_a_non_finite_program_slo_bound_is_a_spec_error(tmp_path: Path) -> None:
    text = 'name: prog\nprogram: {command: ["true"]}\nslo: {max_time_ratio: .nan}\n'
    got = issues(write(tmp_path, text))
    assert any(": slo.max_time_ratio: " in g and "not a finite number" in g for g in got), got


def test_a_huge_workload_file_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    """A 300 MB file given as a workload (a log, a core file, a wrong glob) was read and parsed whole:
    19 s and 1.7 GB of memory before "a workload is a mapping of fields, got a string"."""
    path = tmp_path / "huge.yaml"
    path.write_bytes(b"name: x\n" + b"# " + b"a" * (8 << 20) + b"\n")
    got = issues(path)
    assert len(got) == 1 and "MiB" in got[0] and "workload" in got[0], got


def test_a_workload_path_that_is_no_regular_file_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = stress(tmp_path, capsys, "/dev/zero")
    assert code == 2 and "/dev/zero: not a regular file" in err, err


@pytest.mark.parametrize("name", ["..", ".", ".hidden", "stress.json", "run.lock"])
@pytest.mark.parametrize("kind", ["opstream", "program"])
def test_a_workload_name_that_is_no_folder_of_its_own_is_a_spec_error(
    tmp_path: Path, name: str, kind: str
) -> None:
    """The name is the workload's folder in its run: `name: ..` wrote its workers' files into the reports
    folder (in a campaign, into the campaign's folder), and `name: stress.json` (or run.lock) made a
    folder where the run writes its report, which was then lost after the workload had run."""
    text = SMALL if kind == "opstream" else 'name: cfg\nprogram: {command: ["true"]}\n'
    path = write(tmp_path, text.replace("name: cfg", f"name: {json.dumps(name)}"))
    got = issues(path)
    assert any(": name: " in g for g in got), got
