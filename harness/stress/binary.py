"""Where the op driver's executable lives, and building it on demand (`make driver`).

$KPOOL_KPDRIVE names a prebuilt kpdrive (a sanitizer build, say); otherwise the variant's build folder
(harness/paths.py: allocator/build/<variant>/ in a checkout, the cache of an installed wheel), built with
make when it is missing or older than its sources. Without make, the release kpdrive the wheel ships
in harness/_lib/ serves the release variant.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from harness import paths
from harness.build import make_command, run_make
from harness.errors import BuildError


def kpdrive_path(variant: str = "release") -> Path:
    return paths.build_dir(variant) / "kpdrive"


def ensure_kpdrive(variant: str = "release") -> Path:
    """A kpdrive that is up to date with the sources (make decides)."""
    override = os.environ.get("KPOOL_KPDRIVE")
    if override:
        path = Path(override)
        if not path.is_file():
            raise BuildError(f"KPOOL_KPDRIVE={override}: no such file")
        return path
    target = kpdrive_path(variant)
    if shutil.which("make") is None or shutil.which("cc") is None:
        packaged = paths.PACKAGED_LIB_DIR / "kpdrive"
        for path in (target, packaged if variant == "release" else target):
            if path.is_file():
                return path
    run_make(make_command(variant, "driver"))
    return target
