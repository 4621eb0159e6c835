"""The set-up installs what the build variants and the tests need, on a fresh machine too.

CI runs on a machine where everything ever installed is still there, so a package missing from
scripts/setup.sh goes unseen until a newcomer's first command fails (libclang-rt-14-dev, a mere
recommendation of clang, was one). This test needs no fresh machine: for every system file in
`kpool doctor`'s table it asks dpkg which package owns the file, and checks that the package is in the
dependency closure of what setup.sh installs with --no-install-recommends (Depends and Pre-Depends only,
the first alternative of each `a | b`, virtual packages by their first provider).

`kpool doctor` itself is tested here too: a missing capability is named with what it disables and the
package that brings it, and the command fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness import doctor

ROOT = Path(__file__).resolve().parents[1]
SETUP = ROOT / "scripts" / "setup.sh"

pytestmark = pytest.mark.skipif(shutil.which("dpkg") is None, reason="not a Debian machine")


def setup_packages() -> list[str]:
    m = re.search(r"^PACKAGES=\(([^)]*)\)", SETUP.read_text(), re.M)
    assert m, "scripts/setup.sh has no PACKAGES=(...) line"
    return m[1].split()


def owner(path: Path) -> str:
    """The Debian package that ships path (the path as found, resolved, or across the /usr merge)."""
    candidates = [path, path.resolve()]
    for p in list(candidates):
        s = str(p)
        if s.startswith("/usr/lib/") or s.startswith("/usr/bin/"):
            candidates.append(Path(s.removeprefix("/usr")))
        elif s.startswith("/lib/") or s.startswith("/bin/"):
            candidates.append(Path("/usr" + s))
    for p in candidates:
        proc = subprocess.run(["dpkg", "-S", str(p)], capture_output=True, text=True, check=False)
        for line in proc.stdout.splitlines():
            if line.startswith("diversion "):
                continue
            pkgs, _, _ = line.partition(": ")
            return pkgs.split(",")[0].strip().split(":")[0]
    raise AssertionError(f"dpkg knows no package that ships {path}")


def closure(roots: list[str]) -> set[str]:
    """The packages apt installs for roots without recommends: parsed from `apt-cache depends`."""
    proc = subprocess.run(
        ["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
         "--no-breaks", "--no-replaces", "--no-enhances", *roots],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"apt-cache depends failed (run apt-get update?): {proc.stderr.strip()}"
    # package -> list of alternative groups, each a list of (name, providers)
    graph: dict[str, list[list[tuple[str, list[str]]]]] = {}
    current: list[list[tuple[str, list[str]]]] = []
    open_or = False
    for line in proc.stdout.splitlines():
        if not line.startswith(" "):
            current = graph.setdefault(line.strip(), [])
            open_or = False
            continue
        if line.startswith("    "):  # a provider of the virtual package just above
            current[-1][-1][1].append(line.strip())
            continue
        m = re.match(r" ([ |])(\w[\w-]*): (.+)$", line)
        if not m or m[2] not in ("Depends", "PreDepends"):
            open_or = False
            continue
        alternative = (m[3].strip(), [])
        if open_or:
            current[-1].append(alternative)
        else:
            current.append([alternative])
        open_or = m[1] == "|"
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        pkg = todo.pop()
        if pkg in seen:
            continue
        seen.add(pkg)
        for group in graph.get(pkg, []):
            name, providers = group[0]
            if name.startswith("<"):
                if providers:
                    todo.append(providers[0])
            else:
                todo.append(name)
    return seen


def test_every_needed_system_file_comes_with_setup() -> None:
    packages = setup_packages()
    installed = closure(packages)
    missing = []
    for finding in doctor.check():
        cap = finding.capability
        if not cap.package:  # Python packages and kpool's own files: pip brings them
            continue
        if finding.found is None:
            missing.append(f"{cap.name}: not on this machine (setup.sh should install {cap.package})")
            continue
        pkg = owner(finding.found)
        if pkg not in installed:
            missing.append(f"{cap.name}: {finding.found} is in {pkg}, which setup.sh does not install")
    assert not missing, "\n".join(missing)


def test_closure_follows_depends_but_not_recommends() -> None:
    """The closure must be able to fail: clang recommends compiler-rt but does not depend on it."""
    got = closure(["clang"])
    assert "clang-14" in got and "libclang-rt-14-dev" not in got


def test_doctor_names_what_is_missing_and_fails(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"  # a PATH with Python alone: no compiler, clang, strace, chromium...
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    env = {**os.environ, "PATH": str(bin_dir)}
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "doctor"], capture_output=True, text=True, env=env, check=False
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rows = {line.split("|")[2].strip(): line for line in proc.stdout.splitlines() if "MISSING" in line}
    assert "apt-get install clang" in rows["clang"]
    assert "kpool fuzz" in rows["clang"]
    assert "apt-get install strace" in rows["strace"]
    assert "apt-get install build-essential" in rows["C compiler and make"]
    assert "capabilities missing" in proc.stderr and "Traceback" not in proc.stderr


def test_doctor_passes_on_a_set_up_machine() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "doctor"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
