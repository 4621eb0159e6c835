"""Memory that kpool's checks cost on kpbench's workload (b), 16 B-64 KiB blocks: the pages a checked pool
has written against an unchecked one, on the same operations (one seed, the daemon off: nothing purged or
pre-faulted, so every page resident was written by the allocator or by kpbench).

Session 18 found the cause (issue 14, cost of checks). A block keeps 8 bytes of slack for its canary, so
class C takes the requests whose end (header + request) lies in (P - 8, C - 8], P the class below, where an
unchecked pool's class C takes (P, C]: the last byte a program writes can sit in the 8 bytes before
block + P. Where block + P is a page boundary (every block of 36864, 61440 and 65536 bytes, every other one of
18432), one request in 256-512 of the class writes the page before it, a page the unchecked pool's blocks
of that class never write; and a block's place is used again by hundreds of requests (b: 3M operations over
10,000 slots), so after a while about half the blocks have that extra page resident. With blocks of
65536 bytes, pages 0 and 15 of every block are resident either way, page 14 of 273 of 543 blocks with
checks on, 4 of 534 with checks off. Not the canary's bytes, nor its reads or prefetches: an unchecked
pool built to choose classes as a checked one does (the 8 bytes of slack, no canary) has the same
resident pages to the page (4,286 page faults and 108.8 MiB against 4,287 and 108.8 with checks on,
16-64 KiB blocks), and the same span churn (1,712 spans carved).

Figures (gcc 12.2 -O2, Linux 6.x, kpbench --workload b --ops 3000000 --conf daemon:off[,checks:off]):

    checks  VmHWM      page faults of the timed loop
    on      46.4 MiB   1,260
    off     42.1 MiB     540

The strict xfail below is the bound to meet: a class choice (or canary placement) that keeps the checked
pool's blocks on the pages the unchecked pool's use.
"""

from __future__ import annotations

import json
import subprocess
from functools import cache

import pytest
from test_c_suite import _tail, release_kpbench

OPS = 3_000_000
# A run takes 1-2 s; a minute means kpbench hangs.
RUN_TIMEOUT_S = 60
# How much more peak RSS checks on may take than off on (b): the 8 bytes of slack per block themselves
# are 0.1% of b's footprint; today's +10% is the pages of the section above.
RSS_MARGIN = 0.03
# The figures above are the inline layout's classes: pinned since the default became outline (s24-flip),
# whose classes keep checks on within the margin (test_the_default_layout_...).
INLINE = "layout:inline,"


@cache
def run_b(conf: str) -> dict[str, int]:
    cmd = [str(release_kpbench()), "--workload", "b", "--ops", str(OPS), "--json", "--conf", conf]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)}: exit {proc.returncode}\n{_tail(proc.stderr)}"
    doc = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1])
    assert doc["verify_errors"] == doc["alloc_failures"] == doc["free_errors"] == 0, doc
    return {"hwm_kib": doc["rss"]["hwm_kib"], "faults": doc["thread_minflt"]}


@pytest.mark.slow
def test_checks_keep_the_same_pages_resident_without_the_daemon() -> None:
    """Without the daemon the checked pool runs at all: its figures are those the xfail below compares."""
    on, off = run_b(INLINE + "daemon:off"), run_b(INLINE + "daemon:off,checks:off")
    assert on["hwm_kib"] > 0 and off["hwm_kib"] > 0 and on["faults"] > 0 and off["faults"] > 0


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="a checked block's class takes requests 8 bytes shorter, whose last byte writes the page before "
    "the unchecked class's last page (module docstring): +10% peak RSS on (b), 2.3x its page faults",
)
def test_checks_cost_no_more_than_three_percent_of_peak_rss_on_mixed_sizes() -> None:
    on, off = run_b(INLINE + "daemon:off"), run_b(INLINE + "daemon:off,checks:off")
    assert on["hwm_kib"] <= off["hwm_kib"] * (1 + RSS_MARGIN), (
        f"(b) checks on peak at {on['hwm_kib']} KiB ({on['faults']} faults), off at {off['hwm_kib']} KiB "
        f"({off['faults']} faults): {100 * (on['hwm_kib'] / off['hwm_kib'] - 1):+.1f}%"
    )


@pytest.mark.slow
def test_the_default_layout_checks_cost_no_more_than_three_percent_of_peak_rss_on_mixed_sizes() -> None:
    """layout:outline (the default since s24-flip) meets the bound the inline layout's xfail above misses."""
    on, off = run_b("daemon:off"), run_b("daemon:off,checks:off")
    assert on["hwm_kib"] <= off["hwm_kib"] * (1 + RSS_MARGIN), (
        f"(b) checks on peak at {on['hwm_kib']} KiB ({on['faults']} faults), off at {off['hwm_kib']} KiB "
        f"({off['faults']} faults): {100 * (on['hwm_kib'] / off['hwm_kib'] - 1):+.1f}%"
    )
