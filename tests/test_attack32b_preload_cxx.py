"""Attack (s32-atts) on a461bf2's preload layout: hot.txt/warm.txt and the linker script's .text.kp_warm,
opened after the unwind tables (.eh_frame_hdr, .eh_frame) and before .text. Guards, all pass on s32-lead
2aee60a:

- a C++ program (threads, exceptions thrown through 20 frames of std::vector<std::string>, std::map of
  unique_ptr, bad_alloc) runs under the preload on both layouts, linked against the shared and the static
  libstdc++;
- every function of the library has an unwind entry (an FDE in .eh_frame: a backtrace or a forced unwind
  through kpool's frames needs one for each; a function the script placed outside what .eh_frame_hdr covers
  would stop it);
- gdb's backtrace from inside the default layout's refill (refill_body, hot.txt) and the inline layout's cache
  flush (kp__tcache_flush_bin, warm.txt since s32) reaches the program's frames.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import build

CXX_SOURCE = r"""
#include <cstdio>
#include <map>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>
struct Boom : std::runtime_error {
    explicit Boom(const std::string &s) : std::runtime_error(s) {}
};
static int depth(int n)
{
    std::vector<std::string> v(n, std::string(40, 'x'));
    if (!n)
        throw Boom("deep");
    return depth(n - 1) + (int)v.size();
}
int main()
{
    long caught = 0;
    std::vector<std::thread> ts;
    for (int t = 0; t < 4; t++)
        ts.emplace_back([&caught] {
            for (int i = 0; i < 2000; i++) {
                try {
                    depth(20);
                } catch (const Boom &) {
                    __atomic_add_fetch(&caught, 1, __ATOMIC_RELAXED);
                }
                std::map<int, std::unique_ptr<std::string>> m;
                for (int k = 0; k < 50; k++)
                    m[k] = std::make_unique<std::string>(k, 'y');
            }
        });
    for (auto &t : ts)
        t.join();
    try {
        throw std::bad_alloc();
    } catch (std::exception &) {
        caught++;
    }
    std::printf("caught %ld\n", caught);
    return caught == 8001 ? 0 : 1;
}
"""
TIMEOUT_S = 120
LAYOUTS = ["layout:outline", "layout:inline"]


@pytest.fixture(scope="module")
def preload() -> Path:
    return build.preload_library()


@pytest.fixture(scope="module")
def cxx_programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    out = tmp_path_factory.mktemp("attack32b-cxx")
    src = out / "cx.cc"
    src.write_text(CXX_SOURCE)
    built = {}
    for name, extra in (("shared", []), ("static", ["-static-libstdc++", "-static-libgcc"])):
        exe = out / f"cx-{name}"
        subprocess.run([cxx, "-O1", "-g", "-pthread", *extra, "-o", str(exe), str(src)], check=True)
        built[name] = exe
    return built


def run_env(preload: Path, layout: str) -> dict[str, str]:
    env = dict(os.environ)
    env["LD_PRELOAD"] = str(preload)
    env["KPOOL_CONF"] = layout
    return env


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("link", ["shared", "static"])
def test_a_cxx_program_with_exceptions_runs_under_the_preload(
    preload: Path, cxx_programs: dict[str, Path], layout: str, link: str
) -> None:
    proc = subprocess.run(
        [str(cxx_programs[link])],
        env=run_env(preload, layout),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == "caught 8001\n"


def test_every_function_of_the_library_has_an_unwind_entry(preload: Path) -> None:
    readelf, nm = shutil.which("readelf"), shutil.which("nm")
    if readelf is None or nm is None:
        pytest.skip("no binutils")
    frames = subprocess.run([readelf, "-wf", str(preload)], capture_output=True, text=True, check=True).stdout
    ranges = [
        (int(lo, 16), int(hi, 16))
        for lo, hi in re.findall(r"FDE cie=\w+ pc=([0-9a-f]+)\.\.([0-9a-f]+)", frames)
    ]
    assert ranges, "no FDE found: readelf's format changed?"
    syms = subprocess.run(
        [nm, "-S", "--defined-only", str(preload)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    missing = []
    for line in syms:
        parts = line.split()
        if len(parts) == 4 and parts[2] in ("t", "T") and int(parts[1], 16):
            at = int(parts[0], 16)
            if not any(lo <= at < hi for lo, hi in ranges):
                missing.append(parts[3])
    assert not missing, f"functions without an unwind entry: {missing[:20]}"


@pytest.mark.parametrize(
    ("layout", "function"),
    [("layout:outline", "refill_body"), ("layout:inline", "kp__tcache_flush_bin")],
)
def test_gdb_backtraces_from_hot_and_warm_text_reach_the_program(
    preload: Path, cxx_programs: dict[str, Path], layout: str, function: str
) -> None:
    gdb = shutil.which("gdb")
    if gdb is None:
        pytest.skip("no gdb")
    proc = subprocess.run(
        [
            gdb, "-q", "-batch", "-nx",
            "-ex", f"set env LD_PRELOAD={preload}",
            "-ex", f"set env KPOOL_CONF={layout}",
            "-ex", "set breakpoint pending on",
            "-ex", f"break {function}",
            "-ex", "run",
            "-ex", "bt",
            "--args", str(cxx_programs["shared"]),
        ],
        capture_output=True, text=True, timeout=TIMEOUT_S,
    )  # fmt: skip
    frames = [line for line in proc.stdout.splitlines() if re.match(r"#\d+ ", line)]
    assert frames and function in frames[0], proc.stdout[-2000:]
    assert any("depth" in f or "main" in f or "start_thread" in f for f in frames[1:]), frames
