"""A user's attacks on the harness (session 16): hostile workload files, interrupted and concurrent runs,
unwritable outputs, and triage of planted bugs. Each test failed on the main it was written against."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import spec

ROOT = Path(__file__).resolve().parent.parent

GOOD = """\
name: ok
mix: {alloc: 3, free: 1}
sizes:
  dist: uniform
  min: 16
  max: 4k
"""

# "billion laughs": nine levels of nine aliases, 9**9 values once expanded, from 600 bytes of text
BOMB = "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9)
)


def test_yaml_bomb_is_refused_quickly(tmp_path: Path) -> None:
    """Aliases that expand to hundreds of millions of values: a clear error in moments, not a hang."""
    path = tmp_path / "bomb.yaml"
    path.write_text(GOOD + BOMB)
    code = (
        "import sys\nfrom harness import spec\n"
        f"try:\n    spec.load({str(path)!r})\nexcept spec.SpecError as e:\n    print(e.issues[0])\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=20, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail("a YAML bomb kept the workload loader busy for 20 s")
    assert done.returncode == 0, done.stderr
    assert "bomb.yaml" in done.stdout and "alias" in done.stdout, done.stdout


def test_aliases_of_a_small_document_still_load(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(GOOD + "slo:\n  latency_ns:\n    alloc: &l {p50: 500, p99: 5000}\n    free: *l\n")
    assert spec.load(path).name == "ok"


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    """`ops:` written twice: YAML's last-one-wins would run a workload the user did not mean."""
    path = tmp_path / "w.yaml"
    path.write_text(GOOD + "ops: 1000\nthreads: 2\nops: 5\n")
    with pytest.raises(spec.SpecError) as info:
        spec.load(path)
    got = [str(i) for i in info.value.issues]
    assert any("w.yaml:9:1" in g and "ops" in g and "twice" in g for g in got), got


def test_deep_nesting_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(GOOD + "slo: " + "[" * 990 + "]" * 990 + "\n")
    with pytest.raises(spec.SpecError) as info:
        spec.load(path)
    assert "nested" in str(info.value.issues[0]), info.value.issues


needs_fuzz = pytest.mark.skipif(shutil.which("clang") is None, reason="the fuzz build needs clang")


