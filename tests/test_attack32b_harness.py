"""Session 32's second attack on the harness (s32-atth): each test failed on s32-lead 2aee60a."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from html import unescape
from pathlib import Path

import pytest
from kpool_cli import hup_default

from harness import spec
from harness.stress.binary import ensure_kpdrive
from harness.triage.crash import Crash
from harness.triage.db import CrashDB

ROOT = Path(__file__).resolve().parents[1]
KPOOL = [sys.executable, "-m", "harness.cli"]


def _env(**extra: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT), "LANG": "C", **extra}


def _kill_pid_in(path: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        os.kill(int(path.read_text()), signal.SIGKILL)


# ---- kpool stress killed mid-workload -------------------------------------------------------------------


def test_a_stress_run_killed_mid_workload_keeps_the_crashes_of_workers_that_ended(tmp_path: Path) -> None:
    """Worker 0 segfaults at once; worker 1 is still running when kpool stress is SIGKILLed (the OOM
    killer, a CI job's timeout). On 2aee60a the crash was recorded only at the workload's end: the
    database was never made and the crash lost (stress.json not written either). Now each worker's crash
    is recorded as the worker ends."""
    real = ensure_kpdrive()
    pidfile = tmp_path / "sleeper.pid"
    # kpdrive for the run: worker 0 (seed=100) crashes at op 5000; worker 1 runs on (a long worker).
    wrapper = tmp_path / "kpdrive"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'case " $* " in *" seed=100 "*) exec {real} "$@" crash_at=5000;; esac\n'
        f'case "$1" in --check) exec {real} "$@";; esac\n'
        f"echo $$ > {pidfile}\nexec sleep 60\n"
    )
    wrapper.chmod(0o755)
    (tmp_path / "w.yaml").write_text(
        "name: w\nprocesses: 2\nseed: 100\nops: 20000\nmix: {alloc: 2, free: 1}\n"
        "sizes: {dist: uniform, min: 16, max: 256}\nworking_set: 100\n"
    )
    reports = tmp_path / "reports"
    script = textwrap.dedent(f"""
        from pathlib import Path
        from harness import spec
        from harness.stress import runner
        runner.ensure_kpdrive = lambda variant: Path({str(wrapper)!r})
        wl = spec.load(Path({str(tmp_path / "w.yaml")!r}))
        runner.run([wl], runner.Options(reports_dir=Path({str(reports)!r}), run_id="r", jobs=2))
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", script], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    db = reports / "crashes.sqlite"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            if db.exists() and pidfile.exists():
                try:
                    if CrashDB.open(db).signatures():
                        break
                except Exception:  # being made: look again
                    pass
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()[1].decode()
        assert pidfile.exists(), "worker 1 never started"
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _kill_pid_in(pidfile)
    # killed mid-workload, as intended: since s33-harn stress.json holds the workload so far, unfinished
    assert json.loads((reports / "r" / "stress.json").read_text())["unfinished"] == "w"
    assert "fatal signal 11" in (reports / "r" / "w" / "main-worker-0.stderr").read_text()
    assert db.exists(), "the crash of worker 0, which ended before the kill, was lost"
    (sig,) = CrashDB.open(db).signatures()
    assert "SIGSEGV" in sig.title or "SEGV" in sig.kind.upper(), (sig.title, sig.kind)


# ---- an interrupted run in the trends ------------------------------------------------------------------


def _asan(frame: str) -> str:
    return (
        "==1==ERROR: AddressSanitizer: heap-use-after-free on address 0x1 at pc 0x2 bp 0x3 sp 0x4\n"
        f"    #0 0x5000 in {frame} /k/allocator/src/alloc.c:3:1\n"
    )


def _night(reports: Path, db: CrashDB, night: int, frames: list[str], interrupted: bool = False) -> None:
    from harness.report.model import CrashEntry, RunReport
    from harness.report.writers import write_run
    from harness.triage.crash import Crash

    run_id = f"night{night}"
    entries = []
    for frame in frames:
        rec = db.record(Crash(text=_asan(frame), run_id=run_id, source="fuzz:api_sequence"))
        entries.append(CrashEntry(rec.hash, frame, "heap-use-after-free", rec.status))
    t0 = 1_760_000_000.0 + night * 86400.0
    report = RunReport(run_id=run_id, started=t0, finished=t0 + 60, crashes=entries, interrupted=interrupted)
    write_run(report, reports)


def _night_counts(reports: Path) -> dict[str, tuple[str, ...]]:
    page = (reports / "index.html").read_text()
    m = re.search(r'<table id="nights">(.*?)</table>', page, re.S)
    assert m, page
    rows = [
        [unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"<t[hd]>(.*?)</t[hd]>", r)]
        for r in re.findall(r"<tr>(.*?)</tr>", m.group(1), re.S)
    ]
    head = rows[0]
    return {
        r[0]: tuple(dict(zip(head, r, strict=True))[k] for k in ("new", "known", "fixed", "flaky"))
        for r in rows[1:]
    }


