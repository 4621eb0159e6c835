"""Hatchling build hook: compile libkpool (release), the op driver and the preload library, and ship
them as harness/_lib/libkpool.so, harness/_lib/kpdrive and harness/_lib/libkpool-preload.so.

The wheel carries a native library loaded by ctypes, so it is tagged for the platform but not for a
Python ABI (py3-none-<platform>). Editable installs load the package from the source tree, so the
library is copied to harness/_lib/ there as well.

A wheel also carries the allocator's sources, the seed corpora and the workloads as package data in
harness/_src/ (harness/paths.py finds them), so that an installed kpool builds its other variants
(fuzz, coverage, sanitizers, planted bugs) into a cache folder and fuzzes from any directory.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

LIB_IN_PACKAGE = "harness/_lib/libkpool.so"
DRIVER_IN_PACKAGE = "harness/_lib/kpdrive"
PRELOAD_IN_PACKAGE = "harness/_lib/libkpool-preload.so"
# What kpool run execs a program with (allocator/preload/kpool-exec.c): linked static, so shipped where
# the static C library was there to build it (else kpool run uses env(1)).
EXEC_IN_PACKAGE = "harness/_lib/kpool-exec"
# Package data of a wheel: what a variant's build, the fuzzers and the campaign read.
SHIPPED = "harness/_src"
SHIPPED_TREES = ("allocator", "corpora", "workloads")
# Build output stays out of the wheel: the installed package builds into its own cache.
NOT_SHIPPED = frozenset({"build"})


class CustomBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        built = self._make()
        build_data["pure_python"] = False
        build_data["tag"] = "py3-none-" + sysconfig.get_platform().replace("-", "_").replace(".", "_")
        shipped_binaries = (
            (built, LIB_IN_PACKAGE),
            (built.parent / "kpdrive", DRIVER_IN_PACKAGE),
            (built.parent / "libkpool-preload.so", PRELOAD_IN_PACKAGE),
        )
        execs = built.parent / "kpool-exec"
        make_exec = ["make", "-C", str(Path(self.root, "allocator")), "VARIANT=release", "exec"]
        if subprocess.run(make_exec, check=False).returncode == 0:
            shipped_binaries += ((execs, EXEC_IN_PACKAGE),)
        for src, name in shipped_binaries:
            if version == "editable":
                dest = Path(self.root, name)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest)
            else:
                build_data["force_include"][str(src)] = name
        if version != "editable":
            build_data["force_include"].update(self._shipped_sources())

    def _shipped_sources(self) -> dict[str, str]:
        """{source path: path in the wheel} of the package data in harness/_src/."""
        shipped = {}
        for tree in SHIPPED_TREES:
            for entry in sorted(Path(self.root, tree).iterdir()):
                if entry.name in NOT_SHIPPED or entry.name.startswith(".") or entry.name == "__pycache__":
                    continue
                shipped[str(entry)] = f"{SHIPPED}/{tree}/{entry.name}"
        return shipped

    def _make(self) -> Path:
        allocator = Path(self.root, "allocator")
        if shutil.which("make") is None:
            sys.exit("kpool: building libkpool needs make and a C compiler (Debian: build-essential)")
        cmd = ["make", "-C", str(allocator), "VARIANT=release", "lib", "driver", "preload"]
        if subprocess.run(cmd, check=False).returncode != 0:
            sys.exit(f"kpool: `{' '.join(cmd)}` failed; see the compiler output above")
        return allocator / "build" / "release" / "libkpool.so"
