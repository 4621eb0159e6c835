"""Every report and state file the harness writes is whole or not there: written to a temporary file in the
same folder, synced to disk, then renamed over the old one (harness/atomic.py). fuzz.json was written in
place: a full disk or a crash during the write left it empty, and the campaign then read the run as
damaged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from test_report import _report

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Disk:
    """What reached the disk: inodes synced with fsync, and files renamed into place after their sync."""

    synced: set[tuple[int, int]] = field(default_factory=set)
    placed: dict[str, tuple[int, int]] = field(default_factory=dict)

    def whole(self, path: Path) -> bool:
        """path is a file that was synced and then renamed to its name (not written where it stands)."""
        st = path.stat()
        return self.placed.get(str(path.absolute())) == (st.st_dev, st.st_ino)


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[Disk]:
    seen = Disk()
    real_fsync, real_replace, real_rename = os.fsync, os.replace, os.rename

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        seen.synced.add((st.st_dev, st.st_ino))
        real_fsync(fd)

    def moved(real: Callable[..., None]) -> Callable[..., None]:
        def move(src: str | Path, dst: str | Path, **kw: object) -> None:
            st = Path(src).stat()
            real(src, dst, **kw)
            if (st.st_dev, st.st_ino) in seen.synced:
                seen.placed[str(Path(dst).absolute())] = (st.st_dev, st.st_ino)

        return move

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", moved(real_replace))
    monkeypatch.setattr(os, "rename", moved(real_rename))
    yield seen


def test_fuzz_json_and_the_replay_reports_are_synced_then_renamed(
    disk: Disk, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_fuzz_recovery import FAKE_TARGET, REPORT

    from harness.fuzz import runner

    script = tmp_path / "fake_target.py"
    script.write_text(FAKE_TARGET)
    (tmp_path / "report.txt").write_text(REPORT)
    monkeypatch.setattr(runner, "script", lambda target: script)
    monkeypatch.setattr(runner, "target_env", lambda target, plant=0: dict(os.environ))
    monkeypatch.setattr(runner, "seeds_dir", lambda target: tmp_path / "no-seeds")
    monkeypatch.setenv("KPOOL_FAKE_REPORT", str(tmp_path / "report.txt"))
    monkeypatch.setenv("KPOOL_FAKE", "crash")
    monkeypatch.delenv("KPOOL_CRASH_DB", raising=False)
    monkeypatch.delenv("KPOOL_CRASH_RUN", raising=False)
    run = runner.run("api_sequence", 1, run_dir=tmp_path / "run", reports=tmp_path / "reports")
    [crash] = run.results[0].crashes
    assert disk.whole(run.run_dir / "fuzz.json")
    assert disk.whole(Path(crash + ".txt"))


def test_the_run_report_files_are_synced_then_renamed(disk: Disk, tmp_path: Path) -> None:
    from harness.report.writers import write_index, write_run

    run_dir = write_run(_report("r1", 1_700_000_000.0), tmp_path)
    for name in ("summary.json", "junit.xml", "results.sarif", "index.html", "latency.hlog"):
        assert disk.whole(run_dir / name), name
    assert disk.whole(write_index(tmp_path))


def test_the_campaign_state_is_synced_then_renamed(disk: Disk, tmp_path: Path) -> None:
    from harness.campaign.budget import Campaign

    Campaign("c1", 60.0, 1).save(tmp_path)
    assert disk.whole(tmp_path / "campaign.json")


def test_stress_json_is_synced_then_renamed(disk: Disk, tmp_path: Path) -> None:
    from test_stress_run_dir import _stress

    assert _stress(tmp_path, "small", "r1") == 0
    assert disk.whole(tmp_path / "r" / "r1" / "stress.json")


def test_the_sarif_export_is_synced_then_renamed(disk: Disk, tmp_path: Path) -> None:
    from harness import cli

    argv = ["triage", "--db", str(tmp_path / "none.sqlite"), "sarif", "--out", str(tmp_path / "x.sarif")]
    assert cli.main(argv) == 0
    assert disk.whole(tmp_path / "x.sarif")


# ---- the helper on a disk that refuses the write -----------------------------------------------------

# A child process whose files may not grow past 64 bytes (RLIMIT_FSIZE; SIGXFSZ ignored, so the write
# fails with EFBIG as a full disk fails it with ENOSPC) rewrites a file that holds a report.
FULL_DISK = r"""
import resource, signal, sys
from pathlib import Path
from harness import atomic
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))
try:
    atomic.write_text(Path(sys.argv[1]), "x" * 1000)
except OSError as exc:
    print(exc.errno, exc.filename)
"""


def test_a_write_the_disk_refuses_leaves_the_old_file_whole_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "fuzz.json"
    path.write_text('{"results": []}\n')
    out = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    )
    assert out.stdout.split() == ["27", str(path)], out  # EFBIG, raised to the caller, naming the file
    assert json.loads(path.read_text()) == {"results": []}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fuzz.json"]


def test_the_helper_writes_with_the_umask_like_any_other_file(tmp_path: Path) -> None:
    from harness import atomic

    old = os.umask(0o027)
    try:
        atomic.write_text(tmp_path / "a.json", "{}\n")
        atomic.write_bytes(tmp_path / "b.bin", b"\x00\xff")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\xff"


def test_a_link_keeps_pointing_at_the_new_file_and_a_pipe_is_written_as_it_is(tmp_path: Path) -> None:
    """--out through a symbolic link, or to /dev/stdout: the link is not replaced by a file, and a
    character device or a pipe is not renamed over."""
    from harness import atomic

    real = tmp_path / "real.sarif"
    real.write_text("old")
    link = tmp_path / "link.sarif"
    link.symlink_to(real)
    atomic.write_text(link, "new")
    assert link.is_symlink() and real.read_text() == "new"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    atomic.write_text(fifo, "through the pipe")
    assert reader.communicate(timeout=30)[0] == b"through the pipe"
    assert fifo.is_fifo()


def test_a_folder_that_refuses_the_file_is_said_with_the_files_name(read_only_folder: Path) -> None:
    """`kpool report --reports RO` said "RO/.index.html.6231.da4f32ff.tmp: Read-only file system": the
    temporary file's name, which the user never asked for and cannot find."""
    from harness import atomic

    with pytest.raises(OSError) as info:
        atomic.write_text(read_only_folder / "index.html", "<html></html>\n")
    assert info.value.filename == str(read_only_folder / "index.html")
    assert list(read_only_folder.iterdir()) == []


def test_a_crash_inputs_history_is_synced_then_renamed(disk: Disk, tmp_path: Path) -> None:
    """<input>.history (the inputs before a crash, its reproducer when it does not crash alone) was
    written in place: cut short by a kill, its last input read back is not the one that crashed."""
    from harness.fuzz.target import read_history, write_history

    path = tmp_path / "api_sequence-crash-1.history"
    write_history(path, [b"\x01", b"\x02\x03"])
    assert disk.whole(path)
    assert read_history(path) == [b"\x01", b"\x02\x03"]