def test_a_night_interrupted_before_its_jobs_does_not_make_a_signature_flaky(tmp_path: Path) -> None:
    """Ctrl-C stopped night 2 before any job ran: it saw no crash because it looked for none. On 2aee60a
    the signature seen nights 1 and 3 was 'flaky' on night 3 (it came back after a night away), and its
    page said 'not seen' on night 2."""
    reports = tmp_path / "reports"
    reports.mkdir()
    db = CrashDB(reports / "crashes.sqlite")
    _night(reports, db, 1, ["bug_a"])
    _night(reports, db, 2, [], interrupted=True)
    _night(reports, db, 3, ["bug_a"])
    counts = _night_counts(reports)
    assert counts["night3"] == ("0", "1", "0", "0"), counts


def test_a_night_interrupted_before_its_jobs_does_not_fix_a_signature(tmp_path: Path) -> None:
    """The latest night, interrupted before its jobs: on 2aee60a every signature of the night before was
    'fixed' on it. (Since s33-harn an interrupted night's zero counts are '-', unknown, not 0: it may not
    have run what finds one; still none is counted fixed.)"""
    reports = tmp_path / "reports"
    reports.mkdir()
    db = CrashDB(reports / "crashes.sqlite")
    _night(reports, db, 1, ["bug_a"])
    _night(reports, db, 2, [], interrupted=True)
    counts = _night_counts(reports)
    assert counts["night2"] == ("-", "-", "-", "-"), counts


# ---- a crash database on a read-only mount with its -wal file --------------------------------------------

TRACE = "==1==ERROR: AddressSanitizer: heap-use-after-free on address 0x1\n    #0 0x1 in {frame} a.c:1\n"


def _recorded_then_killed(path: Path, frames: list[str]) -> None:
    """Record one crash per frame in a process that dies (os._exit) before it closes the database: the
    rows stay in crashes.sqlite-wal, not yet copied into the file (a campaign killed, a machine that went
    down, a snapshot taken while it wrote)."""
    code = textwrap.dedent(f"""
        import os, sqlite3
        from harness.triage.db import CrashDB
        from harness.triage.crash import Crash
        keep = sqlite3.connect({str(path)!r})  # held open: the last close would checkpoint the WAL
        keep.execute("SELECT count(*) FROM sqlite_master").fetchall()  # in the WAL's shared memory
        db = CrashDB({str(path)!r})
        for f in {frames!r}:
            db.record(Crash(text={TRACE!r}.format(frame=f), run_id="r1", source="api", returncode=1))
        os._exit(0)
    """)
    subprocess.run([sys.executable, "-c", code], env=_env(), check=True)


@pytest.fixture
def read_only_mount(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root: a tmpfs remounted read-only")
    folder = tmp_path / "nightly"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)]).returncode:
        pytest.skip("mount refused")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


