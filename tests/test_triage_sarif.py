"""`kpool triage sarif` writes SARIF 2.1.0 for code scanning (issue 15, point 9): valid against the schema,
one result per signature, a rule per crash kind, partialFingerprints from the signature, the stack, and
the reproducer's path."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jsonschema
import pytest

from harness import cli
from harness.triage.crash import Crash, Reproducer
from harness.triage.db import CrashDB

SCHEMA = json.loads((Path(__file__).parent / "data" / "sarif" / "sarif-2.1.0.json").read_text())

ASAN = """\
==1==ERROR: AddressSanitizer: heap-use-after-free on address 0x1 at pc 0x2
    #0 0x1 in kp__central_give /work/kpool/allocator/src/primary.c:335:5
    #1 0x2 in kp_free /work/kpool/allocator/src/alloc.c:820:9
    #2 0x3 in do_free /work/kpool/allocator/driver/fuzz_model.c:360:2
"""
ORACLE = """\
==kpfuzz== VIOLATION overlap in kp_alloc_aligned (driver/fuzz_model.c:344): kp_alloc_aligned(100) ...
==9==ERROR: AddressSanitizer: ABRT on unknown address 0x1 (pc 0x2 bp 0x3 sp 0x4 T0)
    #0 0x1 in abort stdlib/abort.c:79:7
    #1 0x2 in fz_fail /work/kpool/allocator/driver/fuzz_model.c:132:2
    #2 0x3 in check_new /work/kpool/allocator/driver/fuzz_model.c:344:4
"""
SEGV = """\
==3==ERROR: AddressSanitizer: SEGV on unknown address 0x10 (pc 0x2 bp 0x3 sp 0x4 T0)
    #0 0x1 in span_pop /work/kpool/allocator/src/primary.c:242:3
    #1 0x2 in kp__central_take /work/kpool/allocator/src/primary.c:286:9
"""


def _db(tmp_path: Path) -> Path:
    path = tmp_path / "crashes.sqlite"
    db = CrashDB(path)
    fuzz = Reproducer(argv=(sys.executable, "t.py", "${input_path}"), kind="fuzz", input_path="/r/crash-1")
    db.record(Crash(text=ASAN, run_id="r1", source="fuzz:api_sequence", reproducer=fuzz))
    db.record(Crash(text=ASAN, run_id="r2", source="fuzz:api_sequence", reproducer=fuzz))  # same signature
    db.record(Crash(text=ORACLE, run_id="r2", source="fuzz:api_sequence", reproducer=fuzz))
    work = Reproducer(argv=("kpdrive", "w.prog", "seed=3"), kind="workload", workload="/w/x.yaml")
    db.record(Crash(text=SEGV, run_id="r2", source="workload:x", reproducer=work))
    return path


def _sarif(path: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    assert cli.main(["triage", "--db", str(path), "sarif", "--out", str(out)]) == 0
    doc: dict[str, object] = json.loads(out.read_text())
    jsonschema.Draft4Validator(SCHEMA).validate(doc)
    return doc


def test_sarif_is_valid_with_one_result_per_signature(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _db(tmp_path)
    doc = _sarif(path, tmp_path / "out.sarif", capsys)
    assert doc["version"] == "2.1.0"
    [run] = doc["runs"]  # type: ignore[index]
    results = run["results"]
    sigs = CrashDB.open(path).signatures()
    assert len(results) == len(sigs) == 3
    rules = run["tool"]["driver"]["rules"]
    assert sorted(r["id"] for r in rules) == sorted({s.kind for s in sigs})  # a rule per crash kind
    for res in results:
        assert rules[res["ruleIndex"]]["id"] == res["ruleId"]
        assert res["partialFingerprints"]["kpoolSignature/v1"] in {s.hash for s in sigs}
        assert res["stacks"][0]["frames"], res
        assert res["locations"], res
    uaf = next(r for r in results if r["ruleId"] == "heap-use-after-free")
    assert uaf["properties"]["count"] == 2
    names = [f["location"]["logicalLocations"][0]["name"] for f in uaf["stacks"][0]["frames"]]
    assert names[:2] == ["kp__central_give", "kp_free"]
    where = uaf["locations"][0]["physicalLocation"]
    assert where["artifactLocation"]["uri"].endswith("allocator/src/primary.c")
    assert where["region"]["startLine"] == 335
    assert any(loc["artifactLocation"]["uri"].endswith("/r/crash-1") for loc in _related(uaf))
    seg = next(r for r in results if r["ruleId"] == "SIGSEGV")
    assert "kpdrive w.prog seed=3" in seg["properties"]["reproducer"]


def _related(result: dict[str, object]) -> list[dict[str, object]]:
    return [loc["physicalLocation"] for loc in result.get("relatedLocations", [])]  # type: ignore[union-attr,index]


def test_sarif_of_no_database_is_an_empty_valid_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = _sarif(tmp_path / "none.sqlite", tmp_path / "out.sarif", capsys)
    assert doc["runs"][0]["results"] == []  # type: ignore[index]
    assert not (tmp_path / "none.sqlite").exists()


def test_a_run_report_has_the_sarif_beside_its_summary(tmp_path: Path) -> None:
    from harness.report import writers
    from harness.report.model import RunReport

    _db(tmp_path)  # tmp_path/crashes.sqlite: the reports folder's database
    run_dir = writers.write_run(RunReport(run_id="r2", started=0.0), tmp_path)
    doc = json.loads((run_dir / "results.sarif").read_text())
    jsonschema.Draft4Validator(SCHEMA).validate(doc)
    assert len(doc["runs"][0]["results"]) == 3
    assert "href='results.sarif'" in (run_dir / "index.html").read_text()
