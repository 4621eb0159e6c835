"""Session 32's attacks on the harness from the outside (s32-harn): each test failed on main 6e9c7bd."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kpool_cli import hup_default

from harness import spec

BASE = """\
name: w
ops: 2000
mix: {alloc: 1}
sizes: {dist: uniform, min: 16, max: 256}
"""


def _errors(text: str, tmp_path: Path) -> list[str]:
    path = tmp_path / "w.yaml"
    path.write_text(text)
    with pytest.raises(spec.SpecError) as info:
        spec.load(path)
    return [str(i) for i in info.value.issues]


@pytest.mark.parametrize(
    "mix, field",
    [
        ("mix: {alloc: 1.0e+308, free: 1.0e+308}", "mix"),
        ("mix: {alloc: 1, free: 1.0e+308, realloc: 1.0e+308}", "mix"),
    ],
)
def test_mix_weights_whose_sum_overflows_are_refused(tmp_path: Path, mix: str, field: str) -> None:
    # kpdrive adds the weights up in a double: inf, and every weight / inf is 0. On main the run went
    # ahead and 'verify' (weight 0, the last op) took 1999 of 2000 ops; alloc 1.
    got = _errors(BASE.replace("mix: {alloc: 1}", mix), tmp_path)
    assert any(f": {field}: " in g and "too large" in g for g in got), got


def test_size_list_weights_whose_sum_overflows_are_refused(tmp_path: Path) -> None:
    sizes = "sizes: {dist: list, sizes: [{size: 16, weight: 1.0e+308}, {size: 32, weight: 1.0e+308}]}"
    got = _errors(BASE.replace("sizes: {dist: uniform, min: 16, max: 256}", sizes), tmp_path)
    assert any(": sizes.sizes: " in g and "too large" in g for g in got), got


def test_large_weights_that_add_up_still_load(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(BASE.replace("mix: {alloc: 1}", "mix: {alloc: 1.0e+307, free: 1.0e+307}"))
    assert spec.load(path).name == "w"


def test_an_integer_weight_past_the_largest_double_is_refused_by_line(tmp_path: Path) -> None:
    got = _errors(BASE.replace("mix: {alloc: 1}", "mix: {alloc: 1" + "0" * 400 + ", free: 1}"), tmp_path)
    assert any(": mix: " in g and "too large" in g for g in got), got


def _fake_result(name: str, alloc: str, interrupted: bool = False) -> dict[str, object]:
    return {
        "name": name,
        "allocator": alloc,
        "ops_per_s_per_thread": 1e6,
        "latency": {"alloc": {"p50": 20, "p99": 30, "p999": 40}, "free": {"p99": 20}},
        "crashes": [],
        "interrupted": interrupted,
        "passed": not interrupted,
        "broken": ["interrupted before every worker finished"] if interrupted else [],
    }


def test_bench_of_workload_files_stops_at_an_interrupt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C in `kpool bench --workload`: the stress runner stops the allocator's workers and marks its
    result interrupted. On main the bench went on to every other allocator and workload, printed them and
    exited 0 (its --json said nothing of it): a long bench could not be stopped, and its partial figures
    looked whole. Now it stops there, prints and writes what finished, marked interrupted, and ends 130."""
    from harness import bench
    from harness.stress import compare, runner

    calls: list[tuple[str, str]] = []

    def fake_run_workload(
        wl: spec.Workload, opts: runner.Options, run_dir: Path, kpdrive: Path
    ) -> dict[str, object]:
        name, alloc = wl.name, str(opts.allocator)
        calls.append((name, alloc))
        return _fake_result(name, alloc, interrupted=len(calls) == 2)

    monkeypatch.setattr(compare, "ensure_kpdrive", lambda *a: tmp_path / "kpdrive")
    monkeypatch.setattr(runner, "run_workload", fake_run_workload)
    files = []
    for name in ("one", "two"):
        files.append(tmp_path / f"{name}.yaml")
        files[-1].write_text(BASE.replace("name: w", f"name: {name}"))
    out = tmp_path / "bench.json"
    argv = ["--allocators", "kpool,glibc", "--json", str(out), "--reports", str(tmp_path / "r")]
    with pytest.raises(KeyboardInterrupt):
        bench.main([*argv, "--workload", str(files[0]), "--workload", str(files[1])])
    assert calls == [("one", "kpool"), ("one", "glibc")]
    doc = json.loads(out.read_text())
    assert doc["interrupted"] is True
    assert doc["workloads"]["one"]["kpool"]["passed"] is True
    assert doc["workloads"]["one"]["glibc"]["interrupted"] is True
    assert "two" not in doc["workloads"]
    assert "| kpool |" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra",
    [
        ["--workload", "w.yaml", "--runs", "3"],
        ["--workload", "w.yaml", "--seed", "7"],
        ["--workload", "w.yaml", "--ops", "100"],
        ["--harness-speed", "--workloads", "a"],
        ["--harness-speed", "--runs", "2"],
    ],
)
def test_bench_refuses_kpbench_settings_its_workload_runs_would_ignore(
    extra: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """`kpool bench --workload w.yaml --runs 3` ran each allocator once and said nothing (the medians of 3
    the user asked for were one run); --seed and --ops were ignored too, as was --workloads beside
    --harness-speed. Now a usage error names the option, before any run."""
    from harness import bench

    assert bench.main(extra) == 2
    err = capsys.readouterr().err
    assert f"error: {extra[-2]} {extra[-1]}: a setting of kpbench's a-f" in err, err


def test_bench_defaults_still_apply() -> None:
    from harness import bench

    args = bench.parse_args(["--workloads", "a"])
    assert (args.runs, args.seed, args.ops) == (5, 1, None)
    args = bench.parse_args(["--workload", "w.yaml"])
    assert (args.runs, args.seed) == (5, 1)


LONG = """\
name: NAME
processes: 1
duration_ms: 20000
mix: {alloc: 2, free: 1}
sizes: {dist: uniform, min: 16, max: 512}
"""


@pytest.mark.slow
def test_ctrl_c_stops_pytest_of_the_workloads(tmp_path: Path) -> None:
    """`pytest workloads` (no xdist) and Ctrl-C in the first of two 20 s workloads: the stress runner
    stops the workers and marks the result interrupted, the item failed with it and pytest went on to the
    next workload (exit 1 after 20 s more; one Ctrl-C a workload). Now pytest stops there (exit 2, its
    'interrupted'), the item's report kept."""
    wdir = tmp_path / "workloads"
    wdir.mkdir()
    root = Path(__file__).resolve().parent.parent
    (wdir / "conftest.py").write_text((root / "workloads" / "conftest.py").read_text())
    for name in ("a_long", "b_long"):
        (wdir / f"{name}.yaml").write_text(LONG.replace("NAME", name))
    reports = tmp_path / "reports"
    env = dict(os.environ, KPOOL_REPORTS=str(reports))
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "pytest", "workloads", "-p", "no:xdist", "-p", "no:cacheprovider"]
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while not list(reports.glob("pytest-a_long-*/a_long/*.prog")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # its worker is under way
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    took = time.monotonic() - t0
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out
    assert took < 15, (took, out)  # not b_long's 20 s
    assert not list(reports.glob("pytest-b_long-*")), out
    [report] = reports.glob("pytest-a_long-*/stress.json")
    assert json.loads(report.read_text())["workloads"][0]["interrupted"] is True


def _command_in(text: str, start: str) -> list[str]:
    """The shell words of the command that begins at `start` in text and ends at ' runs them)' or the end."""
    import shlex

    tail = text[text.index(start) :]
    return shlex.split(tail.split(" runs them)")[0])


def test_the_resume_hint_of_an_interrupted_campaign_names_its_reports_folder(tmp_path: Path) -> None:
    """'kpool campaign --resume ID runs them' after `kpool campaign --reports DIR` was interrupted: run as
    printed, it looked for ID in ./reports ('no campaign ID'). Now the hint names DIR, quoted for the shell
    (a folder with a space in its name)."""
    from harness.campaign import budget
    from harness.campaign import run as campaign_run
    from harness.report.model import RunReport

    reports = tmp_path / "night reports"
    run_dir = reports / "campaign-1"
    run_dir.mkdir(parents=True)
    c = budget.plan("campaign-1", run_dir, 20.0, 1, 0, ["conf"], [])
    text = campaign_run.summary(RunReport(run_id="campaign-1", started=0.0), run_dir, c, finished=False)
    words = _command_in(text, "kpool campaign --resume")
    assert words == ["kpool", "campaign", "--resume", "campaign-1", "--reports", str(reports)], text


def test_the_triage_hint_of_recorded_crashes_is_quoted_for_the_shell(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """'kpool triage --db /x/we ird/crashes.sqlite list': pasted, the shell split the path in two."""
    from harness.triage import db, record

    path = tmp_path / "we ird $x" / "crashes.sqlite"
    record._say([db.Recorded(signature_id=1, hash="h", status="new", new=True)], path)
    words = _command_in(capsys.readouterr().err, "kpool triage")
    assert words == ["kpool", "triage", "--db", str(path), "list"]


@pytest.fixture
def read_only_db(tmp_path: Path) -> Iterator[Path]:
    """A crash database of one signature in a folder nothing can write in: a tmpfs remounted read-only
    for root (whom file modes do not stop), modes 0555/0444 for anyone else: the nightly's reports
    folder, read the next morning from a read-only mount or as another user."""
    from harness.triage import db as D
    from harness.triage.crash import Crash

    folder = tmp_path / "nightly"
    folder.mkdir()
    root = os.geteuid() == 0
    if root and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)]).returncode:
        pytest.skip("no read-only folder: root, and mount refused")
    path = folder / "crashes.sqlite"
    text = "==1==ERROR: AddressSanitizer: heap-use-after-free on address 0x1\n    #0 0x1 in kp_free a.c:1\n"
    D.CrashDB(path).record(Crash(text=text, run_id="r1", source="api", returncode=1))
    try:
        if root:
            subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        else:
            path.chmod(0o444)
            folder.chmod(0o555)
        yield path
    finally:
        if root:
            subprocess.run(["umount", str(folder)], check=False)
        else:
            folder.chmod(0o755)