@pytest.mark.parametrize("shm", [True, False], ids=["with-shm", "wal-alone"])
def test_triage_list_on_a_read_only_mount_reads_the_wal_file(
    read_only_mount: Path, shm: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """The database's last crashes are in crashes.sqlite-wal (its writer never closed it), the folder then
    mounted read-only. On 2aee60a the reader opened it 'immutable', which reads the file alone: `kpool
    triage list` said the database was not a kpool crash database (its tables were in the WAL), or listed
    the crashes of the file without those of the WAL."""
    from harness import cli

    path = read_only_mount / "crashes.sqlite"
    CrashDB(path).record(Crash(text=TRACE.format(frame="kp_old"), run_id="r0", source="api", returncode=1))
    _recorded_then_killed(path, ["kp_new_one", "kp_new_two"])
    wal = Path(f"{path}-wal")
    assert wal.stat().st_size > 0
    if not shm:
        Path(f"{path}-shm").unlink()
    subprocess.run(["mount", "-o", "remount,ro", str(read_only_mount)], check=True)
    assert cli.main(["triage", "--db", str(path), "list"]) == 0
    out = capsys.readouterr().out
    for frame in ("kp_old", "kp_new_one", "kp_new_two"):
        assert f"heap-use-after-free in {frame}" in out, out


# ---- SIGHUP when the terminal is gone ------------------------------------------------------------------


def test_a_hangup_with_the_terminal_gone_ends_kpool_stress_as_an_interrupt(tmp_path: Path) -> None:
    """The ssh session closed: the terminal is gone (every write to it fails, EIO) and kpool gets SIGHUP.
    On 2aee60a the interrupt's summary raised OSError (Input/output error), so did the one-line error
    for it, and kpool ended on a traceback, exit 1 (a failure of the work) instead of 130."""
    (tmp_path / "long.yaml").write_text(
        "name: long\nprocesses: 1\nduration_ms: 30000\nmix: {alloc: 2, free: 1}\n"
        "sizes: {dist: uniform, min: 16, max: 256}\nworking_set: 100\n"
    )
    ensure_kpdrive()
    master, slave = os.openpty()
    argv = [
        sys.executable,
        "-m",
        "harness.cli",
        "stress",
        "long.yaml",
        "--reports",
        "reports",
        "--run-id",
        "h",
    ]
    proc = subprocess.Popen(
        argv,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        env=_env(),
        preexec_fn=hup_default,
    )
    os.close(slave)
    try:
        seen, deadline = b"", time.monotonic() + 60
        while b"process(es) x" not in seen and time.monotonic() < deadline:
            seen += os.read(master, 4096)
        assert b"process(es) x" in seen, seen
        time.sleep(1.0)  # the worker under way
    finally:
        os.close(master)  # the terminal goes away: writes to it fail from now on
    proc.send_signal(signal.SIGHUP)
    try:
        rc = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    report = json.loads((tmp_path / "reports" / "h" / "stress.json").read_text())
    assert report.get("interrupted") is True, report
    assert rc == 130, rc


# ---- one workload file named twice --------------------------------------------------------------------


@pytest.mark.parametrize("second", ["link.yaml", "sub/../w.yaml"])
def test_one_workload_file_named_two_ways_runs_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, second: str
) -> None:
    """`kpool stress w.yaml link.yaml` (a symlink to it) or `w.yaml sub/../w.yaml`: one file. On 2aee60a
    it was refused, exit 2, as two files of one workload name ('link.yaml: workload name 'w' is
    w.yaml's too'), while `w.yaml ./w.yaml` ran it once."""
    from harness import cli

    (tmp_path / "w.yaml").write_text(
        "name: w\nprocesses: 1\nops: 2000\nmix: {alloc: 2, free: 1}\n"
        "sizes: {dist: uniform, min: 16, max: 256}\nworking_set: 100\n"
    )
    (tmp_path / "link.yaml").symlink_to("w.yaml")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    assert cli.main(["stress", "w.yaml", second, "--reports", "reports", "--run-id", "r"]) == 0
    report = json.loads((tmp_path / "reports" / "r" / "stress.json").read_text())
    assert [w["name"] for w in report["workloads"]] == ["w"]


