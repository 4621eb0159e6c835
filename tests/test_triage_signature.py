"""Crash signatures: golden traces with their expected signatures, the pattern table's own examples, and
normalisation edge cases."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness.triage import patterns as P
from harness.triage import signature as S

TRACES = Path(__file__).parent / "data" / "traces"
GOLDEN = sorted(TRACES.glob("*.txt"))


def test_the_issue_asks_for_these_golden_traces() -> None:
    names = {p.stem for p in GOLDEN}
    for needed in ("asan_heap_use_after_free", "asan_double_free", "asan_segv", "ubsan_shift", "abort"):
        assert needed in names
    assert {"python_exception", "libfuzzer_timeout"} <= names


@pytest.mark.parametrize("trace", GOLDEN, ids=lambda p: p.stem)
def test_golden_trace(trace: Path) -> None:
    expected = json.loads(trace.with_suffix(".sig.json").read_text())
    sig = S.compute(trace.read_text(), returncode=expected["returncode"], source=expected["source"])
    assert (sig.kind, sig.detail, list(sig.frames)) == (
        expected["kind"],
        expected["detail"],
        expected["frames"],
    )
    assert sig.title == expected["title"]


@pytest.mark.parametrize("rule", P.KIND_RULES, ids=lambda r: r.name)
def test_kind_rule_example_matches(rule: P.KindRule) -> None:
    assert rule.regex.search(rule.example), rule.example


@pytest.mark.parametrize("rule", P.FRAME_RULES, ids=lambda r: r.name)
def test_frame_rule_example_matches(rule: P.FrameRule) -> None:
    assert rule.regex.match(rule.example), rule.example


@pytest.mark.parametrize("rule", P.SKIP_RULES, ids=lambda r: r.example)
def test_skip_rule_example_matches(rule: P.SkipRule) -> None:
    assert rule.regex.search(rule.example)


@pytest.mark.parametrize("rule", P.CLEANUPS + P.DETAIL_NOISE, ids=lambda r: r.example)
def test_cleanup_example(rule: P.Cleanup) -> None:
    assert rule.regex.sub(rule.replacement, rule.example) == rule.expected


def _asan(frames: list[str], bug: str = "heap-use-after-free") -> str:
    lines = [f"==1==ERROR: AddressSanitizer: {bug} on address 0x602000000010 at pc 0x1 bp 0x2 sp 0x3"]
    lines += [f"    #{i} 0x{0x5000 + i * 16:x} in {f}" for i, f in enumerate(frames)]
    return "\n".join(lines) + "\n"


def test_addresses_lines_and_build_offsets_do_not_change_the_hash() -> None:
    a = _asan(["kp_free /src/alloc.c:10:3", "kp_run /src/driver.c:5"])
    b = _asan(["kp_free /other/checkout/alloc.c:99:1", "kp_run /src/driver.c:7"]).replace("0x5", "0x7")
    assert S.compute(a).hash == S.compute(b).hash


def test_kind_and_frames_both_matter() -> None:
    base = S.compute(_asan(["kp_free a.c:1", "kp_run b.c:2"]))
    assert S.compute(_asan(["kp_free a.c:1", "kp_run b.c:2"], "double-free")).hash != base.hash
    assert S.compute(_asan(["kp_alloc a.c:1", "kp_run b.c:2"])).hash != base.hash


def test_depth_limits_frames() -> None:
    text = _asan([f"f{i} x.c:{i}" for i in range(6)])
    assert S.compute(text).frames == ("f0", "f1", "f2")
    assert S.compute(text, depth=5).frames == ("f0", "f1", "f2", "f3", "f4")


def test_runtime_libc_and_fuzzer_frames_are_skipped() -> None:
    text = _asan(
        [
            "__interceptor_free (/usr/lib/libclang_rt.asan.so+0x10)",
            "__asan::ReportGenericError(...) asan_report.cpp:1",
            "kp__span_release /src/primary.c:3",
            "fuzzer::Fuzzer::ExecuteCallback(unsigned char const*, unsigned long) FuzzerLoop.cpp:614",
            "__libc_start_main csu/libc-start.c:360",
        ]
    )
    assert S.compute(text).frames == ("kp__span_release",)


def test_template_anonymous_namespace_and_clone_noise() -> None:
    assert S.clean_function("(anonymous namespace)::a<b<c>, d>::f(int) const [clone .cold.1]") == "a::f"
    assert S.clean_function("kp__grow.constprop.0.isra.0") == "kp__grow"
    assert S.clean_function("kp_free+0x1f") == "kp_free"


def test_recursion_collapses() -> None:
    text = _asan(["walk a.c:1", "walk a.c:1", "walk a.c:2", "kp_check b.c:1"])
    assert S.compute(text).frames == ("walk", "kp_check")


def test_only_the_first_stack_counts_for_sanitizers() -> None:
    text = _asan(["kp_use a.c:1"]) + "\nfreed by thread T0 here:\n    #0 0x1 in kp_free b.c:2\n"
    assert S.compute(text).frames == ("kp_use",)


def test_harness_frames_are_kept_when_nothing_else_is_left() -> None:
    inner = 'Traceback (most recent call last):\n  File "/x/harness/binding.py", line 9, in free\n'
    text = inner + "    raise FreeError()\nharness.errors.FreeError: no\n"
    assert S.compute(text).frames == ("binding.free",)
    outside = (
        'Traceback (most recent call last):\n  File "/x/harness/fuzz/t.py", line 3, in TestOneInput\n'
        '    decode(d)\n  File "/x/lib/decoder.py", line 9, in decode\n    raise ValueError\nValueError\n'
    )
    sig = S.compute(outside)
    assert (sig.kind, sig.detail, sig.frames) == ("python-exception", "ValueError", ("decoder.decode",))


@pytest.mark.parametrize(
    ("returncode", "kind"),
    [(-11, "SIGSEGV"), (-6, "SIGABRT"), (139, "SIGSEGV"), (-7, "SIGBUS"), (-64, "signal-64")],
)
def test_signal_from_return_code(returncode: int, kind: str) -> None:
    assert S.compute("nothing useful", returncode=returncode).kind == kind


def test_kind_precedence() -> None:
    # The producer's guess beats the signal it killed the worker with; a sanitizer type beats the guess.
    assert S.classify("worker killed", returncode=-9, guess="timeout") == ("timeout", "")
    assert S.classify(_asan(["f a.c:1"]), returncode=1, guess="timeout")[0] == "heap-use-after-free"
    # A benign pool event in the log does not hide the signal that killed the process.
    oom = "kpool 17.001 oom 0x0 size 99: primary and backup exhausted\n"
    assert S.classify(oom, returncode=-11) == ("SIGSEGV", "")
    assert S.classify(oom, returncode=0) == ("kpool-oom", "primary and backup exhausted")
    assert S.classify("", returncode=3) == ("exit-code", "3")
    assert S.classify("") == ("unknown", "")


def test_frameless_signature_uses_the_source() -> None:
    a = S.compute("kpool: SLO broken: p99_alloc_ns: 1 > 0", source="churn")
    b = S.compute("kpool: SLO broken: p99_alloc_ns: 9 > 0", source="churn")
    c = S.compute("kpool: SLO broken: p99_alloc_ns: 1 > 0", source="fork-storm")
    assert a.hash == b.hash != c.hash
    assert a.title == "slo (p99_alloc_ns) in churn"


def test_kpool_event_detail_has_no_addresses() -> None:
    a = S.classify("kpool 1.002 freelist 0x7f00 size 64: bad link 0x7f0a3c001040, list quarantined")
    assert a == ("kpool-freelist", "bad link ADDR, list quarantined")


# ---- a huge crash output -----------------------------------------------------------------------------

# What signing may read of a crash output, whatever its size: a report is kilobytes; 2 MiB leaves room
# for the largest real ones (a hang report with every thread's stack) and is far below 50 MB.
_READ_AT_MOST = 2 << 20
_HUGE = 50_000_000


def _leak_block(n: int) -> str:
    return (
        f"Direct leak of {n} byte(s) in 1 object(s) allocated from:\n"
        "    #0 0x563a4771514e in __interceptor_malloc (/k/planted_leak+0xa314e)\n"
        f"    #1 0x563a4774feb4 in kp_leaky_{n % 7} /k/src/backup.c:2:71\n"
        "    #2 0x563a4774ff03 in main /k/src/backup.c:4:26\n\n"
    )


def _reading(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The length of every text the kind rules and the stack reader are given."""
    seen: list[int] = []
    classify, stacks = S._classify, S._stacks

    def spy_classify(text: str, *args: object) -> tuple[str, str, str]:
        seen.append(len(text))
        return classify(text, *args)  # type: ignore[arg-type]

    def spy_stacks(text: str) -> list[tuple[str, list[S.Frame]]]:
        seen.append(len(text))
        return stacks(text)

    monkeypatch.setattr(S, "_classify", spy_classify)
    monkeypatch.setattr(S, "_stacks", spy_stacks)
    return seen


