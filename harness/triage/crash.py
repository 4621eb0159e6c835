"""What a producer (the fuzz runner, the stress runner, a test) hands to triage: a Crash and its Reproducer.

A Reproducer is a command. Replaying it means running `argv` (with `env` added to the environment, in `cwd`,
for at most `timeout_s`) and computing the signature of what it printed. `argv` and `env` values may hold
placeholders `${name}` for the reproducer's fields (`${input_path}`, `${seed}`, `${worker}`, `${ops}`,
`${processes}`, `${threads}`, `${workload}`, `${target}`) and for keys of `meta`; they are filled in at run
time, so that minimisation can change a field (fewer ops, a shorter input) without knowing the command.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from harness.errors import KpoolError

REPRODUCER_KINDS = ("fuzz", "workload", "command")
# A replay that runs longer than this is killed and counted as a timeout; a crash that takes longer to
# show is rare in a reproducer and the producer can say otherwise.
DEFAULT_TIMEOUT_S = 120.0

_PLACEHOLDER = re.compile(r"\$\{(\w+)\}")


@dataclass(frozen=True)
class Reproducer:
    """How to rerun a crash. kind "fuzz": input_path and target; kind "workload": workload (file), sha256,
    seed, worker, ops (operation count), processes, threads; kind "command": argv alone."""

    argv: tuple[str, ...]
    kind: str = "command"
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    input_path: str | None = None
    target: str | None = None
    workload: str | None = None
    sha256: str | None = None
    seed: int | None = None
    worker: int | None = None
    ops: int | None = None
    processes: int | None = None
    threads: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in REPRODUCER_KINDS:
            raise KpoolError(f"reproducer kind {self.kind!r} is not one of {', '.join(REPRODUCER_KINDS)}")
        if not self.argv:
            raise KpoolError("a reproducer needs a command (argv is empty)")
        object.__setattr__(self, "argv", tuple(self.argv))

    def values(self) -> dict[str, str]:
        """The placeholder values: meta first, then the fields (a field wins over a meta key)."""
        out = {k: str(v) for k, v in self.meta.items()}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None and isinstance(v, str | int | float):
                out[f.name] = str(v)
        return out

    def command(self) -> tuple[list[str], dict[str, str]]:
        """argv and env with the placeholders filled in; an unknown placeholder is an error."""
        values = self.values()

        def fill(text: str) -> str:
            def one(m: re.Match[str]) -> str:
                if m.group(1) not in values:
                    raise KpoolError(f"reproducer placeholder ${{{m.group(1)}}} has no value")
                return values[m.group(1)]

            return _PLACEHOLDER.sub(one, text)

        return [fill(a) for a in self.argv], {k: fill(v) for k, v in self.env.items()}

    def missing(self) -> str | None:
        """A file the reproducer needs that is gone (its run folder cleaned up or moved): the fuzz input,
        or a workload's operation stream (kpdrive's .prog); None when nothing is missing. Replaying
        without it fails in another way, which would read as the bug fixed."""
        argv, _ = self.command()
        needed = [self.input_path] if self.input_path else []
        if self.kind == "workload":
            needed += [a for a in argv if a.endswith(".prog") and a.startswith("/")]
        return next((p for p in needed if not (Path(self.cwd or ".") / p).exists()), None)

    def relocated(self, folder: Path) -> Reproducer:
        """This reproducer with its paths moved to folder, when the files it needs are gone from where it
        was recorded but lie under folder at the same place from some run folder on: a reports folder
        renamed, or restored from a CI cache into another workspace, keeps its database's absolute paths.
        Itself when nothing is missing, or when folder does not hold it either."""
        gone = self.missing()
        if gone is None:
            return self
        parts = Path(gone).parts
        # the shortest tail that folder holds: run folders are named by their time and crash inputs by
        # their content's hash, so a tail of a run folder on names one file
        n = next((n for n in range(2, len(parts)) if folder.joinpath(*parts[-n:]).exists()), None)
        if n is None:
            return self
        old, new = str(Path(*parts[:-n])), str(folder)

        def move(value: Any) -> Any:
            if isinstance(value, str) and (value == old or value.startswith(old + "/")):
                return new + value[len(old) :]
            return value

        return replace(
            self,
            argv=tuple(move(a) for a in self.argv),
            env={k: move(v) for k, v in self.env.items()},
            cwd=move(self.cwd),
            input_path=move(self.input_path),
            workload=move(self.workload),
            meta={k: move(v) for k, v in self.meta.items()},
        )

    def evolve(self, **changes: Any) -> Reproducer:
        return replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Reproducer:
        data = json.loads(text)
        data["argv"] = tuple(data["argv"])
        return cls(**data)


@dataclass(frozen=True)
class Crash:
    """One crash as its producer saw it.

    `text`: the sanitizer report, backtrace, Python traceback or stderr tail. `returncode`: as subprocess
    gives it (negative = killed by that signal), None when unknown. `kind`: the producer's guess ("slo",
    "timeout", ...), used only when the text names no kind. `source`: the fuzz target or workload name.
    `text_path`: where the full text is kept, when `text` is only its tail.
    """

    text: str
    run_id: str
    source: str
    reproducer: Reproducer | None = None
    returncode: int | None = None
    kind: str | None = None
    text_path: str | None = None
