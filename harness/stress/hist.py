"""The driver's latency histograms on the Python side: bucket bounds, merging, percentiles.

kpdrive writes each histogram as its layout (sub_bits, max_exp) and the non-empty buckets as [index,
count] pairs (allocator/driver/hist.c). Buckets with the same layout merge by summing counts per index,
which is exact: merged percentiles are those of the union of the samples, within the bucket width
(under 1%).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

PERCENTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99, "p999": 0.999}


@dataclass(frozen=True)
class Layout:
    sub_bits: int = 7
    max_exp: int = 34

    def low(self, i: int) -> int:
        sub = 1 << self.sub_bits
        if i < sub:
            return i
        g, s = divmod(i - sub, sub)
        e = g + self.sub_bits
        return (1 << e) + s * (1 << (e - self.sub_bits))

    def high(self, i: int) -> int:
        """The highest value bucket i holds (HdrHistogram's highest equivalent value)."""
        sub = 1 << self.sub_bits
        if i < sub:
            return i
        e = (i - sub) // sub + self.sub_bits
        return self.low(i) + (1 << (e - self.sub_bits)) - 1

    @classmethod
    def of(cls, doc: Mapping[str, Any]) -> Layout:
        return cls(int(doc.get("sub_bits", 7)), int(doc.get("max_exp", 34)))


@dataclass
class Hist:
    layout: Layout = field(default_factory=Layout)
    buckets: dict[int, int] = field(default_factory=dict)
    count: int = 0
    total_ns: float = 0.0
    min: int = 0
    max: int = 0

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], layout: Layout) -> Hist:
        h = cls(layout, {int(i): int(c) for i, c in doc["buckets"]}, int(doc["count"]))
        h.total_ns = float(doc["mean"]) * h.count
        h.min, h.max = int(doc["min"]), int(doc["max"])
        return h

    def merge(self, other: Hist) -> None:
        if other.layout != self.layout:
            raise ValueError(f"histogram layouts differ: {self.layout} and {other.layout}")
        for i, c in other.buckets.items():
            self.buckets[i] = self.buckets.get(i, 0) + c
        if other.count:
            self.min = min(self.min, other.min) if self.count else other.min
            self.max = max(self.max, other.max)
        self.count += other.count
        self.total_ns += other.total_ns

    def percentile(self, q: float) -> int:
        if not self.count:
            return 0
        want, seen = max(1, math.ceil(q * self.count)), 0
        for i in sorted(self.buckets):
            seen += self.buckets[i]
            if seen >= want:
                return min(self.layout.high(i), self.max)
        return self.max

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"count": self.count, "min": self.min, "max": self.max}
        out["mean"] = round(self.total_ns / self.count, 1) if self.count else 0.0
        out.update({name: self.percentile(q) for name, q in PERCENTILES.items()})
        return out

    def to_json(self) -> dict[str, Any]:
        return {**self.summary(), "buckets": [[i, self.buckets[i]] for i in sorted(self.buckets)]}


def merge_docs(docs: Iterable[Mapping[str, Any]]) -> dict[str, Hist]:
    """Merge the "hist" sections of several kpdrive results, by operation kind."""
    merged: dict[str, Hist] = {}
    for doc in docs:
        layout = Layout.of(doc.get("layout", {}))
        for kind, h in doc.items():
            if kind == "layout":
                continue
            part = Hist.from_json(h, layout)
            if kind in merged:
                merged[kind].merge(part)
            else:
                merged[kind] = part
    return merged