def test_a_huge_leak_report_is_signed_from_its_first_part(monkeypatch: pytest.MonkeyPatch) -> None:
    """Signing a 50 MB crash output took about 10 s (every line went through the frame rules): a leak
    report listing a million objects is signed as its first part is, from a bounded part of it."""
    report = (TRACES / "lsan_leak.txt").read_text()
    head, summary = report.split("SUMMARY:")
    blocks = []
    size = len(report)
    while size < _HUGE:
        blocks.append(_leak_block(len(blocks)))
        size += len(blocks[-1])
    huge = head + "".join(blocks) + "SUMMARY:" + summary
    assert len(huge) >= _HUGE
    normal = S.compute(report, source="api_sequence")
    seen = _reading(monkeypatch)
    got = S.compute(huge, source="api_sequence")
    assert got == normal, (got.title, normal.title)
    assert seen and max(seen) <= _READ_AT_MOST, f"read {max(seen):,} characters of {len(huge):,}"


def test_a_report_at_the_end_of_a_huge_fuzzing_log_is_signed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash that does not reproduce is signed from the fuzzing log, whose report comes last, after
    hours of progress lines: the end of a huge output is read too, still within the bound."""
    report = (TRACES / "asan_heap_use_after_free.txt").read_text()
    line = "#123456\tNEW    cov: 56 ft: 78 corp: 9/100b lim: 4 exec/s: 123 rss: 45Mb L: 7/64 MS: 1 Shuf-\n"
    huge = "INFO: Seed: 1\n" + line * (_HUGE // len(line)) + report
    normal = S.compute(report)
    seen = _reading(monkeypatch)
    got = S.compute(huge)
    assert got == normal, (got.title, normal.title)
    assert seen and max(seen) <= _READ_AT_MOST, f"read {max(seen):,} characters of {len(huge):,}"


# ---- `kpool triage signature FILE` on a huge file ------------------------------------------------------

# What the command may allocate to sign a file, whatever its size: the part signing reads (HEAD_CHARS and
# TAIL_CHARS, 1.25 MiB) as bytes and as text, with room to spare; far below a 50 MB file read whole.
_ALLOCATED_AT_MOST = 16 << 20


def _huge_file(path: Path, report: str, at_end: bool, filler: bytes = b"") -> Path:
    """A 50 MB file holding report at its start or its end; the rest is filler, then a hole (zeros, which
    cost no disk)."""
    with path.open("wb") as f:
        if not at_end:
            f.write(report.encode())
        f.write(filler)
        if at_end:
            f.seek(_HUGE - len(report.encode()))
            f.write(report.encode())
        else:
            f.truncate(_HUGE)
    assert path.stat().st_size == _HUGE
    return path


def _sign(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[str, int]:
    """The command's output and the peak of what Python allocated while it ran."""
    import tracemalloc

    from harness import cli

    tracemalloc.start()
    try:
        assert cli.main(["triage", "signature", str(path)]) == 0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return capsys.readouterr().out, peak


