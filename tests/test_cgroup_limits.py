"""A pool inside a memory cgroup: kpool's limits follow the cgroup's, and a reserve the cgroup cannot hold
is refused with an error, not an OOM kill.

kp_create resolves `primary_max:0` (the default) to the smaller of physical memory plus swap and the
process's cgroup memory limit (conf.c, os.c). Each test runs a child process inside a fresh memory cgroup
of its own (cgroup v2's memory.max, or v1's memory.limit_in_bytes, whichever hierarchy this machine mounts
writable; the tests need root and skip, saying why, where no cgroup can be made) and reads what the pool
decided. These are the checks an operator relies on when kpool runs in a container: before them, in a v1
cgroup of 256 MiB, a default pool took the root's limit (none: physical memory, 24 GB here) as its own, a
pool filled to exhaustion was killed by the OOM killer, and `backup:1g` was killed inside kp_create (exit
-9 each) instead of being refused.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 256 << 20  # small enough to be reached in a test, large enough for Python and a pool

# The child: makes a pool with the conf in argv[1] and prints what kp_create decided, or the error it gave.
CHILD = """
import json, sys
from harness.binding import Pool
try:
    pool = Pool(sys.argv[1] or None)
except Exception as e:
    print(json.dumps({"error": str(e), "type": type(e).__name__}))
    sys.exit(0)
s = pool.stats()
out = {"max_bytes": s["primary"]["max_bytes"], "backup_bytes": s["backup"]["capacity_bytes"]}
if len(sys.argv) > 2:  # allocate 1 MiB blocks, touching each, until the pool says no
    import ctypes
    got = 0
    while got < (1 << 40):
        p = pool.try_alloc(1 << 20)
        if not p:
            break
        ctypes.memset(p, 1, 1 << 20)
        got += 1 << 20
    out["allocated"] = got
    out["oom_events"] = sum(1 for e in pool.events() if "oom" in e.kind.lower())
print(json.dumps(out))
"""


def _v2_parent() -> Path | None:
    root = Path("/sys/fs/cgroup")
    try:
        if "memory" not in (root / "cgroup.controllers").read_text().split():
            return None
        (root / "cgroup.subtree_control").write_text("+memory")
    except OSError:
        return None
    return root


def _v1_parent() -> Path | None:
    root = Path("/sys/fs/cgroup/memory")
    return root if (root / "memory.limit_in_bytes").exists() and os.access(root, os.W_OK) else None


@pytest.fixture
def cgroup() -> Iterator[Path]:
    """A memory cgroup limited to LIMIT bytes, removed after the test; its cgroup.procs takes a pid."""
    if os.geteuid() != 0:
        pytest.skip("making a memory cgroup needs root")
    parent, limit_file = _v1_parent(), "memory.limit_in_bytes"
    if parent is None:
        parent, limit_file = _v2_parent(), "memory.max"
    if parent is None:
        pytest.skip("no writable memory cgroup hierarchy (v1's memory controller, or v2 with memory) here")
    group = parent / f"kpool-test-{uuid.uuid4().hex[:8]}"
    try:
        group.mkdir()
        (group / limit_file).write_text(str(LIMIT))
        if limit_file == "memory.limit_in_bytes" and (group / "memory.memsw.limit_in_bytes").exists():
            (group / "memory.memsw.limit_in_bytes").write_text(str(LIMIT))
        elif (group / "memory.swap.max").exists():
            (group / "memory.swap.max").write_text("0")
    except OSError as e:
        if group.exists():
            group.rmdir()
        pytest.skip(f"cannot make a memory cgroup here: {e}")
    try:
        yield group
    finally:
        group.rmdir()


def _run_in(group: Path, *args: str) -> subprocess.CompletedProcess[str]:
    procs = group / "cgroup.procs"

    def enter() -> None:
        procs.write_text(str(os.getpid()))

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("KPOOL_CONF", None)
    return subprocess.run(
        [sys.executable, "-c", CHILD, *args],
        preexec_fn=enter,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _result(proc: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert proc.returncode == 0, (
        f"the child ended with {proc.returncode} (-9: OOM killer): {proc.stderr[-2000:]}"
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_default_pool_takes_the_cgroup_limit(cgroup: Path) -> None:
    out = _result(_run_in(cgroup, ""))
    assert "error" not in out, out
    assert isinstance(out["max_bytes"], int)
    assert 0 < out["max_bytes"] <= LIMIT, f"primary_max {out['max_bytes']} in a cgroup of {LIMIT}"


def test_a_reserve_larger_than_the_cgroup_is_refused_not_killed(cgroup: Path) -> None:
    out = _result(_run_in(cgroup, "backup:1g"))
    assert out.get("type") == "ConfError", out
    text = str(out["error"])
    assert "backup" in text and str(1 << 30) in text and "limit" in text, text


def test_exhaustion_in_a_cgroup_is_null_and_an_event_not_a_kill(cgroup: Path) -> None:
    out = _result(_run_in(cgroup, "", "fill"))
    assert "error" not in out, out
    allocated = out["allocated"]
    assert isinstance(allocated, int) and LIMIT // 4 <= allocated < LIMIT, out
    assert isinstance(out["oom_events"], int) and out["oom_events"] >= 1, out
