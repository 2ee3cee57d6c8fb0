"""Latency distributions at millisecond resolution, cheap to fill at tens of thousands of values a second."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence


class Histogram:
    """Counts per whole millisecond: exact percentiles in memory bounded by the range of values, not their number.

    A run at 50,000 readings/s yields millions of latencies; keeping them in a
    list would make the benchmark itself a memory hog on the machine it measures.
    """

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts: Counter[int] = Counter()
        self.total = 0

    def update(self, values: Sequence[int]) -> None:
        self.counts.update(values)
        self.total += len(values)

    def merge(self, other: Histogram) -> None:
        self.counts.update(other.counts)
        self.total += other.total

    def percentile(self, q: float) -> int | None:
        """The smallest value with at least ``q`` percent of the values at or below it."""
        if not self.total:
            return None
        rank = max(1, round(self.total * q / 100))
        seen = 0
        for value in sorted(self.counts):
            seen += self.counts[value]
            if seen >= rank:
                return value
        return max(self.counts)

    def summary(self) -> dict[str, int | None]:
        return {
            "count": self.total,
            "p50_ms": self.percentile(50),
            "p95_ms": self.percentile(95),
            "p99_ms": self.percentile(99),
            "max_ms": max(self.counts) if self.counts else None,
        }
