"""Session 22's second review: an installed kpool builds its variants into $KPOOL_CACHE. One it cannot use
(a file, a read-only folder, a folder under a file) gave exit 1 with make's own mkdir error; it is now a
usage error (exit 2) naming KPOOL_CACHE and the path, before make runs. An installed wheel is simulated in
process: no checkout, the allocator sources taken from this one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness import cli, paths

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paths, "checkout", lambda: None)
    monkeypatch.setattr(paths, "_data_root", lambda: ROOT)


def _unusable(tmp_path: Path, kind: str) -> Path:
    if kind == "file":
        (tmp_path / "cache").write_text("not a folder\n")
        return tmp_path / "cache"
    if kind == "under-a-file":
        (tmp_path / "f").write_text("")
        return tmp_path / "f" / "cache"
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    return ro if kind == "read-only" else ro / "cache"


@pytest.mark.parametrize("kind", ["file", "under-a-file", "read-only", "under-read-only", "sysfs"])
def test_unusable_kpool_cache_is_a_usage_error_naming_it(
    installed: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    kind: str,
) -> None:
    if kind.endswith("read-only") and os.geteuid() == 0:
        pytest.skip("root writes in read-only folders (the sysfs case stands in for them)")
    if kind == "sysfs":  # a folder no one, root included, may create anything in
        cache = Path("/sys/kpool-cache")
        try:
            cache.mkdir()
        except OSError:
            pass
        else:
            cache.rmdir()
            pytest.skip("/sys takes new folders here")
    else:
        cache = _unusable(tmp_path, kind)
    monkeypatch.setenv("KPOOL_CACHE", str(cache))
    assert cli.main(["build", "--variant", "debug"]) == 2
    err = capsys.readouterr().err
    assert "KPOOL_CACHE" in err and str(cache) in err, err
    assert "mkdir" not in err, err
