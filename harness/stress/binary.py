"""Where the op driver's executable lives, and building it on demand (`make -C allocator driver`).

$KPOOL_KPDRIVE names a prebuilt kpdrive (a sanitizer build, say); otherwise the variant's
allocator/build/<variant>/kpdrive, built with make when it is missing or older than its sources; without
a source checkout, the release kpdrive the wheel ships in harness/_lib/.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from harness.build import ALLOCATOR_DIR, NEEDS_CLANG, PACKAGE_DIR, VARIANTS, run_make
from harness.errors import BuildError


def kpdrive_path(variant: str = "release") -> Path:
    return ALLOCATOR_DIR / "build" / variant / "kpdrive"


def ensure_kpdrive(variant: str = "release") -> Path:
    """A kpdrive that is up to date with the sources (make decides)."""
    override = os.environ.get("KPOOL_KPDRIVE")
    if override:
        path = Path(override)
        if not path.is_file():
            raise BuildError(f"KPOOL_KPDRIVE={override}: no such file")
        return path
    if variant not in VARIANTS:
        raise BuildError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    target = kpdrive_path(variant)
    if not (ALLOCATOR_DIR / "Makefile").is_file() or shutil.which("make") is None:
        packaged = PACKAGE_DIR / "_lib" / "kpdrive"
        for path in (target, packaged if variant == "release" else target):
            if path.is_file():
                return path
        raise BuildError("kpdrive needs a source checkout and make (Debian package build-essential)")
    cmd = ["make", "-C", str(ALLOCATOR_DIR), f"VARIANT={variant}", "driver"]
    if variant in NEEDS_CLANG:
        cmd.append("CC=clang")
    run_make(cmd)
    return target
