"""Minimisation: a smaller reproducer that still crashes with the same signature.

Fuzz reproducers use libFuzzer's own crash minimiser: the reproducer's command with `-minimize_crash=1
-runs=N -exact_artifact_path=OUT` appended (libFuzzer, and atheris targets, accept these flags), then the
result is replayed to make sure it crashes the same way.

Workload reproducers are shrunk greedily by a *shrink function*: given a reproducer it proposes smaller
ones (fewer ops, processes, threads), best cut first. A proposal is kept when the same signature reproduces
in any of `attempts` tries (crashes can be flaky), and shrinking restarts from it; it stops when no proposal
reproduces or after `max_candidates`. The default shrink function cuts the fields `ops`, `processes` and
`threads` that the command uses through placeholders (`${ops}`...). A producer with better ideas names its
own in the reproducer's meta: `meta["shrink"] = "package.module:function"`.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import KpoolError
from harness.triage import replay as R
from harness.triage.crash import Reproducer

Shrink = Callable[[Reproducer], Iterator[Reproducer]]

ATTEMPTS = 3  # tries per candidate before it is judged not to reproduce: a 50% flaky crash passes 7 in 8
MAX_CANDIDATES = 60  # candidates tried at most; each costs up to ATTEMPTS runs
FUZZ_RUNS = 10_000  # libFuzzer -runs for -minimize_crash: its own default is endless
FUZZ_PASSES = 3  # libFuzzer minimiser runs at most, each from its own random seed, until one keeps the crash
SHRINK_FIELDS = ("processes", "threads", "ops")
_MINIMIZED = re.compile(r"^(minimized-[0-9a-f]{12}-)+")  # the prefixes of a minimised fuzz input's name


@dataclass
class Minimized:
    reproducer: Reproducer
    steps: list[str] = field(default_factory=list)
    runs: int = 0
    tried: int = 0  # smaller candidates tried (kept or not)
    interrupted: bool = False  # Ctrl-C (or SIGTERM) stopped the search: reproducer is the best kept so far


def default_shrink(repro: Reproducer) -> Iterator[Reproducer]:
    """1, then half, then three quarters (ops) or one less (processes, threads) of each field in use.

    When the producer knows the operation the crash happened at (`meta["op_index"]`, counted from 1 in
    the crashing thread, as kpdrive reports it), ops are first cut to exactly that many.
    """
    used = " ".join([*repro.argv, *repro.env.values()])
    for name in SHRINK_FIELDS:
        value = getattr(repro, name)
        if value is None or value <= 1 or f"${{{name}}}" not in used:
            continue
        cuts = [1, value // 2, value * 3 // 4] if name == "ops" else [1, value // 2, value - 1]
        at = repro.meta.get("op_index")
        if name == "ops" and isinstance(at, int):
            cuts.insert(0, at)
        seen: set[int] = set()
        for cut in cuts:
            if 1 <= cut < value and cut not in seen:
                seen.add(cut)
                yield repro.evolve(**{name: cut})


def shrink_function(repro: Reproducer) -> Shrink:
    name = repro.meta.get("shrink")
    if not name:
        return default_shrink
    module, _, attr = str(name).partition(":")
    try:
        fn: Shrink = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise KpoolError(f"reproducer names shrink function {name!r}, which cannot be loaded: {exc}") from exc
    return fn


def _describe(old: Reproducer, new: Reproducer) -> str:
    if old.meta.get("history") != new.meta.get("history"):
        return f"history -> the last {new.meta.get('inputs', '?')} inputs ({new.meta.get('history')})"
    changed = [
        f"{n} {getattr(old, n)} -> {getattr(new, n)}"
        for n in SHRINK_FIELDS
        if getattr(old, n) != getattr(new, n)
    ]
    return ", ".join(changed) or "changed"


def minimize_workload(
    repro: Reproducer,
    expected: str,
    source: str = "",
    shrink: Shrink | None = None,
    attempts: int = ATTEMPTS,
    max_candidates: int = MAX_CANDIDATES,
    on_step: Callable[[str], None] | None = None,
) -> Minimized:
    shrink = shrink or shrink_function(repro)
    result = Minimized(repro)
    try:
        _shrink_loop(result, expected, source, shrink, attempts, max_candidates, on_step)
    except KeyboardInterrupt:  # the smaller reproducer kept so far is a result: returned, unless none
        if not result.steps:
            raise
        result.interrupted = True
    return result


def _shrink_loop(
    result: Minimized,
    expected: str,
    source: str,
    shrink: Shrink,
    attempts: int,
    max_candidates: int,
    on_step: Callable[[str], None] | None,
) -> None:
    tried = 0
    improved = True
    while improved and tried < max_candidates:
        improved = False
        for candidate in shrink(result.reproducer):
            if tried >= max_candidates:
                break
            tried += 1
            result.tried = tried
            for _ in range(attempts):
                result.runs += 1
                if R.run_once(candidate, source).signature.hash == expected:
                    step = _describe(result.reproducer, candidate)
                    result.steps.append(step)
                    if on_step:
                        on_step(step)
                    result.reproducer = candidate
                    improved = True
                    break
            if improved:
                break


def _with_input(repro: Reproducer, path: str) -> Reproducer:
    old = repro.input_path
    argv = (
        repro.argv
        if "${input_path}" in " ".join(repro.argv)
        else tuple(path if a == old else a for a in repro.argv)
    )
    return repro.evolve(input_path=path, argv=argv)


def minimize_fuzz(
    repro: Reproducer,
    expected: str,
    source: str = "",
    runs: int = FUZZ_RUNS,
    attempts: int = ATTEMPTS,
    passes: int = FUZZ_PASSES,
    on_step: Callable[[str], None] | None = None,
) -> Minimized:
    """libFuzzer -minimize_crash on the reproducer's input; kept only if it still crashes the same way.

    libFuzzer keeps any smaller input that crashes, not one that crashes the same way, and its search is
    random: a pass whose result crashes otherwise (or not at all) is followed by another, `passes` in all.
    """
    if not repro.input_path:
        raise KpoolError("a fuzz reproducer needs input_path to be minimised")
    src = Path(repro.input_path)
    # One name per signature and recorded input: minimising a minimised input again (a nightly job) names
    # its result as the first did, not minimized-<hash>-minimized-<hash>-..., 23 bytes longer each time
    # until the file system refused the name. Then libFuzzer writes beside it and the result replaces it.
    final = src.with_name(f"minimized-{expected[:12]}-{_MINIMIZED.sub('', src.name)}")
    out = final if final != src else src.with_name(f".next-{src.name}")
    flags = ("-minimize_crash=1", f"-runs={runs}", f"-exact_artifact_path={out}")
    # The minimiser runs the target many times: give it the reproducer's timeout per run, times a margin.
    command = repro.evolve(argv=(*repro.argv, *flags), timeout_s=repro.timeout_s * 10)
    result = Minimized(repro)
    for _ in range(passes):
        R.run_once(command, source)
        result.runs += 1
        if out.is_file() and _same_crash(_with_input(repro, str(out)), expected, source, attempts, result):
            step = f"input {src.stat().st_size} -> {out.stat().st_size} bytes ({final})"
            out.replace(final)
            result.steps.append(step)
            if on_step:
                on_step(step)
            result.reproducer = _with_input(repro, str(final))
            return result
        # no smaller input crashes the same way: none is kept (beside the input it would read as one)
        out.unlink(missing_ok=True)
    return result


def _same_crash(candidate: Reproducer, expected: str, source: str, attempts: int, result: Minimized) -> bool:
    """Does candidate crash with the expected signature in any of `attempts` runs (counted in result)?"""
    result.tried += 1
    for _ in range(attempts):
        result.runs += 1
        if R.run_once(candidate, source).signature.hash == expected:
            return True
    return False


def history_shrink(repro: Reproducer) -> Iterator[Reproducer]:
    """A history reproducer (the inputs since the fuzz pools were made, the crashing one last) with fewer
    inputs: the last 1, 2, then a sixteenth, a quarter, half and three quarters of them (the state a crash
    needs was mostly left by the inputs just before it). Each candidate is a file beside the history."""
    from harness.fuzz.target import read_history, write_history

    path = Path(str(repro.meta["history"]))
    inputs = read_history(path)
    n = len(inputs)
    seen: set[int] = set()
    for keep in (1, 2, n // 16, n // 4, n // 2, n * 3 // 4):
        if 1 <= keep < n and keep not in seen:
            seen.add(keep)
            out = path.with_name(f"{path.name}.last{keep}")
            write_history(out, inputs[-keep:])
            yield repro.evolve(meta={**repro.meta, "history": str(out), "inputs": keep})


def minimize(
    repro: Reproducer,
    expected: str,
    source: str = "",
    on_step: Callable[[str], None] | None = None,
) -> Minimized:
    if repro.kind == "fuzz" and repro.meta.get("history"):
        return minimize_workload(repro, expected, source, on_step=on_step)
    if repro.kind == "fuzz":
        return minimize_fuzz(repro, expected, source, on_step=on_step)
    if repro.kind == "workload":
        return minimize_workload(repro, expected, source, on_step=on_step)
    raise KpoolError(f"a {repro.kind!r} reproducer cannot be minimised (only fuzz and workload ones)")
