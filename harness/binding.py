"""ctypes binding of allocator/include/kpool.h, and the Pool class built on it.

PROTOTYPES declares every function of the header, one for one (restype and argtypes); `load` applies
them. The library loaded is $KPOOL_LIB when set (e.g. a sanitizer variant), else the packaged release
build. Pool wraps one kp_pool: failures become exceptions from harness.errors that carry the
allocator's own text (kp_last_error() or the text of the event it recorded).

Every argument is checked before it reaches C: ctypes silently wraps an integer to the width of its C
type (a size of 2**64 + 100 would become 100), so an integer outside its C type's range, a value of the
wrong type, or a string with a NUL (C would stop reading there) raises ArgumentError or
ArgumentTypeError, which name the argument, the value and what was expected.
"""

from __future__ import annotations

import ctypes
import errno
import json
import operator
import os
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from ctypes import POINTER, c_char, c_char_p, c_int, c_size_t, c_uint, c_uint32, c_uint64, c_void_p
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from harness import build
from harness.errors import (
    AllocError,
    ArgumentError,
    ArgumentTypeError,
    ClosedError,
    ConfError,
    DeniedError,
    FreeError,
    KpoolError,
    LibraryError,
)

# ---- constants mirrored from kpool.h ------------------------------------------------------------------

KP_ZERO = 0x1
KP_CRITICAL = 0x2

KP_OK = 0
KP_EINVAL = -1
KP_ENOTOURS = -2
KP_EDOUBLEFREE = -3
KP_ECORRUPT = -4
KP_EDENIED = -5
KP_ENOMEM = -6
KP_EOVERFLOW = -7
ERROR_NAMES = {
    KP_OK: "KP_OK",
    KP_EINVAL: "KP_EINVAL",
    KP_ENOTOURS: "KP_ENOTOURS",
    KP_EDOUBLEFREE: "KP_EDOUBLEFREE",
    KP_ECORRUPT: "KP_ECORRUPT",
    KP_EDENIED: "KP_EDENIED",
    KP_ENOMEM: "KP_ENOMEM",
    KP_EOVERFLOW: "KP_EOVERFLOW",
}

KP_POOL_PRIMARY = 0
KP_POOL_BACKUP = 1
POOL_NAMES = {KP_POOL_PRIMARY: "primary", KP_POOL_BACKUP: "backup"}

KP_EVENT_TEXT = 128  # kpool.h; test_binding checks the layout against the compiler's
SIZE_MAX = 2 ** (8 * ctypes.sizeof(c_size_t)) - 1
UINT_MAX = 2 ** (8 * ctypes.sizeof(c_uint)) - 1
UINT64_MAX = 2**64 - 1
ADDR_MAX = 2 ** (8 * ctypes.sizeof(c_void_p)) - 1

# Event kinds whose text explains why a call failed (used for exception messages).
FAILURE_KINDS = frozenset(
    {
        "denied",
        "oom",
        "bad_size",
        "double_free",
        "invalid_free",
        "corruption",
        "token",
        "os_fail",
        "fault_injected",
    }
)
# Drains per kp_events_drain call; any size works, this one keeps the buffer at 42 KiB (168-byte events).
DRAIN_BATCH = 256
# Events drained to explain a failure are kept for events(); past this many the oldest are dropped
# (their seq numbers show the gap), so a caller that never reads events does not grow without bound.
BACKLOG_MAX = 65536
# First guess for kp_stats_json; the call reports the size it needs when this is too small.
STATS_BUFFER = 4096


class KpEvent(ctypes.Structure):
    _fields_ = (
        ("seq", c_uint64),
        ("time_ns", c_uint64),
        ("kind", c_uint32),
        ("pool", c_uint32),
        ("addr", c_uint64),
        ("size", c_uint64),
        ("text", c_char * KP_EVENT_TEXT),
    )


class KpOptionInfo(ctypes.Structure):
    _fields_ = (("name", c_char_p), ("kind", c_char_p), ("deflt", c_char_p), ("help", c_char_p))


