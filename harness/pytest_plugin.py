"""pytest plugin: every workloads/*.yaml and workloads/programs/*.yaml is a test item.

    pytest workloads -n auto --junitxml=stress.xml

An item runs its workload with the stress runner (an op-stream workload: all its worker processes; a
program workload: the program on kpool's preload and on glibc) and fails on a crash, an integrity
error or a broken SLO, with a message that lists each and the reproducer of each crash. A
file that does not validate fails with the loader's file:line:column messages; a configuration the
driver or kp_create refuses (KPOOL_CONF, say) fails with its one-line message, no worker started.

Registered as the `kpool` pytest11 entry point when the package is installed; workloads/conftest.py
loads it from a source checkout. Settings come from the environment (so that xdist workers see them):
KPOOL_REPORTS (reports directory, default reports/), KPOOL_ALLOCATOR (run on a peer instead),
KPOOL_STRESS_BASELINE=1 (also measure the interference ratio).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import spec
from harness.errors import KpoolError
from harness.stress import runner


class WorkloadFailure(Exception):
    """A workload ran and failed its verdict; the message is the readable report."""


def pytest_load_initial_conftests(
    early_config: pytest.Config, parser: pytest.Parser, args: list[str]
) -> None:
    """`pytest workloads` (README) in a folder with no workloads/ of its own (kpool installed with pip,
    no checkout) collected nothing: 'file or directory not found: workloads', exit 4. A `workloads` or
    `workloads/...` argument that names nothing here is read as the shipped workloads, as `kpool stress
    workloads/x.yaml` reads it; one that exists here is left alone."""
    from harness import paths

    for i, arg in enumerate(args):
        path = Path(arg.split("::", 1)[0])
        if arg.startswith("-") or path.exists() or not path.parts or path.parts[0] != "workloads":
            continue
        shipped = paths.workloads().parent / path
        if shipped.exists():
            args[i] = str(shipped) + arg[len(arg.split("::", 1)[0]) :]


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> pytest.Collector | None:
    # a YAML file named on the command line is a workload wherever it is (`pytest ci/nightly.yaml` was
    # "not found"); one a folder argument reaches is only in workloads/ (a repository's other YAML stays)
    named = parent.session.isinitpath(file_path)
    if file_path.suffix in (".yaml", ".yml") and (named or _in_workloads(file_path)):
        collector: pytest.Collector = WorkloadFile.from_parent(parent, path=file_path)
        return collector
    return None


def _in_workloads(path: Path) -> bool:
    """workloads/x.yaml, or workloads/programs/x.yaml (the program workloads)."""
    parent = path.parent
    return parent.name == "workloads" or (parent.name == "programs" and parent.parent.name == "workloads")


class WorkloadFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        try:
            loaded = spec.load(self.path)
        except spec.SpecError as exc:
            yield WorkloadItem.from_parent(self, name=self.path.stem, workload=exc)
            return
        yield WorkloadItem.from_parent(self, name=loaded.name, workload=loaded)


class WorkloadItem(pytest.Item):
    def __init__(self, *, workload: spec.AnyWorkload | spec.SpecError, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.workload = workload

    def runtest(self) -> None:
        if isinstance(self.workload, spec.SpecError):
            raise WorkloadFailure(str(self.workload))
        opts = runner.Options(
            allocator=os.environ.get("KPOOL_ALLOCATOR") or None,
            jobs=os.cpu_count() or 1,
            reports_dir=Path(os.environ.get("KPOOL_REPORTS", "reports")),
            run_id=f"pytest-{self.workload.name}-{secrets.token_hex(3)}",
            baseline=os.environ.get("KPOOL_STRESS_BASELINE") == "1",
            progress_s=3600.0,  # pytest shows its own progress
        )
        try:
            report = runner.run([self.workload], opts)
        except KpoolError as exc:
            if exc.exit_code != 2:  # not the user's configuration: the harness failed, show where
                raise
            raise WorkloadFailure(
                f"workload {self.workload.name} ({self.workload.path}): configuration error: {exc}"
            ) from exc
        result = report["workloads"][0]
        self.user_properties.append(("report", report["path"]))
        if result["interrupted"]:  # Ctrl-C or SIGTERM reached the runner, which stopped the workers
            raise KeyboardInterrupt  # pytest stops here, as at a Ctrl-C of its own, not at the next item
        if not result["passed"]:
            raise WorkloadFailure(failure_text(result, report["path"]))

    def repr_failure(
        self,
        excinfo: pytest.ExceptionInfo[BaseException],
        style: Any = None,
    ) -> str:
        if isinstance(excinfo.value, WorkloadFailure):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo, style))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"workload {self.name}"


def failure_text(result: dict[str, Any], report_path: str) -> str:
    lines = [f"workload {result['name']} ({result['file']}) failed on {result['allocator']}:"]
    lines += [f"  broken: {b}" for b in result["broken"]]  # configuration errors among them
    for run in result.get("runs", []):  # a program workload's runs
        if run["errors"] or run["checks_failed"]:
            lines.append(f"  {run['allocator']} run {run['round'] + 1} in {run['work']}")
    for c in result["crashes"]:
        lines.append(f"  worker {c['worker']} {c['kind']}: {c['message']}")
        lines.append(f"    reproduce: {c['reproducer']['command']}")
        tail = (c.get("sanitizer_report") or c.get("stderr_tail") or "").strip().splitlines()[-8:]
        lines += [f"    | {t}" for t in tail]
    for d in result.get("damage", [])[:4]:
        lines.append(
            f"  damaged block: worker {d['worker']} thread {d['thread']} op {d['index']}, size {d['size']}, "
            f"offset {d['offset']} ({d['when']})"
        )
    lines.append(f"  report: {report_path}")
    return "\n".join(lines)
