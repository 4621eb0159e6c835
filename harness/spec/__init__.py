"""Workload files: the published schema, loading with file/line/column errors, compiling to a driver
program.

    load(path) -> Workload | ProgramWorkload   (SpecError naming file, line, column, field, allowed values)
    Workload.program(seed=...)  an op-stream workload's key=value program, which kpdrive runs
    ProgramWorkload             a program workload (`program:`, harness/spec/program.py): a real program
"""

from __future__ import annotations

from harness.spec.compile import AnyWorkload, Workload, load, load_opstream, load_text
from harness.spec.program import ProgramWorkload
from harness.spec.validate import SCHEMA_PATH, Issue, SpecError

__all__ = [
    "SCHEMA_PATH",
    "AnyWorkload",
    "Issue",
    "ProgramWorkload",
    "SpecError",
    "Workload",
    "load",
    "load_opstream",
    "load_text",
]
