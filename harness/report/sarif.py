"""The crash database as SARIF 2.1.0, for code scanning (`kpool triage sarif`, and the campaign beside its
summary.json).

One result per signature (its latest occurrence gives the stack and the reproducer), one rule per crash
kind. `partialFingerprints["kpoolSignature/v1"]` is the signature's hash, so that a code-scanning service
matches a result across runs as triage does. The location is the innermost frame of the crash's stack
that names a source file (libkpool's own, relative to the checkout when it is inside it); the whole stack
is the result's `stacks`; the reproducer (a crash input, a history, a workload) is a related location and
its command is in the result's properties.

Levels: "error" for an open signature (new, known, flaky), "note" for a fixed one.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path, PurePosixPath
from typing import Any

from harness import atomic, paths
from harness.triage import signature as S
from harness.triage.crash import Reproducer
from harness.triage.db import FIXED, CrashDB, CrashDBError, MissingCrashDB, Occurrence, SignatureRow

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
FINGERPRINT = "kpoolSignature/v1"  # bump the suffix if the signature's definition ever changes
MAX_STACK = 32  # frames of a stack kept: the top is what a reader looks at
_SRCROOT = "SRCROOT"
# the fuzz oracle's verdict (patterns.py's kpfuzz rule) with where its check is: "(driver/fuzz_model.c:407)"
_VERDICT = re.compile(
    r"^==kpfuzz== VIOLATION [\w-]+ in (?P<api>\w+) \((?P<file>[^():\s]+):(?P<line>\d+)\)", re.M
)


def _root() -> Path:
    return paths.checkout() or paths.PACKAGE_DIR.parent


def _uri(file: str) -> dict[str, str]:
    """An artifactLocation: relative to the checkout (uriBaseId SRCROOT) when inside it, else absolute."""
    path = Path(file)
    root = _root()
    if path.is_absolute():
        try:
            return {"uri": path.relative_to(root).as_posix(), "uriBaseId": _SRCROOT}
        except ValueError:
            return {"uri": path.as_uri()}
    # A frame's relative file (src/primary.c in a release build) is relative to allocator/.
    posix = PurePosixPath(file)
    for base in (root / "allocator", root):
        if (base / posix).is_file():
            return {"uri": (base / posix).relative_to(root).as_posix(), "uriBaseId": _SRCROOT}
    return {"uri": posix.as_posix()}


def _physical(frame: S.Frame) -> dict[str, Any]:
    loc: dict[str, Any] = {"artifactLocation": _uri(frame.file)}
    if frame.line > 0:
        loc["region"] = {"startLine": frame.line}
    return loc


def _stack(text: str, kind: str) -> list[S.Frame]:
    frames = S.crash_frames(text, kind)
    return S.interesting_frames(frames)[:MAX_STACK] if frames else []


def _stack_frame(frame: S.Frame) -> dict[str, Any]:
    location: dict[str, Any] = {"logicalLocations": [{"name": frame.name(), "kind": "function"}]}
    if frame.file:
        location["physicalLocation"] = _physical(frame)
    out: dict[str, Any] = {"location": location}
    if frame.module:
        out["module"] = frame.module
    return out


_ABSOLUTE = re.compile(r"^/")


def _reproducer_path(repro: Reproducer) -> str | None:
    """The file a reproducer replays: its history, its crash input, or its workload."""
    for path in (repro.meta.get("history"), repro.input_path, repro.workload):
        if path and _ABSOLUTE.match(str(path)):
            return str(path)
    return None


def _reproducer_command(repro: Reproducer) -> str:
    argv, env = repro.command()
    return " ".join([*(f"{k}={shlex.quote(v)}" for k, v in env.items()), shlex.join(argv)])


def _rule(kind: str) -> dict[str, Any]:
    words = re.split(r"[^A-Za-z0-9]+", kind)
    return {
        "id": kind,
        "name": "".join(w[:1].upper() + w[1:] for w in words if w) or "Crash",
        "shortDescription": {"text": f"kpool crash kind {kind}"},
        "defaultConfiguration": {"level": "error"},
    }


def _result(
    row: SignatureRow, last: Occurrence | None, repro: Reproducer | None, rule: int
) -> dict[str, Any]:
    text = last.text if last else ""
    stack = _stack(text, row.kind)
    located = [f for f in stack if f.file]
    message = f"{row.title} ({row.status}; seen {row.count} times in {row.runs} runs)"
    result: dict[str, Any] = {
        "ruleId": row.kind,
        "ruleIndex": rule,
        "level": "note" if row.status == FIXED else "error",
        "message": {"text": message},
        "partialFingerprints": {FINGERPRINT: row.hash},
        "properties": {
            "signature": row.hash,
            "status": row.status,
            "count": row.count,
            "runs": row.runs,
            "firstSeen": row.first_seen,
            "lastSeen": row.last_seen,
            "source": last.source if last else "",
            "frames": list(row.frames),
        },
    }
    if row.repro_rate is not None:
        result["properties"]["replayRate"] = row.repro_rate
        result["properties"]["replays"] = row.repro_runs
    where = repro and _reproducer_path(repro)
    verdict = _VERDICT.search(text)
    if verdict:
        # the oracle's check that fired, under the call it judged: the stack's top is fz_fail's abort(),
        # one line for every verdict
        file, line = verdict.group("file"), int(verdict.group("line"))
        physical = _physical(S.Frame(verdict.group("api"), file=file, line=line))
        result["locations"] = [
            {
                "physicalLocation": physical,
                "logicalLocations": [{"name": verdict.group("api"), "kind": "function"}],
            }
        ]
    elif located:
        result["locations"] = [{"physicalLocation": _physical(located[0])}]
    elif where:
        result["locations"] = [{"physicalLocation": {"artifactLocation": _uri(where)}}]
    else:
        result["locations"] = [
            {"logicalLocations": [{"name": n, "kind": "function"} for n in row.frames[:1]]}
        ]
    if stack:
        result["stacks"] = [
            {
                "message": {"text": f"the stack of the crash ({row.kind})"},
                "frames": [_stack_frame(f) for f in stack],
            }
        ]
    if repro is not None:
        result["properties"]["reproducer"] = _reproducer_command(repro)
        if where:
            result["relatedLocations"] = [
                {
                    "id": 1,
                    "physicalLocation": {"artifactLocation": _uri(where)},
                    "message": {"text": "reproducer"},
                }
            ]
    return result


def document(db: CrashDB | None) -> dict[str, Any]:
    """The SARIF document of every signature in db (None: no database, an empty run)."""
    rows = db.signatures() if db is not None else []
    kinds = sorted({r.kind for r in rows})
    index = {k: i for i, k in enumerate(kinds)}
    results = []
    for row in rows:
        assert db is not None
        occurrences = db.occurrences(row.id)
        try:
            repro = db.reproducer(row.id)
        except CrashDBError:  # a damaged row: the result without its reproducer, the others whole
            repro = None
        results.append(_result(row, occurrences[-1] if occurrences else None, repro, index[row.kind]))
    return {
        "$schema": SARIF_SCHEMA,
        "version": SARIF_VERSION,
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "kpool",
                        "version": paths.version(),
                        "rules": [_rule(k) for k in kinds],
                    }
                },
                "originalUriBaseIds": {_SRCROOT: {"uri": _root().as_uri() + "/"}},
                "results": results,
            }
        ],
    }


def write(db_path: Path, out: Path) -> int:
    """Write the SARIF of the database at db_path (none there: an empty run) to out; the result count."""
    try:
        db: CrashDB | None = CrashDB.open(db_path, write=False)
    except MissingCrashDB:
        db = None
    doc = document(db)
    atomic.write_text(out, json.dumps(doc, indent=1) + "\n")
    return len(doc["runs"][0]["results"])
