"""The working corpora of a cluster campaign: a fuzz job on a worker starts from the coordinator's working
corpus and sends back the entries it added; they are merged into <reports>/corpus/<target>/ here with
libFuzzer's own `-merge=1` (an entry is kept when it adds coverage), so the corpus a night builds on stays
one corpus, minimal in what it adds."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from harness import output
from harness.errors import KpoolError

# A corpus larger than this is not sent to the workers in full (the rest of it stays here and is merged
# into as usual): a worker starts from this many of its entries, the newest first.
MAX_SENT_ENTRIES = 20_000
# Lines of a failed merge's output kept in its error.
ERROR_TAIL_LINES = 20


def entries(reports: Path, target: str) -> dict[str, bytes]:
    """What a fuzz job of target starts from: the working corpus (at most MAX_SENT_ENTRIES, newest first)."""
    folder = reports / "corpus" / target
    if not folder.is_dir():
        return {}
    files = sorted(
        (p for p in folder.iterdir() if p.is_file()), key=lambda p: p.stat().st_mtime, reverse=True
    )
    return {p.name: p.read_bytes() for p in files[:MAX_SENT_ENTRIES]}


def merge(reports: Path, target: str, found: dict[str, bytes], plant: int = 0) -> tuple[int, int, float]:
    """Merge the entries a job found into the working corpus with -merge=1: (entries offered, entries
    kept, seconds). KpoolError when libFuzzer's merge fails (the offered entries are then kept in
    <reports>/corpus/<target>.incoming/ for the next merge)."""
    work = reports / "corpus" / target
    work.mkdir(parents=True, exist_ok=True)
    from harness.fuzz import runner

    with runner.corpus_lock(work):
        return _merge(reports, target, work, found, plant)


def _merge(
    reports: Path, target: str, work: Path, found: dict[str, bytes], plant: int
) -> tuple[int, int, float]:
    from harness.fuzz import runner

    incoming = work.with_name(target + ".incoming")
    incoming.mkdir(exist_ok=True)
    for name, data in found.items():
        if not (work / name).exists():
            (incoming / name).write_bytes(data)
    offered = sum(1 for _ in incoming.iterdir())
    if not offered:
        shutil.rmtree(incoming, ignore_errors=True)
        return 0, 0, 0.0
    before = sum(1 for _ in work.iterdir())
    t0 = time.monotonic()
    cmd = [sys.executable, str(runner.script(target)), "-merge=1", str(work), str(incoming)]
    proc = subprocess.run(
        cmd,
        env=runner.target_env(target, plant),
        capture_output=True,
        text=True,
        errors="replace",
        check=False,
        cwd=reports,
    )
    took = time.monotonic() - t0
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-ERROR_TAIL_LINES:])
        raise KpoolError(
            f"merging {offered} new {target} corpus entries failed (exit {proc.returncode})", tail
        )
    shutil.rmtree(incoming, ignore_errors=True)
    kept = sum(1 for _ in work.iterdir()) - before
    output.detail(f"{target}: {kept} of {offered} new corpus entries kept by -merge=1 in {took:.1f}s")
    return offered, kept, took
