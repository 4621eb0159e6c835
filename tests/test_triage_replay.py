"""Replay, recheck and minimise against fake reproducers: small Python scripts that print a sanitizer
report and fail, always, on a fixed pattern of runs, or only while the workload is big enough."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import cli
from harness.errors import KpoolError
from harness.triage import minimize as M
from harness.triage import replay as R
from harness.triage import signature as S
from harness.triage.crash import Crash, Reproducer
from harness.triage.db import CrashDB

REPORT = (
    "==7==ERROR: AddressSanitizer: heap-use-after-free on address 0x604000000090 at pc 0x1 bp 0x2 sp 0x3\n"
    "WRITE of size 1 at 0x604000000090 thread T0\n"
    "    #0 0x5654029bcefe in kp__central_give /src/alloc.c:6:77\n"
    "    #1 0x5654029bcf4f in kp_free /src/alloc.c:7:71\n"
)
SIG = S.compute(REPORT)

# Arguments key=value. Run number n (from a counter file) crashes when pattern[n % len] is "1", ops >=
# min_ops and threads >= min_threads; otherwise it exits 0 having printed nothing of note.
CRASHER = f"""
import pathlib, sys
a = dict(x.split("=", 1) for x in sys.argv[1:])
counter = pathlib.Path(a["counter"])
n = int(counter.read_text()) if counter.exists() else 0
counter.write_text(str(n + 1))
pattern = a.get("pattern", "1")
big = int(a.get("ops", 1)) >= int(a.get("min_ops", 0))
big = big and int(a.get("threads", 1)) >= int(a.get("min_threads", 0))
if pattern[n % len(pattern)] == "1" and big:
    sys.stderr.write({REPORT!r})
    sys.exit(1)
print("clean run")
"""

# A libFuzzer look-alike: -minimize_crash=1 writes a one-byte "X" to -exact_artifact_path; otherwise it
# crashes on an input holding an X.
FUZZER = f"""
import pathlib, sys
flags = dict(x[1:].split("=", 1) for x in sys.argv[1:] if x.startswith("-"))
path = pathlib.Path([x for x in sys.argv[1:] if not x.startswith("-")][0])
if flags.get("minimize_crash") == "1":
    pathlib.Path(flags["exact_artifact_path"]).write_bytes(b"X")
    sys.exit(0)
if b"X" in path.read_bytes():
    sys.stderr.write({REPORT!r})
    sys.exit(1)
