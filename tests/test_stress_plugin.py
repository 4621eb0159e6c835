"""`kpool stress` on the command line and workloads as pytest items (JUnit XML included)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OK = """\
name: fine
processes: 2
ops: 5000
mix: {alloc: 2, free: 1}
sizes: {dist: uniform, min: 16, max: 512}
"""
CORRUPT = OK.replace("name: fine", "name: corrupt") + "planted: {stray_every: 1000}\n"
INVALID = OK.replace("name: fine", "name: invalid").replace("max: 512", "max: -512")


def run(cmd: list[str], cwd: Path, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    e = env()
    e.update(extra or {})
    return subprocess.run(cmd, cwd=cwd, env=e, capture_output=True, text=True, timeout=300, check=False)


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def test_cli_writes_the_report_and_fails_on_damage(tmp_path: Path) -> None:
    (tmp_path / "ok.yaml").write_text(OK)
    (tmp_path / "bad.yaml").write_text(CORRUPT)
    cmd = [sys.executable, "-m", "harness.cli", "stress", "ok.yaml", "bad.yaml"]
    proc = run([*cmd, "--reports", "r", "--run-id", "x"], tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "| fine | kpool |" in proc.stdout and "| ok |" in proc.stdout
    assert "| corrupt | kpool |" in proc.stdout and "| FAIL |" in proc.stdout
    assert "corrupt: broken: integrity_errors:" in proc.stderr
    report = json.loads((tmp_path / "r" / "x" / "stress.json").read_text())
    assert [w["passed"] for w in report["workloads"]] == [True, False]
    assert (tmp_path / "r" / "x" / "fine" / "main-worker-1.json").is_file()


def test_cli_names_a_missing_peer_package(tmp_path: Path) -> None:
    (tmp_path / "ok.yaml").write_text(OK)
    cmd = [sys.executable, "-m", "harness.cli", "stress", "ok.yaml", "--allocator", "nosuch"]
    proc = run(cmd, tmp_path)
    assert proc.returncode != 0
    assert "invalid choice: 'nosuch'" in proc.stderr


@pytest.mark.slow
def test_workloads_are_pytest_items_with_junit(tmp_path: Path) -> None:
    wdir = tmp_path / "workloads"
    wdir.mkdir()
    (wdir / "conftest.py").write_text((ROOT / "workloads" / "conftest.py").read_text())
    (wdir / "fine.yaml").write_text(OK)
    (wdir / "corrupt.yaml").write_text(CORRUPT)
    (wdir / "invalid.yaml").write_text(INVALID)
    junit = tmp_path / "x.xml"
    cmd = [sys.executable, "-m", "pytest", "workloads", "-n", "2", f"--junitxml={junit}"]
    proc = run([*cmd, "-p", "no:cacheprovider"], tmp_path, {"KPOOL_REPORTS": str(tmp_path / "reports")})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    cases = {c.get("name"): c for c in ET.parse(junit).getroot().iter("testcase")}
    assert set(cases) == {"fine", "corrupt", "invalid"}
    assert cases["fine"].find("failure") is None
    corrupt = cases["corrupt"].find("failure")
    assert corrupt is not None and "broken: integrity_errors" in (corrupt.text or "")
    assert "damaged block: worker" in (corrupt.text or "")
    invalid = cases["invalid"].find("failure")
    assert invalid is not None
    text = invalid.text or ""
    assert "invalid.yaml:5:" in text and "sizes.max: negative size -512" in text


@pytest.mark.slow
def test_interrupted_run_keeps_what_finished(tmp_path: Path) -> None:
    (tmp_path / "ok.yaml").write_text(OK)
    long = OK.replace("name: fine", "name: long").replace("ops: 5000", "duration_ms: 20000")
    (tmp_path / "long.yaml").write_text(long)
    cmd = [
        sys.executable,
        "-m",
        "harness.cli",
        "stress",
        "ok.yaml",
        "long.yaml",
        "--reports",
        "r",
        "--run-id",
        "x",
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    report_path = tmp_path / "r" / "x" / "stress.json"
    deadline = time.monotonic() + 30
    while not report_path.exists() and time.monotonic() < deadline:  # the first workload is done
        time.sleep(0.05)
    time.sleep(0.5)  # the long one is under way
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    report = json.loads(report_path.read_text())
    assert report["interrupted"] is True
    fine, cut = report["workloads"]
    assert fine["passed"] and fine["ops"] > 0
    assert cut["interrupted"] and not cut["passed"] and cut["crashes"] == []


def test_a_configuration_error_fails_the_item_with_its_message(tmp_path: Path) -> None:
    # the file is valid (a peer never reads KPOOL_CONF); run on kpool, the runner's check refuses it
    wdir = tmp_path / "workloads"
    wdir.mkdir()
    (wdir / "conftest.py").write_text((ROOT / "workloads" / "conftest.py").read_text())
    (wdir / "peer.yaml").write_text(OK.replace("name: fine", "name: peer") + "allocator: glibc\n")
    junit = tmp_path / "x.xml"
    cmd = [sys.executable, "-m", "pytest", "workloads", f"--junitxml={junit}", "-p", "no:cacheprovider"]
    extra = {"KPOOL_REPORTS": str(tmp_path / "reports"), "KPOOL_ALLOCATOR": "kpool", "KPOOL_CONF": "bogus:1"}
    proc = run(cmd, tmp_path, extra)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    failure = next(ET.parse(junit).getroot().iter("testcase")).find("failure")
    assert failure is not None
    text = failure.text or ""
    assert "configuration error: KPOOL_CONF=bogus:1" in text and "unknown option 'bogus'" in text
    assert "Traceback" not in text and "runner.py" not in text
    assert not list((tmp_path / "reports").rglob("*-worker-*"))
