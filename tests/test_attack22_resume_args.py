"""Session 22's outside review: `kpool campaign --resume` continues a campaign as it was planned: its
fuzz targets, workloads, programs and planted bug are its own. On main (21fec7b) `--resume --targets conf`,
`--resume --workloads x.yaml` and `--resume --plant 3` were ignored in silence (the campaign resumed as
planned, exit 0): a user who meant to change what runs was not told it did not. Now each is a usage
error naming the option (exit 2); --budget and --jobs still apply to a resume, as documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import cli


@pytest.mark.parametrize(
    "extra",
    [
        ["--targets", "conf"],
        ["--targets="],
        ["--workloads", "workloads/steady-small.yaml"],
        ["--programs", "x*.yaml"],
        ["--plant", "3"],
    ],
    ids=["targets", "targets-empty", "workloads", "programs", "plant"],
)
def test_resume_refuses_what_only_a_new_campaign_takes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str]
) -> None:
    assert cli.main(["campaign", "--resume", "--reports", str(tmp_path), *extra]) == 2
    err = capsys.readouterr().err
    option = extra[0].split("=")[0]
    assert f"{option}" in err and "--resume" in err, err
