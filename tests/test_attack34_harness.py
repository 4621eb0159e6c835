"""Session 34's attack on the harness (s34-att): each test failed on s34-att's base b7ad467."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.jobs.model import Job
from harness.report.ingest import workload_results
from harness.report.model import RunReport
from harness.report.writers import write_run
from harness.stress.hist import Hist, Layout
from harness.stress.merge import merge

# ---- a campaign's latency: the driver's bucket indices are not nanoseconds --------------------------------


def _kpdrive_doc(buckets: list[list[int]]) -> dict[str, Any]:
    """One worker's kpdrive result with an alloc histogram of these [index, count] buckets."""
    lay = Layout()
    count = sum(c for _, c in buckets)
    top = lay.high(max(i for i, _ in buckets))
    alloc = {"count": count, "min": 10, "max": top, "mean": 100.0, "buckets": buckets}
    return {
        "ok": True,
        "hist": {"layout": {"sub_bits": lay.sub_bits, "max_exp": lay.max_exp}, "alloc": alloc},
        "counters": {"ops": count, "verify_errors": 0, "zero_errors": 0, "free_errors_total": 0},
        "loop_start_mono_ns": 1,
    }


def test_a_campaign_reports_latency_in_nanoseconds_not_bucket_indices(tmp_path: Path) -> None:
    """kpdrive's histogram buckets are [index, count] in a log-linear layout (128 sub-buckets a power of
    two): index 726 holds 3,424-3,439 ns. `kpool stress` printed p99 3,439 ns, and the campaign's report of
    the same stress.json (summary.json, index.html, the campaign's summary line, the per-night p99 trend,
    latency.hlog) said 726 ns: ingest took the index for the value. Found on the first `kpool campaign`: the
    paced-growth row said alloc p99 726 ns beside its own SLO verdict `latency_ns.alloc.p99 3439`."""
    doc = _kpdrive_doc([[20, 9800], [300, 99], [726, 100], [1990, 1]])
    merged = merge([{"worker": 0, "spawned_mono_ns": 0, "result": doc}])
    expected = Hist.from_json(merged["hist"]["alloc"], Layout()).percentile(0.99)
    assert expected == merged["latency"]["alloc"]["p99"] == 3439
    stress = {"workloads": [{"name": "paced", "allocator": "kpool", **merged}]}
    job = Job("stress:paced", "stress", [], 10.0, "stress-paced/stress.json", state="done")
    (w,) = workload_results(stress, job, tmp_path)
    (lat,) = w.latency
    assert lat.percentile(0.99) == expected
    assert lat.percentile(0.5) == 20  # an index under 128 is its own value
    assert max(v for v, _ in lat.buckets) == Layout().high(1990)  # about 3.2 ms, not 1,990 ns
    run_dir = write_run(RunReport("r", started=1.0, workloads=[w]), tmp_path / "reports")
    page = (run_dir / "index.html").read_text()
    assert "alloc 3.44 us" in page, "the p99 column of the workloads table"
    assert "alloc 726 ns" not in page
    index = (tmp_path / "reports" / "index.html").read_text()
    assert "3.44 us" in index and "726 ns" not in index, "the per-night p99"


# ---- triage minimize, night after night ------------------------------------------------------------------

_REPORT = (
    "==7==ERROR: AddressSanitizer: heap-use-after-free on address 0x604000000090 at pc 0x1 bp 0x2 sp 0x3\n"
    "WRITE of size 1 at 0x604000000090 thread T0\n"
    "    #0 0x5654029bcefe in kp__central_give /src/alloc.c:6:77\n"
    "    #1 0x5654029bcf4f in kp_free /src/alloc.c:7:71\n"
)

# A libFuzzer look-alike: -minimize_crash=1 writes the input less its first byte (at least an "X") to
# -exact_artifact_path; otherwise it crashes on an input holding an X.
_FUZZER = f"""
import pathlib, sys
flags = dict(x[1:].split("=", 1) for x in sys.argv[1:] if x.startswith("-"))
path = pathlib.Path([x for x in sys.argv[1:] if not x.startswith("-")][0])
if flags.get("minimize_crash") == "1":
    data = path.read_bytes()
    pathlib.Path(flags["exact_artifact_path"]).write_bytes(data[1:] if len(data) > 1 else b"X")
    sys.exit(0)
if b"X" in path.read_bytes():
    sys.stderr.write({_REPORT!r})
    sys.exit(1)
"""