# ---- kpool bench --workload interrupted between runs ------------------------------------------------------

BENCH_WL = "name: {name}\nops: 2000\nmix: {{alloc: 1}}\nsizes: {{dist: uniform, min: 16, max: 256}}\n"


def _bench_result(name: str, alloc: str) -> dict[str, object]:
    return {
        "name": name,
        "allocator": alloc,
        "ops_per_s_per_thread": 1e6,
        "latency": {"alloc": {"p50": 20, "p99": 30, "p999": 40}, "free": {"p99": 20}},
        "crashes": [],
        "interrupted": False,
        "passed": True,
        "broken": [],
    }


@pytest.mark.parametrize("where", ["driver", "run"])
def test_bench_of_workload_files_keeps_what_finished_at_an_interrupt_between_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    """Ctrl-C while the second allocator's run was being set up (the driver's up-to-date check, the
    workload's program written, its merge): not inside the workers' phase, which catches it. On 2aee60a
    the interrupt left compare() at once: the first allocator's finished run was neither printed nor
    written to --json (no file), exit 130. Now it is, marked interrupted, as for an interrupt in a run."""
    from harness import bench
    from harness.stress import compare, runner

    calls: list[str] = []

    def driver(*a: object) -> Path:
        calls.append("driver")
        if where == "driver" and calls.count("driver") == 2:
            raise KeyboardInterrupt
        return tmp_path / "kpdrive"

    def fake_run_workload(
        wl: spec.Workload, opts: runner.Options, run_dir: Path, kpdrive: Path
    ) -> dict[str, object]:
        calls.append("run")
        if where == "run" and calls.count("run") == 2:
            raise KeyboardInterrupt  # after the workers, in the merge
        return _bench_result(wl.name, str(opts.allocator))

    monkeypatch.setattr(compare, "ensure_kpdrive", driver)
    monkeypatch.setattr(runner, "run_workload", fake_run_workload)
    (tmp_path / "one.yaml").write_text(BENCH_WL.format(name="one"))
    out = tmp_path / "bench.json"
    argv = ["--allocators", "kpool,glibc", "--json", str(out), "--reports", str(tmp_path / "r")]
    with pytest.raises(KeyboardInterrupt):
        bench.main([*argv, "--workload", str(tmp_path / "one.yaml")])
    assert out.exists(), "the finished run of kpool was not written"
    doc = json.loads(out.read_text())
    assert doc["interrupted"] is True
    assert doc["workloads"]["one"]["kpool"]["passed"] is True
    assert "glibc" not in doc["workloads"]["one"]
    assert "| kpool |" in capsys.readouterr().out


# ---- kpool stress interrupted outside a workload's workers ------------------------------------------------


