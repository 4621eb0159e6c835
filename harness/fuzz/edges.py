"""Count the libkpool edges that fuzz corpora reach, per target and for all targets together.

Run by `kpool fuzz --coverage` in a child process with the sanitizer runtime preloaded (see env.py):
`python -m harness.fuzz.edges SPEC OUT`. SPEC is a JSON file {"library": path, "targets": {name:
[corpus dirs]}, "max_len": {name: bytes}} (an input is cut to max_len, as libFuzzer cuts it), and
optionally "timeout_s" (default INPUT_TIMEOUT_S).
OUT receives {"edges": N, "targets": {name: {"inputs": n, "covered": [edge indices]}}, "pcs": [offset
in the library of each edge], "entries": [indices of the edges that open a function]}.

Each target runs in a process of its own, as under libFuzzer: the pools of the fuzz entry points
live as long as the process, so what one target did would change what the next one reaches. Every
input of a target goes through the target's entry point in the coverage build of libkpool (its
driver is not instrumented, so every counter is one of libkpool's edges). The counters are read and
cleared after each input, so that their wrapping at 256 cannot hide an edge across inputs (an edge hit
a multiple of 256 times within one input still reads 0, as it does for libFuzzer).
"""

from __future__ import annotations

import ctypes
import faulthandler
import json
import sys
from pathlib import Path

from harness.fuzz import NATIVE

# As long as one input may run under `kpool fuzz` before it counts as a hang (runner.INPUT_TIMEOUT_S).
INPUT_TIMEOUT_S = 10


def _base(library: Path) -> int:
    """The load address of library in this process (its mapping at file offset 0)."""
    real = str(library.resolve())
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[5] == real and int(fields[2], 16) == 0:
            return int(fields[0].split("-")[0], 16)
    raise RuntimeError(f"{real} is not mapped in this process")


def _inputs(dirs: list[Path], max_len: int) -> list[tuple[Path, bytes]]:
    """The inputs in dirs, cut to max_len, shortest first (libFuzzer's order when it reads a corpus)."""
    found = [(p, p.read_bytes()[:max_len]) for d in dirs for p in sorted(d.iterdir()) if p.is_file()]
    return sorted(found, key=lambda pd: len(pd[1]))


def count(
    library: Path, targets: dict[str, list[Path]], max_len: dict[str, int], timeout_s: float = 0
) -> dict[str, object]:
    lib = ctypes.CDLL(str(library))
    counters_p = ctypes.POINTER(ctypes.c_uint8)()
    pcs_p = ctypes.POINTER(ctypes.c_size_t)()
    lib.kp_fuzz_counters.argtypes = (ctypes.POINTER(type(counters_p)), ctypes.POINTER(type(pcs_p)))
    lib.kp_fuzz_counters.restype = ctypes.c_size_t
    n = lib.kp_fuzz_counters(ctypes.byref(counters_p), ctypes.byref(pcs_p))
    if n == 0:
        raise RuntimeError(f"{library} has no coverage counters: not a coverage or fuzz build")
    addr = ctypes.addressof(counters_p.contents)
    base = _base(library)
    pcs = [pcs_p[2 * i] - base for i in range(n)]
    entries = [i for i in range(n) if pcs_p[2 * i + 1] & 1]
    out: dict[str, dict[str, object]] = {}
    for name, dirs in targets.items():
        fn = getattr(lib, NATIVE[name])
        fn.argtypes = (ctypes.c_char_p, ctypes.c_size_t)
        fn.restype = ctypes.c_int
        seen = 0
        inputs = 0
        ctypes.memset(addr, 0, n)
        for path, data in _inputs(dirs, max_len[name]):
            # An input that hangs ends the process (with the Python stacks: a C thread stuck
            # elsewhere does not show), after its name, which the parent reports.
            print(f"input {path}", file=sys.stderr, flush=True)
            faulthandler.dump_traceback_later(timeout_s or INPUT_TIMEOUT_S, exit=True)
            fn(data, len(data))
            faulthandler.cancel_dump_traceback_later()
            inputs += 1
            # OR of the counter bytes as one integer: a byte is non-zero iff an input hit its edge
            seen |= int.from_bytes(ctypes.string_at(addr, n), "little")
            ctypes.memset(addr, 0, n)
        raw = seen.to_bytes(n, "little")
        out[name] = {"inputs": inputs, "covered": [i for i in range(n) if raw[i]]}
    return {"edges": n, "targets": out, "pcs": pcs, "entries": entries}


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    targets = {name: [Path(d) for d in dirs] for name, dirs in spec["targets"].items()}
    result = count(Path(spec["library"]), targets, spec["max_len"], spec.get("timeout_s", 0))
    Path(argv[1]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