@pytest.mark.slow
@needs_fuzz
def test_fuzz_merge_and_coverage_with_a_relative_reports_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`kpool fuzz --reports out`: libFuzzer runs in the run folder, where `out/corpus/conf` is not; it
    ended with exit 1 ("The required directory ... does not exist") and the run said so."""
    pytest.importorskip("atheris")
    from harness import cli

    monkeypatch.chdir(tmp_path)
    assert cli.main(["fuzz", "conf", "--time", "2", "--reports", "out"]) == 0
    assert any((tmp_path / "out" / "corpus" / "conf").iterdir())
    assert cli.main(["fuzz", "conf", "--merge", "--reports", "out"]) == 0
    assert cli.main(["fuzz", "conf", "--coverage", "--reports", "out"]) == 0
    assert cli.main(["fuzz", "conf", "--time", "2", "--run-dir", "here", "--reports", "out"]) == 0
    assert (tmp_path / "here" / "fuzz.json").is_file()


def _kpool(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "harness.cli", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for_line(proc: subprocess.Popen[str], text: str, timeout_s: float) -> str:
    """What proc printed up to text (fails the test at timeout_s); the rest of its output is left."""
    assert proc.stdout is not None
    fd, seen, end = proc.stdout.fileno(), b"", time.monotonic() + timeout_s
    while text.encode() not in seen and time.monotonic() < end:
        if select.select([fd], [], [], 0.2)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            seen += chunk
    if text.encode() not in seen:
        proc.kill()
        pytest.fail(f"no {text!r} in {timeout_s} s; printed:\n{seen.decode(errors='replace')}")
    return seen.decode(errors="replace")


def _alive(marker: str) -> list[str]:
    """Command lines of the processes whose command line holds marker."""
    out = []
    for p in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if marker in cmd and p.name.isdigit() and int(p.name) != os.getpid():
                out.append(cmd)
    return out


@pytest.mark.slow
@needs_fuzz
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_fuzz_signalled_alone_stops_libfuzzer_and_keeps_what_it_fuzzed(tmp_path: Path, sig: int) -> None:
    """A signal to kpool alone (`timeout`, a CI runner's cancel; not Ctrl-C, which reaches the whole
    group): libFuzzer ran on, orphaned, and fuzz.json (with the targets already fuzzed and their crashes)
    was never written; SIGTERM ended kpool at once (exit -15)."""
    pytest.importorskip("atheris")
    reports = tmp_path / "reports"
    proc = _kpool(["fuzz", "all", "--time", "3", "--run-dir", "run", "--reports", str(reports)], tmp_path)
    _wait_for_line(proc, "fuzzing conf", 120)  # the second target
    time.sleep(1)
    proc.send_signal(sig)
    try:
        code = proc.wait(timeout=30)
    finally:
        proc.kill()
    left = _alive(str(tmp_path / "run"))
    for _ in range(20):  # an orphan would run on for its 3 s
        if not left:
            break
        time.sleep(0.1)
        left = _alive(str(tmp_path / "run"))
    assert code == 130
    assert not left, left
    summary = json.loads((tmp_path / "run" / "fuzz.json").read_text())
    assert [r["target"] for r in summary["results"]] == ["api_sequence", "conf", "faults"][
        : len(summary["results"])
    ]
    assert summary["results"][0]["execs"] > 0 and summary["results"][-1]["interrupted"]


def test_bench_interrupted_keeps_the_runs_that_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C (or SIGTERM) in the third of six runs: the two that finished were lost (no table, no
    --json file); now they are printed and written, marked interrupted, and the command still ends 130."""
    from harness import bench

    calls = []

    def fake_run(self: bench.Runner, alloc: object, workload: str, seed: int) -> dict[str, object]:
        calls.append(seed)
        if len(calls) == 3:
            raise KeyboardInterrupt
        lat = {"alloc": {"p50": 20, "p99": 30, "p999": 40}}
        rss = {"hwm_kib": 4000, "peak_kib": 4000, "interval_ms": 5, "kib": [4000]}
        counts = {"verify_errors": 0, "alloc_failures": 0, "free_errors": 0}
        return {"desc": "fake", "ops_per_s": 1e6, "clock_ns": 20, "lat_ns": lat, "rss": rss, **counts}

    monkeypatch.setattr(bench, "build_kpbench", lambda: tmp_path / "kpbench")
    monkeypatch.setattr(bench.Runner, "run", fake_run)
    out = tmp_path / "raw.json"
    argv = ["--workloads", "a", "--runs", "3", "--allocators", "kpool,glibc", "--json", str(out)]
    with pytest.raises(KeyboardInterrupt):
        bench.main(argv)
    doc = json.loads(out.read_text())
    assert doc["meta"]["interrupted"] is True
    assert [len(doc["raw"]["a"][n]) for n in ("kpool", "glibc")] == [1, 1]
    assert "| a |" in capsys.readouterr().out
    calls[:] = [0, 0]  # interrupted in the first run: nothing to show, and no traceback either
    with pytest.raises(KeyboardInterrupt):
        bench.main(argv)
    assert json.loads(out.read_text())["raw"]["a"] == {"kpool": [], "glibc": []}


@pytest.mark.slow
@needs_fuzz
def test_campaign_killed_leaves_no_job_running(tmp_path: Path) -> None:
    """kill -9 of `kpool campaign`: its jobs (each in a session of its own) ran on unsupervised for their
    whole slot (hours in a night's budget), beside a --resume that starts the same jobs in the same
    folders. Now each job is told (SIGTERM) when the campaign dies, stops, and keeps what it fuzzed."""
    pytest.importorskip("atheris")
    reports = tmp_path / "reports"
    argv = ["campaign", "--budget", "60", "--jobs", "1", "--targets", "conf", "--workloads", ""]
    proc = _kpool([*argv, "--reports", str(reports)], tmp_path)
    _wait_for_line(proc, "running fuzz:conf", 300)
    time.sleep(3)
    proc.kill()
    proc.wait()
    for _ in range(100):
        left = _alive(str(reports))
        if not left:
            break
        time.sleep(0.1)
    assert not left, left
    [summary] = reports.glob("campaign-*/fuzz-conf/fuzz.json")
    assert json.loads(summary.read_text())["results"][0]["execs"] > 0


