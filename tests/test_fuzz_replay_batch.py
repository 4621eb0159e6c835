"""Crash inputs replayed for their reports (`kpool fuzz` after fuzzing, and the sweep of what killed runs
left, fuzz/orphans.py): progress per input, and the inputs of a target replayed by one process that loads
the library once and runs each input alone in a child of its own (target.py --kpool-replay-each), each
with its own verdict and report. Each replay started Python with the sanitizer runtime again, a second or
two, with progress per folder only: a sweep of many inputs said nothing for minutes."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from test_fuzz_recovery import _orphan, fake  # noqa: F401 (fake: the fixture)

from harness.fuzz import runner


def test_the_sweep_says_each_input_it_replays(
    fake: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    reports = fake / "reports"
    old = reports / "fuzz-old"
    _orphan(old, "api_sequence-crash-1")
    for n in (2, 3):
        (old / "crashes" / f"api_sequence-crash-{n}").write_bytes(bytes([n]))
    runner.run("api_sequence", 1, run_dir=reports / "fuzz-new", reports=reports)
    err = capsys.readouterr().err
    for n in (1, 2, 3):
        assert f"replayed {n}/3 api_sequence-crash-{n}: exit 1" in err, err


def test_an_interrupted_replay_keeps_the_reports_of_the_inputs_replayed_before(
    fake: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C during the replays: each input's report is written as its replay ends, so the inputs
    replayed before the interruption keep theirs (the next run records them without replaying)."""
    crashes = fake / "crashes"
    crashes.mkdir()
    inputs = [crashes / f"api_sequence-crash-{n}" for n in range(4)]
    for path in inputs:
        path.write_bytes(b"\x07")
    real, calls = runner.replay, []

    def interrupted_at_the_third(*args: object, **kw: object) -> tuple[int, str]:
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(runner, "replay", interrupted_at_the_third)
    monkeypatch.setattr(runner, "NATIVE", {})  # one by one: the stand-in target has no batch mode
    with pytest.raises(KeyboardInterrupt):
        runner._keep_reports("api_sequence", inputs, dict(os.environ))
    kept = [p.with_name(p.name + ".txt").is_file() for p in inputs]
    assert kept == [True, True, False, False]


# ---- the real fuzz build ------------------------------------------------------------------------------

# api_sequence inputs (tests/test_triage_quality.py): the pool (0), then op byte, slot, size.
ALLOC, ALLOC_ZERO, REALLOC_ZERO, FREE = 0, 5, 13, 15
# planted bug 8 (KP_ZERO leaves the first 8 bytes of a small block as they were): each of these crashes
ZERO_BY_ALLOC = bytes([0, ALLOC, 0, 0, 100, FREE, 0, ALLOC_ZERO, 0, 0, 100])
ZERO_BY_REALLOC = bytes([0, ALLOC, 0, 0, 100, FREE, 0, REALLOC_ZERO, 1, 0, 100])
# ... and this one does not
HARMLESS = bytes([0, ALLOC, 0, 0, 100, FREE, 0])


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("clang") is None, reason="the fuzz build needs clang")
def test_one_process_replays_every_input_alone_with_its_own_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A plain libFuzzer replay of several inputs (`target.py A B C`) ends at the first crash, and runs the
    later ones on the pools the earlier left (the pools live across inputs): the verdicts of all but the
    first would be lost or wrong. Each input runs alone, the process started once."""
    pytest.importorskip("atheris")
    env = runner.target_env("api_sequence", 8)
    crashes = tmp_path / "crashes"
    crashes.mkdir()
    inputs = []
    for name, data in (("a", HARMLESS), ("b", ZERO_BY_ALLOC), ("c", HARMLESS), ("d", ZERO_BY_REALLOC)):
        inputs.append(crashes / f"api_sequence-crash-{name}")
        inputs[-1].write_bytes(data)
    started = []
    real_popen = subprocess.Popen

    def popen(cmd: list[str], *args: object, **kw: object) -> subprocess.Popen[bytes]:
        started.append(cmd)
        return real_popen(cmd, *args, **kw)  # type: ignore[call-overload, no-any-return]

    monkeypatch.setattr(subprocess, "Popen", popen)
    replays = runner._keep_reports("api_sequence", inputs, env)
    monkeypatch.undo()
    alone = [c for c in started if "--kpool-history" not in c]
    assert len(alone) == 1, alone  # one process for the four replays alone (histories aside)
    for path, crashed in zip(inputs, (False, True, False, True), strict=True):
        report = path.with_name(path.name + ".txt").read_text()
        header = report.splitlines()[0]
        assert header.startswith(f"# kpool fuzz replay of {path.name}: exit {1 if crashed else 0}"), header
        assert ("VIOLATION not-zeroed in kp_alloc" in report) == crashed, report[-2000:]
        assert replays[str(path)]["reproducer"] == ("input" if crashed else "none")
    # the same report as a replay of the input by itself, line for line apart from addresses and pids
    code, text = runner.replay("api_sequence", inputs[1], env)
    from harness.triage import signature as S

    batch = inputs[1].with_name(inputs[1].name + ".txt").read_text()
    assert code == 1 and S.compute(batch) == S.compute(text)
    err = capsys.readouterr().err
    assert "replayed 4/4 api_sequence-crash-d: exit 1" in err, err