def test_an_interrupt_while_a_finished_workload_is_recorded_keeps_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while kpool stress records a workload that finished (its crashes into a database another
    run holds locked: up to the busy timeout): on 2aee60a the interrupt left the run there, and the
    workload's result never reached stress.json (no file at all for the first workload). Now the report
    holds it and says interrupted."""
    from harness.stress import runner
    from harness.triage import record

    (tmp_path / "w.yaml").write_text(
        "name: w\nprocesses: 1\nops: 2000\nmix: {alloc: 2, free: 1}\n"
        "sizes: {dist: uniform, min: 16, max: 256}\nworking_set: 100\n"
    )
    wl = spec.load(tmp_path / "w.yaml")

    def interrupted(*a: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(record, "record_stress", interrupted)
    opts = runner.Options(reports_dir=tmp_path / "reports", run_id="r", progress_s=3600)
    report = runner.run([wl], opts)
    assert report.get("interrupted") is True and report["passed"] is False
    doc = json.loads((tmp_path / "reports" / "r" / "stress.json").read_text())
    assert [w["name"] for w in doc["workloads"]] == ["w"] and doc["interrupted"] is True


# ---- workload errors: values and keys of any size, text of any script ---------------------------------

WL_OK = "name: w\nops: 2000\nmix: {alloc: 1}\nsizes: {dist: uniform, min: 16, max: 256}\n"
LONG = "k" * 100_000


def _spec_errors(text: str, tmp_path: Path) -> list[str]:
    path = tmp_path / "w.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(spec.SpecError) as info:
        spec.load(path)
    return [str(i) for i in info.value.issues]


@pytest.mark.parametrize(
    "text",
    [
        WL_OK.replace("dist: uniform", f"dist: {LONG}"),  # enum
        WL_OK + f"? {LONG}\n: 1\n",  # an unknown key (an explicit key: a plain one stops at 1024)
        WL_OK.replace("mix: {alloc: 1}", f"mix:\n  alloc: 1\n  ? {LONG}\n  : 1"),
        WL_OK.replace("ops: 2000", f"ops: {LONG}"),  # type
    ],
    ids=["enum", "top-key", "mix-key", "type"],
)
def test_a_huge_value_or_key_is_said_in_a_line(tmp_path: Path, text: str) -> None:
    """A 100,000-character value or key: on 2aee60a its message echoed it whole (the enum's 'is not
    allowed', the type's 'expected integer', the unknown key twice: in the field and in the message):
    lines of 100-200 KB. Now each line stays within a terminal's few lines."""
    got = _spec_errors(text, tmp_path)
    assert got and all(len(g) < 600 for g in got), [len(g) for g in got]
    assert all("100000 characters" in g for g in got), [g[:300] for g in got]


def test_a_value_in_another_script_is_shown_as_written(tmp_path: Path) -> None:
    """name: "été!" (not the name pattern): on 2aee60a the message showed "\\u00e9t\\u00e9!", JSON's
    escapes, not what the file says."""
    got = _spec_errors(WL_OK.replace("name: w", 'name: "été!"'), tmp_path)
    assert any('"été!"' in g for g in got), got


