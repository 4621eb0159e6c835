"""Session 20's outside review: the signature a triage command names. On main (e193d3a) an id past
SQLite's integers (`kpool triage show 99999999999999999999999`) stopped with an OverflowError traceback,
a digit that is not ASCII (`show \u00b2`) with a ValueError traceback, and `%` or `_` in a hash prefix were
SQL wildcards (`show %%%%` showed whatever signature there was). Now each is "no signature 'X'", exit 2,
one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import cli
from harness.triage import db as D
from harness.triage.crash import Crash

ASAN = "==1==ERROR: AddressSanitizer: heap-use-after-free on address 0x1\n    #0 0x1 in kp_free a.c:1\n"


@pytest.fixture
def one(tmp_path: Path) -> Path:
    path = tmp_path / "crashes.sqlite"
    D.CrashDB(path).record(Crash(text=ASAN, run_id="r1", source="api"))
    return path


BAD_REFS = ["99999999999999999999999", str(1 << 63), "\u00b2", "\u0661", "%%%%", "____", "%"]


@pytest.mark.parametrize("ref", BAD_REFS)
@pytest.mark.parametrize("action", ["show", "replay", "minimize"])
def test_an_id_that_names_no_signature_is_a_usage_error(
    one: Path, capsys: pytest.CaptureFixture[str], ref: str, action: str
) -> None:
    assert cli.main(["triage", "--db", str(one), action, ref]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"no signature {ref!r}" in err, err


def test_ids_and_hash_prefixes_still_name_their_signature(
    one: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    row = D.CrashDB.open(one).get(1)
    for ref in ("1", "0001", row.hash[:4], row.hash.upper()[:6], row.hash):
        assert D.CrashDB.open(one).get(ref).id == 1, ref
    assert cli.main(["triage", "--db", str(one), "show", row.hash[:8]]) == 0
