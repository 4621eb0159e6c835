"""Session 22's outside review found a defect in the C allocator (allocator/src/pool.c, inject_one): a
fault spec's count or seed was read with strtoull, which takes a sign and saturates, and nothing checked
either. `mmap@nth=-1` was taken as nth=2^64-1 (no fault, ever, and no word), `mmap@every=-2` as every
2^64-2, `mmap@nth=99999999999999999999999` (past 64 bits) as 2^64-1, a seed of -3 as 2^64-3. A workload's
`faults:` and `--set faults=` are judged by this parser, so they passed too, and a fault-injection run
injected nothing. Now each is refused as the other bad modes are ("bad mode ...", pool.c's fault_count);
all 4 cases failed on main (21fec7b)."""

from __future__ import annotations

import pytest

from harness.binding import Pool
from harness.errors import KpoolError

BAD = ["mmap@nth=-1", "mmap@every=-2", "mmap@nth=99999999999999999999999", "mmap@p=0.5@seed=-3"]


@pytest.mark.parametrize("spec", BAD)
def test_a_negative_or_overflowing_count_is_refused(spec: str) -> None:
    with Pool("daemon:off,prefault:off") as pool:
        try:
            with pytest.raises(KpoolError, match="bad mode"):
                pool.fault_inject(spec)
        finally:
            pool.fault_inject("all@off")
