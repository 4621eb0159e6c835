"""Workload files: the published schema, loading with file/line/column errors, compiling to a driver
program.

    load(path) -> Workload      (raises SpecError naming file, line, column, field and allowed values)
    Workload.program(seed=...)  the key=value program kpdrive runs
"""

from __future__ import annotations

from harness.spec.compile import Workload, load, load_text
from harness.spec.validate import SCHEMA_PATH, Issue, SpecError

__all__ = ["SCHEMA_PATH", "Issue", "SpecError", "Workload", "load", "load_text"]
