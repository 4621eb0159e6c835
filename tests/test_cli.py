"""The `kpool` command line: one-line errors, exit codes by kind of mistake, help that states defaults."""

from __future__ import annotations

import argparse
import re
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


# ---- a bad value of an argument is a usage error: exit 2 before anything runs ---------------------------


@pytest.mark.parametrize(
    ("argv", "bad"),
    [
        (["fuzz", "--time", "0"], "'0'"),
        (["fuzz", "--time", "-5"], "'-5'"),
        (["fuzz", "--time", "soon"], "'soon'"),
        # libFuzzer's -max_total_time is a C int: 2**32 + 1 s wrapped to 1 s of fuzzing
        (["fuzz", "--time", "4294967297"], "to 2147483647"),
        (["fuzz", "--jobs", "0"], "'0'"),
        (["fuzz", "api_sequence", "--max-len", "-3"], "'-3'"),
        (["fuzz", "api_sequence", "--max-len", "0"], "'0'"),
        (["fuzz", "--plant", "-1"], "'-1'"),
        (["fuzz", "nosuch_target"], "'nosuch_target'"),
        (["build", "--variant", "nope"], "'nope'"),
    ],
)
def test_bad_argument_values_are_usage_errors(
    argv: list[str], bad: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def must_not_run(args: argparse.Namespace, rest: list[str]) -> int:
        raise AssertionError("the command ran with a bad argument")

    monkeypatch.setattr(cli, "_fuzz", must_not_run)
    monkeypatch.setattr(cli, "_build", must_not_run)
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"kpool {argv[0]}: error:" in err
    assert bad in err, err
    assert "Traceback" not in err


# ---- --help: every option explained, every default stated ----------------------------------------------


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


MINE = ("build", "report", "options", "fuzz")  # the parsers cli.py defines (triage: _triage_parser)


def _explained(parser: argparse.ArgumentParser, where: str) -> None:
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        name = action.option_strings[-1] if action.option_strings else action.dest
        assert action.help, f"{where} {name} has no help text"
        silent_default = action.default in (None, False, argparse.SUPPRESS) and action.nargs != "?"
        if isinstance(action, (argparse._StoreConstAction, argparse._StoreTrueAction)) or silent_default:
            if action.default is None and not isinstance(action, argparse._StoreConstAction):
                assert "default" in action.help, f"{where} {name}: what does leaving it out mean?"
            continue
        assert "default" in action.help, f"{where} {name} does not state its default ({action.default!r})"


def test_help_explains_every_option_and_states_every_default() -> None:
    parser = cli._parser()
    _explained(parser, "kpool")
    commands = _subparsers(parser)
    for name in MINE:
        assert commands[name].description, f"kpool {name} --help has no description"
        _explained(commands[name], f"kpool {name}")


def test_max_len_help_says_what_leaving_it_out_means() -> None:
    fuzz = _subparsers(cli._parser())["fuzz"]
    (action,) = [a for a in fuzz._actions if "--max-len" in a.option_strings]
    assert "libFuzzer's default" in (action.help or "")


# ---- README's command table and --help agree --------------------------------------------------------------


def _help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """`kpool ARGV --help`: argparse exits 0; a command with a parser of its own may return 0 instead."""
    try:
        code = cli.main([*argv, "--help"])
    except SystemExit as exc:
        code = exc.code
    assert code == 0
    return capsys.readouterr().out


def _readme_rows() -> dict[str, list[str]]:
    """The commands table of README.md: subcommand -> the first cells of its rows (kpool ones only)."""
    text = README.read_text()
    section = text.split("## The commands", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        cell = re.match(r"\| `(kpool [^`]*)` \|", line)
        if cell:
            rows.setdefault(cell.group(1).split()[1], []).append(cell.group(1).replace("\\|", "|"))
    return rows


def _listed(text: str, metavar: str) -> set[str]:
    """The choices argparse lists under a subparsers METAVAR in a --help text."""
    block = text.split(f"  {metavar}\n", 1)[1].split("\n\n", 1)[0]
    return {m.group(1) for m in re.finditer(r"^ {4}(\w+)", block, re.M)}


def _help_commands(capsys: pytest.CaptureFixture[str]) -> set[str]:
    return _listed(_help([], capsys), "COMMAND")


def test_every_command_is_in_the_readme_table_and_back(capsys: pytest.CaptureFixture[str]) -> None:
    in_help = _help_commands(capsys)
    in_readme = set(_readme_rows())
    assert in_help >= {"build", "fuzz", "stress", "triage", "campaign", "report", "options", "bench"}
    assert in_help - in_readme == set(), "commands missing from README's table"
    assert in_readme - in_help == set(), "README's table lists commands kpool does not have"


def test_every_flag_in_the_readme_table_exists(capsys: pytest.CaptureFixture[str]) -> None:
    for command, cells in _readme_rows().items():
        text = _help([command], capsys)
        for cell in cells:
            for flag in re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", cell):
                assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), (
                    f"README: `{cell}` has {flag}, which `kpool {command} --help` does not know"
                )


def test_triage_actions_in_the_readme_exist(capsys: pytest.CaptureFixture[str]) -> None:
    (cell,) = _readme_rows()["triage"]
    actions = _listed(_help(["triage"], capsys), "ACTION")
    assert {"list", "show", "replay"} <= actions
    actions_part = re.sub(r"\[--[^]]*\]", "", cell.split(" ", 2)[2])  # options and their values out
    named = set(re.findall(r"\b([a-z]+)\b", actions_part))
    assert named <= actions
    assert actions <= named, f"triage actions missing from README: {actions - named}"


def test_one_flag_name_for_the_reports_location(capsys: pytest.CaptureFixture[str]) -> None:
    for command in _help_commands(capsys):
        if command == "triage":
            continue  # its location is the database, --db
        text = _help([command], capsys)
        names = set(re.findall(r"(?<![\w-])(--[\w-]*report[\w-]*)", text))
        assert names <= {"--reports"}, f"kpool {command}: {names}"


# ---- kpool report ---------------------------------------------------------------------------------------


def test_report_on_a_missing_folder_is_a_usage_error_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no" / "such"
    assert cli.main(["report", "--reports", str(missing)]) == 2
    assert not (tmp_path / "no").exists()
    err = capsys.readouterr().err
    assert err.startswith("kpool: error: ") and str(missing) in err


def test_report_on_a_file_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    assert cli.main(["report", "--reports", str(afile)]) == 2
    err = capsys.readouterr().err
    assert "not a folder" in err and str(afile) in err and "Traceback" not in err


def test_an_os_error_is_one_line_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = cli._parser()
    exc = PermissionError(13, "Permission denied", "/root/reports/x")
    monkeypatch.setattr(parser, "parse_known_args", lambda argv: (_raise(exc), []))
    monkeypatch.setattr(cli, "_parser", lambda: parser)
    assert cli.main(["options"]) == 1
    err = capsys.readouterr().err
    assert err == "kpool: error: /root/reports/x: Permission denied\n"


def test_report_and_fuzz_default_to_the_same_reports_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """$KPOOL_REPORTS, else ./reports: one default for the reports location, as harness.paths says."""
    monkeypatch.setenv("KPOOL_REPORTS", str(tmp_path))
    assert cli.main(["report"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "index.html")

    from harness.fuzz import runner

    seen: list[Path] = []
    monkeypatch.setattr(runner, "merge", lambda target, reports: seen.append(reports) or [])
    assert cli.main(["fuzz", "conf", "--merge"]) == 0
    assert seen == [tmp_path]


@pytest.mark.parametrize(
    "argv",
    [
        ["report", "--reports", ""],
        ["fuzz", "conf", "--time", "1", "--reports", ""],
        ["fuzz", "conf", "--time", "1", "--run-dir", ""],
        ["stress", "workloads/steady-small.yaml", "--reports", ""],
        ["stress", ""],  # the current folder's *.yaml, every one of them run
        ["campaign", "--budget", "20s", "--targets", "", "--reports", ""],
        ["run", "--reports", "", "--", "true"],
        ["triage", "--db", "", "list"],
        ["triage", "sarif", "--out", ""],
        ["bench", "--json", ""],
    ],
)
def test_an_empty_path_is_a_usage_error_not_the_current_folder(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--reports "$REPORTS"` with the variable unset: an empty path is the current folder, so every run
    folder, the working corpora, crashes.sqlite and index.html were written straight into it (the
    checkout's root, in CI) instead of its reports/."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KPOOL_REPORTS", raising=False)
    try:
        code = cli.main(argv)
    except SystemExit as exc:
        code = exc.code  # type: ignore[assignment]
    err = capsys.readouterr().err
    assert code == 2, err
    assert "empty" in err and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == [], list(tmp_path.iterdir())
