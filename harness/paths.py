"""Where kpool's files are: the allocator sources, the seed corpora, the shipped workloads, the build
directories and the default reports folder, for a source checkout and for an installed wheel alike.

- A source checkout (also an editable install) uses its own `allocator/`, `corpora/` and `workloads/`
  and builds into `allocator/build/<variant>/`.
- An installed wheel carries the same three folders as package data in `harness/_src/` (see
  hatch_build.py) and builds variants into a cache folder of its own, one per kpool version and
  installation: `$KPOOL_CACHE`, else `$XDG_CACHE_HOME/kpool/<version>-<install>/`, else
  `~/.cache/kpool/<version>-<install>/` (site-packages may be read-only, and two virtual environments
  with the same version must not share objects built from different sources).
- Reports go to `$KPOOL_REPORTS`, else `./reports` in the current directory, wherever kpool is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from importlib import metadata
from pathlib import Path

from harness.errors import BuildError, UsageError

PACKAGE_DIR = Path(__file__).resolve().parent
# A checkout has the package beside allocator/ and pyproject.toml.
_CHECKOUT = PACKAGE_DIR.parent
# What the wheel ships (hatch_build.py): allocator sources, corpora and workloads.
SHIPPED = PACKAGE_DIR / "_src"
# Binaries the wheel ships prebuilt (the release library and op driver, built when it was made).
PACKAGED_LIB_DIR = PACKAGE_DIR / "_lib"


def checkout() -> Path | None:
    """The source checkout this package runs from, or None for an installed wheel."""
    if (_CHECKOUT / "pyproject.toml").is_file() and (_CHECKOUT / "allocator" / "Makefile").is_file():
        return _CHECKOUT
    return None


def _data_root() -> Path:
    return checkout() or SHIPPED


def allocator_sources() -> Path:
    """The folder holding the allocator's Makefile and sources."""
    path = _data_root() / "allocator"
    if not (path / "Makefile").is_file():
        raise BuildError(
            f"the allocator sources are missing (no {path / 'Makefile'}); "
            "reinstall kpool (`pip install --force-reinstall kpool`) or run it from a source checkout"
        )
    return path


def corpora() -> Path:
    """The committed seed corpora and dictionaries, corpora/<target>/."""
    return _data_root() / "corpora"


def workloads() -> Path:
    """The shipped YAML workloads and their JSON Schema."""
    return _data_root() / "workloads"


def version() -> str:
    try:
        return metadata.version("kpool")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "0+unknown"


def cache_dir() -> Path:
    """The per-version, per-installation cache of an installed wheel."""
    override = os.environ.get("KPOOL_CACHE")
    if override:
        return Path(override).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    install = hashlib.sha256(str(PACKAGE_DIR).encode()).hexdigest()[:8]
    return base / "kpool" / f"{version()}-{install}"


def build_root() -> Path:
    """Where `make` writes its variants: build/<variant>[-plant<n>]/ below this folder."""
    tree = checkout()
    return tree / "allocator" / "build" if tree else cache_dir() / "build"


def usable_build_root() -> Path:
    """build_root(), made and checked writable before make writes in it. An installed wheel's cache that
    cannot hold it (a file, a folder under a file, a read-only folder or file system) is a UsageError
    naming the variable that chose it (KPOOL_CACHE, else XDG_CACHE_HOME), not make's mkdir error."""
    root = build_root()
    if checkout() is not None:
        return root
    var = next((v for v in ("KPOOL_CACHE", "XDG_CACHE_HOME") if os.environ.get(v)), None)
    where = f"{var}={os.environ[var]}" if var else f"the cache folder {cache_dir()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".kpool-write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if isinstance(exc, (FileExistsError, NotADirectoryError)):
            reason = "a file is in the way of a folder"
        hint = "set KPOOL_CACHE to a folder kpool may write in" if var else "set KPOOL_CACHE to one"
        raise UsageError(f"{where}: cannot build there ({root}: {reason}); {hint}") from exc
    return root


def build_dir(variant: str, plant: int = 0) -> Path:
    """The build directory of one variant (as the Makefile's BUILD)."""
    return build_root() / (f"{variant}-plant{plant}" if plant else variant)


def given(text: str) -> Path:
    """argparse `type=` of a path option: an empty one (a script's unset variable, --reports "$DIR") is a
    usage error; as a Path it would be the current folder, and a run would write its folders, corpora and
    database straight into it."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path (an unset variable?): give a file or folder")
    return Path(text)


def check_reports(folder: Path, option: bool, create: bool = True) -> None:
    """UsageError (exit 2: nothing ran) when folder cannot be the reports folder: a file in its way
    (KPOOL_REPORTS=/etc/passwd, a path under a file) or, with create, a folder the system refuses to make
    (/proc, /sys). option: it came from --reports, else from $KPOOL_REPORTS or the default. Before
    session 33 these were the mkdir's OSError, exit 1 as if the work had failed, stress and fuzz only
    after their builds; `kpool run` (create=False: it writes the folder only for a crash) lost its crash."""
    label = (
        "--reports"
        if option
        else ("KPOOL_REPORTS" if os.environ.get("KPOOL_REPORTS") else "the reports folder")
    )
    probe = next((p for p in (folder, *folder.parents) if p.exists() or p.is_symlink()), None)
    if probe is not None and not probe.is_dir():
        why = "a file, where a folder is expected" if probe.is_file() else "not a folder"
        raise UsageError(f"{label} {folder}: " + ("" if probe == folder else f"{probe} is ") + why)
    if not create:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{label} {folder}: cannot make this folder ({exc.strerror or exc})") from exc


def reports() -> Path:
    """The default reports folder: $KPOOL_REPORTS, else ./reports. Relative as given when the current
    folder no longer exists (it is read at import; `kpool` then says so, harness/cli.py)."""
    given = Path(os.environ.get("KPOOL_REPORTS") or "reports")
    try:
        return given.absolute()
    except FileNotFoundError:  # os.getcwd() of a deleted folder
        return given
