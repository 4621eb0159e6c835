"""Campaigns on a Dask cluster against a hostile user (issue 16): addresses that cannot work, a scheduler
with no worker, a worker whose build fails, a worker that keeps dying, and the record of where each job
ran. The fast tests fake the cluster or use an in-process one; the slow ones run worker processes."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from harness import cli
from harness.campaign import plan
from harness.errors import BuildError, ConfigError, UsageError
from harness.jobs import dask as jobs_dask
from harness.jobs import task
from harness.jobs.model import JobSpec

ROOT = Path(__file__).resolve().parents[1]
STEADY = ROOT / "workloads" / "steady-small.yaml"


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ("tls://h", "port"),  # distributed raised ValueError: a traceback, exit 1
        ("tcp://sched.lan", "port"),
        ("tcp://sched.lan:99999", "65535"),
        ("tcp://sched.lan:0", "65535"),
        ("local:-1", "local:N"),
        ("local:abc", "local:N"),
        ("local:", "local:N"),
    ],
)
def test_an_address_that_cannot_work_is_a_usage_error_naming_it(
    bad: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["campaign", "--cluster", bad, "--workloads", "", "--targets", "conf"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    [line] = [x for x in err.splitlines() if x.startswith("kpool: error:")]
    assert bad in line and says in line, line


def test_more_local_workers_than_cores_is_refused_before_starting_any(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """local:64 on a 2-core machine started 64 worker processes and hung past two minutes."""
    monkeypatch.setattr(jobs_dask, "_cores", lambda: 2)
    jobs_dask.parse_address("local:2")  # no error
    with pytest.raises(UsageError) as err:
        jobs_dask.parse_address("local:64")
    text = str(err.value)
    assert "local:64" in text and "2 cores" in text and "local:2" in text, text


def test_an_address_distributed_refuses_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever distributed raises while connecting (a ValueError for an address it cannot parse) is an
    error naming the address, never a traceback."""

    class Refusing:
        def Client(self, *a: Any, **k: Any) -> None:
            raise ValueError("missing port number in address 'h'")

    monkeypatch.setattr(jobs_dask, "_distributed", lambda: Refusing())
    with pytest.raises(ConfigError) as err:
        jobs_dask.DaskExecutor("tcp://h:1", "r")
    assert "tcp://h:1" in str(err.value) and "missing port" in str(err.value)


def test_a_scheduler_without_workers_is_an_error_after_a_stated_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    from distributed import LocalCluster

    monkeypatch.setattr(jobs_dask, "WORKERS_TIMEOUT_S", 1.0)
    with LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster:
        ex = jobs_dask.DaskExecutor(cluster.scheduler_address, "r")
        try:
            t0 = time.monotonic()
            with pytest.raises(ConfigError) as err:
                ex.check()
            took = time.monotonic() - t0
        finally:
            ex.close()
    text = str(err.value)
    assert took < 10, took
    assert "no worker" in text and "1 s" in text and "dask worker" in text, text