def test_minimizing_a_minimised_fuzz_input_again_and_again(tmp_path: Path) -> None:
    """`kpool triage minimize ID` of a fuzz crash wrote minimized-<hash>-<input name> beside the input, and
    the next minimize of the same signature started from that file and wrote minimized-<hash>-minimized-
    <hash>-<input name>: 23 bytes longer each time. A CI job that minimises its open signatures every night
    failed on the 9th (`kpool: error: ...: File name too long`, exit 2), for that signature for ever.
    Seen with planted bug 2 (`kpool fuzz faults --plant 2`) and `kpool triage minimize 2` ten times."""
    from harness.triage import minimize as M
    from harness.triage import replay as R
    from harness.triage import signature as S
    from harness.triage.crash import Reproducer

    expected = S.compute(_REPORT).hash
    fuzzer = tmp_path / "fuzzer.py"
    fuzzer.write_text(_FUZZER)
    crashes = tmp_path / "crashes"
    crashes.mkdir()
    original = crashes / ("faults-crash-" + "5d1f7c7f75e0413a0d8adb0468ad93ad2c47bb0e")
    original.write_bytes(b"abcdefghijklmnoX")
    r = Reproducer(
        argv=(sys.executable, str(fuzzer), "${input_path}"),
        kind="fuzz",
        input_path=str(original),
        timeout_s=20,
    )
    for night in range(1, 13):
        done = M.minimize(r, expected)
        assert done.reproducer.input_path, night
        path = Path(done.reproducer.input_path)
        assert len(path.name) < 100, (night, path.name)
        assert path.read_bytes() == b"abcdefghijklmnoX"[night:] or path.read_bytes() == b"X", night
        r = done.reproducer
    assert R.replay(r, expected, runs=1).rate == 1.0
    assert original.read_bytes() == b"abcdefghijklmnoX"  # the recorded crash input is never rewritten
    assert sorted(p.name for p in crashes.iterdir()) == [
        original.name,
        f"minimized-{expected[:12]}-{original.name}",
    ]


# ---- a program workload whose stdin file is not there --------------------------------------------------


def test_a_missing_stdin_file_fails_that_program_workload_not_the_run(tmp_path: Path) -> None:
    """`program: {command: [cat], stdin: input.txt}` where no setup command wrote input.txt (a typo, or a
    setup that wrote it elsewhere): `kpool stress a.yaml p.yaml b.yaml` stopped at p with `kpool: error:
    .../p/kpool-0/input.txt: No such file or directory`, exit 1, no table, b never run, and stress.json
    left saying `"passed": true` for the run. Now that run of p fails with the reason, as a setup command
    that fails does, and the next workload runs."""
    from harness import spec
    from harness.stress import runner

    missing = tmp_path / "p.yaml"
    missing.write_text("name: p\nprogram:\n  command: [/bin/cat]\n  stdin: input.txt\n")
    given = tmp_path / "q.yaml"
    given.write_text(
        "name: q\nprogram:\n  setup: [[/bin/sh, -c, 'echo hi > input.txt']]\n  command: [/bin/cat]\n"
        "  stdin: input.txt\nslo:\n  output: {contains: [hi]}\n"
    )
    wls = [spec.load(missing), spec.load(given)]
    opts = runner.Options(reports_dir=tmp_path / "reports", run_id="r", progress_s=3600.0)
    doc = runner.run(wls, opts)
    p, q = doc["workloads"]
    assert p["name"] == "p" and p["passed"] is False
    assert any("stdin: input.txt" in b for b in p["broken"]), p["broken"]
    assert q["name"] == "q" and q["passed"] is True, q["broken"]
    assert doc["passed"] is False


# ---- stress.json between two workloads -------------------------------------------------------------------


