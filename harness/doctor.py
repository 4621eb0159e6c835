"""`kpool doctor`: every capability kpool uses, whether this machine has it, what a missing one disables
and what brings it (a Debian package, or a pip command for Python packages).

The table below is also the list of system files the build variants and the tests need: the test of the
set-up (tests/test_setup_packages.py) asks dpkg which package owns each file found here and checks that
scripts/setup.sh installs it, recommends left out.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness import build, output, paths, peers
from harness.errors import KpoolError


@dataclass(frozen=True)
class Capability:
    name: str
    disables: str  # what a machine without it cannot do
    remedy: str  # what brings it: `apt-get install PKG` or a pip command
    find: Callable[[], Path | None]  # the file that proves it, None when missing
    package: str = ""  # the Debian package that brings it ("" for Python packages and our own files)


@dataclass(frozen=True)
class Finding:
    capability: Capability
    found: Path | None
    detail: str = ""  # why it is missing, when the check itself failed

    @property
    def ok(self) -> bool:
        return self.found is not None


def _command(name: str) -> Callable[[], Path | None]:
    def find() -> Path | None:
        path = shutil.which(name)
        return Path(path) if path else None

    return find


def _both(first: Callable[[], Path | None], second: Callable[[], Path | None]) -> Callable[[], Path | None]:
    """The second one's file, when both are present."""

    def find() -> Path | None:
        return second() if first() is not None else None

    return find


def _clang_file(relative: str) -> Callable[[], Path | None]:
    """A file of clang's resource directory (where clang looks for it), else any LLVM's on the machine."""
    return lambda: peers.clang_resource_file(relative)


def _gcc_file(name: str) -> Callable[[], Path | None]:
    """A runtime of gcc's sanitizers, where gcc links it from."""

    def find() -> Path | None:
        gcc = shutil.which("gcc")
        if not gcc:
            return None
        proc = subprocess.run(
            [gcc, f"-print-file-name={name}"], capture_output=True, text=True, errors="replace", check=False
        )
        path = Path(proc.stdout.strip())
        return path if proc.returncode == 0 and path.is_absolute() and path.exists() else None

    return find


def _command_path(path: str) -> Callable[[], Path | None]:
    """A program at a fixed path (a shell builtin of the same name would hide it from PATH lookups)."""

    def find() -> Path | None:
        return Path(path) if Path(path).is_file() else None

    return find


def _preload() -> Path:
    """The preload library: the shipped copy, or the checkout's release build (never built here)."""
    for path in (
        paths.PACKAGED_LIB_DIR / "libkpool-preload.so",
        paths.build_dir("release") / "libkpool-preload.so",
    ):
        if path.is_file():
            return path
    raise KpoolError("libkpool-preload.so not found")


def _python_module(module: str) -> Callable[[], Path | None]:
    def find() -> Path | None:
        spec = importlib.util.find_spec(module)
        return Path(spec.origin) if spec and spec.origin else None

    return find


def _atheris_runtime() -> Path | None:
    from harness.fuzz import env as fuzz_env

    try:
        return fuzz_env.runtime_path()
    except KpoolError:
        return None


def _ours(find: Callable[[], Path]) -> Callable[[], Path | None]:
    def checked() -> Path | None:
        try:
            path = find()
        except KpoolError:
            return None
        return path if path.exists() else None

    return checked


def _build_folder() -> Path | None:
    """Where `make` writes the variants; an installed kpool's cache that cannot hold it is missing, with
    paths.usable_build_root's reason (the variable that chose it) as the detail."""
    try:
        return paths.usable_build_root()
    except KpoolError as exc:
        raise OSError(str(exc)) from exc


