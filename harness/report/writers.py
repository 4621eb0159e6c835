"""Writers of a run's report: summary.json (the model), junit.xml, latency.hlog (HdrHistogram's log
format), results.sarif (the crash database, harness.report.sarif), index.html (harness.report.html), and
the index of all runs under the reports root with the trends per night (harness.report.trends) and a page
per crash signature."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

from hdrh.histogram import HdrHistogram

from harness import atomic
from harness.errors import KpoolError
from harness.report import html, sarif, trends
from harness.report.model import Latency, RunReport, type_problem
from harness.triage import record
from harness.triage.db import CrashDB, MissingCrashDB

# HdrHistogram range: 1 ns to 1 hour, 3 significant digits (0.1% error, within the driver's 1%).
HDR_LOWEST_NS, HDR_HIGHEST_NS, HDR_DIGITS = 1, 3_600_000_000_000, 3


def hdr_histogram(lat: Latency) -> HdrHistogram:
    h = HdrHistogram(HDR_LOWEST_NS, HDR_HIGHEST_NS, HDR_DIGITS)
    for value, count in lat.buckets:
        if count > 0:
            h.record_value(min(max(value, HDR_LOWEST_NS), HDR_HIGHEST_NS), count)
    return h


def write_hlog(report: RunReport, path: Path) -> None:
    """HdrHistogram's log format (v1.2): one tagged interval histogram per (workload, allocator, op),
    values in ns, the interval max in ms (the format's usual unit ratio of 10^6)."""
    stamp = datetime.fromtimestamp(report.started, tz=UTC).isoformat(sep=" ")
    lines = [
        f"#kpool run {report.run_id}, revision {report.revision}, latency in ns\n",
        "#[Histogram log format version 1.2]\n",
        f"#[StartTime: {report.started:.3f} (seconds since epoch), {stamp}]\n",
        '"StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"\n',
    ]
    for w in report.workloads:
        for lat in w.latency:
            h = hdr_histogram(lat)
            tag = f"{w.name}/{w.allocator}/{lat.op}".replace(",", ";").replace(" ", "_")
            payload = h.encode().decode()
            lines.append(
                f"Tag={tag},{report.started:.3f},{max(w.seconds, 0.001):.3f},"
                f"{h.get_max_value() / 1e6:.3f},{payload}\n"
            )
    atomic.write_text(path, "".join(lines))


# Characters XML 1.0 cannot hold at all, escaped or not (ElementTree writes them as they are, and the
# file is then ill-formed): a crashed program's output can carry any of them.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def _xml_text(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


def junit_xml(report: RunReport) -> str:
    """One test case per workload, per fuzz target and per crash signature."""
    suite = ET.Element("testsuite", name=_xml_text(f"kpool-{report.run_id}"))
    cases = 0
    failures = 0

    def case(classname: str, name: str, seconds: float, failure: str) -> None:
        nonlocal cases, failures
        name, failure = _xml_text(name), _xml_text(failure)
        tc = ET.SubElement(suite, "testcase", classname=classname, name=name, time=f"{seconds:.3f}")
        cases += 1
        if failure:
            failures += 1
            ET.SubElement(tc, "failure", message=failure.splitlines()[0][:200]).text = failure

    for w in report.workloads:
        why = [w.error] if w.error else []
        why += [f"{w.crashes} worker crash(es)"] if w.crashes else []
        why += [f"{w.integrity_errors} integrity error(s)"] if w.integrity_errors else []
        why += [f"SLO {s.name}: {s.measured} (limit {s.limit})" for s in w.slos if not s.ok]
        case("workload", f"{w.name}[{w.allocator}]", w.seconds, "\n".join(why))
    for f in report.fuzz:
        case("fuzz", f.target, f.seconds, f.error or (f"{f.crashes} crash(es)" if f.crashes else ""))
    for c in report.crashes:
        case(
            "crash",
            f"{c.signature} {c.title}",
            0.0,
            f"{c.status}: {c.kind} in {c.source}" if c.status == "new" else "",
        )
    if report.interrupted:  # no verdict of the whole: a CI that reads this file must not see a pass
        left = [j.name for j in report.jobs if j.state in ("pending", "running", "stopped", "not-run")]
        case("run", "interrupted", 0.0, "interrupted before it ended; not run: " + (", ".join(left) or "-"))
    suite.set("tests", str(cases))
    suite.set("failures", str(failures))
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def sarif_text(db_path: Path) -> str:
    """The crash database at db_path as SARIF 2.1.0 (an empty run when there is none)."""
    try:
        db: CrashDB | None = CrashDB.open(db_path, write=False)
    except MissingCrashDB:
        db = None
    return json.dumps(sarif.document(db), indent=1) + "\n"


def write_run(report: RunReport, root: Path) -> Path:
    """Write reports/<run-id>/ (summary.json, junit.xml, latency.hlog, results.sarif of the reports
    folder's crash database, index.html) and refresh the index of runs; returns the run's directory."""
    run_dir = root / report.run_id
    atomic.write_text(run_dir / "summary.json", json.dumps(report.to_dict(), indent=1) + "\n")
    atomic.write_text(run_dir / "junit.xml", junit_xml(report))
    write_hlog(report, run_dir / "latency.hlog")
    atomic.write_text(run_dir / "results.sarif", sarif_text(root / record.DB_NAME))
    atomic.write_text(run_dir / "index.html", html.run_page(report))
    write_index(root)
    return run_dir


def load_runs(root: Path) -> list[RunReport]:
    return sorted(_scan(root)[0], key=lambda r: r.started)


# Folders under the reports root that hold no run: the fuzz targets' working corpora, the signature pages.
SIGNATURES = "signatures"
NOT_RUNS = frozenset({"corpus", SIGNATURES})


def _scan(root: Path) -> tuple[list[RunReport], list[tuple[str, float, str]]]:
    """The runs under root with a readable record (summary.json), and the run folders without one:
    (name, modification time, why), so that an interrupted or failed run is listed, not skipped."""
    runs: list[RunReport] = []
    unrecorded: list[tuple[str, float, str]] = []
    folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    for folder in folders:
        if folder.name.startswith(".") or folder.name in NOT_RUNS:
            continue
        try:
            runs.append(read_summary(folder / "summary.json"))
            continue
        except FileNotFoundError:
            if (folder / "stress.json").exists():
                why = "kpool stress run: stress.json, no report record" + _unfinished(folder / "stress.json")
            elif (folder / "fuzz.json").exists():
                why = "kpool fuzz run: fuzz.json, no report record"
            else:
                why = "no record (interrupted or failed run)"
        except UnreadableSummary as e:  # a damaged or foreign file does not hide the other runs
            why = f"record unreadable: summary.json {e}"
        try:
            when = folder.stat().st_mtime
        except OSError:  # gone meanwhile
            continue
        unrecorded.append((folder.name, when, why))
    return runs, unrecorded


def _unfinished(stress_json: Path) -> str:
    """', unfinished ...' for a stress.json written before its run's end (runner.py's snapshots: the run is
    still going, or was killed), else ""."""
    try:  # the records' reader: a FIFO hung the report in open(), a document nested deep stopped it
        doc = atomic.loads(atomic.read_bytes(stress_json))
    except (OSError, ValueError):
        return ""
    if not isinstance(doc, dict) or "unfinished" not in doc:
        return ""
    return f", unfinished (still going, or killed) in workload {doc['unfinished']}"


def _builds(data: dict[str, object]) -> bool:
    try:
        RunReport.from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError):
        return False
    return True


