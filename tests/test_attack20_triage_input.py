"""Session 20's outside review: `kpool triage signature FILE` on files that are no crash text. On main
(e193d3a) `/dev/zero` was read forever (a device has no size to seek by, so it was read through as a
pipe is), a FIFO no one writes hung in open(), and a pipe that never ends (`yes |`) was read forever.
Now: a device is refused in one line naming it; a FIFO with no writer is read at once (nothing in it:
an error saying so); a pipe is read to its end up to PIPE_MAX bytes, and past that an error; a binary
file and a big regular file are signed as before (head and tail, bounded)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.triage import signature as S

ROOT = Path(__file__).resolve().parents[1]
ASAN = "==1==ERROR: AddressSanitizer: heap-use-after-free on address 0x1\n    #0 0x1 in kp_free a.c:1\n"
# Long enough for a machine shared by four test runs; the hangs this guards against never end.
LIMIT_S = 60


def _signature(*args: str, stdin: int | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [sys.executable, "-m", "harness.cli", "triage", "signature", *args],
            cwd=ROOT,
            stdin=stdin,
            capture_output=True,
            text=True,
            timeout=LIMIT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"kpool triage signature {' '.join(args)} ran for over {LIMIT_S} s")


def _one_error(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kpool: error:"), proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_a_device_is_refused_not_read_forever(device: str) -> None:
    _one_error(_signature(device), device, "not a regular file or a pipe")


def test_a_fifo_with_no_writer_is_an_error_not_a_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "crash.fifo"
    os.mkfifo(fifo)
    _one_error(_signature(str(fifo)), str(fifo), "nothing to read", "no writer")


def test_a_fifo_with_a_writer_is_signed(tmp_path: Path) -> None:
    fifo = tmp_path / "crash.fifo"
    os.mkfifo(fifo)
    writer = subprocess.Popen(["sh", "-c", f"sleep 1; cat > {fifo}"], stdin=subprocess.PIPE, text=True)
    assert writer.stdin is not None
    writer.stdin.write(ASAN)
    writer.stdin.close()
    proc = _signature(str(fifo))
    writer.wait(timeout=LIMIT_S)
    assert proc.returncode == 0, proc.stderr
    assert "heap-use-after-free in kp_free" in proc.stdout, proc.stdout


def test_a_pipe_on_stdin_is_signed(tmp_path: Path) -> None:
    text = tmp_path / "crash.txt"
    text.write_text(ASAN)
    feeder = subprocess.Popen(["cat", str(text)], stdout=subprocess.PIPE)
    proc = _signature("/dev/stdin", stdin=feeder.stdout.fileno() if feeder.stdout else None)
    feeder.wait(timeout=LIMIT_S)
    assert proc.returncode == 0, proc.stderr
    assert "heap-use-after-free in kp_free" in proc.stdout, proc.stdout


def test_a_pipe_that_never_ends_stops_at_the_cap(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`yes | kpool triage signature /dev/stdin`: an error once PIPE_MAX bytes are read, not a hang
    (a small cap here, so the test reads little)."""
    monkeypatch.setattr(S, "PIPE_MAX", 4 << 20)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # a writer that never stops
        os.close(r)
        chunk = b"y\n" * 32768
        try:
            while True:
                os.write(w, chunk)
        finally:
            os._exit(0)
    os.close(w)
    t0 = time.monotonic()
    try:
        with pytest.raises(OSError, match="more than 4 MiB"):
            S.read_output(Path(f"/proc/self/fd/{r}"))
    finally:
        os.close(r)
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    assert time.monotonic() - t0 < LIMIT_S


def test_binary_and_big_files_are_still_signed(tmp_path: Path) -> None:
    binary = tmp_path / "core.bin"
    binary.write_bytes(bytes(range(256)) * 4096)
    assert _signature(str(binary)).returncode == 0
    big = tmp_path / "big.log"  # a sparse 1 GiB file: head and tail read, not the whole
    with big.open("wb") as f:
        f.write(ASAN.encode())
        f.truncate(1 << 30)
    t0 = time.monotonic()
    proc = _signature(str(big))
    assert proc.returncode == 0, proc.stderr
    assert "heap-use-after-free in kp_free" in proc.stdout, proc.stdout
    assert time.monotonic() - t0 < LIMIT_S
