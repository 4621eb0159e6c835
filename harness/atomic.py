"""Files written whole or not at all: every report and state file of the harness (fuzz.json, stress.json,
summary.json, junit.xml, index.html, campaign.json, ...) goes through here.

The data goes to a temporary file in the same folder (a rename is atomic within one file system only),
which is synced to disk and then renamed over the old file; the folder is synced after the rename, so
that the new name survives a power cut too. A full disk, a kill or a crash at any moment leaves either
the old file or the new one, never an empty or truncated one that a later reader (the campaign reading a
fuzz.json, `kpool report` reading a summary.json) would take for a damaged run.

`loads` reads such a file's JSON back: a file damaged or written by hand may hold anything, and every way
it is not a record is a ValueError (a document nested deeper than the parser recurses is one too: json's
RecursionError stopped `kpool report` and `kpool campaign --resume` with a traceback).
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import stat
from pathlib import Path
from typing import IO, Any


class NestedTooDeep(ValueError):
    """A JSON document nested deeper than the parser recurses (`[[[[...]]]]`, thousands deep)."""


def loads(text: str | bytes) -> Any:
    """json.loads of a file kpool wrote and read back; ValueError (JSONDecodeError, NestedTooDeep) for
    anything that is not JSON it can read, never another exception."""
    try:
        return json.loads(text)
    except RecursionError:
        raise NestedTooDeep("nested too deep to read (arrays or objects thousands deep)") from None


class NotRegular(OSError):
    """A record's path that holds no regular file (a FIFO, a device): refused, never waited on."""


# The largest record read back. The largest kpool writes are under a megabyte (a campaign's summary.json
# with every job: 0.5 MB after a short night; a night of hundreds of jobs, a few MB); one of 2 GB (a damaged
# disk, a file put there by mistake) was read whole by `kpool report`: 14.5 s and 4.2 GB of memory before
# it said "not JSON". Past this, it is refused by its size, unread.
RECORD_MAX = 64 << 20


def read_bytes(path: Path) -> bytes:
    """A record kpool wrote, read back: a regular file only, opened without waiting for a FIFO's writer
    (a FIFO named summary.json or campaign.json hung `kpool report` and `--resume` in open()) and without
    reading a device that never ends, nor a file past RECORD_MAX. FileNotFoundError and the other OSErrors
    as open() raises them; NotRegular (an OSError) for anything but a regular file, and an OSError (EFBIG)
    for one too large."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegular(errno.EINVAL, "not a regular file", str(path))
        if st.st_size > RECORD_MAX:
            size, most = f"{st.st_size / (1 << 20):,.0f}", RECORD_MAX >> 20
            why = f"{size} MiB, more than any record kpool writes ({most} MiB)"
            raise OSError(errno.EFBIG, why, str(path))
        return f.read(RECORD_MAX + 1)


def open_lock(path: Path) -> IO[str]:
    """A lock file to flock, made if missing (append: never truncated); NotRegular when path is something
    else (a FIFO there hung open() for a writer)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotRegular(errno.EINVAL, "not a regular file", str(path))
    os.set_blocking(fd, True)
    return os.fdopen(fd, "a+")


def write_bytes(path: Path, data: bytes) -> None:
    """Replace path with data, atomically and durably; on any error the old file (or none) is left, no
    temporary file, and the error is raised.

    The temporary file is created with mode 0666 less the umask, like any file the harness writes
    (tempfile.mkstemp would make it 0600, and the rename would keep that); O_EXCL and a random name keep
    two writers of the same file apart (the last rename wins, each file whole).

    A path the user named that is not a regular file (--out /dev/stdout, a pipe) is written as it is:
    there is nothing to rename over. A symbolic link is followed: the file it names is replaced, the
    link kept."""
    if path.is_symlink():
        path = path.resolve()
    if path.exists() and not path.is_file():
        with path.open("wb") as out:
            out.write(data)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        exc.filename = str(path)  # the file asked for, not a temporary name nobody will find
        raise
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # noqa: PTH105 (os.replace: the one rename the tests watch)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename in (None, str(tmp)):
            exc.filename = str(path)  # a write on a descriptor names no file: the one it was for
        raise
    _sync_folder(path.parent)


def write_text(path: Path, text: str) -> None:
    """write_bytes of text in UTF-8. backslashreplace: a name that is not UTF-8 (a folder's, a lone
    surrogate in a record or a sanitizer report) is written escaped rather than failing the file."""
    write_bytes(path, text.encode("utf-8", "backslashreplace"))


def _sync_folder(folder: Path) -> None:
    """fsync the folder, so the rename is on disk; a file system that cannot sync a folder (some network
    and FUSE ones refuse with EINVAL) keeps the rename in its cache, as it does for every other file."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
