"""Session 33's attack on the harness (s33-harn): each test failed on s33-harn's base b54c534."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any

import pytest

from harness.report.model import CrashEntry, Latency, RunReport, WorkloadResult
from harness.report.writers import write_run
from harness.stress.binary import ensure_kpdrive
from harness.triage.db import CrashDB

ROOT = Path(__file__).resolve().parents[1]
KPOOL = [sys.executable, "-m", "harness.cli"]


def _table(page: str, table_id: str) -> dict[str, dict[str, str]]:
    m = re.search(rf'<table id="{table_id}">(.*?)</table>', page, re.S)
    assert m, table_id
    rows = [
        [unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"<t[hd]>(.*?)</t[hd]>", r)]
        for r in re.findall(r"<tr>(.*?)</tr>", m.group(1), re.S)
    ]
    return {r[0]: dict(zip(rows[0], r, strict=True)) for r in rows[1:]}


def _svg(page: str, ident: str) -> str:
    part = page[page.index(f'id="{ident}"') :]
    return part[: part.index("</svg>")]


# ---- an interrupted night in the trends ------------------------------------------------------------------


def test_an_interrupted_night_is_no_point_of_the_crash_and_coverage_trends(tmp_path: Path) -> None:
    """Night 2 was stopped by Ctrl-C before its fuzz jobs ran (interrupted: no crash found, a few edges
    measured). On b54c534 the crash plot drew it as a night of 0 crashes between nights of 1, the coverage
    plot as a drop, and the nights table said 0 new, 0 known as for a whole night. Now neither plot draws it
    and its row says it was interrupted."""
    reports = tmp_path / "reports"
    crash = CrashEntry("a1", "heap-use-after-free", "heap-use-after-free", "known")
    for night, interrupted in ((1, False), (2, True), (3, False)):
        t0 = 1_760_000_000.0 + night * 86400.0
        w = WorkloadResult("steady", latency=[Latency("alloc", [(50, 900), (100, 100)])])
        write_run(
            RunReport(
                run_id=f"night{night}",
                started=t0,
                finished=t0 + 60,
                workloads=[w],
                crashes=[] if interrupted else [crash],
                fuzz_coverage={
                    "union": 10 if interrupted else 900,
                    "edges": 1600,
                    "targets": [],
                    "functions": 9,
                    "missed": [],
                },
                interrupted=interrupted,
            ),
            reports,
        )
    page = (reports / "index.html").read_text()
    for plot in ("trend-crashes", "trend-coverage"):
        svg = _svg(page, plot)
        assert "(night1," in svg and "(night3," in svg, plot
        assert "(night2," not in svg, f"the interrupted night drawn in {plot}"
    nights = _table(page, "nights")
    assert nights["night2"]["started"].endswith(" interrupted"), nights["night2"]
    assert nights["night2"]["new"] == "-" and nights["night2"]["known"] == "-", nights["night2"]
    assert nights["night2"]["coverage"] == "-", nights["night2"]
    assert nights["night1"]["known"] == "1" and nights["night1"]["coverage"] == "56.2%", nights["night1"]


def test_a_night_cut_short_after_its_jobs_ended_stays_in_the_crash_trend(tmp_path: Path) -> None:
    """Ctrl-C during the coverage replay after every job ended: the run is interrupted (no coverage), but
    its crashes are those of a whole night. The crash plot and the nights table count it; only its
    coverage is missing."""
    from harness.report.model import JobEntry

    reports = tmp_path / "reports"
    crash = CrashEntry("a1", "heap-use-after-free", "heap-use-after-free", "known")
    for night in (1, 2):
        t0 = 1_760_000_000.0 + night * 86400.0
        write_run(
            RunReport(
                run_id=f"night{night}",
                started=t0,
                finished=t0 + 60,
                crashes=[crash],
                jobs=[
                    JobEntry("fuzz:api_sequence", "fuzz", "done"),
                    JobEntry("stress:w", "stress", "failed"),
                ],
                interrupted=night == 2,
            ),
            reports,
        )
    page = (reports / "index.html").read_text()
    assert "(night2," in _svg(page, "trend-crashes")
    nights = _table(page, "nights")
    assert nights["night2"]["known"] == "1" and not nights["night2"]["started"].endswith("interrupted")


# ---- kpool stress killed mid-workload: stress.json holds what ended -------------------------------------


def _env(**extra: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT), "LANG": "C", **extra}


def _kill_pid_in(path: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        os.kill(int(path.read_text()), signal.SIGKILL)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def test_a_stress_run_killed_mid_workload_keeps_the_results_of_workers_that_ended(tmp_path: Path) -> None:
    """Worker 0 ends well (its latencies measured), worker 1 segfaults, worker 2 is still running when
    kpool stress is SIGKILLed (the OOM killer, a CI job's timeout). On b54c534 stress.json was written at
    the workload's end only: after the kill there was none (worker 1's crash was in the database, worker 0's
    figures only in its raw main-worker-0.json). Now stress.json is written again as each worker ends: the
    workload with the two that ended, merged, marked unfinished."""
    real = ensure_kpdrive()
    pidfile = tmp_path / "sleeper.pid"
    wrapper = tmp_path / "kpdrive"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'case "$1" in --check) exec {real} "$@";; esac\n'
        f'case " $* " in *" seed=100 "*) exec {real} "$@";; esac\n'
        f'case " $* " in *" seed=101 "*) exec {real} "$@" crash_at=5000;; esac\n'
        f"echo $$ > {pidfile}\nexec sleep 60\n"
    )
    wrapper.chmod(0o755)
    (tmp_path / "w.yaml").write_text(
        "name: w\nprocesses: 3\nseed: 100\nops: 20000\nmix: {alloc: 2, free: 1}\n"
        "sizes: {dist: uniform, min: 16, max: 256}\nworking_set: 100\n"
    )
    reports = tmp_path / "reports"
    script = textwrap.dedent(f"""
        from pathlib import Path
        from harness import spec
        from harness.stress import runner
        runner.ensure_kpdrive = lambda variant: Path({str(wrapper)!r})
        wl = spec.load(Path({str(tmp_path / "w.yaml")!r}))
        runner.run([wl], runner.Options(reports_dir=Path({str(reports)!r}), run_id="r", jobs=3))
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", script], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    path = reports / "r" / "stress.json"
    doc: dict[str, Any] | None = None
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            doc = _read_json(path)
            if doc and doc["workloads"] and len(doc["workloads"][0]["workers"]) == 2:
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()[1].decode()
        assert pidfile.exists(), "worker 2 never started"
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _kill_pid_in(pidfile)
    doc = _read_json(path)
    assert doc is not None, "no stress.json after the kill: the results of the workers that ended are lost"
    assert doc["interrupted"] is True and doc["passed"] is False, doc
    (w,) = doc["workloads"]
    assert w["interrupted"] is True and w["passed"] is False
    assert any("2 of 3 workers" in b for b in w["broken"]), w["broken"]
    assert sorted(x["worker"] for x in w["workers"]) == [0, 1]
    assert w["ops"] >= 20000 and w["latency"]["alloc"]["count"] > 0, (w["ops"], w["latency"])
    (crash,) = w["crashes"]
    assert crash["worker"] == 1 and crash.get("signature"), crash
    # the report of the reports folder shows it cut short (no point of a trend), not as a whole run
    from harness.report.ingest import _workload

    assert _workload(w).error == "interrupted"


