"""Two harness defects of session 37 (s37-robust).

1. A hint kpool prints (a command to paste: `kpool triage --db PATH show ID`) from a folder whose name is
   not UTF-8 showed the byte as `\\udcfe`, which no shell gives back: pasted, it named another folder. It is
   quoted so that bash gives the bytes back ($'...\\xfe...'), and stays plain text.
2. `kpool triage sarif --out DIR/x.sarif` made a missing DIR silently (a mistyped folder took the file
   where no one looked). It is refused, naming the missing folder, as `kpool report --reports DIR` refuses
   a folder that is not there (exit 2, nothing written).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from kpool_cli import kpool

from harness import output


@pytest.mark.parametrize(
    "arg", ["plain", "with space", "it's", "x\udcfey", "caf\u00e9", "tab\there", "a\\b", "$HOME", "new\nline"]
)
def test_a_word_quoted_for_the_shell_gives_its_bytes_back(arg: str) -> None:
    word = output.shell_quote(arg)
    assert "\\udc" not in word and word.isprintable(), word
    back = subprocess.run(["bash", "-c", f"printf %s {word}"], capture_output=True, check=True).stdout
    assert back == os.fsencode(arg)


def test_a_hint_from_a_folder_not_utf8_can_be_pasted(tmp_path: Path) -> None:
    here = Path(os.fsdecode(os.fsencode(tmp_path) + b"/x\xfey"))
    here.mkdir()
    proc = kpool("run", "--", "sh", "-c", "kill -SEGV $$", cwd=here)
    err = proc.stderr
    assert "\\udc" not in err, err
    found = re.search(r"(kpool triage --db .* show \w+),", err)
    assert found, err
    # the --db word, pasted into bash, names the database kpool wrote
    word = found.group(1).split(" --db ", 1)[1].rsplit(" show ", 1)[0]
    db = subprocess.run(["bash", "-c", f"printf %s {word}"], capture_output=True, check=True).stdout
    assert db == os.fsencode(here) + b"/reports/crashes.sqlite" and Path(os.fsdecode(db)).is_file()


def test_sarif_out_in_a_missing_folder_is_refused_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "not-there"
    db = str(tmp_path / "crashes.sqlite")
    proc = kpool("triage", "--db", db, "sarif", "--out", str(missing / "x.sarif"), cwd=tmp_path)
    err = proc.stderr
    assert proc.returncode == 2, err
    assert f"{missing}: no such folder" in err, err
    assert not missing.exists()


def test_sarif_out_in_an_existing_folder_is_written(tmp_path: Path) -> None:
    out = tmp_path / "x.sarif"
    proc = kpool("triage", "--db", str(tmp_path / "crashes.sqlite"), "sarif", "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert out.is_file() and '"version": "2.1.0"' in out.read_text()
