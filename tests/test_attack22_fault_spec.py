"""Session 22's outside review, a defect in the C allocator (allocator/src/pool.c, fault_inject), left to
the helpers who own it: a fault spec's count or seed is read with strtoull, which takes a sign and
saturates, and nothing checks either. `mmap@nth=-1` is taken as nth=2^64-1 (no fault, ever, and no word),
`mmap@every=-2` as every 2^64-2, `mmap@nth=99999999999999999999999` (past 64 bits) as 2^64-1, a seed of
-3 as 2^64-3. A workload's `faults:` and `--set faults=` are judged by this parser, so they pass too, and
a fault-injection run injects nothing. Expected: each refused as the other bad modes are ("bad mode ...").
xfail (strict) until pool.c checks them: the test then fails, to be turned into a plain one."""

from __future__ import annotations

import pytest

from harness.binding import Pool
from harness.errors import KpoolError

BAD = ["mmap@nth=-1", "mmap@every=-2", "mmap@nth=99999999999999999999999", "mmap@p=0.5@seed=-3"]


@pytest.mark.xfail(strict=True, reason="allocator/src/pool.c: strtoull takes a sign and saturates")
@pytest.mark.parametrize("spec", BAD)
def test_a_negative_or_overflowing_count_is_refused(spec: str) -> None:
    with Pool("daemon:off,prefault:off") as pool:
        try:
            with pytest.raises(KpoolError, match="bad mode"):
                pool.fault_inject(spec)
        finally:
            pool.fault_inject("all@off")
