"""The nightly job, `kpool campaign`: build the variants, split a time budget across fuzz targets and
workloads, run them (here, or on a Dask cluster), triage the crashes, write the report, and say in the
exit code whether anything new broke.

- budget.py   the budget and the plan: the jobs, their slots, the sanitizer checks, campaign.json
- run.py      running a plan through an executor (harness/jobs/), landing cluster results, the report
- corpus.py   a cluster's corpus entries sent out and merged back with libFuzzer's -merge=1
- command.py  the command line: checks before anything runs, builds, resume, exit codes

Every output (the runs, the fuzz corpora, logs, the crash database, coverage, the index) goes under
--reports. The plan and every job's state live in <reports>/<run-id>/campaign.json, rewritten after each
change, so an interrupted campaign (Ctrl-C, kill) keeps what finished and `--resume` runs only what did
not.
"""

from harness.campaign.budget import (
    FUZZ_SHARE,
    FUZZ_TARGETS,
    MIN_FUZZ_S,
    Campaign,
    fuzz_start_s,
    parse_budget,
    plan,
)
from harness.campaign.command import (
    DEFAULT_BUDGET,
    DEFAULT_PROGRAMS,
    DEFAULT_WORKLOADS,
    MARGIN_S,
    PROGRAMS_MIN_BUDGET_S,
    build_variants,
    find_workloads,
    load_workloads,
    main,
    parse_args,
)
from harness.campaign.run import collect, fuzz_coverage, run_jobs, summary
from harness.jobs.model import RERUN_STATES, Job
from harness.jobs.task import GRACE_S, STOP_WAIT_S

__all__ = [
    "DEFAULT_BUDGET",
    "DEFAULT_PROGRAMS",
    "DEFAULT_WORKLOADS",
    "FUZZ_SHARE",
    "FUZZ_TARGETS",
    "GRACE_S",
    "MARGIN_S",
    "MIN_FUZZ_S",
    "PROGRAMS_MIN_BUDGET_S",
    "RERUN_STATES",
    "STOP_WAIT_S",
    "Campaign",
    "Job",
    "build_variants",
    "collect",
    "find_workloads",
    "fuzz_coverage",
    "fuzz_start_s",
    "load_workloads",
    "main",
    "parse_args",
    "parse_budget",
    "plan",
    "run_jobs",
    "summary",
]
