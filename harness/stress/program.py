"""The launch of a program workload (harness/stress/launch.py): a real program on kpool's preload library
and on glibc side by side (and on the peers when asked), judged by its SLOs.

For each run (`repeat` rounds, the allocators in turn within a round, so that a slow minute of a shared
machine falls on all of them): a fresh work folder, the inputs copied in, the setup commands (on glibc),
the program through `harness.run.run_program` (kpool run's launcher: LD_PRELOAD, GNU time's peak RSS,
the pool's figures, the time limit), the driver beside it when it has one (a client on glibc, once the
program listens on 127.0.0.1:{port}), then the check commands (on glibc). Helpers are spawned and
killed by harness/stress/worker.py. A program that crashes on kpool (a signal, an integrity abort, its
time limit) is a crash record in the crash database (harness.run.record_crash), with a reproducer that
replays its command line.

The verdicts (each as slo.verdicts gives them): no crash, the exit status (glibc's or the workload's
value), integrity events, the output (strings it must hold; lines the same as glibc's), the check
commands, and the time and peak-RSS ratios to glibc (medians of the runs).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import statistics
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import output, paths, peers, run
from harness.errors import BuildError, ConfigError, KpoolError
from harness.spec.program import PLACEHOLDERS, ProgramWorkload, cpus, expand, python
from harness.stress import worker

if TYPE_CHECKING:
    from harness.stress.runner import Options

REFERENCE = "glibc"
# A server's port is polled this often until it accepts, within the program's time limit.
PORT_POLL_S = 0.05
# A helper (setup, driver, check) gets the program's time limit: generating inputs or a benchmark client
# takes no longer than the program itself.
STDOUT_NAME = "stdout.txt"


@dataclass
class Run:
    """One run of the program on one allocator."""

    allocator: str
    round: int
    work: Path
    result: run.RunResult | None = None
    errors: list[str] = field(default_factory=list)  # setup or driver failures: the run measured nothing
    checks: list[str] = field(default_factory=list)  # failed check commands
    stdout: str = ""
    signature: str | None = None

    def to_dict(self) -> dict[str, Any]:
        r = self.result
        return {
            "allocator": self.allocator,
            "round": self.round,
            "work": str(self.work),
            "returncode": None if r is None else r.returncode,
            "timed_out": None if r is None else r.timed_out,
            "wall_s": None if r is None else round(r.wall_s, 3),
            "user_s": None if r is None else round(r.user_s, 3),
            "sys_s": None if r is None else round(r.sys_s, 3),
            "peak_rss_kib": None if r is None else r.peak_rss_kib,
            "rss_exact": None if r is None else r.rss_exact,
            "peak_anon_kib": None if r is None else r.peak_anon_kib,
            "own_hwm_kib": None if r is None else r.own_hwm_kib,
            "integrity_events": None if r is None else r.integrity_events,
            "errors": self.errors,
            "checks_failed": self.checks,
            "signature": self.signature,
        }

    @property
    def measured(self) -> bool:
        return self.result is not None and not self.errors


def free_port() -> int:
    """A TCP port on 127.0.0.1 free at this moment (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def glibc_env() -> dict[str, str]:
    """The environment of the helpers: this one without any preload."""
    import os

    return {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}


def _allocator_src() -> str:
    try:
        return str(paths.allocator_sources())
    except BuildError:
        return ""


def allocators(opts: Options) -> list[str]:
    """The allocators a program workload runs on: the one under test (kpool unless --allocator), glibc,
    and the peers asked for, each once."""
    first = opts.allocator or "kpool"
    if first == "kpool-preload":
        first = "kpool"
    return list(dict.fromkeys([first, REFERENCE, *opts.peers]))


@dataclass
class ProgramLaunch:
    wl: ProgramWorkload
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.name = self.wl.name

    # ---- before anything runs -------------------------------------------------------------------------

    def preflight(self, opts: Options) -> None:
        missing = self.wl.missing()
        if missing:
            pkgs = " ".join(dict.fromkeys(missing.values()))
            raise ConfigError(
                f"{self.wl.path}: needs {', '.join(missing)} on PATH: install with `apt-get install {pkgs}`"
                " (scripts/setup.sh does)"
            )
        for item in self.wl.inputs:
            if not (Path(self.wl.path).parent / item).is_file():
                raise ConfigError(f"{self.wl.path}: program.inputs: {item} is not a file beside the workload")
        for alloc in allocators(opts):
            try:
                run.library(alloc)
            except KpoolError as exc:
                raise ConfigError(f"{self.wl.path}: {exc}") from exc

    # ---- the runs ---------------------------------------------------------------------------------------

    def run(self, opts: Options, run_dir: Path) -> dict[str, Any]:
        t0 = time.monotonic()
        folder = run_dir / self.wl.name
        runs: list[Run] = []
        interrupted = False
        try:
            for rnd in range(max(1, opts.repeat)):
                for alloc in allocators(opts):
                    output.progress(f"{self.wl.name}: run {rnd + 1} on {alloc}")
                    one = self._one(alloc, rnd, folder / f"{alloc}-{rnd}", opts)
                    runs.append(one)
                    if one.result is not None and one.result.recordable and alloc != REFERENCE:
                        recorded = run.record_crash(one.result, opts.reports_dir, own_run=run_dir.name)
                        one.signature = recorded.hash if recorded else None
                    if opts.on_partial is not None:  # stress.json again: a runner killed now keeps it
                        opts.on_partial(self._unfinished(runs, opts, t0))
        except KeyboardInterrupt:
            interrupted = True
        result = judge(self.wl, runs, allocators(opts)[0])
        result["wall_s"] = round(time.monotonic() - t0, 3)
        result["interrupted"] = interrupted
        if interrupted:
            result["broken"].append("interrupted before every run finished")
            result["passed"] = False
        return result

    def _unfinished(self, runs: Sequence[Run], opts: Options, t0: float) -> dict[str, Any]:
        """The entry of the runs that ended so far (runner.Options.on_partial), marked unfinished."""
        total = max(1, opts.repeat) * len(allocators(opts))
        entry = judge(self.wl, runs, allocators(opts)[0])
        entry["wall_s"] = round(time.monotonic() - t0, 3)
        entry["broken"].append(
            f"unfinished: {len(runs)} of {total} runs had ended when this was written (a run that ends "
            "writes it again, whole)"
        )
        entry["passed"], entry["interrupted"], entry["unfinished"] = False, True, "runs"
        return entry

    def _values(self, work: Path, port: int | None) -> dict[str, str]:
        values = {
            "work": str(work),
            "python": python(),
            "workload": str(Path(self.wl.path).absolute().parent),
            "allocator_src": _allocator_src(),
            "jobs": cpus(),
            "port": str(port or ""),
        }
        assert set(values) == set(PLACEHOLDERS)
        return values

    def _one(self, alloc: str, rnd: int, work: Path, opts: Options) -> Run:
        work = work.absolute()  # {work} is passed to programs that run in it: never a relative path
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        one = Run(alloc, rnd, work)
        limit = opts.time_limit_s or self.wl.time_limit_s
        values = self._values(work, free_port() if self.wl.uses_port else None)
        env = glibc_env()
        for item in self.wl.inputs:
            shutil.copy(Path(self.wl.path).parent / item, work / Path(item).name)
        for argv in self.wl.commands("setup"):
            done = worker.run_helper(expand(argv, values), work, env, limit)
            if not done.ok:
                one.errors.append(f"setup: {done.describe()}")
                return one
        argv = expand(self.wl.command, values)
        missing = _not_runnable(argv[0], work, expand_env(self.wl.env, values) if self.wl.env else {})
        if missing:
            one.errors.append(f"command: {missing}")  # exec would fail alike on glibc: no "same as glibc"
            return one
        if self.wl.stdin and not (work / self.wl.stdin).is_file():
            # checked here, after setup (which may write it): open() stopped the whole kpool stress run
            one.errors.append(f"stdin: {self.wl.stdin}: no such file in the work folder after setup")
            return one
        if self.wl.env:
            argv = ["/usr/bin/env", *(f"{k}={v}" for k, v in expand_env(self.wl.env, values).items()), *argv]
        driver = None
        if self.wl.commands("driver"):
            driver = _Driver([expand(a, values) for a in self.wl.commands("driver")], work, env, limit)
            driver.start(
                int(values["port"]), argv[0] if not self.wl.env else expand(self.wl.command, values)[0]
            )
        stdin = (work / self.wl.stdin).open("rb") if self.wl.stdin else None
        try:
            with (work / STDOUT_NAME).open("wb") as out:
                one.result = run.run_program(
                    argv, alloc, cwd=work, timeout_s=limit, stdin=stdin, stdout=out, echo_stderr=False
                )
        finally:
            if stdin is not None:
                stdin.close()
            if driver is not None:
                driver.join()
        if driver is not None and driver.error:
            one.errors.append(f"driver: {driver.error}")
        one.stdout = (work / STDOUT_NAME).read_text(errors="replace")
        for argv in self.wl.commands("check"):
            done = worker.run_helper(expand(argv, values), work, env, limit)
            if not done.ok:
                one.checks.append(done.describe())
        return one


def _not_runnable(program: str, work: Path, env: Mapping[str, str]) -> str:
    """Why program cannot be run from work ("" when it can): a path that is no executable file, a name
    found on no PATH directory."""
    if "/" in program:
        path = work / program  # an absolute program stays itself
        ok = path.is_file() and os.access(path, os.X_OK)
        return "" if ok else f"{program}: no executable file"
    found = shutil.which(program, path=env.get("PATH", os.environ.get("PATH", os.defpath)))
    return "" if found else f"{program}: not found on PATH"


def expand_env(env: Mapping[str, str], values: Mapping[str, str]) -> dict[str, str]:
    return {k: expand([v], values)[0] for k, v in env.items()}


class _Driver:
    """The driver commands in a thread: wait until the program listens on its port, run them in order;
    on a failure (or no listener within the limit) stop the program, so that the run ends."""

    def __init__(self, commands: list[list[str]], work: Path, env: dict[str, str], limit: float) -> None:
        self.commands, self.work, self.env, self.limit = commands, work, env, limit
        self.error = ""
        self._thread: threading.Thread | None = None

    def start(self, port: int, program: str) -> None:
        self._thread = threading.Thread(target=self._drive, args=(port, program), daemon=True)
        self._thread.start()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def _drive(self, port: int, program: str) -> None:
        deadline = time.monotonic() + self.limit
        while not _listening(port):
            if time.monotonic() > deadline:
                self.error = f"nothing listened on 127.0.0.1:{port} within {self.limit:g} s"
                return
            time.sleep(PORT_POLL_S)
        for argv in self.commands:
            done = worker.run_helper(argv, self.work, self.env, self.limit)
            if not done.ok:
                self.error = done.describe()
                worker.stop_descendants(program)
                return


# ---- the verdicts ---------------------------------------------------------------------------------------


def _verdict(name: str, value: Any, bound: Any, ok: bool, op: str = "==") -> dict[str, Any]:
    return {"slo": name, "value": value, "bound": bound, "ok": ok, "op": op}


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def figures(runs: Sequence[Run]) -> dict[str, dict[str, Any]]:
    """Per allocator: the medians of its measured runs' wall time and peak RSS, and how many."""
    out: dict[str, dict[str, Any]] = {}
    for alloc in dict.fromkeys(r.allocator for r in runs):
        mine = [r.result for r in runs if r.allocator == alloc and r.measured and r.result is not None]
        ok = [r for r in mine if not r.crashed]
        out[alloc] = {
            "runs": len(ok),
            "wall_s": _median([r.wall_s for r in ok]),
            "cpu_s": _median([r.user_s + r.sys_s for r in ok]),
            "peak_rss_kib": _median([float(r.peak_rss_kib) for r in ok]),
            # sampled (harness/anon.py): the allocator's own memory without the file pages' ASLR noise
            "peak_anon_kib": _median([float(r.peak_anon_kib) for r in ok if r.peak_anon_kib is not None]),
            # the program's own peak, its exit included (harness/run.py: kpool-exec; else sampled)
            "own_hwm_kib": _median([float(r.own_hwm_kib) for r in ok if r.own_hwm_kib is not None]),
        }
        crashed = [r for r in mine if r.crashed]
        if crashed:  # how the first crashed run ended, for the table (a peer's defaults may abort)
            out[alloc]["failed"] = _how(crashed[0])
    return out


def _how(r: run.RunResult) -> str:
    """How a crashed run ended (a signal, with its name, or the time limit) and its stderr's first line."""
    how = f"signal {-r.returncode} ({r.signal_name})" if r.returncode < 0 else f"exit {r.returncode}"
    if r.timed_out:
        how = "time limit"
    first = next((ln.strip() for ln in r.stderr_tail.splitlines() if ln.strip()), "")
    return how + (f": {first}" if first else "")


# the figures compared, each by its label in a ratio row: the time, GNU time's peak RSS, the sampled peak
# anonymous memory (harness/anon.py) and the program's own peak (harness/run.py)
RATIOS = (("wall_s", "time"), ("peak_rss_kib", "rss"), ("peak_anon_kib", "anon"), ("own_hwm_kib", "own"))


def ratios(figs: Mapping[str, Mapping[str, Any]], subject: str) -> dict[str, dict[str, float | None]]:
    """subject's time, peak RSS and peak anonymous memory over each other allocator's (None where either
    was not measured)."""
    me = figs.get(subject, {})
    out: dict[str, dict[str, float | None]] = {}
    for alloc, other in figs.items():
        if alloc == subject:
            continue
        row: dict[str, float | None] = {}
        for key, label in RATIOS:
            a, b = me.get(key), other.get(key)
            row[label] = round(a / b, 3) if a is not None and b else None
        out[alloc] = row
    return out


def _lines(text: str, pattern: str) -> list[str]:
    rx = re.compile(pattern)
    return [ln for ln in text.splitlines() if rx.search(ln)]


def judge(wl: ProgramWorkload, runs: Sequence[Run], subject: str) -> dict[str, Any]:
    """The workload's stress.json entry from its runs: verdicts, figures, ratios, crashes."""
    slo = wl.slo
    mine = [r for r in runs if r.allocator == subject]
    ref = [r for r in runs if r.allocator == REFERENCE]
    verdicts: list[dict[str, Any]] = []
    broken_runs = [f"{r.allocator} run {r.round + 1}: {e}" for r in runs for e in r.errors]
    # the program's own crash, or a process it started that a fault signal killed (run.py, child_faults.py:
    # the preload's records; a test suite's worker that died of SIGSEGV while the suite went on)
    crashed = [r for r in mine if r.result is not None and (r.result.crashed or r.result.child_crashed)]
    verdicts.append(_verdict("crashes", len(crashed), 0, not crashed, "<="))
    measured = [r for r in mine if r.measured and r.result is not None]
    ref_status = next((r.result.returncode for r in ref if r.measured and r.result is not None), None)
    want = slo.get("exit_status", REFERENCE)
    bound = ref_status if want == REFERENCE else want
    for r in measured:
        assert r.result is not None
        ok = bound is not None and r.result.returncode == bound
        verdicts.append(_verdict(f"exit_status (run {r.round + 1})", r.result.returncode, bound, ok))
    events = max((r.result.integrity_events for r in measured if r.result), default=0)
    limit = int(slo.get("max_integrity_events", 0))
    verdicts.append(_verdict("integrity_events", events, limit, events <= limit, "<="))
    out_slo = slo.get("output", {})
    for r in measured:
        for text in out_slo.get("contains", ()):
            found = "present" if text in r.stdout else "missing"
            name = f"output contains {text!r} (run {r.round + 1})"
            verdicts.append(_verdict(name, found, "present", found == "present"))
        if "same_as_glibc" in out_slo and ref and ref[0].measured:
            got, exp = (
                _lines(r.stdout, out_slo["same_as_glibc"]),
                _lines(ref[0].stdout, out_slo["same_as_glibc"]),
            )
            diff = next(
                (f"{a!r} where glibc has {b!r}" for a, b in zip(got, exp, strict=False) if a != b), ""
            )
            if not diff and len(got) != len(exp):
                diff = f"{len(got)} matching lines where glibc has {len(exp)}"
            verdicts.append(
                _verdict(
                    f"output same as glibc (run {r.round + 1})",
                    diff or f"{len(got)} lines equal",
                    "equal",
                    not diff,
                )
            )
        if wl.commands("check"):
            verdicts.append(
                _verdict(
                    f"check (run {r.round + 1})", "; ".join(r.checks) or "passed", "passed", not r.checks
                )
            )
    figs = figures(runs)
    rat = ratios(figs, subject)
    for key, label in (("max_time_ratio", "time"), ("max_rss_ratio", "rss")):
        if key in slo:
            value = rat.get(REFERENCE, {}).get(label)
            verdicts.append(_verdict(key, value, slo[key], value is not None and value <= slo[key], "<="))
    # and the runs that went on after integrity errors (on_error:log): a record each, the errors judged
    # by max_integrity_events above
    damaged = [r for r in mine if r.result is not None and r.result.damaged and not r.result.child_crashed]
    crashes = [_crash(wl, r) for r in crashed + damaged]
    broken = [f"{v['slo']}: {v['value']} (bound {v['op']} {v['bound']})" for v in verdicts if not v["ok"]]
    broken += broken_runs
    return {
        "kind": "program",
        "name": wl.name,
        "file": wl.path,
        "sha256": wl.sha256,
        "allocator": subject,
        "command": shlex.join(wl.command),
        "processes": 1,
        "threads": 0,
        "runs": [r.to_dict() for r in runs],
        "figures": figs,
        "ratios": rat,
        "integrity_errors": events,
        "crashes": crashes,
        "slo": verdicts,
        "broken": broken,
        "passed": not broken,
        "config_errors": [],
        "latency": {},
        "ops": 0,
    }


def _crash(wl: ProgramWorkload, r: Run) -> dict[str, Any]:
    """A crash entry of stress.json (its signature when run.record_crash recorded it)."""
    assert r.result is not None
    res = r.result
    child = res.child_signals[0] if res.child_signals and not res.crashed else None
    env = [f"{k}={v}" for k, v in res.env.items()]
    crash: dict[str, Any] = {
        "kind": "timeout"
        if res.timed_out
        else "killed"  # a SIGKILL from outside (the OOM killer): no crash record
        if res.killed_from_outside
        else "signal"
        if res.crashed
        else "child-signal"  # the program went on; a process it started died of a fault signal
        if child
        else "integrity",
        "signal": -res.returncode if res.returncode < 0 else child.signal if child else 0,
        "signal_name": res.signal_name or (child.signal_name if child else ""),
        "returncode": res.returncode,
        "message": run.summary(res)[0] + (f"; {child.line()}" if child else ""),
        "stderr_tail": "\n".join(res.stderr_tail.splitlines()[-40:]),
        "sanitizer_report": "",
        "backtrace": [],
        "workload": wl.name,
        "worker": 0,
        "reproducer": {
            "workload": wl.path,
            "sha256": wl.sha256,
            "allocator": res.allocator,
            "command": shlex.join(["/usr/bin/env", "-C", res.cwd, *env, *res.argv]),
        },
    }
    if r.signature:
        crash["signature"] = r.signature
    return crash


# ---- the table of real programs (kpool bench --programs, the campaign's report, the README) -------------

TABLE_PEERS = peers.TARGETS  # issue 14's four; `kpool bench --programs` adds Scudo


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def table(
    results: Sequence[Mapping[str, Any]], peers: Sequence[str] = TABLE_PEERS
) -> tuple[list[str], list[list[str]]]:
    """Headers and rows: per program, the subject's (kpool's) median wall time and peak RSS, and both as
    ratios to each peer's medians, then its peak anonymous memory's (harness/anon.py) ('-' where a peer
    did not run or nothing was sampled; how it failed where every run of it crashed), then the verdict.
    Each result is a program workload's stress.json entry (its name, allocator, figures, ratios,
    passed)."""
    headers = ["program", "kpool s", "kpool MiB"]
    headers += [f"time ÷ {p}" for p in peers] + [f"RSS ÷ {p}" for p in peers] + [f"anon ÷ {p}" for p in peers]
    headers += ["runs", "verdict"]
    rows = []
    for r in results:
        me = r["figures"].get(r["allocator"], {})
        rat = r.get("ratios", {})
        row = [
            str(r["name"]),
            "-" if me.get("wall_s") is None else f"{me['wall_s']:.2f}",
            "-" if me.get("peak_rss_kib") is None else f"{me['peak_rss_kib'] / 1024:.1f}",
        ]
        failed = {p: r["figures"].get(p, {}).get("failed") for p in peers}
        failed = {p: how for p, how in failed.items() if how and not r["figures"][p].get("runs")}
        row += [f"failed: {failed[p]}" if p in failed else _x(rat.get(p, {}).get("time")) for p in peers]
        row += ["failed" if p in failed else _x(rat.get(p, {}).get("rss")) for p in peers]
        row += ["failed" if p in failed else _x(rat.get(p, {}).get("anon")) for p in peers]
        row += [str(me.get("runs", 0)), "ok" if r.get("passed") else "FAIL"]
        rows.append(row)
    return headers, rows
