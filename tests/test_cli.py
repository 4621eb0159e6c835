"""The `kpool` command line: one-line errors, exit codes by kind of mistake, help that states defaults."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from harness import cli, errors
from harness.errors import ConfigError, KpoolError, UsageError
from harness.spec import SpecError
from harness.spec.validate import Issue

README = Path(__file__).resolve().parents[1] / "README.md"


# ---- a KpoolError anywhere: one line, its own exit code -----------------------------------------------


def _raise(exc: BaseException) -> argparse.Namespace:
    def run(args: argparse.Namespace, rest: list[str]) -> int:
        raise exc

    return argparse.Namespace(run=run, verbosity=1, command="options")


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (KpoolError("plain failure"), 1),
        (UsageError("bad --thing 7: expected 1..3"), 2),
        (ConfigError("bad KPOOL_CONF 'x=1': unknown key x"), 2),
        (SpecError([Issue("w.yaml", 3, 5, "ops", "expected an integer, got 'many'")]), 2),
    ],
)
def test_kpool_error_prints_one_line_and_exits_with_its_code(
    exc: KpoolError, code: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = cli._parser()
    monkeypatch.setattr(parser, "parse_known_args", lambda argv: (_raise(exc), []))
    monkeypatch.setattr(cli, "_parser", lambda: parser)
    assert cli.main(["options"]) == code
    err = capsys.readouterr().err
    assert err.startswith("kpool: error: ")
    assert "Traceback" not in err


def test_every_error_class_has_an_exit_code() -> None:
    for name in dir(errors):
        obj = getattr(errors, name)
        if isinstance(obj, type) and issubclass(obj, KpoolError):
            assert obj.exit_code in (1, 2), name
    assert UsageError.exit_code == ConfigError.exit_code == SpecError.exit_code == 2
    assert KpoolError.exit_code == 1
