"""Integrity errors without a crash: a worker that ran to its end, but whose result shows damage (a block's
pattern the driver found changed, calloc memory not zero, kp_free refusing a block, an integrity event
counted by the allocator) is a crash record like a crashed worker's, with a signature and a reproduce line.

The reproduce line is `python -m harness.stress.integrity KPDRIVE PROGRAM seed=N ...`: the worker's own
command, run here, its result read, the same findings printed ("kpool: error: integrity <what> ...") and
exit status 1 when there are any, so that `kpool triage replay` sees the damage again and signs it the
same way (harness/triage/patterns.py, rule "integrity"). Without damage it exits with kpdrive's status.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness import output
from harness.stress.merge import KPOOL_INTEGRITY, integrity_errors

MODULE = "harness.stress.integrity"
EXIT_DAMAGE = 1  # the reproduce line's status when the run showed damage, as a failed check's
# kpool's integrity counters (kp_stats_json "integrity") as the words of a finding.
KPOOL_WORDS = {
    "double_frees": "double-free",
    "invalid_frees": "invalid-free",
    "corruptions": "corruption",
    "overflows": "overflow",
    "use_after_frees": "use-after-free",
    "freelist_errors": "freelist-error",
}
assert set(KPOOL_WORDS) == set(KPOOL_INTEGRITY)


def findings(doc: Mapping[str, Any]) -> list[str]:
    """One line per kind of damage in a worker's result, the most telling first (the signature is the first
    line's): the driver's pattern check, calloc zeroing, kpool's own detections, kp_free's refusals."""
    c = doc.get("counters") or {}
    out = []
    damage = doc.get("damage") or []
    if int(c.get("verify_errors", 0)) or damage:
        first = f": {_damage(damage[0])}" if damage else ""
        out.append(f"integrity pattern-damage: {int(c.get('verify_errors', 0))} damaged block(s){first}")
    if int(c.get("zero_errors", 0)):
        out.append(f"integrity calloc-not-zero: {c['zero_errors']} calloc block(s) not zero")
    counted = ((doc.get("kpool_stats") or {}).get("integrity")) or {}
    for key, word in KPOOL_WORDS.items():
        if int(counted.get(key, 0)):
            out.append(f"integrity {word}: the allocator counted {counted[key]} ({key})")
    if int(c.get("free_errors_total", 0)):
        codes = ", ".join(f"{k} {v}" for k, v in sorted((c.get("free_errors") or {}).items()))
        out.append(f"integrity free-refused: kp_free refused {c['free_errors_total']} block(s) ({codes})")
    return out


def _damage(d: Mapping[str, Any]) -> str:
    return (
        f"thread {d.get('thread')} op {d.get('index')}, byte {d.get('offset')} of a {d.get('size')}-byte"
        f" block is {int(d.get('got', 0)):#04x}, expected {int(d.get('want', 0)):#04x}"
        f" (found at {d.get('when')})"
    )


def report(lines: Sequence[str]) -> str:
    """The findings as the reproduce line prints them (and the crash record keeps them)."""
    return "".join(f"kpool: error: {line}\n" for line in lines)


def crash(worker: Mapping[str, Any]) -> dict[str, Any] | None:
    """The crash record of a worker that exited 0 with integrity errors in its result; None otherwise."""
    doc = worker.get("result")
    if worker.get("crash") or not doc or worker.get("returncode") != 0 or not integrity_errors(doc):
        return None
    lines = findings(doc)
    if not lines:
        return None
    damage = doc.get("damage") or []
    return {
        "kind": "integrity",
        "signal": 0,
        "signal_name": "",
        "returncode": 0,
        "message": f"integrity errors without a crash ({integrity_errors(doc)}): "
        + lines[0].removeprefix("integrity ").replace("-", " ", 1),
        "op_index": damage[0].get("index") if damage else None,
        "thread": damage[0].get("thread") if damage else None,
        "stderr_tail": report(lines),
        "sanitizer_report": "",
        "backtrace": [],
        "ops_before": int((doc.get("counters") or {}).get("ops", 0)),
        "command": shlex.join(reproduce_argv(worker["cmd"])),
    }


def reproduce_argv(cmd: Sequence[str]) -> list[str]:
    """The worker's kpdrive command, run through this module (its findings printed, exit 1 on any)."""
    return [sys.executable, "-m", MODULE, *cmd]


USAGE = f"usage: python -m {MODULE} KPDRIVE [PROGRAM] [KEY=VALUE ...]"
HELP = f"""{USAGE}

Run a stress worker's kpdrive command (the reproduce line of an integrity crash record), pass its result
on, print the integrity errors in it and exit 1 when there are any; else kpdrive's own exit status.
Exit 2: bad arguments (KPDRIVE missing, not a program, or no kpdrive: it wrote no result)."""
EXIT_USAGE = 2


def _usage_problem(argv: Sequence[str]) -> str:
    """What is wrong with the command line, "" when it can be run."""
    if not argv:
        return USAGE
    program = argv[0]
    if program.startswith("-"):
        return f"unknown option {program!r}: the first argument is the kpdrive program ({USAGE})"
    found = shutil.which(program) if "/" not in program else program
    if found is None or not Path(found).exists():
        return f"KPDRIVE {program!r}: no such program"
    if Path(found).is_dir() or not os.access(found, os.X_OK):
        return f"KPDRIVE {program!r} is not an executable program"
    return ""


def main(argv: Sequence[str]) -> int:
    """Run a kpdrive command; pass its result (stdout) and stderr on; print its findings; exit 1 on any."""
    if list(argv[:1]) in (["-h"], ["--help"]):
        output.result(HELP)
        return 0
    problem = _usage_problem(argv)
    if problem:
        output.error(problem)
        return EXIT_USAGE
    try:
        proc = subprocess.run(list(argv), stdout=subprocess.PIPE, check=False)
    except OSError as e:  # not an executable format, and the like
        output.error(f"KPDRIVE {argv[0]!r} cannot be run: {e.strerror or e}")
        return EXIT_USAGE
    text = proc.stdout.decode(errors="replace")
    output.result(text.rstrip("\n"))
    if proc.returncode != 0:
        return proc.returncode if proc.returncode > 0 else 128 - proc.returncode
    docs = [line for line in text.splitlines() if line.startswith("{")]
    try:
        doc = json.loads(docs[-1]) if docs else None
    except json.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict):
        output.error(f"{argv[0]} wrote no result (a JSON line on its output): is it kpdrive?")
        return EXIT_USAGE
    lines = findings(doc)
    for line in lines:
        output.error(line)
    return EXIT_DAMAGE if lines else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
