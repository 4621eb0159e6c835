"""A plain, non-editable install works from any directory: the wheel ships the allocator sources, the seed
corpora and the workloads, and builds its other variants into a cache folder of its own.

Slow: it builds a wheel and runs every main command from a fresh virtual environment, in a folder that is
not the checkout. The venv sees the machine's site-packages for the dependencies (atheris, psutil...), so
the test needs no download but the build backend; the package itself must come from the wheel.

KPOOL_INSTALL_SOURCE names another source tree to install (to see this test fail on an older commit).
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SOURCE = Path(os.environ.get("KPOOL_INSTALL_SOURCE") or Path(__file__).resolve().parents[1])
# Building the wheel compiles libkpool and the op driver; the fuzz variant is a clang build.
BUILD_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A venv with kpool installed from a wheel, and the environment to run it from elsewhere."""
    root = tmp_path_factory.mktemp("install")
    wheels = root / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(SOURCE)],
        check=True,
        timeout=BUILD_TIMEOUT_S,
    )
    (wheel,) = wheels.glob("kpool-*.whl")
    env_dir = root / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=True)
    py = env_dir / "bin" / "python"
    # The dependencies are this interpreter's: on a fresh machine they are in the venv set-up made, and the
    # base interpreter (all system_site_packages gives) has none of them (CI failed here on a new machine:
    # no psutil, hdrh, atheris). Its folders go in as plain paths after the venv's own, not as site
    # folders, so that their .pth files (this checkout's editable install) are not read.
    here = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(site) / "kpool-test-deps.pth").write_text("".join(f"{d}\n" for d in sorted(here)))
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True)
    env = {
        **os.environ,
        "PATH": f"{env_dir / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "KPOOL_CACHE": str(root / "cache"),
        "PYTHONPATH": "",
        "KPOOL_REPORTS": "",
    }
    env.pop("KPOOL_LIB", None)
    env.pop("KPOOL_KPDRIVE", None)
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    return {"env": env, "cwd": str(elsewhere), "py": str(py), "cache": str(root / "cache")}


def kpool(installed: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(installed["py"]).parent / "kpool"), *args],
        cwd=installed["cwd"],
        env=installed["env"],  # type: ignore[arg-type]
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_the_package_comes_from_the_wheel(installed: dict[str, str]) -> None:
    proc = subprocess.run(
        [installed["py"], "-c", "import harness; print(harness.__file__)"],
        cwd=installed["cwd"],
        env=installed["env"],  # type: ignore[arg-type]
        capture_output=True,
        text=True,
        check=True,
    )
    assert "/venv/lib/" in proc.stdout, proc.stdout


def test_build_variants_into_the_cache(installed: dict[str, str]) -> None:
    proc = kpool(installed, "build", "--variant", "fuzz")
    assert proc.returncode == 0, proc.stderr
    lib = Path(proc.stdout.strip())
    assert lib.is_file() and lib.is_relative_to(installed["cache"]), proc.stdout


def test_fuzz_from_elsewhere(installed: dict[str, str]) -> None:
    proc = kpool(installed, "fuzz", "conf", "--time", "5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| conf |" in proc.stdout
    runs = list((Path(installed["cwd"]) / "reports").glob("fuzz-*/fuzz.json"))
    assert runs, "no fuzz report under ./reports"


def test_stress_a_shipped_workload(installed: dict[str, str]) -> None:
    proc = subprocess.run(
        [installed["py"], "-c", "from harness import paths; print(paths.workloads())"],
        env=installed["env"],  # type: ignore[arg-type]
        capture_output=True,
        text=True,
        check=True,
    )
    workload = Path(proc.stdout.strip()) / "steady-small.yaml"
    assert workload.is_file(), workload
    proc = kpool(installed, "stress", str(workload))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "steady-small" in proc.stdout


def test_bench_from_elsewhere(installed: dict[str, str]) -> None:
    proc = kpool(installed, "bench", "--workloads", "a", "--runs", "1", "--allocators", "kpool,glibc")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| a |" in proc.stdout


def test_campaign_from_elsewhere(installed: dict[str, str]) -> None:
    proc = kpool(installed, "campaign", "--budget", "20s", timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    reports = Path(installed["cwd"]) / "reports"
    assert list(reports.glob("*/index.html")), sorted(p.name for p in reports.iterdir())