_pool = c_void_p  # kp_pool * (opaque)
PROTOTYPES: dict[str, tuple[Any, tuple[Any, ...]]] = {
    # name: (restype, argtypes), in header order
    "kp_create": (_pool, (c_char_p,)),
    "kp_destroy": (None, (_pool,)),
    "kp_last_error": (c_char_p, ()),
    "kp_alloc": (c_void_p, (_pool, c_size_t, c_uint)),
    "kp_alloc_aligned": (c_void_p, (_pool, c_size_t, c_size_t, c_uint)),
    "kp_realloc": (c_void_p, (_pool, c_void_p, c_size_t, c_uint)),
    "kp_free": (c_int, (_pool, c_void_p)),
    "kp_usable_size": (c_size_t, (_pool, c_void_p)),
    "kp_thread_flush": (None, (_pool,)),
    "kp_critical_token": (c_uint64, (_pool,)),
    "kp_critical_enter": (c_int, (_pool, c_uint64)),
    "kp_critical_exit": (None, (_pool,)),
    "kp_stats_json": (c_int, (_pool, POINTER(c_char), c_size_t)),
    "kp_events_drain": (c_size_t, (_pool, POINTER(KpEvent), c_size_t)),
    "kp_event_name": (c_char_p, (c_uint,)),
    "kp_options": (c_size_t, (POINTER(POINTER(KpOptionInfo)),)),
    "kp_fault_inject": (c_int, (_pool, c_char_p)),
    "kp_daemon_step": (c_int, (_pool, c_uint64)),
    "kp_daemon_wake": (None, (_pool,)),
    "kp_daemon_start": (c_int, (_pool,)),
    "kp_daemon_stop": (None, (_pool,)),
}

_loaded: dict[Path, ctypes.CDLL] = {}


# ---- argument checks: what ctypes would wrap or cut, refused with the value and the rule ---------------


def _integer(name: str, value: object, top: int) -> int:
    """`value` as an int in 0..top (the range of its C type). bool is refused: True is no size."""
    if isinstance(value, bool) or not hasattr(type(value), "__index__"):
        raise ArgumentTypeError(f"{name} {value!r}: expected an integer from 0 to {top}")
    number = operator.index(value)  # type: ignore[arg-type]
    if not 0 <= number <= top:
        raise ArgumentError(f"{name} {number}: out of range, expected an integer from 0 to {top}")
    return number


def _c_string(name: str, value: object) -> bytes:
    if not isinstance(value, str):
        raise ArgumentTypeError(f"{name} {value!r}: expected a string")
    if "\0" in value:
        raise ArgumentError(f"{name} {value!r}: contains a NUL character, where C would stop reading")
    try:
        return value.encode()
    except UnicodeEncodeError:  # an argument's bytes that are not UTF-8 (surrogate escapes)
        raise ArgumentError(f"{name} {value!r}: holds bytes that are not UTF-8 text") from None


def _library(lib: object) -> ctypes.CDLL:
    if lib is None:
        return load()
    if not isinstance(lib, ctypes.CDLL):
        raise ArgumentTypeError(f"lib {lib!r}: expected a loaded library (from harness.binding.load) or None")
    return lib


def library_path() -> Path:
    """$KPOOL_LIB if set, else the packaged release library."""
    env = os.environ.get("KPOOL_LIB")
    return Path(env) if env else build.packaged_library()


def load(path: str | os.PathLike[str] | None = None) -> ctypes.CDLL:
    """Load libkpool (default: library_path()) once per file and declare its functions."""
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise ArgumentTypeError(f"library path {path!r}: expected a path (str or os.PathLike) or None")
    resolved = Path(path or library_path()).resolve()
    if resolved in _loaded:
        return _loaded[resolved]
    try:
        lib = ctypes.CDLL(str(resolved), use_errno=True)
    except OSError as exc:
        raise LibraryError(f"cannot load {resolved}", str(exc)) from exc
    for name, (restype, argtypes) in PROTOTYPES.items():
        try:
            fn = getattr(lib, name)
        except AttributeError as exc:
            raise LibraryError(f"{resolved} does not export {name}") from exc
        fn.restype = restype
        fn.argtypes = argtypes
    _loaded[resolved] = lib
    return lib


def _text(raw: bytes | None) -> str:
    return raw.decode("utf-8", "replace") if raw else ""


def last_error(lib: ctypes.CDLL | None = None) -> str:
    """kp_last_error() of the calling thread."""
    return _text(_library(lib).kp_last_error())


def event_name(kind: int, lib: ctypes.CDLL | None = None) -> str:
    return _text(_library(lib).kp_event_name(_integer("event kind", kind, UINT_MAX)))


def error_name(code: int) -> str:
    return ERROR_NAMES.get(code, f"KP_E({code})")


