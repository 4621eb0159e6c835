#!/usr/bin/env python3
"""Fuzz target workload_yaml: the workload loader may raise its documented error and nothing else.

With harness.spec present (the workload loader), each input is given to harness.spec.load_text, which
may raise only SpecError (a KpoolError). On a branch without it, the target fuzzes yaml.safe_load and
a minimal stand-in validator (below) with the same rule, so the target and its corpus exist before
the loader does. Pure Python: atheris instruments the loader's bytecode for coverage.
"""

import contextlib
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the harness package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import atheris

from harness.fuzz import env as fuzz_env

with atheris.instrument_imports():
    import yaml

    from harness.errors import KpoolError

# Top-level keys a workload may have (the stand-in validator's whole schema).
KNOWN_KEYS = frozenset(
    {"name", "processes", "threads", "duration", "ops", "seed", "mix", "sizes", "interference", "faults"}
    | {"critical_share", "pool", "slo", "description"}
)


class StandInSpecError(KpoolError):
    """The stand-in validator's error (harness.spec.SpecError once the loader exists)."""


def stand_in_load(text: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise StandInSpecError("YAML syntax", str(exc)) from exc
    if not isinstance(data, dict):
        raise StandInSpecError("a workload is a mapping")
    for key, value in data.items():
        if not isinstance(key, str) or key not in KNOWN_KEYS:
            raise StandInSpecError(f"unknown field {key!r}")
        if key in {"processes", "threads", "ops", "seed"} and (type(value) is not int or value < 0):
            raise StandInSpecError(f"{key}: a non-negative integer, not {value!r}")
    return data


def loader() -> tuple[Callable[[str], object], tuple[type[BaseException], ...]]:
    """The function under test and the exceptions it may raise."""
    try:
        with atheris.instrument_imports():
            spec = importlib.import_module("harness.spec")
    except ModuleNotFoundError:
        return stand_in_load, (StandInSpecError,)
    load: Callable[[str], object] = spec.load_text
    return load, (spec.SpecError,)


def main() -> None:
    fuzz_env.refuse_seed_output(sys.argv)
    load, allowed = loader()

    def one_input(data: bytes) -> None:
        text = data.decode("utf-8", "replace")
        with contextlib.suppress(*allowed):
            load(text)

    atheris.Setup(fuzz_env.libfuzzer_argv(sys.argv), one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