def test_a_build_that_fails_on_a_worker_names_the_worker_and_the_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No clang on one worker: the job is a failed result naming that worker and what to install, not an
    exception that says neither where nor which job."""

    def no_clang(spec: JobSpec) -> None:
        raise BuildError("the fuzz variant needs clang; install the Debian package clang")

    monkeypatch.setattr(task, "prepare", no_clang)
    spec = JobSpec("fuzz:conf", "fuzz", "conf", "r", 10.0, seconds=5)
    result = task.run_job(spec, where="tcp://10.0.0.7:4000")
    assert result.state == "failed", result
    assert "tcp://10.0.0.7:4000" in result.error and "package clang" in result.error, result.error
    assert result.worker == "tcp://10.0.0.7:4000"


def test_summary_json_says_where_each_job_ran(tmp_path: Path) -> None:
    """An experienced user looks in summary.json for which worker ran each job, how often it was
    started, and why one ended without results."""
    from harness.campaign.run import collect
    from harness.report.model import RunReport

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    c = plan("r", run_dir, 60.0, 2, 0, [], [STEADY])
    [job] = c.jobs
    job.state, job.worker, job.attempts = "failed", "tcp://10.0.0.7:4000", 3
    job.error = "its worker died 3 time(s)"
    report = collect(c, run_dir, coverage=False)
    d = json.loads(json.dumps(report.to_dict()))
    [rec] = d["jobs"]
    assert rec["name"] == job.name and rec["worker"] == "tcp://10.0.0.7:4000", rec
    assert rec["state"] == "failed" and rec["attempts"] == 3 and "died" in rec["error"], rec
    assert RunReport.from_dict(d).jobs == report.jobs


def test_a_killed_worker_message_does_not_claim_our_retry_count_on_a_foreign_scheduler() -> None:
    """On a scheduler kpool did not start, allowed-failures is the scheduler's: the error must not say
    the job ran MAX_RETRIES + 1 times."""
    assert "3 time" in jobs_dask.killed_message("local:2", "boom")
    text = jobs_dask.killed_message("tcp://sched.lan:8786", "boom")
    assert "allowed-failures" in text and f"{jobs_dask.MAX_RETRIES + 1} time" not in text, text


def test_the_cores_are_those_this_process_may_use() -> None:
    assert jobs_dask._cores() == len(os.sched_getaffinity(0))


@pytest.mark.slow
def test_a_job_whose_worker_keeps_dying_fails_with_the_reason_and_loses_nothing(tmp_path: Path) -> None:
    """A job that kills its worker every time (here: the task is os._exit): the nanny restarts the
    worker, the scheduler runs the job again MAX_RETRIES more times, then the job is 'failed' saying
    why; the job that ended before it keeps its result, and the executor does not hang."""
    from harness.jobs.executor import Hooks
    from harness.jobs.model import Job, JobResult

    ex = jobs_dask.DaskExecutor("local:1", "r")
    try:
        ex.check()

        def submit(spec: JobSpec) -> Any:
            if spec.name == "ok":
                return ex.client.submit(JobResult, "ok", "done", key="kpool-ok", pure=False)
            return ex.client.submit(os._exit, 1, key="kpool-killer", pure=False)

        ex._submit = submit  # type: ignore[method-assign]
        jobs = [Job("ok", "stress", [], 10.0, "ok.json"), Job("killer", "stress", [], 10.0, "k.json")]
        landed: list[str] = []

        def land(j: Job, result: JobResult) -> None:
            landed.append(j.name)
            j.state = result.state

        hooks = Hooks(
            fit=lambda j, left: True,
            changed=lambda: None,
            landed=land,
            spec=lambda j, left: JobSpec(j.name, j.kind, "t", "r", j.slot_s),
        )
        t0 = time.monotonic()
        assert ex.run(jobs, time.monotonic() + 100, hooks)
        took = time.monotonic() - t0
    finally:
        ex.close()
    ok, killer = jobs
    assert landed == ["ok"] and ok.state == "done"
    assert killer.state == "failed", (killer.state, killer.error)
    assert f"died {jobs_dask.MAX_RETRIES + 1} time" in killer.error, killer.error
    assert took < 60, took


def test_a_cluster_campaign_resumed_here_runs_as_many_jobs_as_there_are_cores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A campaign planned for 100 worker slots, resumed without --cluster, ran 100 local jobs at once
    on a 2-core machine: here it runs as many as the cores (or --jobs), and says where it ran before."""
    from harness.campaign import Campaign, command

    run_dir = tmp_path / "campaign-1"
    run_dir.mkdir()
    c = plan("campaign-1", run_dir, 60.0, 100, 0, [], [STEADY])
    c.cluster = "tcp://sched.lan:8786"
    c.save(run_dir)
    seen: list[int] = []

    def run_jobs(c: Campaign, run_dir: Path, deadline: float | None = None, executor: object = None) -> bool:
        seen.append(c.jobs_n)
        return True

    monkeypatch.setattr(command, "run_jobs", run_jobs)
    command.main(["--resume", "campaign-1", "--reports", str(tmp_path)])
    assert seen == [os.cpu_count()], seen
    err = capsys.readouterr().err
    assert "tcp://sched.lan:8786" in err and "--cluster" in err, err
    command.main(["--resume", "campaign-1", "--reports", str(tmp_path), "--jobs", "1"])
    assert seen[-1] == 1


def test_a_campaign_records_the_cluster_it_ran_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.campaign import Campaign, command

    class FakeExecutor:
        where, slots, workers = "tcp://sched.lan:8786", 7, {"a": {}}

        def check(self) -> None: ...
        def close(self) -> None: ...

    monkeypatch.setattr(jobs_dask, "DaskExecutor", lambda address, run_id: FakeExecutor())
    monkeypatch.setattr(command, "build_variants", lambda *a, **k: None)
    monkeypatch.setattr(command, "run_jobs", lambda *a, **k: True)
    args = ["--cluster", "tcp://sched.lan:8786", "--targets", "", "--workloads", str(STEADY)]
    command.main([*args, "--reports", str(tmp_path)])
    [record] = tmp_path.glob("*/campaign.json")
    c = Campaign.load(record.parent)
    assert c.cluster == "tcp://sched.lan:8786" and c.jobs_n == 7


