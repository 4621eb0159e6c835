"""Check a pool configuration the way kp_create will, before any worker starts.

libkpool's own parser is the judge: a throw-away pool is created in this process with the conf (after
KPOOL_CONF from the environment, as kp_create reads it), and the fault spec is given to
kp_fault_inject. The check pool is made cheap and silent by settings appended after the user's, which
win (later keys do) yet leave every user value parsed and range-checked: no pre-faulting, no daemon
thread, no event log (and KPOOL_LOG unset around it: with log_fd:0 kp_create opens KPOOL_LOG, and a log
it could not open was blamed on the settings). Injection is switched off again before the check pool is
destroyed. KPOOL_LOG is judged on its own, by check_log().

    problem(conf, faults) -> Problem | None
    check_log()  (UsageError naming KPOOL_LOG)
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from harness.errors import AllocError, ConfError, KpoolError, LibraryError, UsageError

CHEAP = "prefault:off,daemon:off,log_fd:0"
# kp_last_error() begins with where the bad text came from (allocator/src/conf.c, apply()).
ORIGIN_RE = re.compile(r"^(KPOOL_CONF|conf): ")
# The option names a message mentions: "... for option 'primary_max' ...", "conf: low_wm (..) must ...".
WORD_RE = re.compile(r"[a-z_]+")


@dataclass(frozen=True)
class Problem:
    origin: str  # "KPOOL_CONF" (the environment), "conf" (the pool settings) or "faults" (the fault spec)
    text: str  # libkpool's message, without the origin prefix

    def options(self) -> list[str]:
        """Words of the message in order, for finding the option it is about."""
        return WORD_RE.findall(self.text)


LOG_ENV = "KPOOL_LOG"


def kpool_conf() -> str:
    return os.environ.get("KPOOL_CONF", "")


@contextlib.contextmanager
def no_log() -> Iterator[None]:
    """KPOOL_LOG unset (unsetenv: kp_create reads it itself) while a check pool is made."""
    saved = os.environ.pop(LOG_ENV, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[LOG_ENV] = saved


def log_problem(value: str | None) -> str | None:
    """Why kp_create would refuse KPOOL_LOG=value (allocator/src/events.c, kp__log_open), or None: stderr,
    stdout and a leading digit (a descriptor) are taken as they are, anything else is a file it opens to
    append, creating it. Judged without side effects: nothing created (a check that made and removed the
    file could remove it under a pool of another run that had just opened it), a FIFO not opened (the
    pool's open waits for its reader, as its user meant)."""
    if not value or value in ("stderr", "stdout") or value[0] in "0123456789":
        return None
    path = Path(value)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        folder = path.parent
        if not folder.is_dir():
            return f"cannot open it for writing: {os.strerror(errno.ENOENT)}"
        if not os.access(folder, os.W_OK | os.X_OK):  # a read-only file system for root too
            return f"cannot open it for writing: {folder} cannot be written in"
        return None
    except OSError as exc:
        return f"cannot open it for writing: {exc.strerror or exc}"
    if stat.S_ISFIFO(mode):
        return None
    try:  # no O_CREAT, no O_TRUNC: the file as it is
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NONBLOCK))
    except OSError as exc:
        return f"cannot open it for writing: {exc.strerror or exc}"
    return None


def check_log() -> None:
    """KPOOL_LOG (the environment's) as every pool kpool starts will open it: a usage error naming it."""
    value = os.environ.get(LOG_ENV)
    if why := log_problem(value):
        raise UsageError(f"{LOG_ENV}={value!r} (in the environment): {why}")


def _blame(conf: str) -> str:
    """Where a refusal blamed on "conf" comes from: two settings that disagree may be one from the
    environment and one from the workload. "KPOOL_CONF" when the pool settings pass without the
    environment's, else "conf"."""
    from harness import binding

    saved = os.environ.pop("KPOOL_CONF", None)  # unsetenv: kp_create reads the environment itself
    if not saved:
        return "conf"
    try:
        with no_log():
            binding.Pool(f"{conf},{CHEAP}" if conf else CHEAP).close()
    except KpoolError:
        return "conf"
    finally:
        os.environ["KPOOL_CONF"] = saved
    return "KPOOL_CONF"


def problem(conf: str, faults: str = "") -> Problem | None:
    """What kp_create (or kp_fault_inject) would refuse in `conf` (or `faults`), or None. None as well
    when libkpool cannot be loaded (the run will say so) or the OS refuses the memory (not a setting)."""
    from harness import binding

    try:
        with no_log():
            pool = binding.Pool(f"{conf},{CHEAP}" if conf else CHEAP)
    except (LibraryError, AllocError):
        return None
    except ConfError as exc:
        m = ORIGIN_RE.match(exc.text)
        origin, text = (m.group(1), exc.text[m.end() :]) if m else ("conf", exc.text)
        # libkpool checks settings that must agree after both sources are read, and names "conf".
        return Problem(_blame(conf) if origin == "conf" else origin, text)
    except KpoolError as exc:  # a value the binding refuses before C sees it (a NUL character)
        return Problem("conf", str(exc))
    try:
        if faults:
            pool.fault_inject(faults)
    except KpoolError as exc:
        return Problem("faults", exc.text or str(exc))
    finally:
        pool.fault_inject("all@off")  # a spec that fails munmap must not leak the check pool
        pool.close()
    return None
