"""An event carries its whole text (kpool.h, KP_EVENT_TEXT).

Session 20's outside attack: the text was cut at 64 bytes, so a wild free of a pointer with 15 or 16 hex
digits lost the end of its verdict ("... never given " without "out"). The ring now holds 128 bytes, and
every message libkpool can write fits: checked here from the source (each format at its widest), and on
the case the attack found. A text that would not fit anyway is cut with a visible mark (events.c).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness import binding
from harness.binding import Pool
from harness.errors import FreeError

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "allocator" / "src"
HEADER = ROOT / "allocator" / "include" / "kpool.h"

# The widest each conversion can print (events.c, kp__fmt): %p "0x" and 16 hex digits, a 64-bit
# decimal 20 digits, a 32-bit one 10 (11 with a sign), %x 8 hex digits, %c one character.
WIDEST = {"p": 18, "zu": 20, "llu": 20, "u": 10, "d": 11, "x": 8, "c": 1, "%": 1}
# A %s whose argument is no string literal in the call: the longest string it can be, by the names
# in its call (os.c's kind_names; alloc.c's backup reasons; primary.c's grow callers).
STRING_ARGS = {"kind_names[kind]": 8, "why": 24}
CONV_RE = re.compile(r"%0?\d*(zu|llu|[sdupxc%])")
LITERAL_RE = re.compile(r'"((?:[^"\\]|\\.)*)"')


def _calls(name: str) -> list[str]:
    """The argument text of every call of `name` in libkpool's sources (up to its closing parenthesis)."""
    calls = []
    for path in sorted(SRC.glob("*.c")):
        text = path.read_text()
        for m in re.finditer(rf"\b{name}\(", text):
            depth, i = 1, m.end()
            while depth:
                c = text[i]
                if c in "\"'":  # a string or character literal: to its closing quote
                    i += 1
                    while text[i] != c:
                        i += 2 if text[i] == "\\" else 1
                depth += {"(": 1, ")": -1}.get(c, 0)
                i += 1
            args = text[m.end() : i - 1]
            if not args.startswith("kp_pool *"):  # not the definition
                calls.append(args)
    return calls


def _widest(fmt: str, string_widths: list[int]) -> int:
    """The longest text fmt can print, the %s conversions taking string_widths in order."""
    width, strings = 0, iter(string_widths)
    pos = 0
    for m in CONV_RE.finditer(fmt):
        width += m.start() - pos
        pos = m.end()
        width += next(strings) if m.group(1) == "s" else WIDEST[m.group(1)]
    return width + len(fmt) - pos


def _event_text_size() -> int:
    m = re.search(r"#define KP_EVENT_TEXT (\d+)", HEADER.read_text())
    assert m
    return int(m.group(1))


def _verdicts() -> list[str]:
    """What kp__violation's callers say (its last argument: a literal or a choice of literals)."""
    found = []
    for args in _calls("kp__violation"):
        found += LITERAL_RE.findall(args)
    # alloc.c's why_text(): the verdicts of a failed free, given to kp__violation by name.
    found += ["double free", "damaged block header", "free of a pointer never given out"]
    return found


def test_every_event_text_fits() -> None:
    size = _event_text_size()
    assert size == binding.KP_EVENT_TEXT
    verdict = max(len(v) for v in _verdicts())
    assert verdict >= len("a span on the central list is no longer listed: dropped from the list")
    widest: list[tuple[int, str]] = []
    for args in _calls("kp__event"):
        parts = [p.strip() for p in args.split(",", 5)]
        literals = LITERAL_RE.findall(parts[5]) if len(parts) == 6 else []
        assert literals, f"kp__event call without a literal format: {args[:80]}"
        # adjacent literals are one format; the literals after it (arguments) are %s candidates
        fmt_end = re.match(r'\s*((?:"(?:[^"\\]|\\.)*"\s*)+)', parts[5])
        assert fmt_end, args[:80]
        fmt = "".join(LITERAL_RE.findall(fmt_end.group(1)))
        rest = parts[5][fmt_end.end() :]
        arg_literals = [len(s) for s in LITERAL_RE.findall(rest)]
        nstrings = len([m for m in CONV_RE.finditer(fmt) if m.group(1) == "s"])
        if fmt in ("%p size unknown: %s", "%p %s %zu: %s"):  # integrity.c, kp__violation's
            strings = [len("size class"), verdict][-nstrings:]
        else:
            named = [w for name, w in STRING_ARGS.items() if name in rest]
            strings = [max(arg_literals + named + [0])] * nstrings
        widest.append((_widest(fmt, strings), fmt))
    assert len(widest) >= 30, "the scan found too few kp__event calls: the pattern no longer matches"
    longest = max(widest)
    assert longest[0] < size, f"{longest[1]!r} can print {longest[0]} bytes; events hold {size - 1}"


def test_a_wild_free_of_a_long_pointer_keeps_its_whole_verdict() -> None:
    """The attack's case: 0x123456789abcdef0 (16 hex digits) freed."""
    with Pool("daemon:off") as pool:
        for addr in (0x123456789ABCDEF0, 0xFFFFFFFFFFFFFFF0):
            with pytest.raises(FreeError) as info:
                pool.free(addr)
            assert (
                info.value.text == f"invalid_free: {addr:#x} size unknown: free of a pointer never given out"
            )
        events = [e for e in pool.events() if e.kind == "invalid_free"]
    assert [e.text.endswith("never given out") for e in events] == [True, True], events
