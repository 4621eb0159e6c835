"""Session 20's outside review: a campaign's job result files (a fuzz job's fuzz.json, a stress job's
stress.json) damaged or edited by hand, read back by the campaign's report (at its end, and at every
`--resume`). On main (e193d3a) a field of the wrong type (`"results": "x"`, `"crashes": 5`,
`"execs": "many"`, `"target": null`, `"workloads": [1]`, `"slo": 5`) stopped the campaign with a
traceback before its summary.json, its report and the triage of every other job's crashes. Now that job
alone fails, its error naming the file and what is wrong, and the crashes before the bad field are
triaged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.jobs.model import Job
from harness.report import ingest

FUZZ = {
    "run_dir": "x",
    "plant": 0,
    "results": [
        {
            "target": "conf",
            "seconds": 13.7,
            "returncode": 0,
            "execs": 113331,
            "exec_per_s": 8717,
            "cov": 1003,
            "corpus": 182,
            "crashes": [],
            "replays": {},
            "log": "",
            "error": "",
        }
    ],
}
STRESS: dict[str, Any] = {"run_id": "s", "workloads": [{"name": "steady-small", "crashes": [], "slo": []}]}


def _fuzz(**changes: object) -> dict[str, Any]:
    return {**FUZZ, "results": [{**FUZZ["results"][0], **changes}]}


def _stress(**changes: object) -> dict[str, Any]:
    return {**STRESS, "workloads": [{**STRESS["workloads"][0], **changes}]}


CASES = [
    ("fuzz", {**FUZZ, "results": "x"}),
    ("fuzz", {**FUZZ, "results": [5]}),
    ("fuzz", _fuzz(crashes=5)),
    ("fuzz", _fuzz(execs="many")),
    ("fuzz", _fuzz(target=None)),
    ("stress", {**STRESS, "workloads": "x"}),
    ("stress", {**STRESS, "workloads": [1]}),
    ("stress", _stress(slo=5)),
    ("stress", _stress(name=None)),
]


def _job(tmp_path: Path, kind: str, doc: dict[str, Any]) -> tuple[Job, Path]:
    run_dir = tmp_path / "reports" / "run"
    folder = "fuzz-conf" if kind == "fuzz" else "stress-steady-small"
    out = run_dir / folder / f"{kind}.json"
    out.parent.mkdir(parents=True)
    out.write_text(json.dumps(doc))
    name = "fuzz:conf" if kind == "fuzz" else "stress:steady-small"
    job = Job(name, kind, ["true"], 10.0, f"{folder}/{kind}.json", state="done", returncode=0)
    return job, run_dir


@pytest.mark.parametrize(("kind", "doc"), CASES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(CASES)])
def test_a_job_result_of_the_wrong_shape_fails_that_job_alone(
    tmp_path: Path, kind: str, doc: dict[str, Any]
) -> None:
    job, run_dir = _job(tmp_path, kind, doc)
    results = ingest.job_results(job, run_dir)
    errors = [r.error for r in (*results.fuzz, *results.workloads)]
    assert errors and all(f"{kind}.json of {job.name}" in e for e in errors), errors
    assert all("wrong type" in e or "no field" in e for e in errors), errors
    ingest.triage([job], "run", 0, run_dir)  # no exception: the other jobs' crashes are still triaged


def test_the_crashes_before_a_bad_one_are_triaged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    crash = {
        "kind": "signal",
        "worker": 0,
        "seed": 1,
        "signal": "SIGSEGV",
        "stderr_tail": "Segmentation fault",
    }
    job, run_dir = _job(tmp_path, "stress", _stress(crashes=[crash, 5]))
    entries = ingest.triage([job], "run", 0, run_dir)
    assert len(entries) == 1, entries
    assert "stress.json of stress:steady-small" in capsys.readouterr().err
