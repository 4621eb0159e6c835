"""The crash database: statuses across runs, reproducers, and parallel writers that lose no rows."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from harness.errors import KpoolError
from harness.triage import db as D
from harness.triage.crash import Crash, Reproducer

ASAN = "==1==ERROR: AddressSanitizer: heap-use-after-free on address 0x1\n    #0 0x1 in {func} a.c:1\n"


def crash(
    func: str = "kp_free", run: str = "r1", source: str = "api", repro: Reproducer | None = None
) -> Crash:
    return Crash(text=ASAN.format(func=func), run_id=run, source=source, returncode=1, reproducer=repro)


def test_new_then_known_in_a_later_run(tmp_path: Path) -> None:
    db = D.CrashDB(tmp_path / "c.sqlite")
    first = db.record(crash(run="r1"))
    again = db.record(crash(run="r1"))
    assert (first.status, first.new, again.status, again.new) == ("new", True, "new", True)
    later = db.record(crash(run="r2"))
    assert (later.status, later.new) == ("known", False)
    row = db.get(first.signature_id)
    assert (row.count, row.runs, row.status, row.kind) == (3, 2, "known", "heap-use-after-free")
    assert row.title == "heap-use-after-free in kp_free"
    assert [r.id for r in db.new_in_run("r1")] == []


def test_list_puts_new_first_and_get_accepts_a_hash_prefix(tmp_path: Path) -> None:
    db = D.CrashDB(tmp_path / "c.sqlite")
    old = db.record(crash("kp_old", run="r1"))
    db.record(crash("kp_old", run="r2"))
    new = db.record(crash("kp_new", run="r2"))
    assert [r.id for r in db.signatures()] == [new.signature_id, old.signature_id]
    assert db.get(new.hash[:6]).id == new.signature_id
    assert [r.id for r in db.new_in_run("r2")] == [new.signature_id]
    with pytest.raises(KpoolError, match="no signature"):
        db.get(999)


def test_recheck_statuses_and_regression(tmp_path: Path) -> None:
    db = D.CrashDB(tmp_path / "c.sqlite")
    sid = db.record(crash(run="r1")).signature_id
    assert db.set_replay(sid, 0.5, 4, update_status=True) == "flaky"
    assert db.set_replay(sid, 1.0, 4, update_status=False) == "flaky"  # replay stores the rate only
    assert db.set_replay(sid, 1.0, 4, update_status=True) == "known"
    assert db.set_replay(sid, 0.0, 4, update_status=True) == "fixed"
    back = db.record(crash(run="r9"))
    assert (back.status, back.new) == ("new", True)
    assert db.get(sid).repro_rate == 0.0


def test_reproducers_round_trip_and_the_minimised_one_wins(tmp_path: Path) -> None:
    db = D.CrashDB(tmp_path / "c.sqlite")
    repro = Reproducer(
        argv=("python", "t.py", "${input_path}"),
        kind="fuzz",
        input_path="/c/crash-1",
        target="api",
        meta={"x": 1},
    )
    sid = db.record(crash(repro=repro)).signature_id
    assert db.reproducer(sid) == repro
    (occ,) = db.occurrences(sid)
    assert (occ.reproducer, occ.source, occ.returncode) == (repro, "api", 1)
    small = repro.evolve(input_path="/c/min-1")
    db.set_minimized(sid, small)
    assert db.reproducer(sid) == small


def _writer(path: str, worker: int, n: int) -> None:
    db = D.CrashDB(path)
    for i in range(n):
        db.record(crash(f"kp_f{i % 3}", run=f"run{worker}", source=f"w{worker}"))


@pytest.mark.parametrize("processes", [4])
def test_parallel_writers_lose_no_rows(tmp_path: Path, processes: int) -> None:
    path = str(tmp_path / "c.sqlite")
    per = 30
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(path, w, per)) for w in range(processes)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    db = D.CrashDB(path)
    assert db.count_occurrences() == processes * per
    rows = db.signatures()
    assert len(rows) == 3
    assert sum(r.count for r in rows) == processes * per
    assert all(r.runs == processes for r in rows)


def _counting_transactions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The write transactions CrashDB makes from now on (each with a connection of its own)."""
    begun: list[str] = []
    real = D.CrashDB._write

    def counted(self: D.CrashDB, *args: Any, **kwargs: Any) -> Any:
        begun.append(str(self.path))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(D.CrashDB, "_write", counted)
    return begun