def test_a_workload_cut_short_by_an_interrupt_is_no_point_of_the_p99_trend(tmp_path: Path) -> None:
    """Night 2's workload was stopped by Ctrl-C a moment after it started (its result marked
    interrupted: a p99 of a few hundred operations). On 2aee60a the nights table showed that p99 beside
    the whole nights' as if measured alike, and the p99 plot drew it. Now the cell says '-' and the plot
    leaves it out."""
    from harness.report.model import Latency, RunReport, WorkloadResult
    from harness.report.writers import write_run

    reports = tmp_path / "reports"
    for night, p99, error in ((1, 100, ""), (2, 7777, "interrupted")):
        t0 = 1_760_000_000.0 + night * 86400.0
        w = WorkloadResult("steady", latency=[Latency("alloc", [(p99 // 2, 900), (p99, 100)])], error=error)
        write_run(
            RunReport(
                run_id=f"night{night}", started=t0, finished=t0 + 60, workloads=[w], interrupted=bool(error)
            ),
            reports,
        )
    page = (reports / "index.html").read_text()
    m = re.search(r'<table id="nights">(.*?)</table>', page, re.S)
    assert m
    rows = [
        [unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"<t[hd]>(.*?)</t[hd]>", r)]
        for r in re.findall(r"<tr>(.*?)</tr>", m.group(1), re.S)
    ]
    by_run = {r[0]: dict(zip(rows[0], r, strict=True)) for r in rows[1:]}
    assert by_run["night2"]["p99 steady"] == "-", by_run
    assert by_run["night1"]["p99 steady"] == "100 ns", by_run
    plot = page[page.index('id="trend-p99"') :]
    plot = plot[: plot.index("</svg>")]
    assert "(night1," in plot and "(night2," not in plot, "the cut-short p99 drawn in the plot"


def test_a_campaign_glob_that_matches_a_workload_and_a_symlink_to_it_runs_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--workloads 'nightly/*.yaml' where nightly/latest.yaml is a symlink to nightly/w.yaml: one file.
    On 2aee60a it was refused before any job as two workload files of one name; it is one job now (two
    would be two rows alike in the summary, as the refusal was made against)."""
    from harness.campaign.command import find_workloads, load_workloads

    (tmp_path / "nightly").mkdir()
    (tmp_path / "nightly" / "w.yaml").write_text(WL_OK)
    (tmp_path / "nightly" / "latest.yaml").symlink_to("w.yaml")
    monkeypatch.chdir(tmp_path)
    files = find_workloads("nightly/*.yaml")
    assert [f.name for f in files] == ["w.yaml"], files
    load_workloads(files)


# ---- a crash database of another user, in a folder this user cannot write -------------------------------


@pytest.fixture
def as_nobody(tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    """(a folder in /tmp that anyone reads, the argv prefix of kpool run as user nobody): root drops to
    nobody with setpriv; the harness copied where nobody reads it, run by the system's Python."""
    import shutil
    import tempfile

    python = Path("/usr/bin/python3")
    if os.geteuid() != 0 or not shutil.which("setpriv") or not python.exists():
        pytest.skip("needs root, setpriv and /usr/bin/python3 (to read as another user)")
    top = Path(tempfile.mkdtemp(prefix="kpool-nobody-"))
    try:
        shutil.copytree(ROOT / "harness", top / "harness", ignore=shutil.ignore_patterns("__pycache__"))
        for p in [top, *top.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "env", f"PYTHONPATH={top}"]
        argv += ["HOME=/tmp", "LANG=C.UTF-8", str(python), "-m", "harness.cli"]
        probe = subprocess.run([*argv, "--help"], capture_output=True, check=False)
        if probe.returncode != 0:
            pytest.skip(f"kpool does not run as nobody here: {probe.stderr[-300:]!r}")
        yield top, argv
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_triage_reads_another_users_crash_database(as_nobody: tuple[Path, list[str]]) -> None:
    """The nightly's crashes.sqlite (WAL mode, its writer done: no -shm file) in a folder of the user
    that ran it, read by another user: on 2aee60a `kpool triage list` said 'is not a kpool crash database
    (attempt to write a readonly database)', exit 2: read-only, SQLite needs a -shm file it cannot make
    there. The tests ran as root, whom modes do not stop."""
    top, kpool = as_nobody
    folder = top / "nightly"
    folder.mkdir()
    path = folder / "crashes.sqlite"
    CrashDB(path).record(Crash(text=TRACE.format(frame="kp_theirs"), run_id="r1", source="api", returncode=1))
    assert not Path(f"{path}-shm").exists()
    folder.chmod(0o755)
    path.chmod(0o644)
    proc = subprocess.run([*kpool, "triage", "--db", str(path), "list"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "heap-use-after-free in kp_theirs" in proc.stdout, proc.stdout


@pytest.mark.slow
def test_kpool_under_setsid_goes_on_when_its_terminal_goes_away(tmp_path: Path) -> None:
    """`setsid kpool stress ...` from a terminal, which then closes: no SIGHUP reaches kpool (no
    controlling terminal), its writes to the terminal fail (EIO). On 2aee60a the next progress line
    raised OSError out of the workers' loop: exit 1, no stress.json, the work lost. Now it runs on."""
    (tmp_path / "w.yaml").write_text(
        "name: w\nprocesses: 1\nduration_ms: 3000\nmix: {alloc: 2, free: 1}\n"
        "sizes: {dist: uniform, min: 16, max: 256}\nworking_set: 100\n"
    )
    ensure_kpdrive()
    master, slave = os.openpty()
    argv = [sys.executable, "-m", "harness.cli", "stress", "w.yaml", "--reports", "reports", "--run-id", "s"]
    proc = subprocess.Popen(
        argv,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        env=_env(),
        start_new_session=True,
    )
    os.close(slave)
    try:
        seen, deadline = b"", time.monotonic() + 60
        while b"process(es) x" not in seen and time.monotonic() < deadline:
            seen += os.read(master, 4096)
        assert b"process(es) x" in seen, seen
    finally:
        os.close(master)
    try:
        rc = proc.wait(90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 0, rc
    report = json.loads((tmp_path / "reports" / "s" / "stress.json").read_text())
    assert report["passed"] is True and not report.get("interrupted"), report


# ---- kpool run: the terminal's SIGHUP is the program's, as its ^C is -----------------------------------


def test_kpool_run_leaves_the_terminals_hangup_to_the_program(tmp_path: Path) -> None:
    """`kpool run -- PROG` without a time limit: PROG shares kpool's process group, and what the terminal
    sends the group (^C, SIGQUIT) is PROG's to handle while kpool waits. A hangup is sent the same way.
    On 2aee60a kpool took it as an interrupt: it stopped a program that ignores SIGHUP (SIGTERM) and
    ended 130. Now the program runs to its end and kpool reports it (exit 0)."""
    done = tmp_path / "done"
    script = f"trap '' HUP; echo started; sleep 3; touch {done}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "run",
            "--reports",
            str(tmp_path / "r"),
            "--",
            "sh",
            "-c",
            script,
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
        start_new_session=True,  # a group of its own, as a terminal's foreground job
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"started"
        time.sleep(1.0)  # kpool waiting for it
        os.killpg(proc.pid, signal.SIGHUP)  # the terminal hangs up: its foreground group gets SIGHUP
        rc = proc.wait(60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    err = proc.stderr.read().decode() if proc.stderr else ""
    assert done.exists(), f"the program was stopped: {err}"
    assert rc == 0, (rc, err)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP])
def test_kpool_run_records_no_crash_for_a_program_the_terminal_stopped(tmp_path: Path, sig: int) -> None:
    """^C (or the terminal's hangup) to `kpool run -- PROG`: PROG dies of SIGINT (SIGHUP), which no fault
    in it raises (the allocator's checks abort: SIGABRT). On 2aee60a ^C made a crash record, a new
    signature ('killed by signal 2'), for every program the user stopped."""
    proc = subprocess.Popen(
        [*KPOOL, "run", "--reports", str(tmp_path / "r"), "--", "sh", "-c", "echo started; sleep 30"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
        start_new_session=True,
        preexec_fn=hup_default,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"started"
        time.sleep(1.0)  # kpool waiting for it
        os.killpg(proc.pid, sig)  # the terminal's foreground group
        rc = proc.wait(60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    err = proc.stderr.read().decode() if proc.stderr else ""
    assert "crash recorded:" not in err, err
    assert not (tmp_path / "r" / "crashes.sqlite").exists(), err
    assert rc == 128 + sig, (rc, err)


def test_bench_of_a_workload_that_crashes_records_no_signature(tmp_path: Path) -> None:
    """kpool bench --workload runs kpool and its peers side by side; a crash there is said in its table
    (a peer's is no kpool signature). Recording each stress worker's crash as it ends must not reach the
    bench's runs: no crash database is made."""
    from harness.peers import available_allocators
    from harness.stress import compare

    (tmp_path / "c.yaml").write_text(
        "name: c\nprocesses: 1\nops: 20000\nmix: {alloc: 2, free: 1}\n"
        "sizes: {dist: uniform, min: 16, max: 256}\nworking_set: 100\nplanted: {crash_at: 5000}\n"
    )
    allocs, _ = available_allocators(["glibc"])
    results, interrupted = compare.compare([tmp_path / "c.yaml"], allocs, tmp_path / "reports")
    assert not interrupted and results["c"]["glibc"]["crashes"], results
    assert not (tmp_path / "reports" / "crashes.sqlite").exists()