@pytest.mark.parametrize("at_end", [False, True], ids=["report first", "report last"])
def test_signing_a_50_mb_file_reads_a_bounded_part_of_it(
    at_end: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`kpool triage signature` read the whole file into one string before the bounded signing: 50 MB of
    bytes that are not UTF-8 took 442 MB (each a replacement character) and seconds. The file is read in
    part, as signing reads the text: the same signature as the report alone."""
    report = (TRACES / "asan_heap_use_after_free.txt").read_text()
    alone = tmp_path / "alone.txt"
    alone.write_text(report)
    expected, _ = _sign(alone, capsys)
    # 2 MiB of bytes that are not UTF-8 beside the report, where the command reads
    huge = _huge_file(tmp_path / "huge.txt", report, at_end, filler=b"\xff" * (2 << 20))
    got, peak = _sign(huge, capsys)
    assert got == expected
    assert peak <= _ALLOCATED_AT_MOST, f"allocated {peak:,} bytes to sign a {_HUGE:,}-byte file"


def test_signing_a_stream_keeps_its_start_and_its_end_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A pipe (`... | kpool triage signature /dev/stdin`) has no size to seek by: it is read to its end,
    keeping its first and last parts, in bounded memory."""
    import threading

    report = (TRACES / "asan_heap_use_after_free.txt").read_text()
    alone = tmp_path / "alone.txt"
    alone.write_text(report)
    expected, _ = _sign(alone, capsys)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    line = b"#123456\tNEW    cov: 56 ft: 78 corp: 9/100b lim: 4 exec/s: 123 rss: 45Mb L: 7/64 MS: 1 Shuf-\n"

    def feed() -> None:
        with fifo.open("wb") as f:
            for _ in range((24 << 20) // (len(line) * 1000)):
                f.write(line * 1000)
            f.write(report.encode())

    writer = threading.Thread(target=feed)
    writer.start()
    got, peak = _sign(fifo, capsys)
    writer.join()
    assert got == expected
    assert peak <= _ALLOCATED_AT_MOST, f"allocated {peak:,} bytes to sign a 24 MiB stream"


def test_a_crash_signed_from_a_huge_fuzzing_log_reads_a_bounded_part_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash whose input does not crash again is signed from the fuzzing log, which a night in fork mode
    makes huge: the log was read whole (record.fuzz_crashes), its report at the end."""
    import tracemalloc

    from harness.fuzz import runner
    from harness.triage import record

    monkeypatch.setattr(runner, "target_env", lambda target, plant=0: {})
    report = (TRACES / "asan_heap_use_after_free.txt").read_text()
    log = _huge_file(tmp_path / "api_sequence.log", report, at_end=True)
    crash = tmp_path / "api_sequence-crash-0badc0de"
    crash.write_bytes(b"\x01")
    result = {"target": "api_sequence", "log": str(log), "crashes": [str(crash)], "replays": {}}
    tracemalloc.start()
    try:
        [got] = record.fuzz_crashes([result], "r1", 0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert S.of_crash(got) == S.compute(report, source="fuzz:api_sequence")
    assert peak <= _ALLOCATED_AT_MOST, f"allocated {peak:,} bytes for a {_HUGE:,}-byte log"
