"""Which kpool a process runs: its version and a hash of its sources (the harness's Python, the allocator's
C, the shipped workloads). A cluster's every worker must run the coordinator's: a mix would compare
results of different code, silently."""

from __future__ import annotations

import functools
import hashlib
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path

from harness import paths
from harness.errors import ConfigError

# Build outputs and caches beside the sources: not sources.
_SKIP_DIRS = frozenset({"build", "__pycache__", "_lib", "_src", ".mypy_cache", ".ruff_cache"})
_SKIP_SUFFIXES = (".pyc", ".o", ".so", ".d", ".a")


class VersionMismatch(ConfigError):
    """A worker runs another kpool than the coordinator."""


def _files(root: Path, suffixes: tuple[str, ...] | None = None) -> Iterator[Path]:
    if not root.is_dir():
        return
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part in _SKIP_DIRS for part in rel.parts[:-1]) or not path.is_file():
            continue
        if path.name.endswith(_SKIP_SUFFIXES) or (suffixes and not path.name.endswith(suffixes)):
            continue
        yield path


@functools.cache
def source_hash() -> str:
    """SHA-256 over the harness's *.py, the allocator sources and the shipped workloads (paths and
    contents), the first 16 hex digits."""
    h = hashlib.sha256()
    trees = [
        ("harness", paths.PACKAGE_DIR, (".py",)),
        ("allocator", paths.allocator_sources(), None),
        ("workloads", paths.workloads(), None),
    ]
    for name, root, suffixes in trees:
        for path in _files(root, suffixes):
            h.update(f"{name}/{path.relative_to(root)}\0".encode())
            h.update(path.read_bytes())
            h.update(b"\0")
    return h.hexdigest()[:16]


def identity() -> tuple[str, str]:
    """(version, source hash) of this process's kpool."""
    return paths.version(), source_hash()


def describe() -> dict[str, str]:
    """This process's kpool, as a worker reports it."""
    version, sources = identity()
    return {
        "version": version,
        "sources": sources,
        "host": socket.gethostname(),
        "path": str(paths.PACKAGE_DIR),
    }


def check(expected: tuple[str, str], workers: Mapping[str, Mapping[str, str]]) -> None:
    """VersionMismatch naming every worker whose kpool is not `expected` (the coordinator's)."""
    version, sources = expected
    bad = [
        f"{addr} (on {w.get('host', '?')}: kpool {w.get('version')} sources {w.get('sources')} "
        f"from {w.get('path', '?')})"
        for addr, w in sorted(workers.items())
        if (w.get("version"), w.get("sources")) != (version, sources)
    ]
    if bad:
        raise VersionMismatch(
            f"{len(bad)} worker(s) run another kpool than this one (kpool {version}, sources {sources}): "
            + "; ".join(bad)
            + ". Install this same kpool on every worker (and restart them), or leave them out"
        )