def options(lib: ctypes.CDLL | None = None) -> list[dict[str, str]]:
    """The option table: name, kind, default and help of every conf key."""
    table = POINTER(KpOptionInfo)()
    count = int(_library(lib).kp_options(ctypes.byref(table)))
    return [
        {"name": _text(o.name), "kind": _text(o.kind), "default": _text(o.deflt), "help": _text(o.help)}
        for o in table[:count]
    ]


def conf_string(conf: str | Mapping[str, object] | None) -> str | None:
    """A conf dict as "key:value,..." (booleans as on/off); strings and None pass through.

    A key may not hold ':' or ',', a value not ',' (they separate the options): kp_create would read
    them as other options."""
    if conf is None:
        return None
    if isinstance(conf, str):
        _c_string("conf", conf)
        return conf
    if not isinstance(conf, Mapping):
        raise ArgumentTypeError(f"conf {conf!r}: expected a string, a mapping or None")

    def key(k: object) -> str:
        if not isinstance(k, str):
            raise ArgumentTypeError(f"conf key {k!r}: expected a string")
        if ":" in k or "," in k:
            raise ArgumentError(f"conf key {k!r}: must not contain ':' or ','")
        return k

    def value(k: str, v: object) -> str:
        if isinstance(v, bool):
            return "on" if v else "off"
        if not isinstance(v, (str, int, float)):
            raise ArgumentTypeError(f"conf value {v!r} of {k!r}: expected a string, an integer or a boolean")
        if "," in str(v):
            raise ArgumentError(f"conf value {v!r} of {k!r}: must not contain ',' (it separates options)")
        return str(v)

    joined = ",".join(f"{key(k)}:{value(k, v)}" for k, v in conf.items())
    _c_string("conf", joined)
    return joined


@dataclass(frozen=True)
class Event:
    seq: int
    time_ns: int
    kind: str  # kp_event_name(kind): "grow", "double_free", ...
    pool: str  # "primary" or "backup"
    addr: int
    size: int
    text: str


