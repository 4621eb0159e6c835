"""What a campaign runs and what comes back: the job record (one fuzz target, one workload in one build
variant), the job as it is sent to a worker, and the typed result a job returns.

A job's outputs travel as bytes: a worker keeps nothing. Every file the job wrote under its folder comes
back content-addressed (relative path -> SHA-256, and the blobs once each), with its log and the corpus
entries it found; the coordinator writes them into the run's folder and alone records the crashes.
Records written before a field existed still load (every new field has a default).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

KINDS = ("fuzz", "stress")
# Job states. Not finished and run again by --resume: pending (never started, or stopped by an
# interrupt), running (the campaign died), stopped (still running at the deadline), not-run (no time
# left in the budget to start it). Ended: done (wrote its results), failed (did not, or its worker kept
# dying), timeout (killed past its slot).
RERUN_STATES = ("pending", "running", "stopped", "not-run")
ENDED_STATES = ("done", "failed", "timeout")


@dataclass
class Job:
    """One job of a campaign, as campaign.json records it."""

    name: str  # "fuzz:conf", "stress:steady-small", "stress:steady-small@asan"
    kind: str  # "fuzz" or "stress"
    argv: list[str]  # the command on this machine (a cluster job is given its own paths on its worker)
    slot_s: float
    out: str  # the JSON the job writes, relative to the run directory
    state: str = "pending"
    returncode: int | None = None
    seconds: float = 0.0
    log: str = ""
    target: str = ""  # the fuzz target, or the workload's name
    variant: str = "release"  # the build variant a stress job runs (asan and tsan: correctness only)
    workload: str = ""  # the workload file (absolute), for a stress job
    worker: str = ""  # where it ran last ("local", or a Dask worker's address)
    attempts: int = 0  # times it was started (a cluster job runs again when its worker dies)
    error: str = ""  # why it ended without results (timeout, a worker that kept dying)

    def __post_init__(self) -> None:
        if not self.target:  # a record from before the field: the one place a name is taken apart
            self.target = self.name.split(":", 1)[-1].split("@", 1)[0]

    @property
    def folder(self) -> str:
        """The job's folder in the run (that of its JSON)."""
        return self.out.rsplit("/", 1)[0] if "/" in self.out else "."

    @property
    def correctness_only(self) -> bool:
        """A sanitizer build: its latency is no measure of the allocator's."""
        return self.variant in ("asan", "tsan")


@dataclass
class JobSpec:
    """A job as it is sent to a worker: what to run, never a path of the coordinator's."""

    name: str
    kind: str
    target: str
    run_id: str
    slot_s: float
    seconds: int = 0  # a fuzz job's fuzzing time
    plant: int = 0
    variant: str = "release"
    workload_rel: str = ""  # a shipped workload: its path under workloads/ (the worker has the same)
    workload_text: str = ""  # any other workload: its YAML
    peers: bool = False  # a program workload: run on the peers too
    deadline: float | None = None  # time.time() at which the job is stopped (the budget's end)
    identity: tuple[str, str] = ("", "")  # the coordinator's (version, source hash)
    corpus: dict[str, bytes] = field(default_factory=dict)  # the working corpus, by entry name


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class JobResult:
    """What a job returns: its end, and its outputs as bytes."""

    name: str
    state: str  # done, failed, timeout or stopped; refused: the worker runs another kpool, nothing ran
    returncode: int | None = None
    seconds: float = 0.0
    worker: str = ""
    error: str = ""
    root: str = ""  # the job's folder where it ran: paths inside its JSON start with it
    build_root: str = ""  # the worker's build folder: paths to its binaries start with it
    files: dict[str, str] = field(default_factory=dict)  # relative path -> SHA-256
    blobs: dict[str, bytes] = field(default_factory=dict)  # SHA-256 -> content, each once
    corpus: dict[str, str] = field(default_factory=dict)  # new corpus entry name -> SHA-256
    log: bytes = b""

    def add(self, data: bytes) -> str:
        key = digest(data)
        self.blobs.setdefault(key, data)
        return key

    def file(self, rel: str) -> bytes:
        return self.blobs[self.files[rel]]
