"""callgrind for the tests that count instructions or cache misses (test_instruction_counts.py,
test_cache_lines.py, test_preload_instructions.py): one command line, one run, one reader of its output.

A run writes its output file with --compress-strings=no and --compress-pos=no, so that every fn=/cfn= line
names its function and every cost line starts with a plain position; `parse` reads from it the program's
totals per event, and per called function the number of calls and their inclusive cost.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from test_c_suite import _tail

# A run of these tests takes seconds under callgrind; five minutes means it hangs.
RUN_TIMEOUT_S = 300


@dataclass
class Profile:
    """What a callgrind output file says."""

    events: list[str] = field(default_factory=list)  # the events line: Ir, then D1mr... with --cache-sim
    totals: dict[str, int] = field(default_factory=dict)  # event -> the program's total (summary:/totals:)
    calls: dict[str, int] = field(default_factory=dict)  # callee -> calls, summed over its calls= lines
    # callee -> event -> the inclusive cost of those calls (the cost line after each calls= line)
    inclusive: dict[str, dict[str, int]] = field(default_factory=dict)
    # caller -> callee -> event -> the inclusive cost of the caller's calls of it (a program's main and what
    # it calls, apart from the same functions' calls elsewhere: test_preload_instructions.py's program)
    by_caller: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)


def parse(text: str) -> Profile:
    """A callgrind output file written with --compress-strings=no and --compress-pos=no."""
    p = Profile()
    caller = callee = ""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("fn="):
            caller = line[3:].strip()
        elif line.startswith("events:"):
            p.events = line.split()[1:]
        elif line.startswith(("summary:", "totals:")):
            p.totals = dict(zip(p.events, map(int, line.split()[1:]), strict=False))
        elif line.startswith("cfn="):
            callee = line[4:].strip()
        elif line.startswith("calls=") and callee:
            p.calls[callee] = p.calls.get(callee, 0) + int(line[6:].split()[0])
            if i + 1 < len(lines):
                costs = dict(zip(p.events, map(int, lines[i + 1].split()[1:]), strict=False))
                mine = p.inclusive.setdefault(callee, {})
                theirs = p.by_caller.setdefault(caller, {}).setdefault(callee, {})
                for event, n in costs.items():
                    mine[event] = mine.get(event, 0) + n
                    theirs[event] = theirs.get(event, 0) + n
    return p


def require() -> None:
    """Skip the test when valgrind is not installed."""
    if shutil.which("valgrind") is None:
        pytest.skip("valgrind is not installed (scripts/setup.sh installs it)")


def run(argv: Sequence[str], options: Sequence[str] = (), env: Mapping[str, str] | None = None) -> Profile:
    """Run argv under callgrind with its options (--cache-sim=yes, --toggle-collect=...) and read what it
    wrote; the test fails when the program does."""
    require()
    with tempfile.TemporaryDirectory(prefix="kpool-callgrind-") as tmp:
        out = Path(tmp) / "callgrind.out"
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--compress-strings=no",
               "--compress-pos=no", *options, *argv]  # fmt: skip
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            env=None if env is None else dict(env),
            check=False,
        )
        assert proc.returncode == 0, f"{' '.join(cmd)}: exit {proc.returncode}\n{_tail(proc.stderr)}"
        return parse(out.read_text())


def build_program(source: Path, *libs: str) -> Path:
    """A C program of tests/data built with -O2 into a folder of this process's own, for a run under
    callgrind (skips the test without a C compiler or valgrind)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    require()
    out = Path(tempfile.mkdtemp(prefix=f"kpool-{source.stem}-")) / source.stem
    subprocess.run([cc, "-O2", "-o", str(out), str(source), *libs], check=True)
    return out