def _program_requirements() -> list[tuple[str, str, list[str]]]:
    """(command, Debian package, the program workloads that need it) from the shipped program workloads'
    `requires` (workloads/programs/*.yaml): each is a capability, declared once, in its workload."""
    import yaml

    found: dict[tuple[str, str], list[str]] = {}
    try:
        files = sorted((paths.workloads() / "programs").glob("*.yaml"))
    except OSError:
        return []
    for path in files:
        try:
            doc = yaml.safe_load(path.read_text())
            requires = doc["program"].get("requires", {})
        except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError):
            continue  # a broken workload is the loader's to report
        for cmd, pkg in requires.items():
            found.setdefault((str(cmd), str(pkg)), []).append(str(doc.get("name", path.stem)))
    return [(cmd, pkg, names) for (cmd, pkg), names in sorted(found.items())]


def _python_tests() -> Path | None:
    """CPython's own regression tests (the `test` package) of the interpreter kpool runs on."""
    spec = importlib.util.find_spec("test.regrtest")
    return Path(spec.origin) if spec is not None and spec.origin else None


def _peer(alloc: peers.Allocator) -> Capability:
    return Capability(
        f"peer allocator {alloc.name}",
        f"{alloc.name} in `kpool bench` and `kpool stress --allocator {alloc.name}`",
        f"apt-get install {alloc.package}",
        lambda: peers.find_library(alloc.soname),
        alloc.package,
    )


REINSTALL = "pip install --force-reinstall kpool (or run from a source checkout)"

