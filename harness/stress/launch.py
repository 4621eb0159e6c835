"""The launch protocol: how the stress runner runs one workload, whatever its kind.

A launch checks what it can before anything runs (`preflight`: a ConfigError, exit 2, nothing started)
and then runs the workload to its end (`run`), returning the workload's entry of stress.json: its name,
file, allocator, `crashes`, `slo` verdicts, `broken`, `passed`, `config_errors`, `interrupted` and
`wall_s`, plus what its kind measures. Two implementations:

- `runner.OpStreamLaunch`: an op-stream workload, compiled for the C op driver and run by kpdrive workers
  (harness/stress/runner.py, phases of harness/stress/worker.py workers);
- `program.ProgramLaunch`: a program workload, a real program on kpool's preload beside glibc (and the
  peers when asked; harness/stress/program.py).

Processes are spawned and killed in harness/stress/worker.py only (the program itself by
harness.run.run_program, `kpool run`'s launcher).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from harness.stress.runner import Options


class Launch(Protocol):
    name: str

    def preflight(self, opts: Options) -> None:
        """Raise ConfigError for anything the run would refuse at its start."""

    def run(self, opts: Options, run_dir: Path) -> dict[str, Any]:
        """Run the workload to its end; its stress.json entry (KeyboardInterrupt: `interrupted`)."""