def _two_worker_run(monkeypatch: pytest.MonkeyPatch, bad: int) -> tuple[list[Any], list[str]]:
    """Four jobs on an in-process cluster of two workers, the first `bad` of which run another kpool
    (their tasks answer 'refused', as task.run_job does there)."""
    from distributed import LocalCluster, get_worker

    from harness.jobs.executor import Hooks
    from harness.jobs.model import Job, JobResult

    with LocalCluster(n_workers=2, processes=False, threads_per_worker=1, dashboard_address=None) as cl:
        ex = jobs_dask.DaskExecutor(cl.scheduler_address, "r")
        refusing = sorted(ex.workers)[:bad]

        def run_remote(spec: JobSpec, stop_event: str) -> JobResult:
            where = str(get_worker().address)
            time.sleep(0.3)
            if where in refusing:
                return JobResult(spec.name, "refused", worker=where, error=f"worker {where} runs kpool 9")
            return JobResult(spec.name, "done", worker=where)

        monkeypatch.setattr(jobs_dask, "run_remote", run_remote)
        jobs = [Job(f"stress:w{i}", "stress", [], 10.0, f"w{i}.json") for i in range(4)]

        def land(j: Job, result: JobResult) -> None:
            j.state, j.worker = result.state, result.worker

        hooks = Hooks(
            fit=lambda j, left: True,
            changed=lambda: None,
            landed=land,
            spec=lambda j, left: JobSpec(j.name, j.kind, "t", "r", j.slot_s),
        )
        try:
            assert ex.run(jobs, time.monotonic() + 60, hooks)
        finally:
            ex.close()
    return jobs, refusing


def test_a_worker_of_another_kpool_that_joins_mid_run_gets_no_job(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A worker that joined after the check and runs another kpool refuses the job it is given: the job
    runs on a worker that matches, the refusing worker is named, and it gets no more jobs (it would
    otherwise refuse every job fastest and take them all)."""
    jobs, [bad] = _two_worker_run(monkeypatch, 1)
    assert [j.state for j in jobs] == ["done"] * 4, [(j.state, j.error) for j in jobs]
    assert all(j.worker != bad for j in jobs)
    err = capsys.readouterr().err
    assert bad in err and "kpool 9" in err, err


def test_when_every_worker_runs_another_kpool_the_jobs_fail_saying_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    jobs, refusing = _two_worker_run(monkeypatch, 2)
    assert [j.state for j in jobs] == ["failed"] * 4, [(j.state, j.error) for j in jobs]
    assert all("another kpool" in j.error and refusing[0] in j.error for j in jobs), jobs[0].error


def test_two_campaigns_merging_one_corpus_take_turns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two cluster campaigns with one --reports folder merged into one <target>.incoming folder at
    once: one's rmtree emptied it under the other's libFuzzer. A merge holds the corpus's lock."""
    import fcntl
    import subprocess

    from harness.campaign import corpus
    from harness.fuzz import runner

    blocked: list[bool] = []

    def merge_run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        with (tmp_path / "corpus" / "conf.lock").open("a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                blocked.append(False)
            except BlockingIOError:
                blocked.append(True)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(runner, "script", lambda target: Path("fuzz.py"))
    monkeypatch.setattr(runner, "target_env", lambda target, plant: {})
    monkeypatch.setattr(corpus.subprocess, "run", merge_run)
    corpus.merge(tmp_path, "conf", {"a" * 40: b"x"})
    assert blocked == [True]


@pytest.mark.slow
def test_ctrl_c_while_the_local_cluster_starts_waits_for_it_and_closes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C in the first second or two of `--cluster local:N`, while the LocalCluster was being made,
    left a half-made cluster that Dask's finalizers then tore down with an `AssertionError:
    Status.init` traceback (helper's attack, session 5). Now the interrupt is held until the cluster
    and its client exist, then raised: the caller closes a whole cluster."""
    import signal

    distributed = pytest.importorskip("distributed")
    made: list[Any] = []
    real = distributed.LocalCluster

    def interrupted_while_starting(*args: Any, **kwargs: Any) -> Any:
        os.kill(os.getpid(), signal.SIGINT)  # the user's Ctrl-C, mid-start
        time.sleep(0.2)
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(distributed, "LocalCluster", interrupted_while_starting)
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers exist in the main thread only")
    # Python's own SIGINT handler, whatever an earlier test in this worker left installed: a fresh-clone CI
    # run (session 12, under load) saw no KeyboardInterrupt at all; the handler found at entry is the one
    # state this test did not set (the cause was not found: not reproduced)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            jobs_dask.DaskExecutor("local:1", "run-x")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert len(made) == 1, "the cluster was never finished: the interrupt cut its start"
    assert made[0].status.name == "closed", f"the cluster was left {made[0].status.name}"


@pytest.mark.slow
def test_workers_build_before_the_budget_starts_and_a_worker_that_cannot_is_set_aside() -> None:
    """A remote worker built its variants inside its first job's time (a fuzz job on a fresh machine
    could reach its deadline building: the helper's attack, session 5). The executor now has every
    worker build what the jobs need before the budget's clock starts; a worker whose build fails is
    named, with the error, and gets no job."""
    pytest.importorskip("distributed")
    ex = jobs_dask.DaskExecutor("local:1", "run-x")
    try:
        ex.check()
        [worker] = ex.workers
        good = JobSpec(name="stress:x", kind="stress", target="x", run_id="run-x", slot_s=1.0)
        built = ex.prepare([good])
        assert built == {worker: ""}, built
        assert not ex.refused
        bad = JobSpec(name="stress:y", kind="stress", target="y", run_id="run-x", slot_s=1.0, variant="nope")
        ex.prepare([bad])
        assert worker in ex.refused and "nope" in ex.refused[worker], ex.refused
    finally:
        ex.close()