PLAIN_ASAN = (
    "==1==ERROR: AddressSanitizer: heap-use-after-free on address 0x602000000010 at pc 0x1 bp 0x2 sp 0x3\n"
    "READ of size 8 at 0x602000000010 thread T0\n"
    "    #0 0x4f1 in kp_free /k/allocator/src/alloc.c:700:3\n"
    "    #1 0x4f2 in do_free /k/allocator/driver/fuzz_model.c:300:5\n"
    "    #2 0x4f3 in run_ops /k/allocator/driver/fuzz_model.c:400:5\n"
)


def test_a_coloured_sanitizer_report_has_the_plain_reports_signature() -> None:
    """ASAN_OPTIONS=color=always (a user's own setting, or a terminal): the escape codes went into the
    frame names, so one bug had two signatures, one of them with ESC characters in its title."""
    from harness.triage import signature as S

    red, bold, reset = "\x1b[1m\x1b[31m", "\x1b[1m", "\x1b[0m"
    lines = PLAIN_ASAN.splitlines(keepends=True)
    coloured = f"{red}{lines[0][:-1]}{reset}\n{bold}{lines[1][:-1]}{reset}\n" + "".join(
        ln.replace(" in ", f" in {bold}").replace(" /k", f"{reset} /k") for ln in lines[2:]
    )
    plain, colour = S.compute(PLAIN_ASAN), S.compute(coloured)
    assert colour.title == plain.title, (colour.title, plain.title)
    assert colour.hash == plain.hash


def test_junit_stays_well_formed_xml_with_control_characters() -> None:
    """A crash title or a workload's error holds what a crashed program printed: a NUL or an ESC in it
    made junit.xml ill-formed (CI rejects the whole file, every result with it)."""
    import xml.etree.ElementTree as ET

    from harness.report.model import CrashEntry, RunReport, WorkloadResult
    from harness.report.writers import junit_xml

    report = RunReport(run_id="r1", started=0.0)
    report.crashes = [
        CrashEntry("0123", 'assert (p != "\x1b[31m\x00") in f', "assertion", source="run:\x07x")
    ]
    report.workloads = [WorkloadResult(name="w", allocator="kpool", error="worker 0: \x1b[0m\x0c<&>")]
    root = ET.fromstring(junit_xml(report).split("\n", 1)[1])
    texts = " ".join(el.get("name", "") + el.get("message", "") + (el.text or "") for el in root.iter())
    assert "<&>" in texts and 'assert (p != "' in texts


