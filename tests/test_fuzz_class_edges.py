"""The byte-operation fuzz targets reach every size-class boundary exactly, through their dictionaries.

The byte -> operation tables of allocator/driver/fuzz_model.c are the corpora's file format (append
only), and every byte value already decodes to something: a new size table there would change how
stored inputs decode. The frozen edge table holds the 47 class sizes of an older layout, not the 75 of
kp__class_size. Each target's dictionary (corpora/<target>/dict, passed to libFuzzer as -dict) holds
one whole allocation at each boundary instead: the largest request a class holds (class - header -
canary) and one byte more (the next class's smallest), for the canary of every pool of the target.
This test decodes each token as the interpreter does and checks that, for every class of the current
table, both sizes are there.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "allocator" / "src"
MODEL = ROOT / "allocator" / "driver" / "fuzz_model.c"
HDR = 16
CANARY = 8
# The canaries of each target's pools (fuzz_targets.c): checks on (8) everywhere, and checks:off
# (0) in one pool of api_sequence and of faults.
CANARIES = {"api_sequence": (CANARY, 0), "faults": (CANARY, 0), "concurrent": (CANARY,)}


def _classes() -> list[int]:
    text = (SRC / "primary.c").read_text()
    body = re.search(r"kp__class_size\[KP_NCLASS\]\s*=\s*\{([^}]*)\}", text)
    assert body, "kp__class_size not found in primary.c"
    sizes = [int(x) for x in body.group(1).replace("\n", " ").split(",") if x.strip()]
    nclass = re.search(r"#define KP_NCLASS (\d+)", (SRC / "internal.h").read_text())
    assert nclass and len(sizes) == int(nclass.group(1))
    return sizes


def _tokens(target: str) -> list[bytes]:
    out = []
    for line in (ROOT / "corpora" / target / "dict").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        value = line.split("=", 1)[1].strip().strip('"')
        out.append(bytes(int(h, 16) for h in re.findall(r"\\x([0-9a-fA-F]{2})", value)))
    return out


def _decode(token: bytes) -> int | None:
    """The size of the allocation a token is (fuzz_model.c: op byte 0 is OP_ALLOC in every table;
    then the slot; read_size's case 10, bit 4 clear so that the lean remap leaves it alone:
    fz_u16 * 2 + the first byte's bit 7), or None."""
    if len(token) != 5 or token[0] % 32 != 0 or token[2] & 0x1F != 10:
        return None
    return (token[3] | token[4] << 8) * 2 + (token[2] >> 7)


def test_the_grammar_the_tokens_rely_on() -> None:
    model = MODEL.read_text()
    for table in ("ops_api", "ops_faults", "ops_threads"):
        assert re.search(rf"{table}\[32\] = \{{\s*OP_ALLOC,", model), f"{table} no longer opens with OP_ALLOC"
    assert "case 11: return (size_t)fz_u16(r) * 2 + (b >> 7);" in model
    assert "(k == 10 || k == 11 || k == 14 || k == 15) && (b & 0x10)" in model


@pytest.mark.parametrize("target", sorted(CANARIES))
def test_dictionary_reaches_every_class_boundary(target: str) -> None:
    sizes = {_decode(t) for t in _tokens(target)}
    assert None not in sizes, f"corpora/{target}/dict: a token that is no allocation"
    missing = [
        (c, canary, side)
        for c in _classes()
        for canary in CANARIES[target]
        for side in (0, 1)
        if c - HDR - canary + side not in sizes
    ]
    assert not missing, f"corpora/{target}/dict misses (class, canary, +1): {missing[:8]}"