def test_stress_json_between_workloads_does_not_say_the_run_passed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`kpool stress a.yaml b.yaml`: once a ended, stress.json held a alone with `"passed": true` and no
    mark of the run going on, until one of b's workers ended. A runner that died then (kill -9, the OOM
    killer, the machine; or an exception: the missing stdin above) left a file that says the run passed,
    b never mentioned. Now the file written between workloads says what has not run yet, and passed only
    at the end."""
    from harness import spec
    from harness.stress import runner

    names = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.yaml"
        path.write_text(
            f"name: {name}\nprocesses: 1\nthreads: 1\nops: 1000\nseed: 1\nmix: {{alloc: 1}}\n"
            "sizes: {dist: uniform, min: 16, max: 64}\nworking_set: 10\n"
        )
        names.append(spec.load(path))
    original = runner.OpStreamLaunch.run

    def dies_on_b(self: runner.OpStreamLaunch, opts: runner.Options, run_dir: Path) -> dict[str, Any]:
        if self.wl.name == "b":
            raise RuntimeError("the runner died here")
        return original(self, opts, run_dir)

    monkeypatch.setattr(runner.OpStreamLaunch, "run", dies_on_b)
    opts = runner.Options(reports_dir=tmp_path / "reports", run_id="r", progress_s=3600.0)
    with pytest.raises(RuntimeError):
        runner.run(names, opts)
    doc = json.loads((tmp_path / "reports" / "r" / "stress.json").read_text())
    assert [w["name"] for w in doc["workloads"]] == ["a"]
    assert doc["workloads"][0]["passed"] is True
    assert doc["passed"] is False, "the run did not finish"
    assert doc.get("not_run") == ["b"]


# ---- SARIF: where an oracle's verdict is ---------------------------------------------------------------


_ORACLE_STACK = """\
==kpfuzz== VIOLATION {v} in {api} (driver/fuzz_model.c:{line}): ...
==9==ERROR: AddressSanitizer: ABRT on unknown address 0x1 (pc 0x2 bp 0x3 sp 0x4 T0)
    #0 0x1 in __pthread_kill_implementation nptl/./nptl/pthread_kill.c:44:76
    #1 0x1 in raise signal/../sysdeps/posix/raise.c:26:13
    #2 0x1 in abort stdlib/abort.c:79:7
    #3 0x2 in fz_fail /work/kpool/allocator/driver/fuzz_model.c:145:2
    #4 0x3 in {fn} /work/kpool/allocator/driver/fuzz_model.c:{line}:4
    #5 0x4 in step /work/kpool/allocator/driver/fuzz_model.c:910:40