def test_a_crash_whose_input_is_gone_is_not_marked_fixed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The run folder holding a fuzz crash's input was cleaned up (or the reports moved): the replay ran
    the fuzzer on a missing file, which exits 1 without the crash, and `recheck` marked the bug FIXED."""
    from harness import cli
    from harness.triage.crash import Crash, Reproducer
    from harness.triage.db import CrashDB

    fuzzer = tmp_path / "fuzzer.py"  # crashes on any input it can read, as the real bug would
    fuzzer.write_text(
        f"import sys\nopen(sys.argv[1]).read()\nsys.stderr.write({PLAIN_ASAN!r})\nsys.exit(1)\n"
    )
    crash_input = tmp_path / "run" / "crashes" / "api_sequence-crash-0a1b"
    crash_input.parent.mkdir(parents=True)
    crash_input.write_bytes(b"\x00\x05")
    repro = Reproducer(
        argv=(sys.executable, str(fuzzer), "${input_path}"),
        kind="fuzz",
        input_path=str(crash_input),
        target="api_sequence",
    )
    path = tmp_path / "crashes.sqlite"
    db = CrashDB(path)
    sid = db.record(
        Crash(text=PLAIN_ASAN, run_id="r1", source="fuzz:api_sequence", reproducer=repro)
    ).signature_id
    assert cli.main(["triage", "--db", str(path), "replay", str(sid), "--runs", "1"]) == 0
    crash_input.unlink()
    capsys.readouterr()
    assert cli.main(["triage", "--db", str(path), "replay", str(sid), "--runs", "1"]) == 1
    err = capsys.readouterr().err
    assert str(crash_input) in err and "gone" in err, err
    assert cli.main(["triage", "--db", str(path), "recheck", "--runs", "1"]) == 3  # open, not fixed
    assert CrashDB(path).get(str(sid)).status == "new"
    assert "input gone" in capsys.readouterr().out


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (every write: ENOSPC)")
def test_a_full_disk_error_names_the_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A write that fails with ENOSPC half-way (pathlib's write_text, the harness's way of writing
    stress.json, fuzz.json, --json, a workload's .prog) carries no file name: the error was a bare
    "No space left on device", naming nothing the user could free or move."""
    from harness import bench, cli

    def write_results(argv: list[str]) -> int:
        Path("/dev/full").write_text("{}\n" * 100_000)
        return 0

    monkeypatch.setattr(bench, "main", write_results)
    assert cli.main(["bench", "--json", "/dev/full"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "kpool: error: /dev/full: No space left on device", err


QUICK = """\
name: {name}
processes: 1
threads: 1
ops: 2000
seed: 1
mix: {{alloc: 1}}
sizes: {{dist: uniform, min: 16, max: 256}}
working_set: 100
"""


def test_a_full_disk_while_stress_json_is_rewritten_keeps_the_workloads_that_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """stress.json is rewritten after every workload; the disk filled up during the rewrite after the
    second: the file was left cut short (or empty), and the first workload's results with it."""
    import io

    from harness import cli

    files = []
    for name in ("first", "second"):
        files.append(tmp_path / f"{name}.yaml")
        files[-1].write_text(QUICK.format(name=name))
    real_open = io.open
    writes = []

    class Full(io.StringIO):
        def write(self, s: str) -> int:
            raise OSError(28, "No space left on device")

    def full_on_second_rewrite(file: object, mode: str = "r", *args: object, **kw: object) -> object:
        # a file opened by name, or by descriptor (os.fdopen of a temporary file on its way to the name)
        name = str(Path(f"/proc/self/fd/{file}").readlink()) if isinstance(file, int) else str(file)
        if "w" in mode and "stress.json" in name:
            writes.append(file)
            if len(writes) == 2:
                real_open(file, mode, *args, **kw).close()  # opening for writing truncates
                return Full()
        return real_open(file, mode, *args, **kw)  # type: ignore[call-overload]

    monkeypatch.setattr(io, "open", full_on_second_rewrite)
    code = cli.main(["stress", *map(str, files), "--reports", str(tmp_path / "r"), "--run-id", "t"])
    monkeypatch.undo()
    assert code == 1
    assert "stress.json" in capsys.readouterr().err
    kept = json.loads((tmp_path / "r" / "t" / "stress.json").read_text())
    assert [w["name"] for w in kept["workloads"]] == ["first"]


def test_a_plant_the_sources_do_not_hold_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--plant 99` built and fuzzed a build with no planted bug (a quality run that proves nothing);
    `kpool campaign --plant -1` ran the whole budget, every fuzz job failing with the child's usage error."""
    from harness import cli

    reports = str(tmp_path / "r")
    assert cli.main(["fuzz", "conf", "--plant", "99", "--time", "1", "--reports", reports]) == 2
    assert "--plant 99" in capsys.readouterr().err
    argv = ["campaign", "--budget", "20", "--targets", "conf", "--workloads", "", "--reports", reports]
    assert cli.main([*argv, "--plant", "-1"]) == 2
    assert cli.main([*argv, "--plant", "99"]) == 2
    assert not list((tmp_path / "r").glob("campaign-*"))


def test_fuzz_merge_and_coverage_together_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """Both "instead" modes at once: it ran --coverage alone, silently dropping --merge."""
    from harness import cli

    with pytest.raises(SystemExit) as info:
        cli.main(["fuzz", "conf", "--merge", "--coverage"])
    assert info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_output_piped_into_head_ends_quietly() -> None:
    """`kpool triage show 1 | head`: the reader goes away, and kpool printed "kpool: error: Broken pipe"
    and exited 1, as if the command had failed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "options"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before it writes a byte
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and err == "", err


@pytest.mark.parametrize("command", ["/nonexistent/prog", "/tmp", "no-such-program-kpool"])
def test_a_program_workload_whose_program_cannot_run_fails(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A typo in program.command: exec failed (status 127, or 126 for a folder) under kpool and under
    glibc alike, so "the same exit status as glibc" held and the workload passed: a night's report
    said ok for a program that never ran."""
    from harness import cli

    wl = tmp_path / "p.yaml"
    wl.write_text(f"name: p\nprogram: {{command: [{command}]}}\n")
    code = cli.main(["stress", str(wl), "--reports", str(tmp_path / "r"), "--run-id", "t"])
    out = capsys.readouterr()
    assert code == 1, out.out
    report = json.loads((tmp_path / "r" / "t" / "stress.json").read_text())
    [entry] = report["workloads"]
    assert not entry["passed"] and any(command in b for b in entry["broken"]), entry["broken"]


def test_triage_signature_of_a_missing_file_or_a_folder_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 2 as every "nothing ran" error (it was 1, a crash found), and the reason said once, not
    "cannot read X: [Errno 2] No such file or directory: 'X'"."""
    from harness import cli

    for path, why in ((tmp_path / "nope.txt", "No such file or directory"), (tmp_path, "Is a directory")):
        assert cli.main(["triage", "signature", str(path)]) == 2
        assert capsys.readouterr().err.strip() == f"kpool: error: cannot read {path}: {why}"


@pytest.mark.parametrize("where", ["folder", "under_a_file", "no_parent"])
def test_bench_json_that_cannot_be_written_is_refused_before_the_runs(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--json` naming a folder, or a path under a file or a missing folder: the whole bench ran (minutes
    on five workloads and six allocators) and then failed to write its results."""
    from harness import bench

    (tmp_path / "afile").write_text("x")
    target = {"folder": tmp_path, "under_a_file": tmp_path / "afile" / "x.json"}.get(
        where, tmp_path / "missing" / "x.json"
    )

    def must_not_run() -> Path:
        raise AssertionError("the bench ran")

    monkeypatch.setattr(bench, "build_kpbench", must_not_run)
    assert bench.main(["--workloads", "a", "--runs", "1", "--json", str(target)]) == 2
    assert f"--json {target}" in capsys.readouterr().err


def test_reports_folder_that_is_a_file_is_said_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--reports notes.txt`: mkdir's "File exists" named the file but not what was wrong with it."""
    from harness import cli

    afile = tmp_path / "notes.txt"
    afile.write_text("x")
    wl = tmp_path / "w.yaml"
    wl.write_text(QUICK.format(name="w"))
    # exit 2 since session 33 (s33-atth): the user's configuration, nothing ran (it was 1, a failed run)
    assert cli.main(["stress", str(wl), "--reports", str(afile)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == f"kpool: error: --reports {afile}: a file, where a folder is expected", err


@pytest.mark.slow
@needs_fuzz
def test_fuzz_killed_leaves_no_fuzzer_running(tmp_path: Path) -> None:
    """kill -9 of `kpool fuzz`: libFuzzer ran on, orphaned, for the rest of its --time (a night's run:
    hours), writing into the working corpus beside the next run."""
    pytest.importorskip("atheris")
    proc = _kpool(["fuzz", "conf", "--time", "60", "--run-dir", "run", "--reports", "reports"], tmp_path)
    _wait_for_line(proc, "fuzzing conf", 120)
    time.sleep(2)
    proc.kill()
    proc.wait()
    for _ in range(50):
        left = _alive(str(tmp_path / "run"))
        if not left:
            break
        time.sleep(0.1)
    assert not left, left


@pytest.mark.parametrize("damage", ["cut", "not_json", "a_list", "no_results"])
def test_a_damaged_job_result_is_that_jobs_failure_not_the_reports(tmp_path: Path, damage: str) -> None:
    """A fuzz.json cut short (a kill, a full disk) or not the runner's: the campaign's report ended in a
    JSONDecodeError traceback (or a KpoolError) after every job had run, and nothing was reported."""
    from harness.jobs.model import Job
    from harness.report import ingest

    good = {"run_dir": "x", "plant": 0, "results": [{"target": "conf", "seconds": 1, "execs": 5}]}
    text = {
        "cut": json.dumps(good)[:40],
        "not_json": "\x00\xff garbage",
        "a_list": "[1, 2]",
        "no_results": "{}",
    }[damage]
    (tmp_path / "fuzz-conf").mkdir()
    (tmp_path / "fuzz-conf" / "fuzz.json").write_text(text)
    fuzz = Job("fuzz:conf", "fuzz", [], 10.0, "fuzz-conf/fuzz.json", state="done")
    [result] = ingest.job_results(fuzz, tmp_path).fuzz
    assert result.target == "conf" and "fuzz-conf/fuzz.json" in result.error, result
    (tmp_path / "stress.json").write_text(text)
    stress = Job("stress:w", "stress", [], 10.0, "stress.json", state="done")
    [entry] = ingest.job_results(stress, tmp_path).workloads
    assert entry.name == "w" and "stress.json" in entry.error, entry
    assert ingest.triage([fuzz, stress], "r1", 0, tmp_path) == []  # what it cannot read, it says and skips


def test_two_workloads_of_one_name_in_one_run_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two files that both say `name: q1` (a copy edited, another folder's): both ran into the run's q1/
    folder, the second's worker files and operation stream over the first's, so the first's crash
    reproducer (its .prog) replayed the second workload."""
    from harness import cli

    files = []
    for folder, ops in (("a", 2000), ("b", 3000)):
        (tmp_path / folder).mkdir()
        files.append(tmp_path / folder / "q1.yaml")
        files[-1].write_text(QUICK.format(name="q1").replace("ops: 2000", f"ops: {ops}"))
    reports = tmp_path / "r"
    assert cli.main(["stress", *map(str, files), "--reports", str(reports)]) == 2
    err = capsys.readouterr().err
    assert str(files[0]) in err and str(files[1]) in err and "'q1'" in err, err
    assert not list(reports.glob("*/stress.json"))


@pytest.mark.slow
@needs_fuzz
def test_merge_interrupted_while_it_swaps_keeps_a_whole_corpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`kpool fuzz --merge` deleted the working corpus file by file, then renamed the merged one in: a
    Ctrl-C or kill during the deletion (thousands of files) left half a corpus, the merged one aside in
    .merging, which the next merge deletes first. (The merge now shrinks the corpus where it is, deleting
    only the inputs the merge left out: stopped there, the corpus still holds every merged input.)"""
    pytest.importorskip("atheris")
    from harness import cli
    from harness.fuzz import runner

    reports = tmp_path / "r"
    assert cli.main(["fuzz", "conf", "--time", "3", "--reports", str(reports)]) == 0
    work = reports / "corpus" / "conf"
    runner.merge("conf", reports)  # a merged corpus: merging it again keeps (about) all of it
    before = len(list(work.iterdir()))
    for i in range(20):  # inputs the merge leaves out (their features are the corpus's already)
        (work / f"{i:040x}").write_bytes(b"")
    real_unlink = Path.unlink
    deleted: list[Path] = []

    def killed_half_way(self: Path, missing_ok: bool = False) -> None:
        if self.parent == work and len(deleted) >= 10:
            raise KeyboardInterrupt
        deleted.append(self)
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", killed_half_way)
    with pytest.raises(KeyboardInterrupt):
        runner.merge("conf", reports)
    monkeypatch.undo()
    kept = len(list(runner.working_corpus("conf", reports).iterdir()))
    assert kept >= 0.9 * before, f"{kept} of {before} inputs left"  # half, before
    runner.merge("conf", reports)  # and the next merge cleans up what the interrupted one left
    assert work.is_dir() and [p.name for p in work.parent.glob("conf.*")] == ["conf.lock"]


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--seed", "-1"], "--seed -1"),
        (["--seed", str(2**64)], f"--seed {2**64}"),
        (["--runs", "3", "--seed", str(2**64 - 2)], f"--seed {2**64 - 2}"),  # run 3 would be 2**64
        (["--ops", str(2**64)], f"--ops {2**64}"),
    ],
)
def test_bench_seed_or_ops_kpbench_cannot_take_is_refused_before_the_runs(
    argv: list[str], said: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`kpool bench --seed -1` ran the whole bench, every allocator's first run failing in kpbench ("bad
    value for --seed") and the later ones not; a seed or op count above 64 bits failed every run."""
    from harness import bench

    def must_not_run() -> Path:
        raise AssertionError("the bench ran")

    monkeypatch.setattr(bench, "build_kpbench", must_not_run)
    assert bench.main(["--workloads", "a", *argv]) == 2
    assert said in capsys.readouterr().err


def test_bench_json_on_a_read_only_file_system_is_refused_before_the_runs(
    read_only_folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from harness import bench

    def must_not_run() -> Path:
        raise AssertionError("the bench ran")

    monkeypatch.setattr(bench, "build_kpbench", must_not_run)
    target = read_only_folder / "x.json"
    assert bench.main(["--workloads", "a", "--runs", "1", "--json", str(target)]) == 2
    assert f"--json {target}" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["fuzz", "conf", "--time", "1"],
        ["fuzz", "conf", "--merge"],
        ["campaign", "--budget", "20s", "--targets", "conf", "--workloads", ""],
    ],
)
def test_a_reports_folder_whose_name_is_not_utf8_is_a_usage_error_for_the_fuzzer(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """atheris takes its arguments as UTF-8 text: a corpus or crash folder under a name with other bytes
    made every target die in atheris.Setup (a TypeError and its traceback, as the fuzz log's tail); the
    campaign said its fuzz job failed with "libFuzzer ended with exit 1". The stress runner has no such
    limit (its driver takes bytes), nor has --coverage (its replays read the folders themselves)."""
    from harness import cli

    reports = tmp_path / os.fsdecode(b"caf\xe9 reports")
    assert cli.main([*argv, "--reports", str(reports)]) == 2
    err = capsys.readouterr().err
    assert "caf\\xe9 reports" in err and "UTF-8" in err, err
    assert "Traceback" not in err
    assert not any(reports.glob("*-*")), list(reports.iterdir())  # no run folder


def test_option_values_that_are_not_utf8_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    """An argument with bytes that are not UTF-8 (a Latin-1 terminal, a binary pasted into a script) in a
    value kpool passes to C or to the op driver: a UnicodeEncodeError (or, from the driver's answer
    quoting it, a UnicodeDecodeError) traceback."""
    from harness import cli

    bad = os.fsdecode(b"\xff")
    steady = str(Path(__file__).resolve().parents[1] / "workloads" / "steady-small.yaml")
    for argv, said in (
        (["run", "--conf", f"checks:on,{bad}:1", "--", "true"], "--conf"),
        (["stress", steady, "--set", f"count={bad}"], "--set count="),
        (["stress", steady, "--set", f"conf={bad}:1"], "--set conf="),
    ):
        code = cli.main(argv)
        err = capsys.readouterr().err
        assert code == 2 and said in err and "Traceback" not in err, (argv, err)


def test_a_fuzz_target_printing_bytes_that_are_not_utf8_is_fuzzed_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """libFuzzer's output was read as UTF-8 text: a target (or the sanitizer, quoting memory) printing any
    other byte stopped kpool with a UnicodeDecodeError while libFuzzer ran on."""
    from test_fuzz_recovery import FAKE_TARGET

    from harness.fuzz import runner

    script = tmp_path / "fake_target.py"
    script.write_text(FAKE_TARGET)
    monkeypatch.setattr(runner, "script", lambda target: script)
    monkeypatch.setattr(runner, "target_env", lambda target, plant=0: dict(os.environ))
    monkeypatch.setattr(runner, "seeds_dir", lambda target: tmp_path / "no-seeds")
    monkeypatch.setenv("KPOOL_FAKE", "noise")
    run = runner.run("api_sequence", 1, run_dir=tmp_path / "run", reports=tmp_path / "reports")
    [result] = run.results
    assert result.error == "" and result.exec_per_s == 100
    assert "not text" in Path(result.log).read_text()