class Pool:
    """One kp_pool. Use as a context manager, or call close()."""

    def __init__(
        self, conf: str | Mapping[str, object] | None = None, lib: str | os.PathLike[str] | None = None
    ):
        self.conf = conf_string(conf)
        self.lib = load(lib)
        handle = self.lib.kp_create(None if self.conf is None else self.conf.encode())
        if not handle:
            err, text = ctypes.get_errno(), last_error(self.lib)
            if err == errno.ENOMEM:
                raise AllocError("kp_create: the OS refused the initial mappings", text)
            raise ConfError(f"kp_create refused the configuration {self.conf!r}", text)
        self._handle: int | None = int(handle)
        self._backlog: deque[Event] = deque(maxlen=BACKLOG_MAX)

    # ---- lifecycle ----

    @property
    def handle(self) -> int:
        """The kp_pool pointer, for other C entry points."""
        if self._handle is None:
            raise ClosedError("the pool is closed")
        return self._handle

    @property
    def closed(self) -> bool:
        return self._handle is None

    def close(self) -> None:
        if self._handle is not None:
            self.lib.kp_destroy(self._handle)
            self._handle = None

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    # ---- allocation ----

    def try_alloc(self, size: int, flags: int = 0) -> int | None:
        """kp_alloc: the address, or None when it returned NULL."""
        size, flags = _integer("size", size, SIZE_MAX), _integer("flags", flags, UINT_MAX)
        addr = self.lib.kp_alloc(self.handle, size, flags)
        return int(addr) if addr else None

    def alloc(self, size: int, flags: int = 0) -> int:
        addr = self.try_alloc(size, flags)
        if addr is None:
            raise AllocError(f"kp_alloc(size={size}, flags={flags:#x}) returned NULL", self._failure_text())
        return addr

    def alloc_aligned(self, size: int, align: int, flags: int = 0) -> int:
        size, align = _integer("size", size, SIZE_MAX), _integer("align", align, SIZE_MAX)
        flags = _integer("flags", flags, UINT_MAX)
        addr = self.lib.kp_alloc_aligned(self.handle, size, align, flags)
        if not addr:
            raise AllocError(
                f"kp_alloc_aligned(size={size}, align={align}) returned NULL", self._failure_text()
            )
        return int(addr)

    def realloc(self, addr: int, size: int, flags: int = 0) -> int:
        """kp_realloc; size 0 frees addr and returns 0. On failure addr is untouched."""
        addr, size = _integer("addr", addr, ADDR_MAX), _integer("size", size, SIZE_MAX)
        flags = _integer("flags", flags, UINT_MAX)
        new = self.lib.kp_realloc(self.handle, addr or None, size, flags)
        if new:
            return int(new)
        if size == 0:
            return 0
        raise AllocError(f"kp_realloc({addr:#x}, size={size}) returned NULL", self._failure_text())

    def try_free(self, addr: int) -> int:
        """kp_free: 0 or a negative KP_E* code."""
        addr = _integer("addr", addr, ADDR_MAX)
        return int(self.lib.kp_free(self.handle, addr or None))

    def free(self, addr: int) -> None:
        addr = _integer("addr", addr, ADDR_MAX)
        code = self.try_free(addr)
        if code < 0:
            raise FreeError(f"kp_free({addr:#x}) failed", self._failure_text(), code, error_name(code))

    def usable_size(self, addr: int) -> int:
        addr = _integer("addr", addr, ADDR_MAX)
        return int(self.lib.kp_usable_size(self.handle, addr or None))

    def thread_flush(self) -> None:
        self.lib.kp_thread_flush(self.handle)

    # ---- the critical privilege ----

    def critical_token(self) -> int:
        """The token on the first call, 0 on later ones."""
        return int(self.lib.kp_critical_token(self.handle))

    def critical_enter(self, token: int) -> None:
        token = _integer("token", token, UINT64_MAX)
        code = int(self.lib.kp_critical_enter(self.handle, token))
        if code != KP_OK:
            raise DeniedError(
                f"kp_critical_enter refused the token ({error_name(code)})", self._failure_text()
            )

    def critical_exit(self) -> None:
        self.lib.kp_critical_exit(self.handle)

    @contextmanager
    def critical(self, token: int) -> Iterator[None]:
        """A critical scope on the calling thread."""
        self.critical_enter(token)
        try:
            yield
        finally:
            self.critical_exit()

    # ---- observation ----

    def stats(self) -> dict[str, Any]:
        size = STATS_BUFFER
        while True:
            buf = ctypes.create_string_buffer(size)
            need = int(self.lib.kp_stats_json(self.handle, buf, size))
            if need < 0:
                raise KpoolError(f"kp_stats_json failed ({error_name(need)})", last_error(self.lib))
            if need < size:
                result: dict[str, Any] = json.loads(buf.value)
                return result
            size = need + 1

    def events(self) -> list[Event]:
        """Every event since the last call, oldest first."""
        out = [*self._backlog, *self._drain()]
        self._backlog.clear()
        return out

    def fault_inject(self, spec: str) -> None:
        """Inject OS failures or damage on purpose (see kp_fault_inject in kpool.h)."""
        if self.lib.kp_fault_inject(self.handle, _c_string("fault spec", spec)) != KP_OK:
            raise ConfError(f"fault spec {spec!r}", last_error(self.lib))

    def daemon_step(self, advance_ms: int = 0) -> int:
        """One daemon pass on this thread with the clock advanced; the number of grows + shrinks."""
        advance_ms = _integer("advance_ms", advance_ms, UINT64_MAX)
        return int(self.lib.kp_daemon_step(self.handle, advance_ms))

    def daemon_wake(self) -> None:
        self.lib.kp_daemon_wake(self.handle)

    # ---- internals ----

    def _drain(self) -> list[Event]:
        buf = (KpEvent * DRAIN_BATCH)()
        out: list[Event] = []
        while True:
            count = int(self.lib.kp_events_drain(self.handle, buf, DRAIN_BATCH))
            out += [self._event(raw) for raw in buf[:count]]
            if count < DRAIN_BATCH:
                return out

    def _event(self, raw: KpEvent) -> Event:
        return Event(
            seq=raw.seq,
            time_ns=raw.time_ns,
            kind=event_name(raw.kind, self.lib),
            pool=POOL_NAMES.get(raw.pool, str(raw.pool)),
            addr=raw.addr,
            size=raw.size,
            text=_text(raw.text),
        )

    def _failure_text(self) -> str:
        """Why the last call failed: the newest failure event (kept for events()), else kp_last_error()."""
        fresh = self._drain()
        self._backlog.extend(fresh)
        for ev in reversed(fresh):
            if ev.kind in FAILURE_KINDS:
                return f"{ev.kind}: {ev.text}"
        return last_error(self.lib)