CAPABILITIES: tuple[Capability, ...] = (
    Capability(
        "C compiler and make",
        "building libkpool, the op driver and every variant",
        "apt-get install build-essential",
        _both(_command("make"), _command("cc")),
        "build-essential",
    ),
    Capability(
        "gcc's ASan and UBSan runtimes",
        "the C tests under ASan+UBSan (make VARIANT=asan test)",
        "apt-get install build-essential",
        _both(_gcc_file("libasan.so"), _gcc_file("libubsan.so")),
        "build-essential",
    ),
    Capability(
        "gcc's TSan runtime",
        "the C tests under TSan (make VARIANT=tsan test)",
        "apt-get install build-essential",
        _gcc_file("libtsan.so"),
        "build-essential",
    ),
    Capability(
        "clang",
        "the fuzz and coverage variants: kpool fuzz, kpool campaign's fuzzing",
        "apt-get install clang",
        _command("clang"),
        "clang",
    ),
    Capability(
        "sanitizer headers (compiler-rt)",
        "the fuzz variant (it includes <sanitizer/asan_interface.h>): kpool fuzz, kpool campaign",
        "apt-get install libclang-rt-14-dev",
        _clang_file("include/sanitizer/asan_interface.h"),
        "libclang-rt-14-dev",
    ),
    Capability(
        "llvm-symbolizer",
        "function names and lines in sanitizer reports (crash signatures fall back to raw addresses)",
        "apt-get install llvm",
        _command("llvm-symbolizer"),
        "llvm",
    ),
    Capability(
        "addr2line",
        "source files and function names in fuzz coverage and in the op driver's crash backtraces",
        "apt-get install binutils",
        _command("addr2line"),
        "binutils",
    ),
    Capability(
        "strace",
        "the test proving that the allocation path makes no system call in steady state",
        "apt-get install strace",
        _command("strace"),
        "strace",
    ),
    Capability(
        "valgrind",
        "the instruction-count tests of kp_alloc and kp_free (callgrind: tests/test_instruction_counts.py)",
        "apt-get install valgrind",
        _command("valgrind"),
        "valgrind",
    ),
    Capability(
        "clang-format",
        "the C format check in scripts/test.sh (allocator/'s .c and .h against .clang-format)",
        "apt-get install clang-format",
        _command("clang-format"),
        "clang-format",
    ),
    Capability(
        "gdb",
        "every thread's user-space stack when a stress worker hangs (without it: /proc's kernel stacks)",
        "apt-get install gdb",
        _command("gdb"),
        "gdb",
    ),
    Capability(
        "chromium",
        "the test that renders the HTML report in a headless browser",
        "apt-get install chromium",
        _command("chromium"),
        "chromium",
    ),
    *(_peer(a) for a in peers.ALLOCATORS if a.package),  # kpool's own preload is ours, below
    Capability(
        "GNU time",
        "exact peak RSS of a program in `kpool run` (without it the figure is an upper bound)",
        "apt-get install time",
        _command_path("/usr/bin/time"),
        "time",
    ),
    *(
        Capability(
            f"{cmd} (program workloads)",
            f"the program workload(s) {', '.join(names)} (kpool stress, kpool bench --programs, CI)",
            f"apt-get install {pkg}",
            _command(cmd),
            pkg,
        )
        for cmd, pkg, names in _program_requirements()
    ),
    Capability(
        "CPython's regression tests",
        "the cpython-tests program workload (the interpreter's own `test` package)",
        "an interpreter with its test suite (Debian's python3: apt-get install libpython3-testsuite)",
        _python_tests,
    ),
    Capability(
        "atheris and its libFuzzer+ASan runtime",
        "fuzzing: kpool fuzz, kpool campaign's fuzz jobs",
        "pip install atheris",
        _atheris_runtime,
    ),
    *(
        Capability(f"Python package {dist}", what, f"pip install {dist}", _python_module(module))
        for module, dist, what in (
            ("psutil", "psutil", "kpool stress (worker monitoring)"),
            ("yaml", "pyyaml", "loading workloads"),
            ("hdrh", "hdrhistogram", "latency logs in HdrHistogram's format"),
            ("xdist", "pytest-xdist", "pytest workloads -n auto"),
            ("distributed", "distributed", "kpool campaign --cluster (Dask)"),
        )
    ),
    Capability(
        "libkpool (release)",
        "everything: the library the harness loads",
        REINSTALL,
        _ours(build.packaged_library),
    ),
    Capability(
        "libkpool-preload (release)",
        "kpool under real programs: kpool run, the kpool-preload peer",
        REINSTALL,
        _ours(_preload),
    ),
    Capability(
        "allocator sources",
        "building any other variant (fuzz, coverage, sanitizers, planted bugs) and kpool bench",
        REINSTALL,
        _ours(lambda: paths.allocator_sources() / "Makefile"),
    ),
    Capability(
        "a folder to build in",
        "building any other variant (fuzz, coverage, sanitizers, planted bugs) and kpool bench",
        "set KPOOL_CACHE to a folder kpool may write in (an installed kpool builds in its cache)",
        _build_folder,
    ),
    Capability(
        "seed corpora",
        "fuzzing from the committed seeds and dictionaries",
        REINSTALL,
        _ours(lambda: paths.corpora() / "api_sequence"),
    ),
    Capability(
        "shipped workloads",
        "kpool campaign's workloads and the workload schema",
        REINSTALL,
        _ours(lambda: paths.workloads() / "schema.json"),
    ),
)


def check(capabilities: tuple[Capability, ...] = CAPABILITIES) -> list[Finding]:
    findings = []
    for cap in capabilities:
        try:
            findings.append(Finding(cap, cap.find()))
        except (
            OSError,
            subprocess.SubprocessError,
        ) as exc:  # a check that cannot run is a missing capability
            findings.append(Finding(cap, None, str(exc)))
    return findings


def main() -> int:
    """Print the table; exit 1 when anything is missing (scripts/setup.sh fails on it)."""
    findings = check()
    rows = []
    for f in findings:
        if f.ok:
            rows.append(("ok", f.capability.name, str(f.found), ""))
        else:
            why = f"disables {f.capability.disables}" + (f" ({f.detail})" if f.detail else "")
            rows.append(("MISSING", f.capability.name, why, f.capability.remedy))
    output.result(output.markdown_table(("", "capability", "found at / what is lost", "to get it"), rows))
    missing = [f for f in findings if not f.ok]
    if missing:
        output.error(
            f"{len(missing)} of {len(findings)} capabilities missing: "
            + ", ".join(f.capability.name for f in missing)
        )
        return 1
    output.progress(f"all {len(findings)} capabilities present (kpool {paths.version()})")
    return 0
