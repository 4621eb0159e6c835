"""Integrity errors without a crash (issue 15, point 5): pattern damage the driver found and integrity events
the allocator counted, in a worker that exited 0, become a crash record with a signature in the crash
database and a reproduce line that shows the damage again."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness import cli, spec
from harness.stress import integrity, runner
from harness.triage import replay as R
from harness.triage.db import CrashDB

SMALL = """\
name: {name}
processes: 1
ops: 20000
mix: {{alloc: 2, free: 1, realloc: 1}}
sizes: {{dist: loguniform, min: 16, max: 8k}}
working_set: 500
"""


def _workload(tmp_path: Path, planted: str, name: str = "damaged") -> spec.Workload:
    path = tmp_path / f"{name}.yaml"
    path.write_text(SMALL.format(name=name) + f"planted: {{{planted}}}\n")
    return spec.load(path)


def _run(tmp_path: Path, wl: spec.Workload) -> dict[str, Any]:
    opts = runner.Options(reports_dir=tmp_path / "reports", run_id="r", progress_s=3600)
    return runner.run([wl], opts)


def test_pattern_damage_without_a_crash_is_a_crash_record_that_replays(tmp_path: Path) -> None:
    wl = _workload(tmp_path, "stray_every: 5000")
    report = _run(tmp_path, wl)
    [r] = report["workloads"]
    assert r["workers"][0]["returncode"] == 0  # no crash: the driver found the damage and went on
    [c] = r["crashes"]
    assert c["kind"] == "integrity", c
    assert "pattern damage" in c["message"], c["message"]
    assert c["signature"], c
    db = CrashDB.open(tmp_path / "reports" / "crashes.sqlite")
    [sig] = db.signatures()
    assert sig.kind == "integrity-pattern-damage", sig
    assert "workload:damaged" in sig.title, sig.title
    # the reproduce line shows the damage again, and triage replays it to the same signature
    proc = subprocess.run(shlex.split(c["reproducer"]["command"]), capture_output=True, text=True, timeout=60)
    assert proc.returncode == integrity.EXIT_DAMAGE, proc.stderr
    assert "pattern-damage" in proc.stderr
    repro = db.reproducer(sig.id)
    assert repro is not None
    outcome = R.run_once(repro, db.source(sig.id))
    assert outcome.signature.hash == sig.hash, outcome


def test_an_integrity_event_counted_by_kpool_is_a_crash_record(tmp_path: Path) -> None:
    wl = _workload(tmp_path, "overrun_every: 1000", name="overrun")
    [r] = _run(tmp_path, wl)["workloads"]
    [c] = r["crashes"]
    assert c["kind"] == "integrity", c
    [sig] = CrashDB.open(tmp_path / "reports" / "crashes.sqlite").signatures()
    assert sig.kind == "integrity-overflow", sig  # kp_free found the overrun (kpool counted it)


def test_tolerated_integrity_errors_are_no_crash(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(
        SMALL.format(name="ok") + "planted: {stray_every: 5000}\nslo: {max_integrity_errors: 1000000}\n"
    )
    [r] = _run(tmp_path, spec.load(path))["workloads"]
    assert r["integrity_errors"] > 0 and r["crashes"] == [], r["crashes"]


def test_kpool_stress_prints_the_integrity_crash_with_its_reproduce_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wl = _workload(tmp_path, "stray_every: 5000")
    code = cli.main(["stress", wl.path, "--reports", str(tmp_path / "reports"), "--jobs", "1"])
    err = capsys.readouterr().err
    assert code == 1
    assert "worker 0 integrity: " in err and "reproduce: " in err, err
    assert "kpool triage" in err and "1 crash(es) recorded" in err, err


# ---- the reproduce line's own command line, given bad arguments ---------------------------------------


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        ([], "usage"),
        (["--bogus"], "--bogus"),
        (["/nonexistent/kpdrive"], "/nonexistent/kpdrive"),
        (["/"], "/"),  # a folder
        (["/etc/hostname"], "/etc/hostname"),  # not executable
        (["true"], "no result"),  # runs, but is no kpdrive
    ],
)
def test_the_reproduce_module_given_bad_arguments_says_what_and_exits_2(argv: list[str], named: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", integrity.MODULE, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert named in proc.stderr, proc.stderr


def test_the_reproduce_module_has_help() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", integrity.MODULE, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0 and "KPDRIVE" in proc.stdout, proc
