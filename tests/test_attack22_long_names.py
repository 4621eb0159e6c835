"""Session 22's outside review: a name longer than the file system takes (a --run-id of 300 characters, a
--reports or --db path with a 300-character component, a campaign's reports folder under a deep CI
workspace). On main (21fec7b) each was "File name too long" and exit 1, the code of a failure of the work
itself; it is a usage error (exit 2): the name given cannot be a file's, and nothing ran."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import cli

ROOT = Path(__file__).resolve().parents[1]
LONG = "x" * 300


@pytest.mark.parametrize(
    "argv",
    [
        ["stress", "--reports", "{tmp}", "--run-id", LONG, str(ROOT / "workloads" / "steady-small.yaml")],
        ["stress", "--reports", f"{{tmp}}/{LONG}", str(ROOT / "workloads" / "steady-small.yaml")],
        ["stress", f"{{tmp}}/{LONG}.yaml"],
        ["triage", "--db", f"{{tmp}}/{LONG}", "list"],
        ["triage", "--db", f"{{tmp}}/{LONG}", "show", "1"],
        ["report", "--reports", f"{{tmp}}/{LONG}"],
        ["fuzz", "conf", "--time", "1", "--reports", f"{{tmp}}/{LONG}"],
        ["run", "--reports", f"{{tmp}}/{LONG}", "--", "sh", "-c", "kill -SEGV $$"],
    ],
    ids=[
        "stress-run-id",
        "stress-reports",
        "stress-workload",
        "triage-list",
        "triage-show",
        "report",
        "fuzz",
        "run-crash",
    ],
)
def test_a_name_too_long_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code = cli.main(argv)
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if ln.startswith("kpool: error:")]
    assert errors and "File name too long" in errors[-1], err
    assert code == 2, err
    assert "Traceback" not in err