# Values that stand in for a field while looking for the one that breaks an item: one of them has the
# field's type.
_NEUTRAL: tuple[object, ...] = ([], "", 0, {})


def _locate(data: dict[str, object]) -> str:
    """Where from_dict failed, as " in workloads[0].latency": the first top-level field that fails alone,
    its first item that fails alone, and the item's field that, replaced by an empty value, mends it."""
    base: dict[str, object] = {"run_id": "x"}
    for key, value in data.items():
        if _builds({**base, key: value}):
            continue
        if not isinstance(value, list):
            return f" in {key}"
        for i, item in enumerate(value):
            if _builds({**base, key: [item]}):
                continue
            if isinstance(item, dict):
                for field in item:
                    if any(_builds({**base, key: [{**item, field: v}]}) for v in _NEUTRAL):
                        return f" in {key}[{i}].{field}"
            return f" in {key}[{i}]"
        return f" in {key}"
    return ""


class UnreadableSummary(ValueError):
    """A summary.json that is no run record: the message says what is wrong with it."""


# The tail of a reason quoted from a parser's message.
WHY_MAX = 160


def read_summary(path: Path) -> RunReport:
    """A run's record; FileNotFoundError when there is none, UnreadableSummary naming what is wrong (not
    JSON, not an object, a field missing or of the wrong type)."""
    try:
        text = atomic.read_bytes(path).decode("utf-8")
    except FileNotFoundError:
        raise
    except UnicodeDecodeError as e:
        raise UnreadableSummary(f"is not UTF-8 text (byte {e.start})") from e
    except OSError as e:
        raise UnreadableSummary(f"cannot be read ({e.strerror or e})") from e
    try:
        data = atomic.loads(text)
    except atomic.NestedTooDeep as e:
        raise UnreadableSummary(f"is {e}") from e
    except ValueError as e:  # JSONDecodeError, and a number too long to convert
        raise UnreadableSummary(f"is not JSON ({str(e)[:WHY_MAX]})") from e
    if not isinstance(data, dict):
        raise UnreadableSummary(f"is not a JSON object (a {type(data).__name__})")
    try:
        report = RunReport.from_dict(data)
    except KeyError as e:
        raise UnreadableSummary(f"lacks the field {e}") from e
    except (TypeError, ValueError, AttributeError) as e:
        where = _locate(data)
        raise UnreadableSummary(f"has a field of the wrong shape{where} ({str(e)[:WHY_MAX]})") from e
    problem = type_problem(report)
    if problem:
        raise UnreadableSummary(f"has a field of the wrong type: {problem}")
    return report