@pytest.mark.parametrize("action", [["list"], ["show", "1"], ["sarif"]])
def test_triage_reads_a_crash_database_it_cannot_write(
    read_only_db: Path, action: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """`kpool triage list` of a database on a read-only mount: 'is not a kpool crash database (unable to
    open database file)', exit 2 (the reader opened it read-write, and WAL wants its -shm file beside
    it). Reading needs no writing: now it lists, shows and writes SARIF."""
    from harness import cli

    assert cli.main(["triage", "--db", str(read_only_db), *action]) == 0
    out = capsys.readouterr().out
    assert "heap-use-after-free in kp_free" in out, out


@pytest.mark.parametrize("action", [["replay", "1", "-n", "1"], ["minimize", "1"], ["recheck", "-n", "1"]])
def test_triage_that_stores_results_says_the_database_is_read_only(
    read_only_db: Path, action: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Replay, minimize and recheck store their results in the database: refused before any replay, the
    message naming the file as read-only (it said 'not a kpool crash database')."""
    from harness import cli

    assert cli.main(["triage", "--db", str(read_only_db), *action]) == 2
    err = capsys.readouterr().err
    assert f"{read_only_db}: cannot be written" in err and "not a kpool crash database" not in err, err


def test_the_hints_of_a_crash_kpool_run_recorded_work_as_printed(tmp_path: Path) -> None:
    """`kpool run --reports DIR -- CMD` that crashed printed 'kpool triage show HASH, kpool triage replay
    HASH': run as printed, they looked in ./reports ('no crash database ... yet'). Now each names the
    database (quoted for the shell), and `show` run as printed from another folder finds the crash."""
    import shlex

    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=str(root))
    env.pop("KPOOL_CRASH_DB", None)
    env.pop("KPOOL_REPORTS", None)
    reports = tmp_path / "my reports"
    cmd = [sys.executable, "-m", "harness.cli", "run", "--allocator", "glibc", "--reports", str(reports)]
    proc = subprocess.run(
        [*cmd, "--", "sh", "-c", "kill -SEGV $$"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 128 + signal.SIGSEGV, proc.stderr
    [line] = [ln for ln in proc.stderr.splitlines() if "crash recorded" in ln]
    show = line.split("; ", 1)[1].split(", kpool triage")[0]
    words = shlex.split(show)
    assert words[:2] == ["kpool", "triage"] and "show" in words, line
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    again = subprocess.run(
        [sys.executable, "-m", "harness.cli", *words[1:]],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0 and "SIGSEGV in program:sh" in again.stdout, (line, again.stderr)


def test_the_report_of_an_interrupted_campaign_does_not_say_ok(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C before any job ended: exit 130, but summary.json said "ok": true and its page and the
    index's row 'ok' (0 workload runs, 0 fuzz targets): a CI step or a morning reader that trusts the
    report saw a clean night that never ran. Now summary.json says "interrupted": true and "ok": false,
    and the pages say 'interrupted'; the --resume that finishes it writes the report again, ok."""
    from harness import cli
    from harness.campaign import budget, command
    from harness.campaign import run as campaign_run

    def interrupted(c: budget.Campaign, run_dir: Path, *args: object, **kwargs: object) -> bool:
        return False  # as run_jobs returns after Ctrl-C or SIGTERM: the jobs left pending

    def done(c: budget.Campaign, run_dir: Path, *args: object, **kwargs: object) -> bool:
        for j in c.jobs:
            j.state = "done"
        c.save(run_dir)
        return True

    monkeypatch.setattr(command, "build_variants", lambda *a, **k: None)
    monkeypatch.setattr(campaign_run, "fuzz_coverage", lambda *a, **k: {})
    monkeypatch.delenv("KPOOL_LOG", raising=False)
    monkeypatch.setattr(command, "run_jobs", interrupted)
    reports = tmp_path / "reports"
    argv = ["campaign", "--budget", "30s", "--targets", "", "--reports", str(reports)]
    workload = Path(__file__).resolve().parent.parent / "workloads" / "steady-small.yaml"
    assert cli.main([*argv, "--workloads", str(workload)]) == 130
    assert "interrupted after 0 of 1 jobs (clean so far)" in capsys.readouterr().out
    [run_dir] = reports.glob("campaign-*")
    doc = json.loads((run_dir / "summary.json").read_text())
    assert doc["interrupted"] is True and doc["ok"] is False, doc
    page = (run_dir / "index.html").read_text()
    assert "interrupted" in page.split("</h1>")[0], page.split("</h1>")[0]
    index = (reports / "index.html").read_text()
    row = index[index.rindex(f"{run_dir.name}/index.html") :].split("</tr>")[0]  # the runs table's
    assert "interrupted" in row and ">ok<" not in row, row
    junit = (run_dir / "junit.xml").read_text()
    assert 'failures="1"' in junit and "not run: stress:steady-small" in junit, junit
    monkeypatch.setattr(command, "run_jobs", done)
    assert cli.main(["campaign", "--resume", run_dir.name, "--reports", str(reports)]) == 1  # no results
    doc = json.loads((run_dir / "summary.json").read_text())
    assert doc["interrupted"] is False, doc


def test_doctor_names_a_build_cache_an_installed_kpool_cannot_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An installed kpool builds its fuzz, coverage and sanitizer variants in its cache ($KPOOL_CACHE):
    with KPOOL_CACHE a file (or a read-only folder) `kpool doctor` said 'all 36 capabilities present',
    then `kpool fuzz` and `kpool build` stopped on it. Now doctor names it, with the remedy."""
    from harness import doctor, paths

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setattr(paths, "checkout", lambda: None)  # as installed from a wheel
    monkeypatch.setenv("KPOOL_CACHE", str(blocker))
    [finding] = [f for f in doctor.check() if "build" in f.capability.name and "folder" in f.capability.name]
    assert not finding.ok and "KPOOL_CACHE" in finding.detail, finding
    assert "KPOOL_CACHE" in finding.capability.remedy
    monkeypatch.setenv("KPOOL_CACHE", str(tmp_path / "cache"))
    [finding] = [f for f in doctor.check() if f.capability is finding.capability]
    assert finding.ok, finding


def test_a_target_named_twice_is_fuzzed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`kpool campaign --targets conf,conf` planned two fuzz:conf jobs in one folder: the second found the
    first holding it ('the folder of a run still going'), failed, and the campaign ended FAIL (exit 1)
    with nothing wrong. Now a target named twice is one job."""
    from harness import cli
    from harness.campaign import budget, command
    from harness.campaign import run as campaign_run

    planned: list[str] = []

    def run_jobs(c: budget.Campaign, run_dir: Path, *args: object, **kwargs: object) -> bool:
        planned.extend(j.name for j in c.jobs)
        return False

    monkeypatch.setattr(command, "build_variants", lambda *a, **k: None)
    monkeypatch.setattr(command.build, "clang_missing", lambda: False)
    monkeypatch.setattr(campaign_run, "fuzz_coverage", lambda *a, **k: {})
    monkeypatch.setattr(command, "run_jobs", run_jobs)
    argv = ["campaign", "--budget", "30s", "--workloads", "", "--reports", str(tmp_path / "r")]
    cli.main([*argv, "--targets", "conf, conf,faults,conf"])
    assert planned == ["fuzz:conf", "fuzz:faults"]


def test_a_bench_workload_named_twice_runs_once_a_round() -> None:
    """`kpool bench --workloads a,a --runs 1`: (a) ran twice on each allocator with the same seed, both
    runs in its medians. Allocators named twice were already run once."""
    from harness import bench

    assert bench.parse_args(["--workloads", "a,b,a", "--runs", "1"]).workloads == ["a", "b"]


def test_bench_refuses_two_workload_files_of_one_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`kpool bench --workload a/w.yaml --workload b/w.yaml`, both named w: the second's runs wrote over
    the first's, in the table, the --json file and the run folder, in silence (`kpool stress` refuses
    it). Now a usage error before any run; one file given twice runs once."""
    from harness import cli
    from harness.stress import compare, runner

    ran: list[str] = []

    def fake_run_workload(
        wl: spec.Workload, opts: runner.Options, run_dir: Path, kpdrive: Path
    ) -> dict[str, object]:
        ran.append(f"{wl.path}:{opts.allocator}")
        return _fake_result(wl.name, str(opts.allocator))

    monkeypatch.setattr(compare, "ensure_kpdrive", lambda *a: tmp_path / "kpdrive")
    monkeypatch.setattr(runner, "run_workload", fake_run_workload)
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "w.yaml").write_text(BASE)
    argv = ["--allocators", "glibc", "--reports", str(tmp_path / "r")]
    assert (
        cli.main(
            [
                "bench",
                *argv,
                "--workload",
                str(tmp_path / "a/w.yaml"),
                "--workload",
                str(tmp_path / "b/w.yaml"),
            ]
        )
        == 2
    )
    assert ran == [] and "one run needs distinct names" in capsys.readouterr().err
    assert (
        cli.main(
            [
                "bench",
                *argv,
                "--workload",
                str(tmp_path / "a/w.yaml"),
                "--workload",
                str(tmp_path / "a/w.yaml"),
            ]
        )
        == 0
    )
    assert len(ran) == 1, ran


@pytest.mark.parametrize("command", [["options"], ["triage", "list"], ["stress", "w.yaml"]])
def test_a_current_folder_that_was_deleted_is_one_line(tmp_path: Path, command: list[str]) -> None:
    """kpool run from a folder deleted meanwhile (`rm -rf` of the reports folder the shell was in): a
    traceback from the import of harness.cli (the default reports folder made absolute at import),
    for every command. Now one line naming the cause, exit 2."""
    import shlex

    root = Path(__file__).resolve().parent.parent
    gone = tmp_path / "gone"
    gone.mkdir()
    kpool = shlex.join([sys.executable, "-m", "harness.cli", *command])
    script = f"cd {shlex.quote(str(gone))} && rmdir {shlex.quote(str(gone))} && exec {kpool}"
    env = dict(os.environ, PYTHONPATH=str(root))
    env.pop("KPOOL_REPORTS", None)
    proc = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip() == (
        "kpool: error: the current folder no longer exists (deleted or moved away): cd to one that does"
    ), proc.stderr


@pytest.mark.slow
def test_a_hangup_ends_kpool_stress_as_an_interrupt(tmp_path: Path) -> None:
    """The terminal (an ssh session) closed under `kpool stress`: SIGHUP's default ended Python at once,
    exit -1, stress.json without the running workload and not marked interrupted (as kill -9). Now a
    hangup ends it as SIGTERM and Ctrl-C do: 130, the workload that ran kept and marked interrupted."""
    (tmp_path / "long.yaml").write_text(LONG.replace("NAME", "long"))
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=str(root))
    cmd = [sys.executable, "-m", "harness.cli", "stress", "long.yaml", "--reports", "r", "--run-id", "x"]
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=hup_default,
    )
    deadline = time.monotonic() + 60
    while not list((tmp_path / "r" / "x").glob("long/*.prog")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGHUP)
    assert proc.wait(timeout=30) == 130
    report = json.loads((tmp_path / "r" / "x" / "stress.json").read_text())
    assert report["interrupted"] is True and report["workloads"][0]["interrupted"] is True


def test_a_hangup_nohup_ignores_stays_ignored() -> None:
    """Under nohup (SIGHUP ignored) a hangup must not stop kpool."""
    from harness import cli

    old = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with cli._term_as_interrupt():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, old)


@pytest.mark.parametrize("use_jsonschema", [True, False], ids=["jsonschema", "fallback"])
def test_a_list_too_long_is_said_in_a_line_not_echoed(tmp_path: Path, use_jsonschema: bool) -> None:
    """A size list of 300 entries (the schema allows 32): the error echoed the whole list, one line of
    12 KB (5,000 entries: 200 KB) ending 'is too long'. Now it says how many and how many are allowed."""
    items = ", ".join(f"{{size: {16 + i}, weight: 1}}" for i in range(300))
    text = BASE.replace(
        "sizes: {dist: uniform, min: 16, max: 256}", f"sizes: {{dist: list, sizes: [{items}]}}"
    )
    path = tmp_path / "w.yaml"
    path.write_text(text)
    with pytest.raises(spec.SpecError) as info:
        spec.load(path, use_jsonschema=use_jsonschema)
    [issue] = [str(i) for i in info.value.issues]
    assert issue.endswith("sizes.sizes: 300 items, more than the 32 allowed"), issue[:300]


@pytest.mark.parametrize("option", [["--repeat", "3"], ["--peers", "jemalloc"]])
def test_stress_refuses_program_options_without_a_program_workload(
    option: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """`kpool stress steady-small.yaml --repeat 3` (or --peers jemalloc) ran once, on kpool alone, and
    said nothing: both apply to program workloads only. Now a usage error when none is given."""
    from harness import cli

    workload = Path(__file__).resolve().parent.parent / "workloads" / "steady-small.yaml"
    assert cli.main(["stress", str(workload), *option]) == 2
    err = capsys.readouterr().err
    assert f"{option[0]} applies to program workloads" in err, err


def test_stress_refuses_set_when_every_workload_is_a_program(capsys: pytest.CaptureFixture[str]) -> None:
    """`kpool stress workloads/programs/git.yaml --set conf=checks:off` ran git with kpool's checks on:
    --set sets the op driver's keys, which a program workload has none of. Now a usage error."""
    from harness import cli

    workload = Path(__file__).resolve().parent.parent / "workloads" / "programs" / "git.yaml"
    assert cli.main(["stress", str(workload), "--set", "conf=checks:off"]) == 2
    assert "--set conf=checks:off: sets a key of the op driver's program" in capsys.readouterr().err


def test_a_campaign_refuses_two_workload_files_of_one_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`kpool campaign --workloads 'mine/*.yaml'`, a.yaml and b.yaml both `name: w`: two rows 'workload w'
    in the summary and the page, one p99 of the two in the index's trends (`kpool stress` refuses it).
    Now a usage error before any job."""
    from harness import cli
    from harness.campaign import command

    monkeypatch.setattr(command, "build_variants", lambda *a, **k: None)
    monkeypatch.setattr(command, "run_jobs", lambda *a, **k: pytest.fail("a job ran"))
    monkeypatch.delenv("KPOOL_LOG", raising=False)
    mine = tmp_path / "mine"
    mine.mkdir()
    for f in ("a.yaml", "b.yaml"):
        (mine / f).write_text(BASE)
    argv = ["campaign", "--budget", "30s", "--targets", "", "--reports", str(tmp_path / "r")]
    assert cli.main([*argv, "--workloads", str(mine / "*.yaml")]) == 2
    assert "one run needs distinct names" in capsys.readouterr().err


@pytest.mark.parametrize("row", ["kpool-checks-off", "kpool-inline"])
def test_bench_workload_on_a_kpbench_row_says_so(row: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`kpool bench --workload w.yaml --allocators kpool-checks-off`: 'runs on a,b,c only: nothing to run
    on --workloads d,f (add kpool or a peer)', about kpbench workloads the user never named. Now it says
    the row is kpbench's, and where kpool's options go for a workload file."""
    from harness import bench

    assert bench.main(["--workload", "w.yaml", "--allocators", row]) == 2
    err = capsys.readouterr().err
    assert f"--allocators {row}: a row of kpbench's a-f" in err and "--workloads d" not in err, err


@pytest.mark.parametrize("mode", ["--coverage", "--merge"])
def test_fuzz_coverage_of_a_reports_folder_that_is_not_there_creates_nothing(
    tmp_path: Path, mode: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`kpool fuzz --coverage --reports reprots` (a typo): it made reprots/corpus/<target>, measured the
    committed seeds alone and wrote reprots/coverage.json, exit 0: the figure of no corpus, given as the
    corpus's. Now a usage error naming the folder, and nothing made."""
    from harness import cli

    missing = tmp_path / "reprots"
    assert cli.main(["fuzz", "conf", mode, "--reports", str(missing)]) == 2
    assert not missing.exists()
    assert f"--reports {missing}: no such folder" in capsys.readouterr().err
