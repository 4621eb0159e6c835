"""A validated workload, and its compilation into the program the C driver (kpdrive) expands itself.

The program is key=value lines (allocator/driver/program.c documents them); the runner appends the
per-worker seed. Nothing here runs anything.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.spec import marks, poolcheck, program
from harness.spec.marks import Path as KeyPath
from harness.spec.program import ProgramWorkload
from harness.spec.validate import DEFAULT_TIME_LIMIT_S, Issue, SpecError, check, dotted, kind_of, size_bytes

# A workload that gives neither ops nor duration_ms: enough steps for stable percentiles, few enough
# that the default run takes well under a second per worker.
DEFAULT_OPS = 200_000
PEER_NAMES = ("glibc", "jemalloc", "mimalloc", "tcmalloc")
# The largest workload file read: the shipped ones are under 4 KiB; a file far past this is something else
# (a log, a core file, a glob that matched the wrong thing), which YAML would take seconds and gigabytes to
# parse before saying so.
MAX_WORKLOAD_BYTES = 4 << 20


@dataclass(frozen=True)
class Workload:
    """A validated op-stream workload."""

    kind = "opstream"
    path: str  # as given, for messages and reproducers
    sha256: str  # of the file's bytes
    data: Mapping[str, Any]  # the validated document
    name: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", str(self.data["name"]))

    # ---- fields with their defaults ---------------------------------------------------------------

    @property
    def processes(self) -> int:
        return int(self.data.get("processes", 1))

    @property
    def threads(self) -> int:
        return int(self.data.get("threads", 1))

    @property
    def seed(self) -> int:
        return int(self.data.get("seed", 1))

    @property
    def allocator(self) -> str:
        return str(self.data.get("allocator", "kpool"))

    @property
    def time_limit_s(self) -> float:
        return float(self.data.get("time_limit_s", DEFAULT_TIME_LIMIT_S))

    @property
    def slo(self) -> Mapping[str, Any]:
        slo: Mapping[str, Any] = self.data.get("slo", {})
        return slo

    @property
    def interference(self) -> Sequence[Mapping[str, Any]]:
        items: Sequence[Mapping[str, Any]] = self.data.get("interference", [])
        return items

    # ---- the driver program -----------------------------------------------------------------------

    def program(self, *, interference: bool = True, allocator: str | None = None, **extra: object) -> str:
        """The kpdrive program. allocator: kpool or a peer name (a peer runs as malloc)."""
        d = self.data
        alloc = allocator or self.allocator
        lines = [f"name={self.name}", f"allocator={'kpool' if alloc == 'kpool' else 'malloc'}"]
        if d.get("pool"):
            lines.append("conf=" + conf_string(d["pool"]))
        if d.get("faults"):
            lines.append(f"faults={d['faults']}")
        lines.append("ops=" + ",".join(f"{k}:{v}" for k, v in d["mix"].items()))
        lines.append(f"size={_dist(d['sizes'])}")
        if "realloc_sizes" in d:
            lines.append(f"realloc_size={_dist(d['realloc_sizes'])}")
        if "duration_ms" in d:
            lines.append(f"duration_ms={d['duration_ms']}")
        else:
            lines.append(f"count={d.get('ops', DEFAULT_OPS)}")
        for key, prog_key in (
            ("align", "align"),
            ("working_set", "working_set"),
            ("critical_share", "critical"),
            ("rate", "rate"),
            ("sample", "sample"),
            ("outliers", "outliers"),
            ("verify", "verify"),
            ("timer", "timer"),
        ):
            if key in d:
                lines.append(f"{prog_key}={d[key]}")
        lines.append(f"threads={self.threads}")
        lines.append(f"seed={self.seed}")
        for item in self.interference if interference else ():
            parts = [str(item["kind"])]
            parts += [f"{k}={size_bytes(v) if k == 'size' else v}" for k, v in item.items() if k != "kind"]
            lines.append("interfere=" + ",".join(parts))
        for key, value in d.get("planted", {}).items():
            lines.append(f"{key}={value}")
        lines += [f"{k}={v}" for k, v in extra.items()]
        return "\n".join(lines) + "\n"


def _conf_value(v: object) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    return str(v)


def _dist(d: Mapping[str, Any]) -> str:
    kind = d["dist"]
    if kind == "fixed":
        return f"fixed:{size_bytes(d['size'])}"
    if kind in ("uniform", "loguniform"):
        return f"{kind}:{size_bytes(d['min'])}:{size_bytes(d['max'])}"
    if kind == "lognormal":
        out = f"lognormal:{size_bytes(d['median'])}:{d['sigma']}"
        if "min" in d or "max" in d:
            out += f":{size_bytes(d.get('min', 1))}:{size_bytes(d.get('max', 64 << 20))}"
        return out
    return "list:" + ",".join(f"{size_bytes(s['size'])}@{s.get('weight', 1)}" for s in d["sizes"])


def _pool_options() -> list[str] | None:
    """The kp_create option names, or None when libkpool cannot be loaded (then pool keys go unchecked
    here, and kp_create names a bad one when the run starts)."""
    try:
        from harness import binding

        return [o["name"] for o in binding.options()]
    except Exception:  # no library yet: the check is a convenience, not a gate
        return None


def conf_string(pool: Mapping[str, Any]) -> str:
    """The pool settings as the kp_create conf the program carries."""
    return ",".join(f"{k}:{_conf_value(v)}" for k, v in pool.items())


def _check_pool(located: marks.Located, path: str) -> None:
    """The pool settings and fault spec as kp_create and kp_fault_inject will judge them (after
    KPOOL_CONF, which kp_create reads first); SpecError at the setting they name."""
    data = located.data
    pool: Mapping[str, Any] = data.get("pool", {})
    found = poolcheck.problem(conf_string(pool), str(data.get("faults", "")))
    if found is None:
        return
    if found.origin == "KPOOL_CONF":
        if data.get("allocator", "kpool") != "kpool":
            return  # a peer never calls kp_create
        env = poolcheck.kpool_conf()
        where: KeyPath = ()
        message = f"KPOOL_CONF={env} (in the environment; kp_create reads it first): {found.text}"
    elif found.origin == "faults":
        where, message = ("faults",), found.text
    else:
        named = [w for w in found.options() if w in pool]
        where = ("pool", named[0]) if named else ("pool",) if pool else ()
        message = found.text
    pos = located.where(where)
    raise SpecError([Issue(path, pos.line, pos.column, dotted(where), message)])


AnyWorkload = Workload | ProgramWorkload


def load_text(text: str, path: str = "<workload>", use_jsonschema: bool = True) -> AnyWorkload:
    """Parse and validate workload text (either kind); SpecError lists every problem with its position."""
    try:
        located = marks.load(text)
    except marks.YamlSyntaxError as exc:
        raise SpecError([Issue(path, exc.pos.line, exc.pos.column, "", f"YAML syntax: {exc}")]) from exc
    digest = hashlib.sha256(text.encode()).hexdigest()
    if isinstance(located.data, dict) and kind_of(located.data) == "program":
        check(located, path, None, use_jsonschema, rules=program.rules)
        return ProgramWorkload(path, digest, located.data)
    check(located, path, _pool_options(), use_jsonschema)
    _check_pool(located, path)
    return Workload(path, digest, located.data)


def _decode(raw: bytes) -> str:
    """A workload file's text: UTF-16 when it starts with UTF-16's byte-order mark (an editor's
    'Unicode'), else UTF-8 (bytes that are not shown as U+FFFD)."""
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return raw.decode("utf-16", errors="replace")
    return raw.decode("utf-8", errors="replace")


def load(path: str | Path, use_jsonschema: bool = True) -> AnyWorkload:
    p = Path(path)
    try:
        # not waiting in open() for a FIFO's writer (`kpool bench --workload FIFO`, a FIFO a campaign's
        # glob matched: open() hung), and nothing but a regular file read (a device never ends)
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise SpecError([Issue(str(path), 1, 1, "", "not a regular file: a workload is a YAML file")])
            raw = f.read(MAX_WORKLOAD_BYTES + 1)
    except OSError as exc:
        raise SpecError([Issue(str(path), 1, 1, "", f"cannot read: {exc.strerror}")]) from exc
    if len(raw) > MAX_WORKLOAD_BYTES:
        message = f"more than {MAX_WORKLOAD_BYTES >> 20} MiB: not a workload (is it the file you meant?)"
        raise SpecError([Issue(str(path), 1, 1, "", message)])
    wl = load_text(_decode(raw), str(path), use_jsonschema)
    return type(wl)(wl.path, hashlib.sha256(raw).hexdigest(), wl.data)


def load_opstream(path: str | Path, use_jsonschema: bool = True) -> Workload:
    """An op-stream workload (where only the op driver's kind makes sense: its latency benchmark); a
    program workload is a SpecError at its `program` key."""
    wl = load(path, use_jsonschema)
    if isinstance(wl, Workload):
        return wl
    message = "a program workload; this command takes op-stream ones (kpool bench --programs runs programs)"
    raise SpecError([Issue(str(path), 1, 1, "program", message)])