def test_many_crashes_with_their_replays_are_recorded_in_one_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweep of the crash inputs killed runs left (and a fuzz run's own crashes) recorded each input and
    then its replay's rate in a transaction (and a connection) of its own: 26.6 s for 700 crashes with
    their rates, 1.3 s in one transaction."""
    from harness.fuzz import runner
    from harness.triage import record

    monkeypatch.setattr(runner, "target_env", lambda target, plant=0: {})
    inputs = []
    for i in range(60):
        inputs.append(str(tmp_path / f"api_sequence-crash-{i}"))
        Path(inputs[-1]).write_bytes(bytes([i]))
        Path(inputs[-1] + ".txt").write_text(ASAN.format(func=f"kp_f{i % 7}"))
    replays = {p: {"reproduced": 1, "runs": 2} for p in inputs[::2]}
    summary = {"results": [{"target": "api_sequence", "crashes": inputs, "replays": replays}]}
    D.CrashDB(tmp_path / "crashes.sqlite")  # the schema, made once
    transactions = _counting_transactions(monkeypatch)
    record.record_fuzz(summary, tmp_path, "fuzz-1", 0)
    assert len(transactions) <= 2, len(transactions)  # CrashDB's schema check when opened, the records
    rows = {r.title: r for r in D.CrashDB.open(tmp_path / "crashes.sqlite").signatures()}
    assert len(rows) == 7 and sum(r.count for r in rows.values()) == 60
    assert rows["heap-use-after-free in kp_f0"].repro_rate == 0.5  # inputs 0, 14, ...: replayed, rate kept


def test_a_campaign_records_what_it_triages_in_one_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.report import ingest

    run_dir = tmp_path / "campaign-x"
    run_dir.mkdir()
    D.CrashDB(tmp_path / "crashes.sqlite")
    found = [(crash(f"kp_f{i % 5}", run="campaign-x"), (1, 1)) for i in range(40)]
    transactions = _counting_transactions(monkeypatch)
    entries = ingest.triage([], "campaign-x", 0, run_dir, recovered=found)
    assert len(transactions) <= 2, len(transactions)  # CrashDB's schema check when opened, the records
    assert sorted(e.count for e in entries) == [8] * 5 and all(e.status == "new" for e in entries)


def test_a_moved_reports_folder_keeps_its_reproducers_replayable(tmp_path: Path) -> None:
    """A reports folder renamed or restored from a CI cache elsewhere: its database names the crash inputs
    and operation streams by their old absolute paths, so `kpool triage replay` said the reproducer's
    input was gone (it lies beside the database) and recheck listed every signature "input gone"."""
    old, new = tmp_path / "old", tmp_path / "new"
    crash_input = old / "fuzz-1" / "crashes" / "api_sequence-crash-1"
    crash_input.parent.mkdir(parents=True)
    crash_input.write_bytes(b"\x01")
    prog = old / "campaign-1" / "stress-w" / "run-1" / "w" / "main.prog"
    prog.parent.mkdir(parents=True)
    prog.write_text("count=1\n")
    fuzz = Reproducer(argv=("python", "t.py", "${input_path}"), kind="fuzz", input_path=str(crash_input))
    stress = Reproducer(argv=("kpdrive", str(prog), "seed=1"), kind="workload", cwd=str(prog.parent))
    db = D.CrashDB(old / "crashes.sqlite")
    one = db.record(crash("kp_a", repro=fuzz))
    two = db.record(crash("kp_b", repro=stress))
    old.rename(new)

    moved = D.CrashDB.open(new / "crashes.sqlite")
    got = moved.reproducer(one.signature_id)
    assert got is not None and got.missing() is None
    assert got.input_path == str(new / "fuzz-1" / "crashes" / "api_sequence-crash-1")
    got = moved.reproducer(two.signature_id)
    assert got is not None and got.missing() is None
    assert got.argv[1] == str(new / "campaign-1" / "stress-w" / "run-1" / "w" / "main.prog")
    assert got.cwd == str(new / "campaign-1" / "stress-w" / "run-1" / "w")


def test_a_reproducer_whose_input_is_really_gone_still_says_so(tmp_path: Path) -> None:
    gone = tmp_path / "fuzz-1" / "crashes" / "api_sequence-crash-1"
    repro = Reproducer(argv=("python", "${input_path}"), kind="fuzz", input_path=str(gone))
    db = D.CrashDB(tmp_path / "crashes.sqlite")
    rec = db.record(crash(repro=repro))
    got = db.reproducer(rec.signature_id)
    assert got is not None and got.missing() == str(gone)
