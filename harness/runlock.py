"""A run folder's lock: <folder>/run.lock, held (flock) by the process that runs it, from start to end.

The kernel lets go of an flock when its process dies, by kill -9 too, so a folder whose lock nobody holds
is a run that has ended, well or not, and what it left on disk will not change any more. `kpool fuzz` holds
its run folder; `kpool campaign` holds its own (the fuzz jobs inside it hold theirs). A sweep for crash
inputs a killed run left unrecorded (harness/fuzz/orphans.py) takes the lock of a folder before it touches
it, and leaves a folder alone whose lock is held.

The file also says which run holds it: JSON with the process id, the start time and the run's settings
(`kpool fuzz` writes its plant, which a replay of its crash inputs needs). It stays when the run ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from harness import atomic
from harness.errors import KpoolError

NAME = "run.lock"


class RunLock:
    """A run folder's lock, held until release() (or the end of a `with` block, or the process)."""

    def __init__(self, folder: Path, handle: IO[str]) -> None:
        self.folder, self._handle = folder, handle

    def info(self) -> dict[str, Any]:
        """What the run that holds (or held) the lock wrote in it; {} when nothing readable."""
        self._handle.seek(0)
        try:
            doc = atomic.loads(self._handle.read() or "{}")
        except ValueError:  # cut short by a kill while it was written
            return {}
        return doc if isinstance(doc, dict) else {}

    def release(self) -> None:
        if not self._handle.closed:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()

    def __enter__(self) -> RunLock:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _open(folder: Path) -> IO[str]:
    # "a+": created when missing, never truncated here (a sweep keeps what the dead run wrote)
    return (folder / NAME).open("a+")


class Unusable(KpoolError):
    """The lock file cannot be opened (a folder of that name, no permission, a read-only file system): no
    run can hold it, and whether one holds the folder is unknown."""


def take(folder: Path) -> RunLock | None:
    """The lock of a run that has ended (or of a folder that never had one); None while a run holds it.
    Unusable when the lock file cannot be opened."""
    try:
        handle = _open(folder)
    except OSError as exc:
        raise Unusable(f"{folder / NAME}: cannot be opened to lock the run's folder: {exc.strerror}") from exc
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return RunLock(folder, handle)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's
        return True
    return True


# A run writes who it is right after it takes the lock: a second run that finds the lock taken reads it
# for this long (milliseconds on an idle machine; a loaded one takes longer) before it says "process ?".
HOLDER_WAIT_S = 1.0


def _holder(folder: Path) -> Any:
    """The pid the run holding folder wrote in its lock file, "?" when none came within HOLDER_WAIT_S."""
    end = time.monotonic() + HOLDER_WAIT_S
    while True:
        try:
            pid = atomic.loads((folder / NAME).read_text() or "{}").get("pid")
        except (OSError, ValueError, AttributeError):
            pid = None
        if pid is not None or time.monotonic() >= end:
            return "?" if pid is None else pid
        time.sleep(0.05)


def hold(folder: Path, **info: Any) -> RunLock:
    """Hold a run's folder for this process, writing who holds it and `info`. KpoolError when another
    process holds it: two runs in one folder would write over each other's files."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = take(folder)
    if lock is None:
        holder = _holder(folder)
        if isinstance(holder, int) and not _alive(holder):  # its run ended: a sweep holds the folder
            raise KpoolError(
                f"{folder}: another kpool is recovering the crash inputs its run (process {holder}, ended)"
                " left; try again once it has recorded them"
            )
        raise KpoolError(f"{folder} is the folder of a run still going (process {holder})")
    handle = lock._handle
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "started": time.time(), **info}) + "\n")
        handle.flush()
    except OSError as exc:  # a full disk: the file's write names no file; the user's error line does
        with contextlib.suppress(OSError):  # its close flushes the same text again
            lock.release()
        raise OSError(exc.errno, exc.strerror, str(folder / NAME)) from exc
    return lock
