"""Check a pool configuration the way kp_create will, before any worker starts.

libkpool's own parser is the judge: a throw-away pool is created in this process with the conf (after
KPOOL_CONF from the environment, as kp_create reads it), and the fault spec is given to
kp_fault_inject. The check pool is made cheap and silent by settings appended after the user's, which
win (later keys do) yet leave every user value parsed and range-checked: no pre-faulting, no daemon
thread, no event log. Injection is switched off again before the check pool is destroyed.

    problem(conf, faults) -> Problem | None
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from harness.errors import AllocError, ConfError, KpoolError, LibraryError

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


def kpool_conf() -> str:
    return os.environ.get("KPOOL_CONF", "")


def _blame(conf: str) -> str:
    """Where a refusal blamed on "conf" comes from: two settings that disagree may be one from the
    environment and one from the workload. "KPOOL_CONF" when the pool settings pass without the
    environment's, else "conf"."""
    from harness import binding

    saved = os.environ.pop("KPOOL_CONF", None)  # unsetenv: kp_create reads the environment itself
    if not saved:
        return "conf"
    try:
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