def test_a_program_workload_killed_mid_run_keeps_the_runs_that_ended(tmp_path: Path) -> None:
    """A program workload: its run on kpool ends, its run on glibc (the reference) is still going when
    kpool stress is SIGKILLed. On b54c534 nothing of it was in stress.json (none written). Now the entry
    with the kpool run (its wall time and peak RSS) is, marked unfinished."""
    pidfile = tmp_path / "glibc.pid"
    (tmp_path / "p.yaml").write_text(
        "name: p\nprogram:\n  command: [/bin/sh, -c, "
        f"'if [ -n \"$LD_PRELOAD\" ]; then echo kpool; else echo $$ > {pidfile}; exec sleep 60; fi']\n"
    )
    reports = tmp_path / "reports"
    proc = subprocess.Popen(
        [*KPOOL, "-q", "stress", str(tmp_path / "p.yaml"), "--reports", str(reports), "--run-id", "r"],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None and not pidfile.exists():
            time.sleep(0.05)
        assert proc.poll() is None and pidfile.exists(), proc.communicate()[1].decode()
        time.sleep(0.3)  # the glibc run is going: the kpool run has ended
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _kill_pid_in(pidfile)
    doc = _read_json(reports / "r" / "stress.json")
    assert doc is not None, "no stress.json after the kill: the kpool run's figures are lost"
    (w,) = doc["workloads"]
    assert w["interrupted"] is True and w["passed"] is False and doc["unfinished"] == "p"
    assert [r["allocator"] for r in w["runs"]] == ["kpool"], w["runs"]
    assert w["figures"]["kpool"]["wall_s"] is not None, w["figures"]


def test_a_campaign_job_whose_stress_json_is_unfinished_failed(tmp_path: Path) -> None:
    """A stress job's child killed mid-workload leaves an unfinished stress.json (above): the job failed
    (--resume runs it again), it is not done."""
    from harness.jobs.task import wrote_result

    out = tmp_path / "stress.json"
    assert not wrote_result(out)
    out.write_text(json.dumps({"workloads": [], "unfinished": "w"}))
    assert not wrote_result(out)
    out.write_text(json.dumps({"workloads": []}))
    assert wrote_result(out)
    out.write_text('{"workloads": [')  # cut short
    assert not wrote_result(out)


# ---- a full disk ----------------------------------------------------------------------------------------

QUICK = "name: {name}\nprocesses: 1\nseed: 1\nops: 2000\nmix: {{alloc: 2, free: 1}}\n"
QUICK += "sizes: {{dist: uniform, min: 16, max: 256}}\nworking_set: 100\n"


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (a disk that fills), unmounted after the test."""
    if os.geteuid() != 0:
        pytest.skip("needs root: mounts a tmpfs")
    mnt = tmp_path / "full"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=False)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(mnt: Path) -> None:
    with contextlib.suppress(OSError), (mnt / "fill").open("ab") as f:
        while True:
            f.write(b"\0" * 4096)
            f.flush()


def test_a_full_disk_when_the_run_folder_is_taken_names_the_file(small_tmpfs: Path, tmp_path: Path) -> None:
    """--reports on a disk with no room left: on b54c534 the one line was 'kpool: error: No space left on
    device', naming nothing (the run lock's write: a file object's flush names no file)."""
    (tmp_path / "w.yaml").write_text(QUICK.format(name="w"))
    _fill(small_tmpfs)
    proc = subprocess.run(
        [*KPOOL, "-q", "stress", str(tmp_path / "w.yaml"), "--reports", str(small_tmpfs / "r")],
        env=_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    errors = [ln for ln in proc.stderr.splitlines() if "error" in ln]
    assert proc.returncode == 1 and len(errors) == 1, proc.stderr
    assert re.fullmatch(r"kpool: error: \S+/r/[^/]+/run\.lock: No space left on device", errors[0]), errors
    assert "Traceback" not in proc.stderr


def test_a_worker_whose_result_a_full_disk_lost_is_no_crash(small_tmpfs: Path, tmp_path: Path) -> None:
    """The workload's folder on a disk that fills while its worker runs: kpdrive's result write fails and
    it exits 0 (it does not check stdout's writes). On b54c534 the worker was a crash, 'exit status 0, no
    result', recorded in the crash database as a signature (a new crash, exit 1, for a full disk). Now it
    is no crash: the workload is broken with 'results lost' naming the file and the full file system."""
    real = ensure_kpdrive()
    wrapper = tmp_path / "kpdrive"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'case "$1" in --check) exec {real} "$@";; esac\n'
        f"cat /dev/zero > {small_tmpfs}/fill 2>/dev/null\n"
        f'exec {real} "$@"\n'
    )
    wrapper.chmod(0o755)
    (tmp_path / "w.yaml").write_text(QUICK.format(name="w"))
    reports = tmp_path / "reports"
    (reports / "r").mkdir(parents=True)
    (reports / "r" / "w").symlink_to(small_tmpfs)  # the workload's files on the small disk
    script = textwrap.dedent(f"""
        import json
        from pathlib import Path
        from harness import spec
        from harness.stress import runner
        runner.ensure_kpdrive = lambda variant: Path({str(wrapper)!r})
        wl = spec.load(Path({str(tmp_path / "w.yaml")!r}))
        rep = runner.run([wl], runner.Options(reports_dir=Path({str(reports)!r}), run_id="r", jobs=1))
        print(json.dumps(rep["workloads"][0]))
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script], env=_env(), capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    w = json.loads(proc.stdout.splitlines()[-1])
    assert w["crashes"] == [], [c["message"] for c in w["crashes"]]
    db = reports / "crashes.sqlite"
    assert not db.exists() or CrashDB.open(db).signatures() == []
    assert not w["passed"]
    (lost,) = [b for b in w["broken"] if b.startswith("results lost: ")]
    assert "main-worker-0.json" in lost and "the file system is full" in lost, lost


def test_a_full_disk_at_a_workloads_end_still_prints_what_ran(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The disk fills after the first of three workloads: stress.json cannot be written with the second.
    On b54c534 the OSError left the run at once: 'kpool: error: ...stress.json: No space left on device',
    and no table, so the second workload's figures were nowhere (not on screen, not on disk). Now the
    table shows both, the error line names the file and the workload not run, exit 1."""
    from harness import cli
    from harness.stress import runner

    files = []
    for name in ("first", "second", "third"):
        files.append(tmp_path / f"{name}.yaml")
        files[-1].write_text(QUICK.format(name=name))
    real = runner._write_report

    def full_from_the_second(path: Path, report: dict[str, Any]) -> None:
        if len(report["workloads"]) >= 2:
            raise OSError(28, "No space left on device")
        real(path, report)

    monkeypatch.setattr(runner, "_write_report", full_from_the_second)
    code = cli.main(["stress", *map(str, files), "--reports", str(tmp_path / "r"), "--run-id", "t"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "| first |" in out and "| second |" in out and "| third |" not in out, out
    (line,) = [ln for ln in err.splitlines() if ln.startswith("kpool: error:")]
    assert "stress.json: No space left on device" in line and "not run: third" in line, line
    kept = json.loads((tmp_path / "r" / "t" / "stress.json").read_text())
    assert [w["name"] for w in kept["workloads"]] == ["first"]


@pytest.mark.skipif(shutil.which("clang") is None, reason="the fuzz build needs clang")
def test_a_full_disk_under_the_fuzz_history_is_no_crash(small_tmpfs: Path, tmp_path: Path) -> None:
    """The fuzz run's folder on a full disk: the C side keeps the inputs since the pools were made in a
    sparse 64 MiB file it maps (fuzz_history.c), and its first write to a page the file system cannot
    back raised SIGBUS. On b54c534 `kpool fuzz --reports <full disk>` reported 'AddressSanitizer: BUS in
    fz_history_add', a crash input saved and signed (a false crash for a full disk). Now the history's
    blocks are reserved before they are written, and a disk that has none says so once and fuzzes on
    without a history."""
    pytest.importorskip("atheris")
    from harness.fuzz import runner
    from harness.fuzz.target import HISTORY_ENV

    env = {**runner.target_env("api_sequence"), HISTORY_ENV: str(small_tmpfs / "history")}
    (small_tmpfs / "history").mkdir()
    _fill(small_tmpfs)
    proc = subprocess.run(
        [
            sys.executable,
            str(runner.script("api_sequence")),
            "-runs=3000",
            str(tmp_path),  # libFuzzer writes into its first corpus folder: never the seeds (s33-atth)
            str(runner.seeds_dir("api_sequence")),
        ],
        env=env,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=300,
        check=False,
    )
    assert "BUS" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = [ln for ln in proc.stderr.splitlines() if "history" in ln and "No space left on device" in ln]
    assert len(said) == 1, proc.stderr[-3000:]
    assert list((small_tmpfs / "history").iterdir()) == []  # no history file half kept


@pytest.mark.skipif(shutil.which("clang") is None, reason="the fuzz build needs clang")
def test_the_fuzz_history_reserved_a_chunk_at_a_time_reads_back(tmp_path: Path) -> None:
    """The history with its blocks reserved as it grows (above) is still what read_history reads: past
    the first 1 MiB chunk (inputs up to 4 KiB), and no more disk taken than a chunk ahead of what is
    written."""
    pytest.importorskip("atheris")
    from harness.fuzz import runner
    from harness.fuzz.target import HISTORY_ENV, read_history

    (tmp_path / "history").mkdir()
    env = {**runner.target_env("api_sequence"), HISTORY_ENV: str(tmp_path / "history")}
    seeds = runner.seeds_dir("api_sequence")
    (tmp_path / "corpus").mkdir()  # libFuzzer writes into its first corpus folder: never the seeds (s33-atth)
    # -len_control=0: inputs up to max_len at once; the seeds alone (42, not the 2,530 stray inputs
    # this test once wrote beside them) made 412 KB of history in 8,000 runs
    cmd = [
        sys.executable,
        str(runner.script("api_sequence")),
        "-runs=8000",
        "-max_len=4096",
        "-len_control=0",
    ]
    proc = subprocess.run(
        [*cmd, str(tmp_path / "corpus"), str(seeds)],
        env=env,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = (tmp_path / "history").iterdir()
    inputs = read_history(path)
    total = sum(4 + len(i) for i in inputs)
    assert total > 1 << 20, (len(inputs), total)
    used = path.stat().st_blocks * 512
    assert used <= sum(4 + len(i) for i in inputs) + (2 << 20), (used, len(inputs))


# ---- a long run's progress lines --------------------------------------------------------------------------


class _FakeClock:
    """runner's time module with a clock that runs SPEED times faster than the real one, and at least a
    second per reading (a long run, fast, whatever the machine's load): sleep is real and short."""

    SPEED = 600.0

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.now = 0.0
        self.max_step = 0.0

    def monotonic(self) -> float:
        new = max(self.now + 1.0, (time.monotonic() - self.t0) * self.SPEED)
        self.max_step = max(self.max_step, new - self.now)
        self.now = new
        return new

    def sleep(self, s: float) -> None:
        time.sleep(0.002)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def test_a_long_stress_runs_progress_lines_thin_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A worker that runs for hours (duration_ms up to a day): on b54c534 kpool stress printed its
    progress line every second, 3,600 lines an hour in a CI log. Now every second for the first seconds,
    then ever further apart, at most a minute apart: a line a minute once past the first ten minutes."""
    from harness import spec
    from harness.stress import runner

    real = ensure_kpdrive()
    wrapper = tmp_path / "kpdrive"
    wrapper.write_text(
        f'#!/bin/sh\ncase "$1" in --check) exec {real} "$@";; esac\nsleep 6\nexec {real} "$@"\n'
    )
    wrapper.chmod(0o755)
    (tmp_path / "w.yaml").write_text(QUICK.format(name="w"))
    monkeypatch.setattr(runner, "ensure_kpdrive", lambda variant: wrapper)
    wl = spec.load(tmp_path / "w.yaml")
    clock = _FakeClock()
    monkeypatch.setattr(runner, "time", clock)
    runner.run([wl], runner.Options(reports_dir=tmp_path / "r", run_id="r", jobs=1, record=False))
    said = [float(m) for m in re.findall(r"w \(main\): ([\d.]+) s,", capsys.readouterr().err)]
    assert said and said[-1] > 3000, said[-5:]  # the fake clock ran for about an hour
    assert said[0] <= 10 + 3 * clock.max_step, (said[:3], clock.max_step)  # at once: its first polls
    gaps = [b - a for a, b in itertools.pairwise(said)]
    late = [g for t, g in zip(said[1:], gaps, strict=False) if t > 660]
    # a minute apart (a poll's step of the fake clock more at most); the last: the closing figure
    assert late and all(55 <= g <= 60 + 2 * clock.max_step for g in late[:-1]), (late[:20], clock.max_step)
    assert len(said) < 100 + said[-1] / 60, len(said)  # a line a poll: a thousand and more


# ---- workload files: encodings ----------------------------------------------------------------------------

WL = "name: w\nmix: {alloc: 2, free: 1}\nsizes: {dist: uniform, min: 16, max: 256}\n"


def test_a_workload_saved_as_utf16_loads(tmp_path: Path) -> None:
    """An editor that saves UTF-16 with its byte-order mark (Notepad's 'Unicode'): on b54c534 the file was
    read as UTF-8, and the error was 'YAML syntax: unacceptable character #x0000: control characters are
    not allowed / in "<unicode string>", position 7' at 1:1. It is the same text: it loads."""
    from harness import spec

    for codec in ("utf-16", "utf-16-be"):
        path = tmp_path / f"{codec}.yaml"
        path.write_bytes(("\ufeff" + WL).encode(codec) if codec.endswith("be") else WL.encode(codec))
        wl = spec.load(path)
        assert wl.name == "w", codec


def test_a_nul_byte_in_a_workload_is_said_at_its_line_and_column(tmp_path: Path) -> None:
    """A NUL byte on line 3: on b54c534 the message was at 1:1, in PyYAML's words, with its internal
    'in "<unicode string>", position 54' on a second line."""
    from harness import spec

    path = tmp_path / "w.yaml"
    path.write_bytes(WL.replace("sizes: {dist", "sizes: \0{dist").encode())
    with pytest.raises(spec.SpecError) as info:
        spec.load(path)
    (issue,) = [str(i) for i in info.value.issues]
    assert issue.startswith(f"{path}:3:8: "), issue
    assert "\n" not in issue and "<unicode string>" not in issue and "position" not in issue, issue
    assert "U+0000" in issue, issue


# ---- a kpool fuzz that stops before fuzzing leaves no run folder ------------------------------------------


def test_a_fuzz_run_refused_before_it_fuzzes_leaves_no_run_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`kpool fuzz --plant 99` (no such planted bug: exit 2, nothing ran), and a fuzz build that fails (no
    clang): on b54c534 each left an empty run folder (run.lock alone), which `kpool report` lists as a run
    'no record (interrupted or failed run)'. Now nothing is left."""
    from harness import build, cli
    from harness.errors import BuildError

    reports = tmp_path / "reports"
    code = cli.main(["fuzz", "api_sequence", "--time", "3", "--plant", "99", "--reports", str(reports)])
    assert code == 2 and "no bug 99" in capsys.readouterr().err
    assert not reports.exists() or list(reports.iterdir()) == [], list(reports.iterdir())

    def no_clang(*args: object, **kw: object) -> Path:
        raise BuildError("clang: not found; install it with scripts/setup.sh")

    monkeypatch.setattr(build, "build", no_clang)
    code = cli.main(["fuzz", "api_sequence", "--time", "3", "--no-seeds", "--reports", str(reports)])
    assert code != 0 and "clang" in capsys.readouterr().err
    left = [p for p in reports.iterdir() if p.name.startswith("fuzz-")] if reports.exists() else []
    assert left == [], [sorted(q.name for q in p.rglob("*")) for p in left]


@pytest.mark.parametrize("where", ["reports", "corpus", "parent"])
def test_a_fuzz_run_dir_that_is_the_reports_folder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    """`kpool fuzz --run-dir reports` (the reports folder itself), a working corpus or a folder above the
    reports: on b54c534 the run wrote its crashes/, logs/ and history/ there (kpool report then listed
    each as a run without a record; in a corpus folder, they went in among the inputs). Now it is a usage
    error naming both, before anything is written."""
    from harness import cli

    reports = tmp_path / "r"
    (reports / "corpus" / "api_sequence").mkdir(parents=True)
    run_dir = {"reports": reports, "corpus": reports / "corpus" / "api_sequence", "parent": tmp_path}[where]
    before = sorted(p.name for p in run_dir.rglob("*"))
    code = cli.main(
        ["fuzz", "api_sequence", "--time", "3", "--run-dir", str(run_dir), "--reports", str(reports)]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("kpool: error:")]
    assert f"--run-dir {run_dir}" in line and str(reports) in line, line
    assert sorted(p.name for p in run_dir.rglob("*")) == before


@pytest.mark.skipif(shutil.which("clang") is None, reason="the fuzz build needs clang")
def test_a_full_disk_at_a_fuzz_runs_end_still_prints_what_it_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """fuzz.json cannot be written at the run's end (the disk filled while it fuzzed): on b54c534 the one
    line was 'kpool: error: .../fuzz.json: No space left on device' and no table: what the run measured
    was nowhere. Now the table prints, then the error naming the file, exit 1."""
    pytest.importorskip("atheris")
    from harness import atomic, cli

    real = atomic.write_text

    def full(path: Path, text: str, *args: Any, **kw: Any) -> None:
        if Path(path).name == "fuzz.json":
            raise OSError(28, "No space left on device")
        real(path, text, *args, **kw)

    monkeypatch.setattr(atomic, "write_text", full)
    code = cli.main(["fuzz", "api_sequence", "--time", "2", "--reports", str(tmp_path / "r")])
    out, err = capsys.readouterr()
    assert code == 1, err
    assert "| api_sequence |" in out, out
    (line,) = [ln for ln in err.splitlines() if ln.startswith("kpool: error:")]
    assert "fuzz.json: No space left on device" in line, line


def test_the_index_says_a_stress_runs_report_is_unfinished(tmp_path: Path) -> None:
    """A kpool stress run killed mid-workload leaves stress.json marked unfinished (above): the index of
    runs said 'kpool stress run: stress.json, no report record', as for a whole run; now it says the run
    did not finish."""
    from harness.report.writers import write_index

    for name, doc in (("whole", {"workloads": []}), ("killed", {"workloads": [], "unfinished": "w"})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "stress.json").write_text(json.dumps(doc))
    page = write_index(tmp_path).read_text()
    runs = _table(page, "runs")
    assert "unfinished" in runs["killed"]["verdict"] and "w" in runs["killed"]["verdict"], runs["killed"]
    assert "unfinished" not in runs["whole"]["verdict"], runs["whole"]


# ---- kpool triage replay interrupted ---------------------------------------------------------------------

ASAN = (
    "==7==ERROR: AddressSanitizer: heap-use-after-free on address 0x604000000090 at pc 0x1 bp 0x2 sp 0x3\n"
    "WRITE of size 1 at 0x604000000090 thread T0\n"
    "    #0 0x5654029bcefe in kp__central_give /src/alloc.c:6:77\n"
)


def test_an_interrupted_triage_replay_keeps_the_replays_it_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`kpool triage replay ID -n 1000` for a flaky crash, stopped with Ctrl-C after a while: on b54c534
    every replay made was thrown away ('kpool: error: interrupted', the stored rate unchanged). Now the
    replays made are stored and said, exit 130."""
    from harness import cli
    from harness.triage import replay as R
    from harness.triage.crash import Crash, Reproducer

    db_path = tmp_path / "crashes.sqlite"
    code = f"import sys; sys.stderr.write({ASAN!r}); sys.exit(1)"
    repro = Reproducer(argv=(sys.executable, "-c", code), timeout_s=20)
    rec = CrashDB(db_path).record(Crash(text=ASAN, run_id="r", source="x", reproducer=repro))
    real, calls = R.run_once, []

    def stopped_at_the_fourth(*args: Any, **kw: Any) -> Any:
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(R, "run_once", stopped_at_the_fourth)
    got = cli.main(["triage", "--db", str(db_path), "replay", str(rec.signature_id), "-n", "1000"])
    out, err = capsys.readouterr()
    assert got == 130, err
    assert "reproduced 3 of 3" in out and "interrupted" in err, (out, err)
    row = CrashDB.open(db_path).get(rec.signature_id)
    assert (row.repro_rate, row.repro_runs) == (1.0, 3), (row.repro_rate, row.repro_runs)


def test_an_interrupted_triage_minimize_keeps_the_smaller_reproducer_it_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`kpool triage minimize ID` on a workload crash (60 candidates, up to 3 runs each: minutes), stopped
    with Ctrl-C after it kept a smaller reproducer ('kept: processes 4 -> 1' on screen): on b54c534 the
    smaller reproducer was thrown away. Now it is stored and said, exit 130."""
    from harness import cli
    from harness.triage import replay as R
    from harness.triage.crash import Crash, Reproducer

    db_path = tmp_path / "crashes.sqlite"
    code = f"import sys; sys.stderr.write({ASAN!r}); sys.exit(1)"
    repro = Reproducer(
        argv=(sys.executable, "-c", code, "${processes}", "${ops}"),
        kind="workload",
        ops=1000,
        processes=4,
        timeout_s=20,
    )
    rec = CrashDB(db_path).record(Crash(text=ASAN, run_id="r", source="x", reproducer=repro))
    real, calls = R.run_once, []

    def stopped_at_the_second(*args: Any, **kw: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(R, "run_once", stopped_at_the_second)
    got = cli.main(["triage", "--db", str(db_path), "minimize", str(rec.signature_id)])
    out, err = capsys.readouterr()
    assert got == 130, err
    assert "processes 4 -> 1" in out and "interrupted" in err, (out, err)
    kept = CrashDB.open(db_path).reproducer(rec.signature_id)
    assert kept is not None and kept.processes == 1 and kept.ops == 1000, kept


# ---- Ctrl-C while Python loads kpool ---------------------------------------------------------------------

SIGINT_ON_IMPORT = """
import os, signal, sys

class _Finder:
    def find_spec(self, name, path=None, target=None):
        if name == "harness.output":  # one of the modules the command's code imports as it loads
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, _Finder())
"""


def test_ctrl_c_while_kpool_loads_is_one_line(tmp_path: Path) -> None:
    """Ctrl-C in the first second of `kpool stress ...` on a loaded machine, while Python imports kpool's
    modules: on b54c534 a 10-line import traceback ending in KeyboardInterrupt (the console script's
    module imported harness.cli before any of kpool's code ran). Now 'kpool: error: interrupted', exit
    130. The command is run as pip's console script runs it: the entry point that pyproject.toml names."""
    import tomllib

    entry = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["kpool"]
    module, _, func = entry.partition(":")
    (tmp_path / "sitecustomize.py").write_text(SIGINT_ON_IMPORT)
    proc = subprocess.run(
        [sys.executable, "-c", f"import sys; from {module} import {func}; sys.exit({func}())", "options"],
        env={**_env(), "PYTHONPATH": f"{tmp_path}:{ROOT}"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 130 and proc.stderr == "kpool: error: interrupted\n", (
        proc.returncode,
        proc.stderr,
    )


# ---- kpool campaign --resume --budget ---------------------------------------------------------------------


def test_a_resumes_budget_is_the_one_its_summary_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A campaign planned with 120 s, resumed with --budget 20s, whose resume ran out of time: on b54c534
    the summary said 'the budget (120s) ran out' though the resume had 20 s (campaign.json's first
    budget). Now it names the budget the resume had, and campaign.json keeps it for the next resume."""
    from harness import cli
    from harness.campaign import budget, command
    from harness.campaign import run as campaign_run

    def run_jobs(c: budget.Campaign, run_dir: Path, *args: object, **kwargs: object) -> bool:
        c.jobs[0].state = "done"  # the rest: not run, the budget spent
        for j in c.jobs[1:]:
            j.state = "not-run"
        c.save(run_dir)
        return True

    monkeypatch.setattr(command, "run_jobs", run_jobs)
    monkeypatch.setattr(command, "build_variants", lambda *a, **k: None)
    monkeypatch.setattr(campaign_run, "fuzz_coverage", lambda *a, **k: {})
    monkeypatch.delenv("KPOOL_LOG", raising=False)
    reports = tmp_path / "reports"
    run_dir = reports / "campaign-1"
    run_dir.mkdir(parents=True)
    workload = ROOT / "workloads" / "steady-small.yaml"
    budget.plan(
        "campaign-1", run_dir, 120.0, 1, 0, [], [workload, workload.with_name("cross-thread.yaml")]
    ).save(run_dir)
    cli.main(["campaign", "--resume", "campaign-1", "--budget", "20s", "--reports", str(reports)])
    out = capsys.readouterr().out
    assert "the budget (20s) ran out" in out, out
    assert json.loads((run_dir / "campaign.json").read_text())["budget_s"] == 20.0


# ---- a duration the time limit cuts short ----------------------------------------------------------------


@pytest.mark.parametrize("limit", ["time_limit_s: 10\n", ""], ids=["given", "default"])
def test_a_duration_past_the_time_limit_is_a_workload_error(tmp_path: Path, limit: str) -> None:
    """duration_ms: 90000 with time_limit_s 10 (or the default 60): every worker is killed at its limit
    and recorded as a hang, a crash signature for a workload that never hung. On b54c534 it ran: 'slow:
    worker 0 timeout: killed after 10 s', a crash per worker. Now the file is refused at duration_ms."""
    from harness import spec

    path = tmp_path / "w.yaml"
    path.write_text(WL + "duration_ms: 90000\n" + limit)
    with pytest.raises(spec.SpecError) as info:
        spec.load(path)
    (issue,) = [str(i) for i in info.value.issues]
    assert (
        ":4:14: duration_ms:" in issue and ("10" if limit else "60") in issue and "time_limit_s" in issue
    ), issue


def test_a_time_limit_option_below_the_duration_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`kpool stress slow.yaml --time-limit 1` for a workload of duration_ms 60000: b54c534 ran it, every
    worker a 'timeout' crash recorded in the crash database. Now exit 2 naming the option and the
    workload, nothing run."""
    from harness import cli

    (tmp_path / "slow.yaml").write_text(WL + "duration_ms: 60000\ntime_limit_s: 120\n")
    reports = tmp_path / "r"
    code = cli.main(["stress", str(tmp_path / "slow.yaml"), "--time-limit", "1", "--reports", str(reports)])
    err = capsys.readouterr().err
    assert code == 2, err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("kpool: error:")]
    assert "--time-limit 1" in line and "duration_ms" in line and "slow.yaml" in line, line
    assert not (reports / "crashes.sqlite").exists()


def test_a_run_folder_taken_a_moment_ago_names_its_process(tmp_path: Path) -> None:
    """Two `kpool campaign --resume X` started together: the second found the folder locked before the
    first had written who holds it, and said 'is the folder of a run still going (process ?)' (b54c534).
    Now it waits a moment for the holder's record and names the process."""
    import fcntl
    import threading

    from harness import runlock
    from harness.errors import KpoolError

    folder = tmp_path / "run"
    folder.mkdir()
    holder = (folder / runlock.NAME).open("a+")
    fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)  # taken, nothing written yet

    def write_later() -> None:
        time.sleep(0.2)
        holder.write(json.dumps({"pid": os.getpid(), "started": time.time()}) + "\n")  # alive
        holder.flush()

    writer = threading.Thread(target=write_later)
    writer.start()
    try:
        with pytest.raises(KpoolError) as info:
            runlock.hold(folder)
    finally:
        writer.join()
        holder.close()
    assert f"(process {os.getpid()})" in str(info.value), str(info.value)
