"""Program workloads: a real program (CPython's tests, sqlite3, git, redis, gcc, a benchmark program) run on
kpool's preload library beside glibc, judged by its SLOs.

    name: sqlite3
    program:
      command: [sqlite3, "{work}/db.sqlite"]   # run on the allocator under test (LD_PRELOAD)
      stdin: workload.sql                      # a file of the work folder, the program's stdin
      setup: [["{python}", "{workload}/gen_sql.py", workload.sql]]   # on glibc, before each run
      requires: {sqlite3: sqlite3}             # command -> Debian package
    slo: {exit_status: glibc, output: {same_as_glibc: "."}}

The schema is workloads/schema.json's $defs/program; `rules` are the checks beyond it (placeholders,
paths inside the work folder, regular expressions). A command's strings may hold the placeholders of
PLACEHOLDERS, replaced when the run starts (`expand`). Nothing here runs anything: the stress runner's
program launcher (harness/stress/program.py) does.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from harness.spec.marks import Path as KeyPath

# What a command's strings may name in braces, and what each becomes (harness/stress/program.py fills them):
PLACEHOLDERS = {
    "work": "the run's own empty work folder (the program's current directory)",
    "python": "the real Python interpreter (sys.executable: never a pyenv shim, a script that execs it)",
    "port": "a free TCP port on 127.0.0.1, the same for the program and its driver",
    "workload": "the folder of the workload file (its inputs and helper scripts)",
    "allocator_src": "the allocator's sources (the folder with its Makefile)",
    "jobs": "the number of CPUs",
}
PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Variables the launcher sets itself: a workload setting them would undo the allocator under test.
RESERVED_ENV = ("LD_PRELOAD", "KPOOL_STATS_OUT")
DEFAULT_TIME_LIMIT_S = 300.0
COMMAND_KEYS = ("setup", "driver", "check")


def _strings(value: Any, path: KeyPath) -> Iterator[tuple[KeyPath, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, (*path, i))


def _relative_path(text: str) -> bool:
    p = PurePosixPath(text)
    return not p.is_absolute() and ".." not in p.parts


def rules(data: Mapping[str, Any]) -> Iterator[tuple[KeyPath, bool, str]]:
    """What the schema cannot say about a schema-valid program workload: (path, at the key?, message)."""
    prog: Mapping[str, Any] = data["program"]
    for path, text in _strings(dict(prog), ("program",)):
        if "\0" in text:
            yield path, False, "a NUL character cannot be passed to a program"
        for name in PLACEHOLDER_RE.findall(text):
            if name not in PLACEHOLDERS:
                yield path, False, f"unknown placeholder {{{name}}} (allowed: {', '.join(PLACEHOLDERS)})"
    for key in ("stdin",):
        if key in prog and not _relative_path(str(prog[key])):
            yield ("program", key), False, f"{prog[key]!r}: a path inside the work folder (relative, no '..')"
    for i, item in enumerate(prog.get("inputs", ())):
        if not _relative_path(item):
            yield (
                ("program", "inputs", i),
                False,
                f"{item!r}: a path beside the workload file (relative, no '..')",
            )
    for name in prog.get("env", {}):
        if not ENV_NAME_RE.match(str(name)):
            yield ("program", "env", name), True, f"{name!r} is not a variable name (letters, digits, '_')"
        elif name in RESERVED_ENV:
            yield ("program", "env", name), True, f"{name} is set by the launcher (the allocator under test)"
    if prog.get("driver") and not any("{port}" in s for s in prog["command"]):
        yield (
            ("program", "driver"),
            True,
            "a driver talks to the program on 127.0.0.1:{port}: the command must take {port}",
        )
    output = data.get("slo", {}).get("output", {})
    if "same_as_glibc" in output:
        try:
            re.compile(output["same_as_glibc"])
        except re.error as exc:
            yield ("slo", "output", "same_as_glibc"), False, f"not a regular expression: {exc}"


@dataclass(frozen=True)
class ProgramWorkload:
    """A validated program workload (fields with their defaults)."""

    path: str  # as given, for messages and reproducers
    sha256: str  # of the file's bytes
    data: Mapping[str, Any]
    name: str = field(init=False)
    kind = "program"  # a class attribute, as Workload.kind ("opstream")

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", str(self.data["name"]))

    @property
    def program(self) -> Mapping[str, Any]:
        prog: Mapping[str, Any] = self.data["program"]
        return prog

    @property
    def command(self) -> list[str]:
        return [str(s) for s in self.program["command"]]

    def commands(self, key: str) -> list[list[str]]:
        """The setup, driver or check commands."""
        if key not in COMMAND_KEYS:
            raise ValueError(f"unknown command list {key!r}")
        return [[str(s) for s in argv] for argv in self.program.get(key, ())]

    @property
    def inputs(self) -> list[str]:
        return [str(s) for s in self.program.get("inputs", ())]

    @property
    def stdin(self) -> str | None:
        value = self.program.get("stdin")
        return None if value is None else str(value)

    @property
    def env(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in self.program.get("env", {}).items()}

    @property
    def requires(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in self.program.get("requires", {}).items()}

    @property
    def time_limit_s(self) -> float:
        return float(self.data.get("time_limit_s", DEFAULT_TIME_LIMIT_S))

    @property
    def slo(self) -> Mapping[str, Any]:
        slo: Mapping[str, Any] = self.data.get("slo", {})
        return slo

    @property
    def exit_status(self) -> int | str:
        value: int | str = self.slo.get("exit_status", "glibc")
        return value

    @property
    def uses_port(self) -> bool:
        return any("{port}" in s for argv in [self.command, *self.commands("driver")] for s in argv)

    def missing(self) -> dict[str, str]:
        """The required commands not on PATH, each with its package."""
        return {cmd: pkg for cmd, pkg in self.requires.items() if shutil.which(cmd) is None}


def expand(argv: Sequence[str], values: Mapping[str, str]) -> list[str]:
    """argv with each {name} of PLACEHOLDERS replaced (other braces, e.g. SQL's or a shell's, kept)."""

    def one(m: re.Match[str]) -> str:
        return values.get(m.group(1), m.group(0))

    return [PLACEHOLDER_RE.sub(one, s) for s in argv]


def python() -> str:
    """The interpreter a program workload's {python} names: this one, resolved past a pyenv shim."""
    return sys.executable or shutil.which("python3") or "python3"


def cpus() -> str:
    return str(os.cpu_count() or 1)