# How long the index waits for another process's lock on the crash database. A writer holds it for a
# millisecond or so (db.py), so two seconds is a stuck one; the index is then written without it.
REPORT_LOCK_WAIT_MS = 2000


def _crash_db(root: Path) -> tuple[CrashDB | None, str]:
    """The reports folder's crash database, None when there is none; and, when there is a file that
    cannot be read (damaged, of a newer schema, locked), why."""
    try:
        return CrashDB.open(root / record.DB_NAME, busy_timeout_ms=REPORT_LOCK_WAIT_MS, write=False), ""
    except MissingCrashDB:
        return None, ""
    except KpoolError as e:  # CrashDBError, LockedCrashDB, and an open that failed
        return None, str(e)


def write_index(root: Path, warnings: list[str] | None = None) -> Path:
    """reports/index.html (the runs, and the trends per night) and a page per crash signature
    (reports/signatures/<hash>.html, its history across the runs). A crash database that cannot be read
    leaves the signatures out (and the file as it is), says why on the page and appends it to
    `warnings`."""
    path = root / "index.html"
    runs, unrecorded = _scan(root)
    runs.sort(key=lambda r: r.started)
    db, problem = _crash_db(root)
    found = None
    if db is not None:
        try:
            found = trends.histories(db, runs)
        except KpoolError as e:  # damage past the file's first pages, found while reading
            problem = str(e)
    if problem and warnings is not None:
        warnings.append(f"crash database unreadable, the index is written without it: {problem}")
    for h in found or ():
        atomic.write_text(root / SIGNATURES / f"{h.row.hash}.html", html.signature_page(h))
    atomic.write_text(path, html.index_page(runs, unrecorded, found, db_problem=problem))
    return path