"""


@pytest.fixture
def crasher(tmp_path: Path) -> Path:
    path = tmp_path / "crasher.py"
    path.write_text(CRASHER)
    return path


def repro(crasher: Path, tmp_path: Path, **args: str) -> Reproducer:
    argv = [sys.executable, str(crasher), f"counter={tmp_path / 'counter'}"] + [
        f"{k}={v}" for k, v in args.items()
    ]
    return Reproducer(argv=tuple(argv), timeout_s=20)


def test_replay_rate_of_a_deterministic_and_a_flaky_crash(crasher: Path, tmp_path: Path) -> None:
    assert R.replay(repro(crasher, tmp_path), SIG.hash, runs=2).rate == 1.0
    (tmp_path / "counter").unlink()
    flaky = R.replay(repro(crasher, tmp_path, pattern="1000"), SIG.hash, runs=4)
    assert (flaky.reproduced, flaky.rate) == (1, 0.25)
    assert flaky.others == {"no crash (exit 0)": 3}  # issue 15: never "unknown"


def test_a_hung_reproducer_is_a_timeout(tmp_path: Path) -> None:
    hang = Reproducer(argv=(sys.executable, "-c", "import time; time.sleep(30)"), timeout_s=0.5)
    outcome = R.run_once(hang, source="grow")
    assert outcome.timed_out
    assert outcome.signature.title == "timeout in grow"


def test_placeholders_are_filled_from_fields_and_meta(tmp_path: Path) -> None:
    r = Reproducer(
        argv=("run", "${workload}", "--ops=${ops}", "--x=${x}"),
        kind="workload",
        workload="w.yaml",
        ops=9,
        meta={"x": 2},
    )
    assert r.command()[0] == ["run", "w.yaml", "--ops=9", "--x=2"]


def test_recheck_marks_fixed_known_and_flaky(crasher: Path, tmp_path: Path) -> None:
    db = CrashDB(tmp_path / "c.sqlite")
    ids = {}
    for name, pattern in (("always", "1"), ("never", "0"), ("half", "10")):
        # Each signature needs its own frames: rewrite the function name per case.
        script = tmp_path / f"{name}.py"
        script.write_text(CRASHER.replace("kp_free", f"kp_{name}"))
        r = Reproducer(
            argv=(sys.executable, str(script), f"counter={tmp_path / name}", f"pattern={pattern}"),
            timeout_s=20,
        )
        text = REPORT.replace("kp_free", f"kp_{name}")
        ids[name] = db.record(Crash(text=text, run_id="r1", source="api", reproducer=r)).signature_id
    db.record(Crash(text="kpool: SLO broken: p99: 9 > 1", run_id="r1", source="churn"))  # no reproducer
    statuses = R.recheck(db, runs=2)
    assert [statuses[ids[n]] for n in ("always", "never", "half")] == ["known", "fixed", "flaky"]
    assert db.get(ids["half"]).repro_rate == 0.5
    assert sorted(statuses.values()).count("new") == 1  # the SLO signature keeps its status


def test_minimize_workload_cuts_ops_and_threads_while_it_still_crashes(crasher: Path, tmp_path: Path) -> None:
    base = repro(crasher, tmp_path, ops="${ops}", threads="${threads}", min_ops="300", min_threads="2")
    base = base.evolve(kind="workload", ops=1000, threads=8, processes=4)  # processes: not in argv, not cut
    done = M.minimize_workload(base, SIG.hash, attempts=1)
    assert (done.reproducer.ops, done.reproducer.threads, done.reproducer.processes) == (375, 2, 4)
    assert done.steps[0] == "threads 8 -> 4"


def test_minimize_retries_a_flaky_step(crasher: Path, tmp_path: Path) -> None:
    # Crashes on one run in three: with three attempts per step every cut still gets through.
    base = repro(crasher, tmp_path, ops="${ops}", pattern="001").evolve(kind="workload", ops=64)
    done = M.minimize_workload(base, SIG.hash, attempts=3)
    assert done.reproducer.ops == 1


def test_a_pluggable_shrink_function(crasher: Path, tmp_path: Path) -> None:
    base = repro(crasher, tmp_path, ops="${ops}").evolve(kind="workload", ops=5)

    def minus_one(r: Reproducer) -> Iterator[Reproducer]:
        if r.ops and r.ops > 1:
            yield r.evolve(ops=r.ops - 1)

    assert M.minimize_workload(base, SIG.hash, shrink=minus_one, attempts=1).reproducer.ops == 1
    named = base.evolve(meta={"shrink": "no.such.module:shrink"})
    with pytest.raises(KpoolError, match="cannot be loaded"):
        M.minimize_workload(named, SIG.hash)


def test_minimize_fuzz_input_with_libfuzzer_flags(tmp_path: Path) -> None:
    fuzzer = tmp_path / "fuzzer.py"
    fuzzer.write_text(FUZZER)
    crash_input = tmp_path / "crash-1"
    crash_input.write_bytes(b"abcXdef" * 10)
    r = Reproducer(
        argv=(sys.executable, str(fuzzer), str(crash_input)),
        kind="fuzz",
        input_path=str(crash_input),
        timeout_s=20,
    )
    done = M.minimize(r, SIG.hash)
    assert done.reproducer.input_path and Path(done.reproducer.input_path).read_bytes() == b"X"
    assert done.reproducer.argv[-1] == done.reproducer.input_path
    assert R.replay(done.reproducer, SIG.hash, runs=1).rate == 1.0


def test_cli_list_show_replay_minimize_recheck(
    crasher: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.sqlite"
    r = repro(crasher, tmp_path, ops="${ops}", min_ops="10").evolve(
        kind="workload", ops=100, seed=7, worker=2
    )
    sid = (
        CrashDB(path)
        .record(Crash(text=REPORT, run_id="r1", source="churn", returncode=1, reproducer=r))
        .signature_id
    )
    db = ["triage", "--db", str(path)]

    assert cli.main([*db, "list"]) == 0
    out = capsys.readouterr().out
    assert "| 1 | new | 1 | heap-use-after-free | heap-use-after-free in kp__central_give < kp_free |" in out

    assert cli.main([*db, "show", str(sid)]) == 0
    out = capsys.readouterr().out
    assert "ops=100" in out and "latest text:" in out and '"seed": 7' in out

    assert cli.main([*db, "replay", str(sid), "-n", "2"]) == 0
    assert "reproduced 2 of 2 (100%)" in capsys.readouterr().out

    assert cli.main([*db, "minimize", str(sid)]) == 0
    # 100 -> 1 no, 50, 25, 12 (each halving kept), then 1, 6 and 9 fail: greedy, not exact.
    assert "ops 100 -> 50; ops 50 -> 25; ops 25 -> 12" in capsys.readouterr().out
    assert CrashDB(path).reproducer(sid).ops == 12  # type: ignore[union-attr]

    assert cli.main([*db, "recheck", "-n", "1"]) == 3  # still crashing
    assert "known" in capsys.readouterr().out
    assert cli.main([*db, "show", "999"]) == 2  # no such signature: a usage error


def test_a_minimised_fuzz_input_that_does_not_crash_is_not_left_beside_the_input(tmp_path: Path) -> None:
    """`kpool triage minimize` said "none of 1 smaller candidates reproduces; the reproducer is kept as it
    is" and left the candidate in the run's crashes/ folder (minimized-<hash>-<input>), which reads as the
    minimised reproducer."""
    fuzzer = tmp_path / "fuzzer.py"
    fuzzer.write_text(FUZZER.replace('write_bytes(b"X")', 'write_bytes(b"Y")'))
    crash_input = tmp_path / "crash-1"
    crash_input.write_bytes(b"abcXdef")
    r = Reproducer(
        argv=(sys.executable, str(fuzzer), str(crash_input)), kind="fuzz", input_path=str(crash_input)
    )
    done = M.minimize(r, SIG.hash)
    assert done.reproducer.input_path == str(crash_input)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crash-1", "fuzzer.py"]


def test_a_second_libfuzzer_pass_when_the_first_ends_on_another_crash(tmp_path: Path) -> None:
    """libFuzzer's -minimize_crash keeps any smaller input that crashes, not one that crashes the same way.
    When its one pass ended on another crash (or on nothing), minimisation kept no input: CI saw
    `kpool triage minimize` of planted bug 1 keep none once (test_campaign_e2e) where 25 of 25 local runs
    kept one. Here the first pass writes "Y" (no crash), the second the "X" that crashes the same way."""
    fuzzer = tmp_path / "fuzzer.py"
    counted = FUZZER.replace(
        'write_bytes(b"X")',
        'write_bytes(b"Y" if not (path.parent / "passes").exists() else b"X");'
        ' (path.parent / "passes").touch()',
    )
    fuzzer.write_text(counted)
    crash_input = tmp_path / "crash-1"
    crash_input.write_bytes(b"abcXdef" * 10)
    r = Reproducer(
        argv=(sys.executable, str(fuzzer), str(crash_input)), kind="fuzz", input_path=str(crash_input)
    )
    done = M.minimize(r, SIG.hash)
    assert done.reproducer.input_path != str(crash_input), done
    assert Path(done.reproducer.input_path).read_bytes() == b"X"
    assert done.tried == 2