"""


def test_sarif_puts_an_oracle_verdict_where_the_check_fired_not_in_fz_fail(tmp_path: Path) -> None:
    """The fuzz oracle's verdicts (planted 6 under api_sequence: `VIOLATION misaligned in kp_alloc_aligned
    (driver/fuzz_model.c:407)`, planted 2 under faults: `VIOLATION wrong-error in kp_free
    (driver/fuzz_model.c:661)`) are two signatures, but `kpool triage sarif` (and the campaign's
    results.sarif) located both at driver/fuzz_model.c:145, the abort() in fz_fail that every verdict
    calls: code scanning showed every oracle finding on that one line. Now each is at the check that
    fired, named by the call it judged."""
    from harness.report import sarif
    from harness.triage.crash import Crash
    from harness.triage.db import CrashDB

    db = CrashDB(tmp_path / "crashes.sqlite")
    for v, api, fn, line in (
        ("misaligned", "kp_alloc_aligned", "check_new", 407),
        ("wrong-error", "kp_free", "op_stale", 661),
    ):
        text = _ORACLE_STACK.format(v=v, api=api, fn=fn, line=line)
        db.record(Crash(text=text, run_id="r1", source="fuzz:api_sequence"))
    results = sarif.document(db)["runs"][0]["results"]
    where = {}
    for r in results:
        (loc,) = r["locations"]
        phys = loc["physicalLocation"]
        assert phys["artifactLocation"]["uri"].endswith("driver/fuzz_model.c"), phys
        where[r["ruleId"]] = (
            phys["region"]["startLine"],
            [x["name"] for x in loc.get("logicalLocations", [])],
        )
    assert where == {
        "oracle-misaligned": (407, ["kp_alloc_aligned"]),
        "oracle-wrong-error": (661, ["kp_free"]),
    }


# ---- kpool's own figures are not measured on a peer ------------------------------------------------------


def test_a_peer_is_not_judged_on_kpool_only_bounds(tmp_path: Path) -> None:
    """`kpool stress workloads/critical-exhaustion.yaml --allocator jemalloc` said FAIL: `min_backup_allocs:
    0 (bound >= 1)`: jemalloc has no backup pool, and the driver reads no kpool counters through malloc.
    paced-growth on jemalloc said `max_alloc_path_syscalls 0 <= 0 ok`: a claim about jemalloc's system
    calls that nothing measured. A bound on kpool's own counters (backup allocations and peak, system
    calls on the allocation path) is now "n/a" where the workers report no kpool figures, as a latency
    bound on an operation the workload never did; the driver's own counts (alloc failures) still judge."""
    from harness.stress import slo

    bounds = {
        "min_backup_allocs": 1,
        "max_backup_allocs": 10,
        "max_backup_peak_bytes": "1m",
        "max_alloc_path_syscalls": 0,
        "max_alloc_failures": 0,
    }
    peer = _kpdrive_doc([[20, 100]])
    peer["counters"]["alloc_failures"] = 3
    merged = merge([{"worker": 0, "spawned_mono_ns": 0, "result": peer}])
    got = {v["slo"]: v for v in slo.verdicts(bounds, merged, 0)}
    for name in (
        "min_backup_allocs",
        "max_backup_allocs",
        "max_backup_peak_bytes",
        "max_alloc_path_syscalls",
    ):
        assert got[name]["op"] == "n/a" and got[name]["ok"] and got[name]["value"] is None, got[name]
    assert got["max_alloc_failures"]["ok"] is False  # the driver counts NULLs whatever the allocator
    assert slo.broken(list(got.values())) == ["max_alloc_failures: 3 (bound <= 0)"]

    kpool = _kpdrive_doc([[20, 100]])
    kpool["kpool_stats"] = {
        "backup": {"allocs": 0, "peak_in_use_bytes": 0},
        "syscalls": {"alloc": {"mmap": 2}},
    }
    merged = merge([{"worker": 0, "spawned_mono_ns": 0, "result": kpool}])
    got = {v["slo"]: v for v in slo.verdicts(bounds, merged, 0)}
    assert got["min_backup_allocs"]["ok"] is False and got["min_backup_allocs"]["value"] == 0
    assert got["max_alloc_path_syscalls"]["ok"] is False and got["max_alloc_path_syscalls"]["value"] == 2


# ---- kpool run: one bug, whatever --on-error said ----------------------------------------------------------


def test_a_preload_integrity_event_has_one_signature_whether_it_aborted_or_went_on() -> None:
    """`kpool run -- python3 -c '<a double free>'` (the default, --on-error abort) and the same with
    --on-error log were filed as two signatures: "kpool-double_free (double free in free(); abort)" and
    "kpool-double_free (double free in free(); going on)". What the preload did next is the run's option,
    not the bug. Now both are one signature; another event in another call stays another."""
    from harness.triage import signature as S

    line = "kpool 42354.935 double_free 0x7fdf44400240 size class 40: double free in free(); {then}\n"
    aborted = S.compute(line.format(then="abort"), returncode=-6, source="program:python3")
    went_on = S.compute(line.format(then="going on"), returncode=0, source="program:python3")
    assert aborted.hash == went_on.hash, (aborted.title, went_on.title)
    assert "abort" not in aborted.title and "going on" not in went_on.title
    other = "kpool 1.5 invalid_free 0x7fdf44400240 size class 40: invalid free in realloc(); abort\n"
    assert S.compute(other, returncode=-6, source="program:python3").hash != aborted.hash
    in_realloc = line.replace("in free()", "in realloc()").format(then="abort")
    assert S.compute(in_realloc, returncode=-6, source="program:python3").hash != aborted.hash


# ---- ops/s of a workload with interference -----------------------------------------------------------------


def test_ops_per_second_of_an_interference_workload_is_over_its_main_phase(tmp_path: Path) -> None:
    """A workload with interference runs twice (main, then a baseline without it, for the ratio); its ops
    are the main phase's, but the campaign's report divided them by the whole workload's wall time, the
    baseline's included: fork-storm's 778,485 ops in its 0.26 s main phase read 1,098,004 ops/s (0.709 s),
    a third of what it did. Now the runner records the main phase's time and the report divides by it."""
    from harness import spec
    from harness.stress import runner

    path = tmp_path / "i.yaml"
    path.write_text(
        "name: i\nprocesses: 1\nthreads: 1\nops: 20000\nseed: 1\nmix: {alloc: 1}\n"
        "sizes: {dist: uniform, min: 16, max: 64}\nworking_set: 10\n"
        "interference:\n  - {kind: getpid, rate: 1000}\n"
    )
    opts = runner.Options(reports_dir=tmp_path / "reports", run_id="r", progress_s=3600.0)
    (entry,) = runner.run([spec.load(path)], opts)["workloads"]
    assert "interference" in entry, "a baseline phase ran"
    assert 0 < entry["main_wall_s"] < entry["wall_s"]

    doc = {"workloads": [{**entry, "ops": 778485, "wall_s": 0.709, "main_wall_s": 0.26}]}
    job = Job("stress:i", "stress", [], 10.0, "stress-i/stress.json", state="done")
    (w,) = workload_results(doc, job, tmp_path)
    run_dir = write_run(RunReport("r", started=1.0, workloads=[w]), tmp_path / "out")
    page = (run_dir / "index.html").read_text()
    assert "2,994,173" in page and "1,097,997" not in page


# ---- a hang found by kpool stress, replayed ------------------------------------------------------------


def test_a_stress_hang_replays_within_its_time_limit_and_reproduces(tmp_path: Path) -> None:
    """`kpool stress steady-small.yaml --set hang_at=1000 --time-limit 3` filed "timeout in hang_forever <
    special < run_loop" (every thread's stack, from gdb, before the kill). `kpool triage replay 1 -n 1`
    then ran the worker for 120 s (the reproducer's default timeout, not the 3 s the run used) and called
    it "non-reproducible: reproduced 0 of 1, otherwise 1x: timeout in workload:steady-small": the replay
    killed the hung worker without taking its stacks, so its signature had no frames. Every hang stress
    found read as fixed or flaky in `recheck`, at 10 minutes a signature. Now the reproducer keeps the
    run's time limit and a replay that times out takes the stacks as the worker did."""
    import shutil
    import time

    from harness import spec
    from harness.stress import runner
    from harness.triage import replay as R
    from harness.triage.db import CrashDB

    if not shutil.which("gdb"):
        pytest.skip("gdb: the hung worker's stacks")
    path = tmp_path / "h.yaml"
    path.write_text(
        "name: h\nprocesses: 1\nthreads: 1\nops: 100000\nseed: 1\nmix: {alloc: 1}\n"
        "sizes: {dist: uniform, min: 16, max: 64}\nworking_set: 10\n"
    )
    reports = tmp_path / "reports"
    opts = runner.Options(
        reports_dir=reports, run_id="r", progress_s=3600.0, time_limit_s=2.0, overrides={"hang_at": "1000"}
    )
    runner.run([spec.load(path)], opts)
    db = CrashDB(reports / "crashes.sqlite")
    (row,) = db.signatures()
    assert row.kind == "timeout" and "hang_forever" in row.title, row.title
    repro = db.reproducer(row.id)
    assert repro is not None and repro.timeout_s == 2.0
    t0 = time.monotonic()
    result = R.replay(repro, row.hash, runs=1, source="workload:h")
    assert time.monotonic() - t0 < 30
    assert result.reproduced == 1, result


# ---- pytest on a workload file named on the command line -------------------------------------------------


def test_pytest_runs_a_workload_file_named_on_its_command_line(tmp_path: Path) -> None:
    """The plugin collects YAML files in a folder named workloads/ (so that a repository's other YAML is
    left alone). `pytest ci/nightly.yaml`, a workload named on the command line, was "ERROR: not found:
    ci/nightly.yaml (no match in any of [<Dir ci>])", exit 4. A file the user names is a workload."""
    import subprocess

    ci = tmp_path / "ci"
    ci.mkdir()
    (ci / "nightly.yaml").write_text(
        "name: nightly\nprocesses: 1\nthreads: 1\nops: 2000\nseed: 1\nmix: {alloc: 1}\n"
        "sizes: {dist: uniform, min: 16, max: 64}\nworking_set: 10\n"
    )
    (ci / "other.yaml").write_text("not: a workload\n")  # in the folder, not named: not collected
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        "KPOOL_REPORTS": str(tmp_path / "r"),
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",  # the plugin: the kpool pytest11 entry point
            "ci/nightly.yaml",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout + proc.stderr


# ---- the program table of a run that never started ---------------------------------------------------------


def test_the_program_table_says_no_exit_status_for_a_program_that_never_ran() -> None:
    """`program: {command: [nosuchprog]}`: `kpool stress` printed `| p | kpool | - | - | glibc -/- | None |`,
    Python's None for the exit status of a program that was never started. Now "-", as the other
    figures it lacks."""
    from harness.stress.command import program_table

    result = {
        "name": "p",
        "allocator": "kpool",
        "figures": {},
        "ratios": {},
        "runs": [{"allocator": "kpool", "returncode": None}, {"allocator": "glibc", "returncode": None}],
        "integrity_errors": 0,
        "crashes": [],
        "passed": False,
    }
    row = program_table([result]).splitlines()[-1]
    assert "None" not in row and row.split("|")[6].strip() == "-", row
